"""Sending one built command to the node hosting a conference, with api.md's error rules.

The command text is born only in ``CommandBuilder``; this module decides whether it may be sent
and turns the outcome into the 202 answer's data (or an ``ApiError``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from confd.conferences.commands import Command
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
    """Check the conference (and participant) is live, send the command, return 202's data."""
    conf = running(ctx, target)
    if participant_id is not None and participant_id not in conf.participants:
        raise e.BadIdentifier(str(participant_id))
    command = build()
    reply = ctx.control.send(conf, command)  # FocusUnavailable / CommandRejected
    log.info(
        "account %s: %s on node %s: %s",
        account_id,
        command.text,
        conf.node,
        reply.strip().replace("\n", " | "),
    )
    return {"action": command.action, "command": command.text, "reply": reply.strip()}
