"""Sending one built command to the node hosting a conference, with api.md's error rules.

The command text is born only in ``CommandBuilder``; this module decides whether it may be sent
and turns the outcome into the 202 answer's data (or an ``ApiError``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from confd.conferences.commands import Command
from confd.conferences.control import MemberChanged
from confd.conferences.model import Conference
from confd.http import errors as e
from confd.http.lookup import Target

log = logging.getLogger(__name__)

MSG_NOT_RUNNING = "conference not running"


def not_live_error(ctx: Any, conference_id: str) -> e.ApiError:
    """Why an action cannot reach a conference that is not live: if every node is connected it
    is simply not running (409); otherwise it may be on a node we cannot see (503)."""
    down = ctx.control.disconnected_nodes()
    if not down:
        return e.ConferenceNotRunning({"cause": conference_id, "message": MSG_NOT_RUNNING})
    return e.FocusUnavailable({"focus": down[0] if len(down) == 1 else ", ".join(down)})


def running(ctx: Any, target: Target) -> Conference:
    """The live instance of the target, or the not-live error."""
    if target.live is None:
        raise not_live_error(ctx, target.conference_id)
    return target.live


def perform(
    ctx: Any,
    account_id: str,
    target: Target,
    build: Callable[[], Command],
    participant_id: Optional[int] = None,
) -> Dict[str, Any]:
    """Check the conference (and participant) is live, send the command, return 202's data.

    ``target`` was resolved before a database call that may have yielded for seconds; a node
    may have restarted and resynced meanwhile, with member ids starting again at 1.  So:
    - an action on a participant goes only to the call the member id named when it was
      resolved; if that member id now names another call, or nobody, nothing is sent and it
      is 404 ``bad_identifier`` (api.md: live but no such participant), or the not-live
      error when the conference is not live any more;
    - an action on the conference (lock, mute everyone, ...) names the conference, not one
      instance of it: it goes to the instance live right now, or is refused as not live."""
    conf = running(ctx, target)
    member = None
    if participant_id is not None:
        member = conf.participants.get(participant_id)
        if member is None:
            raise e.BadIdentifier(str(participant_id))
    command = build()
    if member is None:
        now = ctx.control.live(target.conference_id)
        if now is None:
            raise not_live_error(ctx, target.conference_id)
        conf = now
    try:
        reply = ctx.control.send(conf, command, member)  # FocusUnavailable / CommandRejected
    except MemberChanged:
        if ctx.control.live(target.conference_id) is None:
            raise not_live_error(ctx, target.conference_id) from None
        raise e.BadIdentifier(str(participant_id)) from None
    log.info(
        "account %s: %s on node %s: %s",
        account_id,
        command.text,
        conf.node,
        reply.strip().replace("\n", " | "),
    )
    return {"action": command.action, "command": command.text, "reply": reply.strip()}
