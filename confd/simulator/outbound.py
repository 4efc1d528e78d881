"""The outbound side of the simulated FreeSWITCH: calls that connect out to confd's entry
listener as the dialplan application ``socket <host:port> async full`` does.

Copied from the real traffic in ``confd_tests/captures/outbound`` (named in the comments):

* FreeSWITCH says nothing until it hears ``connect``; the reply is one header block without
  Content-Length: CHANNEL_DATA (the call), then ``Content-Type: command/reply``,
  ``Reply-Text: +OK\\n``, ``Socket-Mode``, ``Control``; every value URL-encoded the way
  ``switch_url_encode`` does it (a_member_pin frame 0).
* ``myevents`` ("+OK Events Enabled") starts the call's events; ``linger`` ("+OK will linger")
  keeps the socket after the hang-up until ``exit`` ("+OK bye", then a disconnect-notice).
* ``sendmsg`` is answered "+OK" at once (async) and queued; the channel runs applications one
  after the other when they carry ``event-lock: true`` (g2), and runs one without it inside
  the running application at its next pause (g1: last in, first done).  Each application
  sends CHANNEL_EXECUTE, then CHANNEL_EXECUTE_COMPLETE whose ``Application-UUID`` is the
  ``Event-UUID`` of the sendmsg.  In sync mode (``Socket-Mode: static``, f_sync_member) the
  reply comes after the application.
* Applications: answer, playback, play_and_get_digits (clears its variable at the start, sets
  it on a match, ``<var>_invalid`` otherwise, plays the invalid sound after a failed try;
  a hang-up leaves the partial digits: c2, d), set, record, conference (locked rooms refuse
  unless ``conference_enforce_security=false``; ``conference_max_members`` bounds the room
  from its creation; a refused join returns at once without a member id and the call stays
  up: e_locked), hangup.  ``sendmsg`` ``call-command: hangup`` ends the call.
* Digits typed while no prompt collects are lost: the socket application's park loop reads
  and discards them (entry.md).  DTMF events are sent for every digit.
* After a hang-up: CHANNEL_HANGUP, the running application's completion (Answer-State
  hangup), CHANNEL_HANGUP_COMPLETE, then the linger notice (or, without linger, the
  disconnect notice and a close).

Sound and timeout durations are scaled (``time_scale``) so tests run fast; a test "types"
digits with ``SimulatedCall.type`` or gives each prompt its answer in advance (``answers``).
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import gevent
from gevent import socket
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.queue import Queue

from confd.esl import protocol as p
from confd.simulator.model import ConferenceModel, EventPairs

log = logging.getLogger(__name__)

# --- protocol text (captures/outbound) -----------------------------------------------------------
REPLY_OK = "+OK"
REPLY_CONNECT = "+OK\n"
REPLY_EVENTS = "+OK Events Enabled"
REPLY_LINGER = "+OK will linger"
REPLY_NOLINGER = "+OK will not linger"
REPLY_BYE = "+OK bye"
REPLY_NOT_FOUND = "-ERR command not found"
GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
RESPONSE_NONE = "_none_"
RESPONSE_PLAYED = "FILE PLAYED"
READ_SUCCESS = "success"
READ_FAILURE = "failure"
READ_TIMEOUT = "timeout"
PLAY_REPLY = "(play) Playing file %s\n"  # conference_api_sub_play

# Event-Calling-{File,Function,Line-Number} as the captures show them.
CALLING = {
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2029),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2949),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2972),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3848),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 678),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3447),
    "CHANNEL_HANGUP_COMPLETE": (
        "switch_core_state_machine.c",
        "switch_core_session_reporting_state",
        943,
    ),
}

# switch_url_encode: these (and control and non-ASCII bytes) become %XX; '/', ',', '(' stay.
_TONE_GROUP = re.compile(r"%\(([0-9]+),([0-9]+)")
_CONFERENCE_ARG = re.compile(r"^([^@+\s]+)(?:@([^+\s]+))?(?:\+flags\{([^}]*)\})?\Z")
DEFAULT_FILE_SECONDS = 1.0  # a sound file's nominal length
HANGUP = object()  # an answer that hangs up during the prompt


_UNSAFE_RE = re.compile(r'[\x00-\x1f\x7f-\U0010ffff\r\n "#%&+:;<=>?@\[\\\]^`{|}]')


@functools.lru_cache(maxsize=4096)
def fs_quote(value: str) -> str:
    """switch_url_encode: %XX for the unsafe characters (UTF-8 bytes beyond ASCII)."""
    return _UNSAFE_RE.sub(lambda m: "".join("%%%02X" % b for b in m.group().encode()), value)


def encode_header_block(pairs: Sequence[Tuple[str, str]]) -> bytes:
    """Header lines with switch_url_encode'd values, ended by an empty line."""
    return ("".join([_line(k, v) for k, v in pairs]) + "\n").encode()


