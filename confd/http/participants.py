"""Live participants of a conference and the actions on them (api.md):
``/v2/accounts/{A}/conferences/{C}/participants[/{P}]``.

``{P}`` is routed as a plain string and parsed by ``parse_member_id``: a framework int converter
would answer 404 for ``abc`` and could accept forms FreeSWITCH's ``atoi`` reads differently
(``7abc`` is member 7 there, ``4294967297`` is member 1; captures s6_bad_input.cmds, section H).
"""

from __future__ import annotations

from flask import Blueprint, Response, g

from confd.conferences.commands import MEMBER_ACTIONS, InvalidCommand, parse_member_id
from confd.http import actions, body, lookup, realtime
from confd.http import errors as e
from confd.http.responses import ok

COLLECTION = "/v2/accounts/<account_id>/conferences/<conference_id>/participants"
ITEM = COLLECTION + "/<participant_id>"
MAX_SHOWN_ID = 128  # characters of a refused participant id echoed back as the cause


def blueprint() -> Blueprint:
    bp = Blueprint("participants", __name__)
    bp.add_url_rule(COLLECTION, "list", list_participants, methods=["GET"])
    bp.add_url_rule(COLLECTION, "action", participants_action, methods=["PUT"])
    bp.add_url_rule(ITEM, "get", get_participant, methods=["GET"])
    bp.add_url_rule(ITEM, "action_one", participant_action, methods=["PUT"])
    return bp


def member_id(text: str) -> int:
    """The participant id of the path, or 400 ``invalid_participant_id``."""
    try:
        return parse_member_id(text)
    except InvalidCommand:
        raise e.InvalidParticipantId(text[:MAX_SHOWN_ID]) from None


def list_participants(account_id: str, conference_id: str) -> Response:
    """Live participants; ``[]`` when the conference is known but not running."""
    ctx = g.ctx
    target = lookup.find(ctx, g.account, conference_id)
    return ok(realtime.participants(target.live, ctx.control.clock()))


def participants_action(account_id: str, conference_id: str) -> Response:
    ctx = g.ctx
    action = body.request_action(MEMBER_ACTIONS)
    target = lookup.find(ctx, g.account, conference_id)
    result = actions.perform(
        ctx, account_id, target, lambda: ctx.builder.everyone(conference_id, action)
    )
    return ok(result, 202)


def get_participant(account_id: str, conference_id: str, participant_id: str) -> Response:
    ctx = g.ctx
    pid = member_id(participant_id)
    target = lookup.find(ctx, g.account, conference_id)
    participant = target.live.participants.get(pid) if target.live is not None else None
    if participant is None:
        raise e.BadIdentifier(str(pid))
    return ok(participant.to_api(ctx.control.clock()))


def participant_action(account_id: str, conference_id: str, participant_id: str) -> Response:
    ctx = g.ctx
    pid = member_id(participant_id)
    action = body.request_action(MEMBER_ACTIONS)
    target = lookup.find(ctx, g.account, conference_id)
    result = actions.perform(
        ctx,
        account_id,
        target,
        lambda: ctx.builder.member(conference_id, action, pid),
        participant_id=pid,
    )
    return ok(result, 202)
