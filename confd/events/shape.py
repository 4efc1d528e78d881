"""Pure builders: live state updates -> the JSON events of events.md, routing keys, bindings.

Nothing here does I/O or keeps state; the hub (``confd.events.hub``) decides when to call it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import orjson

from confd.conferences import events as ev
from confd.conferences.model import Conference, Participant, to_gregorian
from confd.conferences.state import Update

APP_NAME = "confd"
EVENT_CATEGORY = "conference"
PARTICIPANT_EVENT_NAME = "participant_event"
CONFERENCE_EVENT_NAME = "conference_event"
# The seed's events carry these words in their own ``routing_key`` field (not the AMQP key).
PARTICIPANT_ROUTING_WORD = "participant_event"
CONFERENCE_ROUTING_WORD = "conference_event"
# Conference-level events put this word where the call id goes (events.md).
CONFERENCE_CALL_ID = "conference"
ROUTING_PREFIX = "conference.event"
WILDCARD = "*"
# Only on events confd publishes of its own accord (events.md, lifecycle steps 5-6): the
# update's reason (``node_lost``, ``resync``); the key comes last, after the envelope keys.
REASON_KEY = "reason"

PARTICIPANT_EVENTS: Tuple[str, ...] = ev.PARTICIPANT_EVENTS
CONFERENCE_EVENTS: Tuple[str, ...] = ev.CONFERENCE_EVENTS
# kick-member is conference-level in shape but addressed to the kicked participant's call id.
PER_PARTICIPANT_CONFERENCE_EVENTS = (ev.KICK_MEMBER,)
PUBLISHED_EVENTS: FrozenSet[str] = frozenset(PARTICIPANT_EVENTS + CONFERENCE_EVENTS)

# A routing key segment: a FreeSWITCH conference name or a call id. The command builder allows
# [A-Za-z0-9_.@-] in names; a dot would split a routing key, so bindings refuse it.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_@:-]{1,128}")


# msg_id needs to be unique, not secret: a generator seeded once from the OS, instead of a
# getrandom() system call per event.
_MSG_IDS = random.Random(random.SystemRandom().getrandbits(128))


def new_msg_id() -> str:
    """16 hex characters, as the seed's ``msg_id``."""
    return "%016x" % _MSG_IDS.getrandbits(64)


def routing_key(conference_id: str, call_id: str) -> str:
    return "%s.%s.%s" % (ROUTING_PREFIX, conference_id, call_id)


def event_filter(allowed: Optional[Iterable[str]]) -> FrozenSet[str]:
    """The set of event names to publish: config ``events.publish_participant_event``
    (None = every participant and conference-level event)."""
    if allowed is None:
        return PUBLISHED_EVENTS
    return frozenset(allowed) & PUBLISHED_EVENTS


@dataclass
class Published:
    """One event ready to go out: its AMQP routing key, its body, and what scoping needs."""

    name: str  # the Action (add-member, lock, ...)
    conference_id: str
    call_id: str  # or CONFERENCE_CALL_ID
    routing_key: str
    data: Dict[str, Any]
    # The account the conference's members claim at this event (confd.conferences.ownership,
    # worked out by the hub): the owner of an ad-hoc conference, used only when no conference
    # document has this id.
    account_hint: Optional[str] = None
    # A conference-level event of a conference no member was seen in yet: who owns it is not
    # decided until its first member (or its document) says (the fan-out holds it meanwhile).
    owner_pending: bool = False
    # When the event happened (Unix seconds), stamped in a cluster only (confd.cluster.events):
    # its instances skip what happened before they could have wanted it.  0.0: not stamped.
    at: float = 0.0
    _body: Optional[bytes] = field(default=None, repr=False)
    # Encoded websocket frames by binding, shared by every connection (events/websocket.py).
    frames: Dict[str, bytes] = field(default_factory=dict, repr=False)

    def body(self) -> bytes:
        """The body as UTF-8 JSON, serialised once however many clients receive it."""
        if self._body is None:
            try:
                self._body = orjson.dumps(self.data)
            except TypeError:  # not expected of event data; the slower encoder copes anyway
                self._body = json.dumps(self.data, separators=(",", ":")).encode()
        return self._body


def _envelope(node: str, app_version: str, msg_id: str, word: str, event_name: str) -> dict:
    return {
        "node": node,
        "msg_id": msg_id,
        "event_name": event_name,
        "event_category": EVENT_CATEGORY,
        "app_version": app_version,
        "app_name": APP_NAME,
        "routing_key": word,
    }


def participant_event(
    event: str,
    conference: Conference,
    participant: Participant,
    *,
    focus: str,
    node: str,
    app_version: str,
    msg_id: str,
) -> Dict[str, Any]:
    """The seed's participant event, keys in the seed's order."""
    p = participant
    data: Dict[str, Any] = {
        "custom_channel_vars": dict(p.custom_channel_vars),
        "channel_presence_id": p.channel_presence_id,
        "caller_id_number": p.caller_id_number,
        "caller_id_name": p.caller_id_name,
        "mute_detect": p.mute_detect,
        "video": p.video,
        "energy_level": p.energy_level,
        "current_energy": p.current_energy,
        "talking": p.talking,
        "speak": p.speak,
        "hear": p.hear,
        "floor": p.floor,
        "participant_id": p.participant_id,
        # Beyond the seed's example (events.md): a client places a new participant, with its
        # role and join time, without asking for it again.
        "is_moderator": p.is_moderator,
        "join_time": to_gregorian(p.join_time),
        "instance_id": conference.uuid or p.conference_uuid,
        "conference_id": conference.name or p.conference_name,
        "focus": focus,
        "call_id": p.call_id,
        "event": event,
    }
    data.update(
        _envelope(node, app_version, msg_id, PARTICIPANT_ROUTING_WORD, PARTICIPANT_EVENT_NAME)
    )
    return data


