"""Plain values for live conferences and participants (no behaviour beyond rendering)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

# Kazoo counts time in Gregorian seconds: seconds since 0000-01-01 = Unix time + this offset.
GREGORIAN_OFFSET = 62167219200


def to_gregorian(unix_seconds: float) -> int:
    return int(unix_seconds) + GREGORIAN_OFFSET


# The member flags every member event carries with their current value (events.md).
FLAG_FIELDS = (
    "floor",
    "hear",
    "speak",
    "talking",
    "mute_detect",
    "video",
    "energy_level",
    "current_energy",
    "is_moderator",
)


@dataclass
class Participant:
    participant_id: int
    call_id: str
    conference_name: str
    conference_uuid: str
    switch_hostname: str = ""
    is_moderator: bool = False
    floor: bool = False
    hear: bool = True
    speak: bool = True
    talking: bool = False
    mute_detect: bool = False
    video: bool = False
    energy_level: int = 0
    current_energy: int = 0
    caller_id_name: str = ""
    caller_id_number: str = ""
    join_time: float = 0.0  # Unix seconds
    custom_channel_vars: Dict[str, str] = field(default_factory=dict)
    channel_presence_id: Optional[str] = None

    def to_api(self, now: float) -> Dict[str, Any]:
        """The participant object of api.md."""
        return {
            "call_id": self.call_id,
            "conference_name": self.conference_name,
            "conference_uuid": self.conference_uuid,
            "switch_hostname": self.switch_hostname,
            "floor": self.floor,
            "hear": self.hear,
            "speak": self.speak,
            "talking": self.talking,
            "mute_detect": self.mute_detect,
            "participant_id": self.participant_id,
            "energy_level": self.energy_level,
            "current_energy": self.current_energy,
            "video": self.video,
            "is_moderator": self.is_moderator,
            "join_time": to_gregorian(self.join_time),
            "duration": max(0, int(now - self.join_time)),
            "caller_id_name": self.caller_id_name,
            "caller_id_number": self.caller_id_number,
            "custom_channel_vars": dict(self.custom_channel_vars),
        }


@dataclass
class Conference:
    name: str
    uuid: str
    node: str = ""
    profile: str = ""
    start_time: float = 0.0  # Unix seconds
    is_locked: bool = False
    participants: Dict[int, Participant] = field(default_factory=dict)

    @property
    def members(self) -> int:
        return sum(1 for p in self.participants.values() if not p.is_moderator)

    @property
    def admins(self) -> int:
        return sum(1 for p in self.participants.values() if p.is_moderator)

    def by_call_id(self, call_id: str) -> Optional[Participant]:
        for p in self.participants.values():
            if p.call_id == call_id:
                return p
        return None
