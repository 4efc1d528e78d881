"""What instances say to each other over RabbitMQ, as JSON values (pure: no I/O).

A request names its kind (``KIND_*``); its reply carries what the answering instance owns, so
the asker knows whose answer it has.  Live conferences travel whole (participants included):
the asker renders them exactly as the owner would.  A command travels as its parts (action,
conference, target), never as text: the owner builds the command again with its own
``CommandBuilder``, so nothing a peer sends reaches FreeSWITCH unchecked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from confd.conferences.model import Conference, Participant

KIND_FIND = "find"  # the live instances of one conference name
KIND_LIST = "list"  # every live conference
KIND_STATUS = "status"  # the owner's node statuses (/v2/health)
KIND_COMMAND = "command"  # one action, sent by the node's owner
KINDS = (KIND_FIND, KIND_LIST, KIND_STATUS, KIND_COMMAND)

# Outcomes of a command request (the owner's answer).
OK = "ok"
UNAVAILABLE = "unavailable"  # not owned here (any more), or the node is not connected
REJECTED = "rejected"  # FreeSWITCH said -ERR
STALE = "stale"  # the member id names another call now: nothing sent
INVALID = "invalid"  # the parts do not make a command confd would build
OUTCOMES = (OK, UNAVAILABLE, REJECTED, STALE, INVALID)

_PARTICIPANT_FIELDS = tuple(f.name for f in dataclasses.fields(Participant))
_BOOL_FIELDS = frozenset(
    ("is_moderator", "floor", "hear", "speak", "talking", "mute_detect", "video")
)
_INT_FIELDS = frozenset(("participant_id", "energy_level", "current_energy"))
_STR_FIELDS = frozenset(
    (
        "call_id",
        "conference_name",
        "conference_uuid",
        "switch_hostname",
        "caller_id_name",
        "caller_id_number",
    )
)


def _check_field(name: str, value: Any) -> None:
    """A peer's participant field has the type confd renders: anything else is a WireError
    here, not a TypeError in a view."""
    if name in _BOOL_FIELDS:
        ok = isinstance(value, bool)
    elif name in _INT_FIELDS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif name in _STR_FIELDS:
        ok = isinstance(value, str)
    elif name == "join_time":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif name == "channel_presence_id":
        ok = value is None or isinstance(value, str)
    elif name == "custom_channel_vars":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    else:
        ok = False
    if not ok:
        raise WireError("participant: %s: unexpected %s" % (name, type(value).__name__))


class WireError(ValueError):
    """A message from a peer that is not what this version sends."""


def participant_to_wire(p: Participant) -> Dict[str, Any]:
    d = dict(p.__dict__)
    d["custom_channel_vars"] = dict(p.custom_channel_vars)
    return d


def participant_from_wire(d: Any) -> Participant:
    if not isinstance(d, dict):
        raise WireError("participant: not an object")
    fields = {k: d[k] for k in _PARTICIPANT_FIELDS if k in d}
    for name, value in fields.items():
        _check_field(name, value)
    try:
        p = Participant(**fields)
    except TypeError as exc:  # a required field missing
        raise WireError("participant: %s" % exc) from None
    p.join_time = float(p.join_time)
    p.custom_channel_vars = dict(p.custom_channel_vars)
    return p


def conference_to_wire(conf: Conference) -> Dict[str, Any]:
    return {
        "name": conf.name,
        "uuid": conf.uuid,
        "node": conf.node,
        "profile": conf.profile,
        "start_time": conf.start_time,
        "is_locked": conf.is_locked,
        "participants": [
            participant_to_wire(conf.participants[k]) for k in sorted(conf.participants)
        ],
    }


def conference_from_wire(d: Any) -> Conference:
    if not isinstance(d, dict):
        raise WireError("conference: not an object")
    try:
        conf = Conference(
            name=str(d["name"]),
            uuid=str(d["uuid"]),
            node=str(d["node"]),
            profile=str(d.get("profile", "")),
            start_time=float(d.get("start_time", 0.0)),
            is_locked=bool(d.get("is_locked", False)),
        )
        for pd in d.get("participants", ()):
            p = participant_from_wire(pd)
            conf.participants[p.participant_id] = p
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError("conference: %s" % exc) from None
    return conf


def conferences_from_wire(items: Any) -> List[Conference]:
    if not isinstance(items, list):
        raise WireError("conferences: not a list")
    return [conference_from_wire(d) for d in items]


def request(kind: str, **fields: Any) -> Dict[str, Any]:
    body = {"kind": kind}
    body.update(fields)
    return body


def command_request(
    node: str,
    conference: Conference,
    action: str,
    target: Optional[str],
    member: Optional[Participant],
) -> Dict[str, Any]:
    return request(
        KIND_COMMAND,
        node=node,
        conference=conference.name,
        uuid=conference.uuid,
        action=action,
        target=target,
        member=(
            {"participant_id": member.participant_id, "call_id": member.call_id}
            if member is not None
            else None
        ),
    )


def reply(instance: str, owned: List[str], **fields: Any) -> Dict[str, Any]:
    """Every reply says who answered and which nodes it owns now."""
    body: Dict[str, Any] = {"instance": instance, "owned": owned}
    body.update(fields)
    return body