def conference_event(
    event: str,
    conference: Conference,
    *,
    members: int,
    admins: int,
    focus: str,
    node: str,
    app_version: str,
    msg_id: str,
    participant: Optional[Participant] = None,
) -> Dict[str, Any]:
    """A conference-level event (lock, unlock, conference-create/-destroy, kick-member).
    kick-member also names the kicked participant (``call_id``, ``participant_id``)."""
    data: Dict[str, Any] = {
        "conference_id": conference.name,
        "instance_id": conference.uuid,
        "focus": focus,
        "event": event,
        "is_locked": conference.is_locked,
        "members": members,
        "admins": admins,
    }
    if participant is not None:
        data["call_id"] = participant.call_id
        data["participant_id"] = participant.participant_id
    data.update(
        _envelope(node, app_version, msg_id, CONFERENCE_ROUTING_WORD, CONFERENCE_EVENT_NAME)
    )
    return data


def focus_of(update: Update, known_hostname: Optional[str] = None) -> str:
    """FreeSWITCH-Switchname of the node: the participant's hostname when the update has one,
    else one learned from the node's earlier events, else the node's configured name."""
    if update.participant is not None and update.participant.switch_hostname:
        return update.participant.switch_hostname
    return known_hostname or update.node


def build(
    update: Update,
    *,
    node: str,
    app_version: str,
    msg_id: str,
    focus: str,
    counts: Tuple[int, int] = (0, 0),
    account_hint: Optional[str] = None,
) -> Optional[Published]:
    """The event for one update, or None when the update is not a published kind (or is a
    participant event without its participant)."""
    conf = update.conference
    name = update.event
    if name in PARTICIPANT_EVENTS:
        p = update.participant
        if p is None:
            return None
        data = participant_event(
            name, conf, p, focus=focus, node=node, app_version=app_version, msg_id=msg_id
        )
        if update.reason is not None:
            data[REASON_KEY] = update.reason
        conf_id = data["conference_id"]
        return Published(
            name, conf_id, p.call_id, routing_key(conf_id, p.call_id), data, account_hint
        )
    if name in CONFERENCE_EVENTS:
        p = update.participant if name in PER_PARTICIPANT_CONFERENCE_EVENTS else None
        if name in PER_PARTICIPANT_CONFERENCE_EVENTS and p is None:
            return None
        members, admins = counts
        data = conference_event(
            name,
            conf,
            members=members,
            admins=admins,
            focus=focus,
            node=node,
            app_version=app_version,
            msg_id=msg_id,
            participant=p,
        )
        if update.reason is not None:
            data[REASON_KEY] = update.reason
        call_id = p.call_id if p is not None else CONFERENCE_CALL_ID
        return Published(
            name, conf.name, call_id, routing_key(conf.name, call_id), data, account_hint
        )
    return None


# --- websocket bindings ----------------------------------------------------------------------


def _any_name(name: str) -> bool:
    return True


class BindingError(ValueError):
    """A binding that is not ``conference.event.{conference_id|*}.{call_id|*}``."""


@dataclass(frozen=True)
class Binding:
    text: str
    conference_id: Optional[str]  # None = any
    call_id: Optional[str]  # None = any

    def matches(self, conference_id: str, call_id: str) -> bool:
        return (self.conference_id is None or self.conference_id == conference_id) and (
            self.call_id is None or self.call_id == call_id
        )


def parse_binding(text: Any, is_conference_id: Callable[[str], bool] = _any_name) -> Binding:
    """``conference.event.{conference_id|*}.{call_id|*}``, each segment independently (events.md):
    ``{call_id}`` may be ``conference`` for the conference-level events, so
    ``conference.event.*.conference`` takes those of every conference.  ``is_conference_id``
    says whether a name can be a conference confd manages (``freeswitch.conference_name_pattern``):
    a binding naming any other could never match, so it is refused rather than kept."""
    if not isinstance(text, str):
        raise BindingError("a binding must be a string")
    parts = text.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != ROUTING_PREFIX:
        raise BindingError(
            "invalid binding %r: expected conference.event.{conference_id|*}.{call_id|*}"
            % text[:200]
        )
    conf, call = parts[2], parts[3]
    for seg in (conf, call):
        if seg != WILDCARD and not _SEGMENT_RE.fullmatch(seg):
            raise BindingError("invalid binding %r: bad segment %r" % (text[:200], seg[:130]))
    if conf != WILDCARD and not is_conference_id(conf):
        raise BindingError(
            "invalid binding %r: %r is not a conference id confd manages" % (text[:200], conf)
        )
    return Binding(text, None if conf == WILDCARD else conf, None if call == WILDCARD else call)


def parse_bindings(
    data: Dict[str, Any], is_conference_id: Callable[[str], bool] = _any_name
) -> List[Binding]:
    """The ``binding`` or ``bindings`` of a subscribe/unsubscribe message's ``data``."""
    if "bindings" in data:
        raw = data["bindings"]
        if not isinstance(raw, list) or not raw:
            raise BindingError("bindings must be a non-empty list of strings")
    elif "binding" in data:
        raw = [data["binding"]]
    else:
        raise BindingError("binding or bindings is required")
    return [parse_binding(b, is_conference_id) for b in raw]
