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


class WireError(ValueError):
    """A message from a peer that is not what this version sends."""


def participant_to_wire(p: Participant) -> Dict[str, Any]:
    d = dict(p.__dict__)
    d["custom_channel_vars"] = dict(p.custom_channel_vars)
    return d


def participant_from_wire(d: Any) -> Participant:
    if not isinstance(d, dict):
        raise WireError("participant: not an object")
    try:
        p = Participant(**{k: d[k] for k in _PARTICIPANT_FIELDS if k in d})
    except TypeError as exc:
        raise WireError("participant: %s" % exc) from None
    if not isinstance(p.participant_id, int) or not isinstance(p.call_id, str):
        raise WireError("participant: bad id")
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
