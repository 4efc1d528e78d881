"""FreeSWITCH ``conference::maintenance`` events and ``json_list`` replies -> state changes.

Pure functions: they read header values and return plain change values; ``state.apply``
is the only thing that turns those into live state.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Union

from confd.conferences.model import Conference, Participant
from confd.esl.protocol import HeaderSet

SUBCLASS = "conference::maintenance"
EVENT_CUSTOM = "CUSTOM"
EVENT_HEARTBEAT = "HEARTBEAT"

# Actions (header ``Action``) seen in the captures.
CONFERENCE_CREATE = "conference-create"
CONFERENCE_DESTROY = "conference-destroy"
ADD_MEMBER = "add-member"
DEL_MEMBER = "del-member"
KICK_MEMBER = "kick-member"
HUP_MEMBER = "hup-member"
MUTE_MEMBER = "mute-member"
UNMUTE_MEMBER = "unmute-member"
DEAF_MEMBER = "deaf-member"
UNDEAF_MEMBER = "undeaf-member"
START_TALKING = "start-talking"
STOP_TALKING = "stop-talking"
ENERGY_LEVEL_MEMBER = "energy-level-member"
FLOOR_CHANGE = "floor-change"
LOCK = "lock"
UNLOCK = "unlock"

# The eight participant events of events.md, and the conference-level ones.
PARTICIPANT_EVENTS = (
    ADD_MEMBER,
    DEL_MEMBER,
    START_TALKING,
    STOP_TALKING,
    MUTE_MEMBER,
    UNMUTE_MEMBER,
    DEAF_MEMBER,
    UNDEAF_MEMBER,
)
CONFERENCE_EVENTS = (LOCK, UNLOCK, CONFERENCE_CREATE, CONFERENCE_DESTROY, KICK_MEMBER)

# The headers translation reads on every event: picked from the event in one pass.
INTAKE_HEADERS = HeaderSet(
    (
        "Event-Name",
        "Event-Subclass",
        "Action",
        "Conference-Name",
        "Conference-Unique-ID",
        "Conference-Profile-Name",
        "Event-Date-Timestamp",
        "New-ID",
        "Member-ID",
        "Unique-ID",
        "Member-Type",
        "Floor",
        "Hear",
        "Speak",
        "Talking",
        "Mute-Detect",
        "Video",
        "Energy-Level",
        "Current-Energy",
    )
)

# ASCII digits only (str.isdigit() accepts "²"), and few enough that int() stays cheap.
_TIMESTAMP = re.compile(r"[0-9]{1,19}")
_MEMBER_ID = re.compile(r"[0-9]{1,10}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Headers(Protocol):
    def get(self, name: str, default: Optional[str] = None) -> Optional[str]: ...


# --- change values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConferenceCreated:
    name: str
    uuid: str
    profile: str
    start_time: float


@dataclass(frozen=True)
class ConferenceDestroyed:
    name: str
    uuid: str


@dataclass(frozen=True)
class LockChanged:
    name: str
    uuid: str
    locked: bool


@dataclass(frozen=True)
class FloorChanged:
    name: str
    uuid: str
    new_id: Optional[int]


@dataclass(frozen=True)
class MemberEvent:
    """A member event; ``participant`` carries the member's current state from its headers."""

    action: str
    participant: Participant
    profile: str
    event_time: float


@dataclass(frozen=True)
class MemberFlags:
    """Any other member event (mute, talking, energy, kick, ...): the member's current flags,
    which its headers carry.  ``full()`` builds the whole MemberEvent, for a member the state
    does not know yet; most events never need it (talking events are most of the traffic)."""

    action: str
    conference_uuid: str
    participant_id: int
    flags: Dict[str, Any]
    full: Callable[[], MemberEvent]


@dataclass(frozen=True)
class Snapshot:
    """Everything a node has, from ``conference json_list``; ``channel_data`` (by call id) is
    what ``uuid_dump`` told about its participants before the snapshot was applied, so that
    the resync's ``add-member`` events carry it (json_list has no channel variables)."""

    conferences: List[Conference]
    channel_data: Dict[str, ChannelData] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelData:
    """What ``uuid_dump`` tells about a participant's channel (not in json_list)."""

    call_id: str
    switch_hostname: str
    caller_id_name: str
    caller_id_number: str
    custom_channel_vars: Dict[str, str]
    channel_presence_id: Optional[str]