@functools.lru_cache(maxsize=65536)
def _line(name: str, value: str) -> str:
    # Most header lines repeat from one event of a call to the next: render each once.
    return "%s: %s\n" % (name, fs_quote(str(value)))


def encode_event(pairs: Sequence[Tuple[str, str]]) -> bytes:
    """A ``text/event-plain`` frame as mod_event_socket writes it."""
    body = encode_header_block(pairs)
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body


def sound_seconds(sound: str) -> float:
    """How long a playable plays: a tone's on+off times, silence_stream's ms, else a file."""
    if sound.startswith("tone_stream://"):
        loops = 1
        m = re.search(r"L=(\d+)", sound)
        if m:
            loops = int(m.group(1))
        total = sum(int(a) + int(b) for a, b in _TONE_GROUP.findall(sound))
        return loops * total / 1000.0
    if sound.startswith("silence_stream://"):
        try:
            return int(sound.split("//", 1)[1].split(",")[0]) / 1000.0
        except ValueError:
            return 0.0
    return DEFAULT_FILE_SECONDS


Answer = Union[str, None, object, Callable[["SimulatedCall"], None]]


@dataclass
class _Message:
    """A sendmsg as the channel queues it."""

    command: str  # execute | hangup
    app: str = ""
    arg: str = ""
    uuid: str = ""
    lock: bool = False
    cause: str = "NORMAL_CLEARING"


class OutboundSide:
    """The FreeSWITCH that owns the model: starts calls and keeps what mod_conference keeps
    per room beside the model (``conference_max_members``)."""

    def __init__(
        self, model: ConferenceModel, *, time_scale: float = 0.001, enforce_max_members: bool = True
    ) -> None:
        self.model = model
        self.time_scale = time_scale
        # False: conference_max_members is ignored, so a test sees what confd alone enforces.
        self.enforce_max_members = enforce_max_members
        self.max_members: Dict[str, int] = {}
        self.played: List[Tuple[str, str]] = []  # (conference, file) played by `api ... play`
        self.calls: List[SimulatedCall] = []
        self._session_id = 0
        self._in_rooms: Dict[str, SimulatedCall] = {}  # call uuid -> call in a conference
        model.add_listener(self._on_model_event)

    def _on_model_event(self, pairs: EventPairs) -> None:
        """One listener for every call: a del-member ends that call's conference application
        (kick, hup, an endconf moderator leaving)."""
        if not self._in_rooms:
            return
        action = uid = ""
        for k, v in pairs:
            if k == "Action":
                action = v
                break
            if k == "Unique-ID" and not uid:
                uid = v
        if action == "del-member":
            call = self._in_rooms.pop(uid, None)
            if call is not None:
                call.left_room()

    def dial(self, address: Tuple[str, int], **kw) -> SimulatedCall:
        """A call that runs ``socket <address> async full`` (``mode="static"``: sync)."""
        self._session_id += 1
        kw.setdefault("time_scale", self.time_scale)
        call = SimulatedCall(self, address, session_id=self._session_id, **kw)
        self.calls.append(call)
        return call.start()

    def wait_all(self, timeout: float) -> bool:
        with gevent.Timeout(timeout, False):
            for call in list(self.calls):
                call.done.wait()
            return True
        return False


