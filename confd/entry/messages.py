"""Bytes of the outbound event socket: what confd sends, and the connect reply it reads.
Pure functions, no sockets.

A command is a header block ended by an empty line (a_member_pin.cmds).  Each rendered command
is checked once more for its shape whatever produced its values, so a value that slipped past
``rules`` still cannot end a line early, add a header or start a second command.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Dict, Optional
from urllib.parse import unquote

from confd.entry import constants as c
from confd.esl import protocol as p

# One header value: printable ASCII and single inner spaces (pagd's argument has spaces).
_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CAUSE = re.compile(r"[A-Z_]{1,64}")
MAX_ARG = 1024


class BadCommand(ValueError):
    """A command confd must not send (a bug upstream, never caller input reaching the wire)."""


def new_event_uuid() -> str:
    return str(uuidlib.uuid4())


def _value(text: str, what: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_ARG or not _VALUE.fullmatch(text):
        raise BadCommand(f"{what} is not a single line of printable ASCII: {text!r:.80}")
    return text


def command(verb: str) -> bytes:
    """``connect``, ``myevents``, ``linger``, ``exit``."""
    if verb not in (c.CMD_CONNECT, c.CMD_MYEVENTS, c.CMD_LINGER, c.CMD_EXIT):
        raise BadCommand("unknown command %r" % verb)
    return verb.encode() + b"\n\n"


def execute(app: str, arg: Optional[str], event_uuid: str, lock: bool = True) -> bytes:
    """``sendmsg`` running ``app`` on the call.  ``event-lock: true`` keeps pipelined
    applications in order (without it they nest, last in first done: g1_pipelined_nolock);
    ``Event-UUID`` comes back as the ``Application-UUID`` of its CHANNEL_EXECUTE_COMPLETE."""
    if app not in c.APPS:
        raise BadCommand("unknown application %r" % app)
    if not _UUID.fullmatch(event_uuid or ""):
        raise BadCommand("bad Event-UUID %r" % event_uuid)
    lines = [c.CMD_SENDMSG, f"{c.H_CALL_COMMAND}: {c.CALL_EXECUTE}", f"{c.H_APP_NAME}: {app}"]
    if arg is not None:
        lines.append(f"{c.H_APP_ARG}: {_value(arg, 'application argument')}")
    if lock:
        lines.append(f"{c.H_EVENT_LOCK}: true")
    lines.append(f"{c.H_EVENT_UUID}: {event_uuid}")
    return ("\n".join(lines) + "\n\n").encode()


def hangup(cause: str) -> bytes:
    """``sendmsg`` with ``call-command: hangup`` (c_wrong_pin_x3): needs no application slot,
    so it also ends a call whose application is still running without event-lock."""
    if not _CAUSE.fullmatch(cause or ""):
        raise BadCommand("bad hangup cause %r" % cause)
    return (
        f"{c.CMD_SENDMSG}\n{c.H_CALL_COMMAND}: {c.CALL_HANGUP}\n{c.H_HANGUP_CAUSE}: {cause}\n\n"
    ).encode()


def api(line: str) -> bytes:
    """``api <line>`` on the call's own connection (``Control: full`` allows it)."""
    return f"{c.CMD_API} {_value(line, 'api command')}\n\n".encode()


def connect_headers(frame: p.Frame) -> Dict[str, str]:
    """The connect reply's headers with their values URL-decoded one by one.

    The reply is a single header block without Content-Length: CHANNEL_DATA with the reply
    headers at its end, every value URL-encoded ("Reply-Text: %2BOK%0A", a_member_pin.raw)."""
    return {k: (unquote(v) if "%" in v else v) for k, v in frame.headers.items()}


def is_connect_reply(headers: Dict[str, str]) -> bool:
    return (
        headers.get("Content-Type") == p.COMMAND_REPLY
        and headers.get("Reply-Text", "").startswith(c.REPLY_OK)
        and bool(headers.get(c.H_UNIQUE_ID))
    )