Change = Union[
    MemberFlags,
    ConferenceCreated,
    ConferenceDestroyed,
    LockChanged,
    FloorChanged,
    MemberEvent,
    Snapshot,
    ChannelData,
]


# --- header helpers --------------------------------------------------------------------------


def _bool(value: Optional[str]) -> bool:
    return value == "true"


def _int(value: Optional[str], default: int = 0) -> int:
    if value is None or not _INTEGER.fullmatch(value):
        return default
    return int(value)


def event_time(h: Headers, default: float = 0.0) -> float:
    """``Event-Date-Timestamp`` is microseconds since the Unix epoch."""
    ts = h.get("Event-Date-Timestamp")
    if ts and _TIMESTAMP.fullmatch(ts):
        return int(ts) / 1e6
    return default


def channel_var_key(name: str) -> str:
    """``Account-ID`` -> ``account_id`` (lower-cased, ``-`` -> ``_``)."""
    return name.lower().replace("-", "_")


def custom_channel_vars(variables: Dict[str, str], prefix: str) -> Dict[str, str]:
    """``variable_<prefix>Account-ID`` -> ``account_id``, from the ``variable_<prefix>``
    headers given."""
    head = "variable_" + prefix
    return {
        channel_var_key(name[len(head) :]): value
        for name, value in variables.items()
        if name.startswith(head) and len(name) > len(head)
    }


def caller_id(h: Headers) -> tuple:
    """Originated calls say "Outbound Call" in Caller-Caller-ID-Name; the configured caller id
    is in Caller-Orig-Caller-ID-* (s1_room1_plain.raw, add-member of Alice)."""
    name = h.get("Caller-Orig-Caller-ID-Name")
    if name is None:
        name = h.get("Caller-Caller-ID-Name", "")
    number = h.get("Caller-Orig-Caller-ID-Number")
    if number is None:
        number = h.get("Caller-Caller-ID-Number", "")
    return name or "", number or ""


def participant_from_headers(h: Any, prefix: str) -> Participant:
    name, number = caller_id(h)
    return Participant(
        participant_id=_int(h.get("Member-ID")),
        call_id=h.get("Unique-ID", "") or "",
        conference_name=h.get("Conference-Name", "") or "",
        conference_uuid=h.get("Conference-Unique-ID", "") or "",
        switch_hostname=h.get("FreeSWITCH-Hostname", "") or "",
        is_moderator=h.get("Member-Type") == "moderator",
        floor=_bool(h.get("Floor")),
        hear=_bool(h.get("Hear")),
        speak=_bool(h.get("Speak")),
        talking=_bool(h.get("Talking")),
        mute_detect=_bool(h.get("Mute-Detect")),
        video=_bool(h.get("Video")),
        energy_level=_int(h.get("Energy-Level")),
        current_energy=_int(h.get("Current-Energy")),
        caller_id_name=name,
        caller_id_number=number,
        join_time=event_time(h),
        custom_channel_vars=custom_channel_vars(h.with_prefix("variable_" + prefix), prefix),
        channel_presence_id=h.get("Channel-Presence-ID"),
    )


# --- translation -----------------------------------------------------------------------------


def translate(event: Any, channel_var_prefix: str = "ecallmgr_") -> Optional[Change]:
    """One parsed event (``confd.esl.protocol.Event``) -> a change; None if it changes nothing."""
    h = event.pick(INTAKE_HEADERS)
    if h.get("Event-Subclass") != SUBCLASS:
        return None
    action = h.get("Action")
    name = h.get("Conference-Name", "")
    uuid = h.get("Conference-Unique-ID", "")
    if not action or not uuid:
        return None
    if action == CONFERENCE_CREATE:
        return ConferenceCreated(name, uuid, h.get("Conference-Profile-Name", ""), event_time(h))
    if action == CONFERENCE_DESTROY:
        return ConferenceDestroyed(name, uuid)
    if action in (LOCK, UNLOCK):
        return LockChanged(name, uuid, action == LOCK)
    if action == FLOOR_CHANGE:
        new_id = h.get("New-ID") or ""
        return FloorChanged(name, uuid, int(new_id) if _MEMBER_ID.fullmatch(new_id) else None)
    member_id = _int(h.get("Member-ID"))
    if member_id <= 0 or not h.get("Unique-ID"):
        return None  # play-file-done and other conference-level notices
    if action not in (ADD_MEMBER, DEL_MEMBER):
        return MemberFlags(
            action,
            uuid,
            member_id,
            flags_from_headers(h),
            lambda: _member_event(action, event, channel_var_prefix),
        )
    return _member_event(action, event, channel_var_prefix)