class SimulatedCall:
    def __init__(
        self,
        side: OutboundSide,
        address: Tuple[str, int],
        *,
        session_id: int = 1,
        variables: Optional[Dict[str, str]] = None,
        destination: str = "entry",
        caller_id_name: str = "EntryCaller",
        caller_id_number: str = "5550100",
        call_id: Optional[str] = None,
        mode: str = "async",
        answers: Optional[List[Answer]] = None,
        time_scale: float = 0.001,
        linger_limit: float = 30.0,
        name_seconds: float = 2.0,
        min_wait: float = 0.05,
        hang_up_at: Optional[str] = None,
    ) -> None:
        self.side = side
        self.model = side.model
        self.address = address
        self.uuid = call_id or str(uuidlib.uuid4())
        self.other_leg = str(uuidlib.uuid4())
        self.session_id = session_id
        self.destination = destination
        self.caller = (caller_id_name, caller_id_number)
        self.mode = mode
        self.answers: List[Answer] = list(answers or [])
        self.scale = time_scale
        self.linger_limit = linger_limit
        self.name_seconds = name_seconds
        self.min_wait = min_wait  # the shortest scaled digit timeout
        # "answer", "set", ...: the caller hangs up as that application starts (the first
        # one of that name); "connect": as soon as confd has sent connect.
        self.hang_up_at = hang_up_at
        self.channel_name = "loopback/%s-b" % destination
        self.created = time.time()
        self.answered_at = 0.0
        self.vars: Dict[str, str] = {
            "direction": "inbound",
            "uuid": self.uuid,
            "session_id": str(session_id),
            "channel_name": self.channel_name,
            "read_codec": "L16",
            "read_rate": "8000",
            "write_codec": "L16",
            "write_rate": "8000",
            "origination_uuid": self.other_leg,
            "origination_caller_id_number": caller_id_number,
            "origination_caller_id_name": caller_id_name,
            "other_loopback_leg_uuid": self.other_leg,
            "loopback_leg": "B",
            "call_uuid": self.uuid,
        }
        # Origination variables of a loopback call reach the B leg (entry.md).
        self.vars.update(variables or {})
        self.vars.update(
            {
                "current_application_data": "%s:%d async full" % address,
                "current_application": "socket",
                "socket_host": address[0],
            }
        )
        # What a test looks at afterwards
        self.apps: List[Tuple[str, str]] = []  # every application run, in order
        self.heard: List[str] = []  # every sound played to the caller
        self.lost_digits = ""  # typed while no prompt collected
        self.member_id: Optional[int] = None
        self.conference: Optional[str] = None
        self.flags: List[str] = []
        self.recordings: List[str] = []
        self.api_commands: List[str] = []
        self.hangup_cause: Optional[str] = None
        self.hung_up_by: Optional[str] = None  # "caller" | "confd"
        self.exit_received = False
        self.connected = Event()  # confd sent connect
        self.done = Event()  # the socket is closed
        self.commands: List[str] = []
        # State
        self.sock: Optional[socket.socket] = None
        self.events_on = False
        self.linger = False
        self.answered = False
        self.down = False
        self._sequence = 0
        self._send_lock = Semaphore()
        self._queue: Queue = Queue()
        self._nested: List[_Message] = []
        self._poke = Event()
        self._collector: Optional[List[str]] = None
        self._digit_event = Event()
        self._left_room = Event()
        self._exit = Event()
        self._greenlets: List[gevent.Greenlet] = []

    # --- test controls ---------------------------------------------------------------------------

    def start(self) -> SimulatedCall:
        self._greenlets.append(gevent.spawn(self._run))
        return self

    def type(self, digits: str) -> None:
        """The caller presses keys now: DTMF events, digits to the prompt collecting them."""
        for d in digits:
            if self.down:
                return
            self._event(
                "DTMF", [("DTMF-Digit", d), ("DTMF-Duration", "2000"), ("DTMF-Source", "UNKNOWN")]
            )
            if self._collector is not None:
                self._collector.append(d)
                self._digit_event.set()
            else:
                self.lost_digits += d

    def hang_up(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up."""
        if not self.down:
            self.hung_up_by = "caller"
            self._go_down(cause)

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    @property
    def in_conference(self) -> bool:
        return self.member_id is not None and not self._left_room.is_set()

    # --- the socket ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.sock = socket.create_connection(self.address, timeout=5)
        except OSError as exc:
            # confd is down: FreeSWITCH continues the dialplan (the snippet hangs up).
            log.info("simulated call %s: socket to confd failed: %s", self.uuid, exc)
            self.hangup_cause = "NORMAL_CLEARING"
            self.down = True
            self.done.set()
            return
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        channel = gevent.spawn(self._channel_thread)
        self._greenlets.append(channel)
        parser = p.CommandParser()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for request in parser.feed(data):
                    if not self._command(request):
                        return
        except (OSError, p.ProtocolError):
            pass
        finally:
            # confd closed the socket (or exit): the listener ends, CF_CONTROLLED is cleared;
            # a running conference goes on, anything else ends and the dialplan hangs up.
            self._closed_by_confd()

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            return
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def _reply(self, text: str) -> None:
        self._send(p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": text}))

    def _command(self, req: p.CommandRequest) -> bool:
        line = req.line
        self.commands.append(line)
        verb = line.split(" ", 1)[0].lower()
        if verb == "connect":
            self._send(self._connect_reply())
            self.connected.set()
            if self.hang_up_at == "connect":
                self.hang_up()
        elif verb == "myevents":
            self.events_on = True
            self._reply(REPLY_EVENTS)
        elif verb == "linger":
            self.linger = True
            self._reply(REPLY_LINGER)
        elif verb == "nolinger":
            self.linger = False
            self._reply(REPLY_NOLINGER)
        elif verb == "exit":
            self.exit_received = True
            self._reply(REPLY_BYE)
            self._send(_notice("disconnect", self.uuid, None, GOODBYE))
            self._exit.set()
            return False
        elif verb == "api":
            self.api_commands.append(line[4:])
            body = self._api(line[4:])
            self._send(p.encode_frame({"Content-Type": p.API_RESPONSE}, body.encode()))
        elif verb == "sendmsg":
            self._sendmsg(req)
        else:
            self._reply(REPLY_NOT_FOUND)
        return True

    def _sendmsg(self, req: p.CommandRequest) -> None:
        h = {k.lower(): v for k, v in req.headers.items()}
        command = h.get("call-command", "")
        msg = _Message(
            command,
            app=h.get("execute-app-name", ""),
            arg=h.get("execute-app-arg", ""),
            uuid=h.get("event-uuid", ""),
            lock=h.get("event-lock", "").lower() == "true",
            cause=h.get("hangup-cause", "NORMAL_CLEARING"),
        )
        if self.mode == "static":
            # Sync mode: the socket reader runs the application itself, then replies.
            self._dispatch(msg)
            self._reply(REPLY_OK)
            return
        self._reply(REPLY_OK)
        if msg.lock:
            self._queue.put(msg)
        else:
            self._nested.append(msg)
            self._poke.set()
            self._queue.put(None)  # wake an idle channel thread

    def _api(self, line: str) -> str:
        words = line.split()
        if len(words) == 4 and words[0] == "conference" and words[2] == "play":
            if words[1] not in self.model.conferences:
                return "-ERR Conference %s not found\n" % words[1]
            self.side.played.append((words[1], words[3]))
            return PLAY_REPLY % words[3]
        return self.model.api(line)

    # --- the channel thread ----------------------------------------------------------------------

    def _channel_thread(self) -> None:
        while not self.down:
            msg = self._nested.pop(0) if self._nested else self._queue.get()
            if msg is None:
                continue
            self._dispatch(msg)
        self._finish_hangup()

    def _dispatch(self, msg: _Message) -> None:
        if self.down:
            return
        if msg.command == "hangup":
            self.hung_up_by = self.hung_up_by or "confd"
            self._go_down(msg.cause)
            return
        if msg.command != "execute":
            return
        self._execute(msg)

    def _pause(self, seconds: float, until: Optional[Event] = None) -> None:
        """Time passing inside an application: a parse point where a message without
        event-lock runs nested (g1), and where a hang-up (or ``until``) ends the wait."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while not self.down and not (until is not None and until.is_set()):
            while self._nested and not self.down:
                self._dispatch(self._nested.pop(0))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._poke.clear()
            self._poke.wait(remaining)

    def _execute(self, msg: _Message) -> None:
        app, arg = msg.app, msg.arg
        self.apps.append((app, arg))
        self.vars["current_application_data"] = arg
        self.vars["current_application"] = app
        fields = [("Application", app)]
        if arg:
            fields.append(("Application-Data", arg))
        self._event("CHANNEL_EXECUTE", fields + [("Application-UUID", msg.uuid)])
        runner = getattr(self, "_app_" + app, None)
        response = RESPONSE_NONE
        if self.hang_up_at == app:
            self.hang_up_at = None
            self.hang_up()
        elif runner is None:
            log.info("simulated call %s: application %s not simulated", self.uuid, app)
        else:
            response = runner(arg) or RESPONSE_NONE
        self._event(
            "CHANNEL_EXECUTE_COMPLETE",
            fields + [("Application-Response", response), ("Application-UUID", msg.uuid)],
        )

    # --- applications ----------------------------------------------------------------------------

    def _app_answer(self, arg: str) -> str:
        if not self.answered:
            self.answered = True
            self.answered_at = time.time()
            self.vars["endpoint_disposition"] = "ANSWER"
            self._event("CHANNEL_ANSWER", [])
        return RESPONSE_NONE

    def _play(self, sound: str) -> None:
        self.heard.append(sound)
        self._pause(sound_seconds(sound) * self.scale)

    def _app_playback(self, arg: str) -> str:
        self._play(arg)
        return RESPONSE_PLAYED

    def _app_set(self, arg: str) -> str:
        name, sep, value = arg.partition("=")
        if sep and name:
            self.vars[name] = value
        return RESPONSE_NONE

    def _app_hangup(self, arg: str) -> str:
        self.hung_up_by = self.hung_up_by or "confd"
        self._go_down(arg or "NORMAL_CLEARING")
        return RESPONSE_NONE

    def _app_record(self, arg: str) -> str:
        parts = arg.split()
        limit = float(parts[1]) if len(parts) > 1 else 60.0
        self.recordings.append(parts[0] if parts else "")
        self._pause(min(limit, self.name_seconds) * self.scale)
        return RESPONSE_NONE

    def _app_play_and_get_digits(self, arg: str) -> str:
        f = arg.split(" ")
        if len(f) < 9:
            return RESPONSE_NONE
        min_d, max_d, tries, timeout_ms = int(f[0]), int(f[1]), int(f[2]), int(f[3])
        terminators, prompt, invalid, var, regex = f[4], f[5], f[6], f[7], f[8]
        digit_timeout_ms = int(f[9]) if len(f) > 9 else timeout_ms
        for _ in range(max(tries, 1)):
            self.vars.pop(var, None)  # switch_ivr_read clears it first
            self.vars.pop(var + "_invalid", None)
            digits, terminator, result = self._read(
                prompt, min_d, max_d, terminators, timeout_ms, digit_timeout_ms
            )
            if self.down:
                if digits:
                    self.vars[var] = digits  # a hang-up leaves the partial digits (d)
                return RESPONSE_NONE
            self.vars["read_result"] = result
            if terminator:
                self.vars["read_terminator_used"] = terminator
            if digits and len(digits) >= min_d:
                if re.fullmatch(regex, digits):
                    self.vars[var] = digits
                    self.vars["read_result"] = READ_SUCCESS
                    return RESPONSE_NONE
                self.vars[var + "_invalid"] = digits  # c2: read_result still "success"
            self._play(invalid)
        return RESPONSE_NONE

    def _read(self, prompt, min_d, max_d, terminators, timeout_ms, digit_timeout_ms):
        """Collect digits from the prompt's start (typing over the prompt is allowed)."""
        collected: List[str] = []
        self._collector = collected
        self._digit_event.clear()
        try:
            if self.answers:
                # The caller's answer for this prompt, typed as it starts (over the prompt).
                self._give_answer(self.answers.pop(0))
            self._play(prompt)
            first = True
            while not self.down:
                digits = "".join(collected)
                for t in terminators:
                    if t in digits:
                        return digits[: digits.index(t)], t, READ_SUCCESS
                if len(digits) >= max_d:
                    return digits[:max_d], "", READ_SUCCESS
                wait = (timeout_ms if first and not collected else digit_timeout_ms) / 1000.0
                self._digit_event.clear()
                if not self._digit_event.wait(max(wait * self.scale, self.min_wait)):
                    return digits, "", READ_TIMEOUT if not digits else READ_SUCCESS
                first = False
            return "".join(collected), "", READ_FAILURE
        finally:
            self._collector = None

    def _give_answer(self, answer: Answer) -> None:
        if answer is None:
            return
        if answer is HANGUP:
            self.hang_up()
        elif callable(answer):
            answer(self)
        elif isinstance(answer, str):
            self.type(answer)

    def _app_conference(self, arg: str) -> str:
        m = _CONFERENCE_ARG.match(arg)
        if m is None:
            return RESPONSE_NONE
        name, profile = m.group(1), m.group(2) or "default"
        flags = [f for f in (m.group(3) or "").split("|") if f]
        model = self.model
        conf = model.conferences.get(name)
        if conf is None:
            self.side.max_members.pop(name, None)
        # The B leg of a loopback call is an inbound channel: the lock is enforced
        # unless the channel says otherwise (e_locked).
        enforce = self.vars.get("conference_enforce_security", "true") != "false"
        if conf is not None and conf.locked and enforce:
            return RESPONSE_NONE
        limit = self.side.max_members.get(name, 0)
        enforce_max = self.side.enforce_max_members
        if conf is not None and limit and enforce_max and len(conf.members) >= limit:
            return RESPONSE_NONE
        if conf is None:
            try:
                limit = int(self.vars.get("conference_max_members", "0") or 0)
            except ValueError:
                limit = 0
        self._left_room.clear()
        self.side._in_rooms[self.uuid] = self
        member_id = model.join(
            name,
            caller_id_name=self.caller[0],
            caller_id_number=self.caller[1],
            moderator="moderator" in flags,
            muted="mute" in flags,
            deaf="deaf" in flags,
            endconf="endconf" in flags,
            channel_vars=dict(self.vars),
            uuid=self.uuid,
            profile=profile,
            direction="inbound",
            channel_name=self.channel_name,
            ignore_lock=True,
        )
        if member_id is None:
            self.side._in_rooms.pop(self.uuid, None)
            return RESPONSE_NONE
        if conf is None and limit > 0:
            self.side.max_members[name] = limit
        self.member_id, self.conference, self.flags = member_id, name, flags
        joined = model.conferences[name]
        self.vars.update(
            {
                "conference_name": name,
                "conference_member_id": str(member_id),
                "conference_moderator": "true" if "moderator" in flags else "false",
                "conference_ghost": "false",
                "conference_uuid": joined.uuid,
            }
        )
        try:
            while not self.down and not self._left_room.is_set():
                self._pause(3600, until=self._left_room)
        finally:
            if self.down and model.member(member_id) is not None:
                model.leave(member_id)
            self.side._in_rooms.pop(self.uuid, None)
        return RESPONSE_NONE

    def left_room(self) -> None:
        self._left_room.set()
        self._poke.set()

    # --- hang-up and close -----------------------------------------------------------------------

    def _go_down(self, cause: str) -> None:
        if self.down:
            return
        self.down = True
        self.hangup_cause = cause
        self._event("CHANNEL_HANGUP", [], hangup=True)
        self._poke.set()
        self._digit_event.set()
        self._queue.put(None)

    def _finish_hangup(self) -> None:
        """The channel thread's end after a hang-up: the report, then the linger notice (wait
        for exit) or the disconnect notice and a close."""
        self._event("CHANNEL_HANGUP_COMPLETE", [], hangup=True)
        if self.sock is None:
            return
        if self.linger:
            self._send(_notice("linger", self.uuid, self.channel_name, ""))
            self._exit.wait(self.linger_limit)
        else:
            self._send(_notice("disconnect", self.uuid, None, GOODBYE))
        self._close()

    def _closed_by_confd(self) -> None:
        if self.member_id is not None and not self.down and self.in_conference:
            # exit/close with the conference running: the caller stays in the room; when the
            # caller leaves, the dialplan continues after `socket` (the snippet hangs up).
            gevent.spawn(self._after_socket)
        elif not self.down:
            # The park loop ends and the dialplan hangs up.  (Real FreeSWITCH first lets the
            # running application finish; the simulation ends it at once.)
            self.hung_up_by = self.hung_up_by or "dialplan"
            self.down = True
            self.hangup_cause = self.hangup_cause or "NORMAL_CLEARING"
            self._poke.set()
            self._digit_event.set()
            self._queue.put(None)
        self._close()

    def _after_socket(self) -> None:
        self._left_room.wait()
        if not self.down:
            self.hung_up_by = self.hung_up_by or "dialplan"
            self.down = True
            self.hangup_cause = self.hangup_cause or "NORMAL_CLEARING"
            self._poke.set()
            self._queue.put(None)

    def _close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if not (self.member_id is not None and not self._left_room.is_set() and not self.down):
            self.done.set()
        else:
            gevent.spawn(self._done_when_left)

    def _done_when_left(self) -> None:
        self._left_room.wait()
        self.done.set()

    # --- frames ----------------------------------------------------------------------------------

    def _core(self, name: str) -> EventPairs:
        now = time.time()
        self._sequence += 1
        calling = CALLING.get(name, ("switch_channel.c", "switch_channel_event", 0))
        return self.model.core_pairs(name, calling, now) + [
            ("Event-Sequence", str(self._sequence)),
        ]

    def _profile(self, prefix: str) -> EventPairs:
        created = str(int(self.created * 1_000_000))
        answered = str(int(self.answered_at * 1_000_000)) if self.answered else "0"
        x = prefix
        chan = "Channel-Channel-" if prefix == "Channel-" else "Caller-Channel-"
        return [
            (x + "Direction", "inbound"),
            (x + "Logical-Direction", "inbound"),
            (x + "Dialplan", "xml"),
            (x + "Caller-ID-Name", self.caller[0]),
            (x + "Caller-ID-Number", self.caller[1]),
            (x + "Orig-Caller-ID-Name", self.caller[0]),
            (x + "Orig-Caller-ID-Number", self.caller[1]),
            (x + "Callee-ID-Name", "Outbound Call"),
            (x + "Callee-ID-Number", "default"),
            (x + "ANI", self.caller[1]),
            (x + "Destination-Number", self.destination),
            (x + "Unique-ID", self.uuid),
            (x + "Source", "mod_loopback"),
            (x + "Context", "default"),
            (x + "Channel-Name", self.channel_name),
            (x + "Profile-Index", "1"),
            (x + "Profile-Created-Time", created),
            (chan + "Created-Time", created),
            (chan + "Answered-Time", answered),
            (chan + "Progress-Time", "0"),
            (chan + "Progress-Media-Time", "0"),
            (chan + "Hangup-Time", "0"),
            (chan + "Transfer-Time", "0"),
            (chan + "Resurrect-Time", "0"),
            (chan + "Bridged-Time", "0"),
            (chan + "Last-Hold", "0"),
            (chan + "Hold-Accum", "0"),
            (x + "Screen-Bit", "true"),
            (x + "Privacy-Hide-Name", "false"),
            (x + "Privacy-Hide-Number", "false"),
        ]

    def _state(self, hangup: bool) -> EventPairs:
        answer = "hangup" if self.down else ("answered" if self.answered else "ringing")
        pairs: EventPairs = [
            ("Channel-State", "CS_EXECUTE"),
            ("Channel-Call-State", "ACTIVE" if self.answered else "RINGING"),
            ("Channel-State-Number", "10" if self.down else "4"),
            ("Channel-Name", self.channel_name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", "inbound"),
            ("Presence-Call-Direction", "inbound"),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", answer),
        ]
        if self.down:
            pairs.append(("Hangup-Cause", self.hangup_cause or "NORMAL_CLEARING"))
        pairs += [
            ("Channel-Read-Codec-Name", "L16"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "128000"),
            ("Channel-Write-Codec-Name", "L16"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "128000"),
        ]
        return pairs

    def _variables(self) -> EventPairs:
        return [("variable_" + k, v) for k, v in self.vars.items()]

    def _connect_reply(self) -> bytes:
        """One header block, no Content-Length (a_member_pin frame 0)."""
        pairs = self._core("CHANNEL_DATA")
        profile = self._profile("Caller-")
        pairs += [("Channel-" + k[len("Caller-") :], v) for k, v in profile]
        pairs += self._state(False) + profile + self._variables()
        pairs += [
            ("Content-Type", p.COMMAND_REPLY),
            ("Reply-Text", REPLY_CONNECT),
            ("Socket-Mode", "static" if self.mode == "static" else "async"),
            ("Control", "full"),
        ]
        return encode_header_block(pairs)

    def _event(self, name: str, extra: EventPairs, hangup: bool = False) -> None:
        if not self.events_on or self.sock is None:
            return
        pairs = self._core(name) + self._state(hangup) + self._profile("Caller-")
        if name != "DTMF":
            pairs += self._variables()
        self._send(encode_event(pairs + list(extra)))


def _notice(disposition: str, uuid: str, channel: Optional[str], body: str) -> bytes:
    lines = [
        "Content-Type: %s" % p.DISCONNECT_NOTICE,
        "Controlled-Session-UUID: %s" % uuid,
        "Content-Disposition: %s" % disposition,
    ]
    if channel is not None:
        lines += ["Channel-Name: %s" % channel, "Linger-Time: -1"]
    data = body.encode()
    lines.append("Content-Length: %d" % len(data))
    return ("\n".join(lines) + "\n\n").encode() + data


__all__ = [
    "HANGUP",
    "OutboundSide",
    "SimulatedCall",
    "encode_event",
    "encode_header_block",
    "fs_quote",
    "sound_seconds",
]