def flags_from_headers(h: Headers) -> Dict[str, Any]:
    """The member flags every member event carries (events.md: they are its current state)."""
    return {
        "floor": h.get("Floor") == "true",
        "hear": h.get("Hear") == "true",
        "speak": h.get("Speak") == "true",
        "talking": h.get("Talking") == "true",
        "mute_detect": h.get("Mute-Detect") == "true",
        "video": h.get("Video") == "true",
        "energy_level": _int(h.get("Energy-Level")),
        "current_energy": _int(h.get("Current-Energy")),
        "is_moderator": h.get("Member-Type") == "moderator",
    }


def _member_event(action: str, event: Any, prefix: str) -> MemberEvent:
    participant = participant_from_headers(event, prefix)
    profile = event.get("Conference-Profile-Name", "") or ""
    return MemberEvent(action, participant, profile, participant.join_time)


def snapshot_from_json_list(text: str, node: str, now: float) -> Snapshot:
    """``conference json_list`` -> Snapshot.  Anything but a JSON list (``-ERR ...``, a usage
    line, an empty reply) means no conferences."""
    try:
        data = json.loads(text)
    except ValueError:
        data = []
    if not isinstance(data, list):
        data = []
    conferences = []
    for item in data:
        if not isinstance(item, dict):
            continue
        name = str(item.get("conference_name", ""))
        uuid = str(item.get("conference_uuid", ""))
        if not uuid:
            continue
        conf = Conference(
            name=name,
            uuid=uuid,
            node=node,
            start_time=now - _num(item.get("run_time")),
            is_locked=bool(item.get("locked", False)),
        )
        members = item.get("members")
        for m in members if isinstance(members, list) else ():
            if not isinstance(m, dict) or m.get("type", "caller") != "caller":
                continue
            mid = m.get("id")
            if not isinstance(mid, int) or isinstance(mid, bool) or mid <= 0:
                continue
            flags = m.get("flags")
            if not isinstance(flags, dict):
                flags = {}
            conf.participants[mid] = Participant(
                participant_id=mid,
                call_id=str(m.get("uuid", "")),
                conference_name=name,
                conference_uuid=uuid,
                is_moderator=bool(flags.get("is_moderator", False)),
                floor=bool(flags.get("has_floor", False)),
                hear=bool(flags.get("can_hear", False)),
                speak=bool(flags.get("can_speak", False)),
                talking=bool(flags.get("talking", False)),
                mute_detect=bool(flags.get("mute_detect", False)),
                video=bool(flags.get("has_video", False)),
                energy_level=int(_num(m.get("energy"))),
                caller_id_name=str(m.get("caller_id_name", "")),
                caller_id_number=str(m.get("caller_id_number", "")),
                # json_list's join_time is seconds spent in the conference so far.
                join_time=now - _num(m.get("join_time")),
            )
        conferences.append(conf)
    return Snapshot(conferences)


def channel_data_from_uuid_dump(text: str, prefix: str) -> Optional[ChannelData]:
    """``uuid_dump <uuid> json`` -> ChannelData, or None for ``-ERR No such channel!``."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("Unique-ID"):
        return None
    values = {str(k): v if isinstance(v, str) else str(v) for k, v in data.items()}
    name, number = caller_id(values)
    return ChannelData(
        call_id=values["Unique-ID"],
        switch_hostname=values.get("FreeSWITCH-Hostname", ""),
        caller_id_name=name,
        caller_id_number=number,
        custom_channel_vars=custom_channel_vars(values, prefix),
        channel_presence_id=values.get("Channel-Presence-ID") or values.get("variable_presence_id"),
    )


def _num(value: Any) -> float:
    """A finite number from json_list, else 0 (Python's json reads Infinity, NaN and 1e400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        return 0.0
    return number if math.isfinite(number) else 0.0
