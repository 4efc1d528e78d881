"""One caller's entry: the dialogue over FreeSWITCH's outbound connection for that call.

One greenlet per call runs ``CallSession.run``: it writes a command, then reads the socket
itself until that command's reply and its CHANNEL_EXECUTE_COMPLETE (paired by
``Application-UUID`` = the ``Event-UUID`` sent) have come, with a deadline on every wait.  There
is no reader greenlet and no queue: a call does one thing at a time, and a hang-up is simply
the next frame read (CHANNEL_HANGUP, a disconnect-notice or EOF), so nothing is left waiting.

The dialogue (entry.md "What happens to a call"): connect, myevents, linger, answer; account;
conference (variable, destination or prompt); PIN; admission against the live room plus the
callers confd is letting in at that moment; channel variables; the name recording; the
``conference`` application.  Once the live state shows the caller in the room (or the join
deadline passes with the application running) confd announces the name and sends ``exit``:
FreeSWITCH then clears the channel's CF_CONTROLLED flag, the running conference application
goes on, and when the caller leaves the room the dialplan continues after ``socket`` (the
shipped snippet hangs up).  So a joined caller holds no confd socket or greenlet, and a
restarted confd leaves the callers already in their rooms alone (mod_event_socket.c,
``listener_run``: closing the socket never hangs the channel up by itself).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Optional, Tuple

import gevent
from gevent import socket

from confd.conferences.commands import CommandBuilder
from confd.entry import constants as c
from confd.entry import messages as m
from confd.entry import rules
from confd.entry.directory import EMPTY_ROOM, ConferenceDoc, Directory, Room, RoomReader
from confd.esl import protocol as p

log = logging.getLogger(__name__)

RECV_BYTES = 65536
Clock = Callable[[], float]


class CallGone(Exception):
    """The caller hung up, or FreeSWITCH closed the connection."""


class StepTimeout(Exception):
    """A step passed its deadline: the connection is taken as stalled."""


class PeerError(Exception):
    """FreeSWITCH's side sent what it must not (garbage, an -ERR to a sendmsg, too much)."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = c.CONNECT_TIMEOUT
    command: float = c.COMMAND_TIMEOUT
    sound: float = c.SOUND_TIMEOUT
    join: float = c.JOIN_TIMEOUT
    hangup: float = c.HANGUP_TIMEOUT
    exit: float = c.EXIT_TIMEOUT
    poll: float = 0.05  # how often a joining call looks at the live state

    def prompt(self, digit_timeout: float) -> float:
        """A prompt: its sound, then up to MAX_DIGITS digits each within the digit timeout."""
        return self.sound + digit_timeout * (c.MAX_DIGITS + 2)


class Admissions:
    """Callers confd has admitted to a conference but the live state may not show yet.

    ``admit`` decides and reserves without yielding, so two greenlets can never both take the
    last place: the count is the room's call ids plus the reserved ones (a call in both counts
    once).  A reservation lasts until its session ends, by which time the live state either
    shows the caller or the caller is not in the room."""

    def __init__(self) -> None:
        self._by_conference: Dict[str, set] = {}

    def admit(self, conference_id: str, call_id: str, role: str, room: Room, limit: int) -> str:
        reserved = self._by_conference.get(conference_id, set())
        present = len((room.call_ids | reserved) - {call_id})
        decision = rules.admission(role, room.locked, present, limit)
        if decision == rules.ADMIT:
            self._by_conference.setdefault(conference_id, set()).add(call_id)
        return decision

    def release(self, conference_id: str, call_id: str) -> None:
        reserved = self._by_conference.get(conference_id)
        if reserved is not None:
            reserved.discard(call_id)
            if not reserved:
                del self._by_conference[conference_id]

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._by_conference.values())


@dataclass
class EntryContext:
    """What every session shares (built once by the service)."""

    settings: rules.EntrySettings
    directory: Directory
    rooms: RoomReader
    admissions: Admissions
    builder: CommandBuilder
    timeouts: Timeouts = Timeouts()
    clock: Clock = time.monotonic
    on_step: Optional[Callable[[float], None]] = None  # confd's own time between two steps


@dataclass
class CallResult:
    call_id: Optional[str] = None
    account: Optional[str] = None
    conference: Optional[str] = None
    role: Optional[str] = None
    outcome: str = c.OUTCOME_ERROR
    seconds: float = 0.0
    reason: str = ""
    confirmed: bool = False  # joined and seen in the live state


class Channel:
    """The call's socket: commands out, frames in, every wait bounded by an absolute deadline
    (``clock`` seconds)."""

    def __init__(self, sock: socket.socket, clock: Clock) -> None:
        self.sock = sock
        self.clock = clock
        self.parser = p.FrameParser()
        self.frames: Deque[p.Frame] = collections.deque()
        self.eof = False
        self.closed = False
        # When the last bytes came in: a frame taken from ``frames`` arrived then at the
        # latest (nothing is read while frames wait), the start of confd's own time per step.
        self.received_at = 0.0

    def send(self, data: bytes, timeout: float) -> None:
        if self.closed:
            raise CallGone("connection already closed")
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except socket.timeout:
            raise StepTimeout("send not taken within %.1fs" % timeout) from None
        except OSError as exc:
            raise CallGone("send failed: %s" % (exc.strerror or exc)) from None

    def read(self, deadline: float) -> p.Frame:
        while not self.frames:
            if self.eof or self.closed:
                raise CallGone("connection closed by FreeSWITCH")
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise StepTimeout("nothing from FreeSWITCH before the deadline")
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(RECV_BYTES)
            except socket.timeout:
                raise StepTimeout("nothing from FreeSWITCH before the deadline") from None
            except OSError as exc:
                raise CallGone("receive failed: %s" % (exc.strerror or exc)) from None
            if not data:
                self.eof = True
                continue
            self.received_at = self.clock()
            try:
                self.frames.extend(self.parser.feed(data))
            except p.ProtocolError as exc:
                raise PeerError("not ESL: %s" % exc) from None
            if self.parser.buffered > c.MAX_BUFFER:
                raise PeerError("over %d bytes without a complete frame" % c.MAX_BUFFER)
        return self.frames.popleft()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class CallSession:
    """One call, from ``connect`` to ``exit``.  ``run`` never raises."""

    def __init__(self, sock: socket.socket, ctx: EntryContext) -> None:
        self.ctx = ctx
        self.s = ctx.settings
        self.t = ctx.timeouts
        self.ch = Channel(sock, ctx.clock)
        self.result = CallResult()
        self.variables: Dict[str, str] = {}
        self.destination: Optional[str] = None
        self.socket_mode = c.SOCKET_MODE_ASYNC
        self._reserved: Optional[Tuple[str, str]] = None
        self._step_done: Optional[float] = None  # when the last step's completion was read
        self._gone = False

    # --- the dialogue ----------------------------------------------------------------------------

    def run(self) -> CallResult:
        started = self.ctx.clock()
        r = self.result
        try:
            self._answer()
            r.outcome = self._enter()
        except CallGone as exc:
            if r.outcome == c.OUTCOME_ERROR and not r.reason:
                r.outcome = c.OUTCOME_HANGUP
            r.reason = r.reason or str(exc)
            self._gone = True
        except (StepTimeout, PeerError, m.BadCommand) as exc:
            r.outcome, r.reason = c.OUTCOME_ERROR, str(exc)
        except rules.InvalidValue as exc:
            # A document or call value that must not reach FreeSWITCH: refuse, do not join.
            r.outcome, r.reason = c.OUTCOME_ERROR, str(exc)
            self._goodbye_quietly()
        except Exception as exc:  # a bug must end this call cleanly, never hang it
            log.exception("entry: call %s failed", r.call_id or "?")
            r.outcome, r.reason = c.OUTCOME_ERROR, "internal error: %r" % exc
        except gevent.GreenletExit:
            # confd is stopping: the socket closes without `exit`; the application running
            # on the call finishes, then the dialplan continues after `socket` (hangs up).
            if r.outcome != c.OUTCOME_JOINED:
                r.outcome = c.OUTCOME_ERROR
            r.reason = "confd stopping"
            self.ch.close()
        finally:
            if self._reserved is not None:
                self.ctx.admissions.release(*self._reserved)
                self._reserved = None
            self._exit()
            r.seconds = self.ctx.clock() - started
        return r

    def _answer(self) -> None:
        """The opening every call shares: connect, own its events, linger, answer."""
        self._connect()
        self._command(c.CMD_MYEVENTS)
        self._command(c.CMD_LINGER)
        self._execute(c.APP_ANSWER, None, self.t.command)

    def refuse_busy(self) -> CallResult:
        """A call over ``max_calls``: answered, told goodbye, hung up (outcome ``busy``)."""
        started = self.ctx.clock()
        r = self.result
        try:
            self._answer()
            self._refuse(c.OUTCOME_BUSY, self.s.sounds.goodbye, c.CAUSE_CONGESTION)
        except CallGone as exc:
            r.outcome, r.reason = c.OUTCOME_BUSY, str(exc)
        except (StepTimeout, PeerError, m.BadCommand, rules.InvalidValue) as exc:
            r.outcome, r.reason = c.OUTCOME_ERROR, str(exc)
        finally:
            self._exit()
            r.seconds = self.ctx.clock() - started
        return r

    def _enter(self) -> str:
        r = self.result
        account = rules.call_account(self.variables, self.s)
        r.account = account
        if account is None or not self.ctx.directory.account_exists(account):
            return self._refuse(c.OUTCOME_NO_ACCOUNT, self.s.sounds.goodbye, c.CAUSE_CALL_REJECTED)
        found = self._conference(account)
        if found is None:
            return self._refuse(c.OUTCOME_BAD_NUMBER, self.s.sounds.goodbye, c.CAUSE_CALL_REJECTED)
        doc, role_hint = found
        r.conference = doc.id
        role = self._pin(doc.body, role_hint)
        if role is None:
            return self._refuse(c.OUTCOME_BAD_PIN, self.s.sounds.goodbye, c.CAUSE_CALL_REJECTED)
        r.role = role
        plan = rules.join_plan(doc.id, account, doc.body, role, r.call_id or "", self.s)
        room = self.ctx.rooms(plan.conference_id) or EMPTY_ROOM
        decision = self.ctx.admissions.admit(
            plan.conference_id, r.call_id or "", role, room, plan.limit
        )
        if decision != rules.ADMIT:
            sound = rules.refusal_sound(decision, doc.body, self.s.sounds)
            return self._refuse(decision, sound, c.CAUSE_NORMAL_CLEARING)
        self._reserved = (plan.conference_id, r.call_id or "")
        for name, value in plan.variables:
            self._execute(c.APP_SET, rules.set_arg(name, value), self.t.command)
        if plan.name_file is not None:
            self._execute(c.APP_PLAYBACK, self.s.sounds.record_name, self.t.sound)
            self._execute(c.APP_RECORD, rules.record_arg(plan.name_file), self.t.sound)
        return self._join(plan, doc)

    def _conference(self, account: str) -> Optional[Tuple[ConferenceDoc, Optional[str]]]:
        """The document and the number's role (None: decided by the PIN), or None when the
        caller ran out of tries."""
        directory = self.ctx.directory
        target = rules.call_target(self.variables, self.destination)
        number: Optional[str] = None
        if target.conference_id is not None:
            doc = directory.conference(account, target.conference_id)
            if doc is not None:
                return doc, None
            self._play(self.s.sounds.bad_number)
        elif target.number is not None:
            number = target.number
        tries = self.s.number_tries
        while True:
            if number is None:
                if tries == 0:
                    return None
                tries -= 1
                number = self._prompt(self.s.sounds.enter_number, self.s.sounds.bad_number, True)
                if number is None:
                    continue  # nothing typed: play_and_get_digits played bad_number itself
            doc = directory.by_number(account, number)
            if doc is not None:
                found, role = rules.role_for_number(doc.body, number)
                if found:
                    return doc, role
            number = None
            if tries == 0:
                return None
            self._play(self.s.sounds.bad_number)

    def _pin(self, body, role_hint: Optional[str]) -> Optional[str]:
        if not rules.pin_needed(body, role_hint):
            return rules.role_without_pin(role_hint)
        for attempt in range(1, self.s.pin_tries + 1):
            digits = self._prompt(self.s.sounds.enter_pin, self.s.sounds.bad_pin, False)
            role = rules.judge_pin(body, role_hint, digits)
            if role is not None:
                return role
            if attempt < self.s.pin_tries and digits:
                self._play(self.s.sounds.bad_pin)  # an empty try already heard it
        return None

    def _join(self, plan: rules.JoinPlan, doc: ConferenceDoc) -> str:
        r = self.result
        call_id = r.call_id or ""
        event_uuid = m.new_event_uuid()
        self._send(m.execute(c.APP_CONFERENCE, plan.conference_arg, event_uuid))
        deadline = self.ctx.clock() + self.t.join
        running = False
        while True:
            room = self.ctx.rooms(plan.conference_id)
            if room is not None and call_id in room.call_ids:
                r.confirmed = True
                break
            now = self.ctx.clock()
            if now >= deadline:
                # Nothing refused the join and the application runs (or, in sync mode, the
                # socket is blocked by it): the caller is in, the live state lags.
                log.warning(
                    "entry: call %s: not seen in conference %s within %.1fs (application %s)",
                    call_id,
                    plan.conference_id,
                    self.t.join,
                    "running" if running else "not reported",
                )
                break
            try:
                frame = self.ch.read(min(deadline, now + self.t.poll))
            except StepTimeout:
                continue
            kind = frame.content_type
            if kind == p.DISCONNECT_NOTICE:
                raise CallGone("disconnect-notice during the join")
            if kind == p.COMMAND_REPLY and frame.reply_text.startswith(c.REPLY_ERR):
                raise PeerError("conference refused: %s" % frame.reply_text)
            if kind not in p.EVENT_TYPES:
                continue
            ev = p.parse_event(frame)
            if ev.name in c.HANGUP_EVENTS:
                raise CallGone("caller hung up during the join")
            if ev.get(c.H_APPLICATION_UUID) != event_uuid:
                continue
            if ev.name == c.EV_EXECUTE:
                running = True
            elif ev.name == c.EV_EXECUTE_COMPLETE:
                if ev.get(c.VAR_PREFIX + c.VAR_MEMBER_ID):
                    # In and already out again (sync mode, or a very short stay).
                    r.confirmed = True
                    if ev.get(c.H_ANSWER_STATE) == c.ANSWER_STATE_HANGUP:
                        self._gone = True
                    return c.OUTCOME_JOINED
                if ev.get(c.H_ANSWER_STATE) == c.ANSWER_STATE_HANGUP:
                    raise CallGone("caller hung up during the join")
                # The application returned without an add-member: refused by FreeSWITCH, the
                # room locked (or filled) since the check; the call is still up (e_locked).
                self._release()
                room = self.ctx.rooms(plan.conference_id) or EMPTY_ROOM
                full = plan.limit > 0 and len(room.call_ids) >= plan.limit and not room.locked
                outcome = c.OUTCOME_FULL if full else c.OUTCOME_LOCKED
                sound = rules.refusal_sound(outcome, doc.body, self.s.sounds)
                return self._refuse(outcome, sound, c.CAUSE_NORMAL_CLEARING)
        r.outcome = c.OUTCOME_JOINED
        if plan.name_file is not None:
            self._announce(plan)
        return c.OUTCOME_JOINED

    def _announce(self, plan: rules.JoinPlan) -> None:
        """The recorded name, played to the room the caller just joined."""
        line = rules.announce_api(plan.conference_id, plan.name_file or "", self.ctx.builder)
        self._send(m.api(line))
        deadline = self.ctx.clock() + self.t.command
        try:
            while True:
                frame = self.ch.read(deadline)
                if frame.content_type == p.API_RESPONSE:
                    if frame.reply_text.startswith(c.REPLY_ERR):
                        log.warning("entry: name announcement refused: %s", frame.reply_text)
                    return
                if frame.content_type == p.DISCONNECT_NOTICE:
                    return
        except StepTimeout:
            # In sync mode the socket is not read while the conference runs.
            log.warning("entry: call %s: no answer to the name announcement", self.result.call_id)

    # --- steps -----------------------------------------------------------------------------------

    def _connect(self) -> None:
        """FreeSWITCH sends nothing until it hears ``connect``; its reply is the call."""
        self._send(m.command(c.CMD_CONNECT))
        frame = self.ch.read(self.ctx.clock() + self.t.connect)
        headers = m.connect_headers(frame)
        if not m.is_connect_reply(headers):
            raise PeerError("the first frame is not a connect reply: %r" % frame.content_type)
        self.result.call_id = rules.check_uuid(headers[c.H_UNIQUE_ID])
        self.variables = rules.channel_variables(headers)
        self.destination = headers.get(c.H_DESTINATION)
        self.socket_mode = headers.get(c.H_SOCKET_MODE, c.SOCKET_MODE_ASYNC)

    def _command(self, verb: str) -> str:
        self._send(m.command(verb))
        deadline = self.ctx.clock() + self.t.command
        while True:
            frame = self.ch.read(deadline)
            if frame.content_type == p.COMMAND_REPLY:
                text = frame.reply_text
                if not text.startswith(c.REPLY_OK):
                    raise PeerError("%s refused: %s" % (verb, text))
                return text
            self._check_gone(frame)

    def _send(self, data: bytes) -> None:
        if self._step_done is not None and self.ctx.on_step is not None:
            self.ctx.on_step(self.ctx.clock() - self._step_done)
        self._step_done = None
        self.ch.send(data, self.t.command)

    def _execute(self, app: str, arg: Optional[str], timeout: float) -> p.Event:
        """Run ``app`` and wait for its reply and its CHANNEL_EXECUTE_COMPLETE (in sync mode
        the reply comes after the application: f_sync_member)."""
        event_uuid = m.new_event_uuid()
        self._send(m.execute(app, arg, event_uuid))
        deadline = self.ctx.clock() + timeout
        replied = False
        complete: Optional[p.Event] = None
        while not (replied and complete is not None):
            frame = self.ch.read(deadline)
            kind = frame.content_type
            if kind == p.COMMAND_REPLY:
                if frame.reply_text.startswith(c.REPLY_ERR):
                    raise PeerError("%s refused: %s" % (app, frame.reply_text))
                replied = True
                continue
            ev = self._check_gone(frame)
            if ev is None or ev.name != c.EV_EXECUTE_COMPLETE:
                continue
            # Completions of anything else (an application the dialplan ran, a nested one)
            # carry other Application-UUIDs (g1_pipelined_nolock): only ours ends the step.
            if ev.get(c.H_APPLICATION_UUID) == event_uuid:
                if ev.get(c.H_ANSWER_STATE) == c.ANSWER_STATE_HANGUP:
                    raise CallGone("caller hung up during %s" % app)
                complete = ev
        # confd's own time runs from the completion's arrival, its parsing included.
        self._step_done = self.ch.received_at
        return complete

    def _check_gone(self, frame: p.Frame) -> Optional[p.Event]:
        """The frame's event, after raising CallGone for a hang-up or a disconnect-notice."""
        kind = frame.content_type
        if kind == p.DISCONNECT_NOTICE:
            raise CallGone("disconnect-notice")
        if kind not in p.EVENT_TYPES:
            return None
        ev = p.parse_event(frame)
        if ev.name in c.HANGUP_EVENTS:
            raise CallGone("caller hung up")
        return ev

    def _play(self, sound: str) -> None:
        self._execute(c.APP_PLAYBACK, rules.check_sound(sound), self.t.sound)

    def _prompt(self, prompt: str, invalid: str, number: bool) -> Optional[str]:
        """One try of play_and_get_digits: the digits typed, or None."""
        var = c.VAR_NUMBER_DIGITS if number else c.VAR_PIN_DIGITS
        arg = rules.read_digits_arg(prompt, invalid, var, self.s.digit_timeout)
        ev = self._execute(c.APP_READ_DIGITS, arg, self.t.prompt(self.s.digit_timeout))
        digits = ev.get(c.VAR_PREFIX + var)
        try:
            return rules.check_digits(digits) if digits else None
        except rules.InvalidValue:
            return None

    def _refuse(self, outcome: str, sound: str, cause: str) -> str:
        """The caller hears ``sound`` and is hung up.  The outcome stands even when the caller
        hangs up first."""
        self.result.outcome = outcome
        try:
            self._play(sound)
            self._hangup(cause)
        except CallGone:
            self._gone = True
        except StepTimeout as exc:
            self.result.reason = "refusal not confirmed: %s" % exc
        return outcome

    def _hangup(self, cause: str) -> None:
        self._send(m.hangup(cause))
        deadline = self.ctx.clock() + self.t.hangup
        while True:
            self._check_gone(self.ch.read(deadline))

    def _goodbye_quietly(self) -> None:
        """Best effort after an error: goodbye and hang up, whatever happens."""
        if self._gone or self.ch.closed or self.result.call_id is None:
            return
        try:
            self._play(self.s.sounds.goodbye)
            self._hangup(c.CAUSE_NORMAL_CLEARING)
        except (CallGone, StepTimeout, PeerError, m.BadCommand, rules.InvalidValue):
            pass

    def _release(self) -> None:
        if self._reserved is not None:
            self.ctx.admissions.release(*self._reserved)
            self._reserved = None

    def _exit(self) -> None:
        """``exit`` (the call stays in its conference, or is already gone), then close."""
        ch = self.ch
        try:
            if not ch.closed and not ch.eof and self.result.call_id is not None:
                ch.send(m.command(c.CMD_EXIT), self.t.exit)
                deadline = self.ctx.clock() + self.t.exit
                while True:
                    frame = ch.read(deadline)
                    if frame.content_type == p.DISCONNECT_NOTICE and (
                        frame.headers.get(c.H_CONTENT_DISPOSITION) != c.DISPOSITION_LINGER
                    ):
                        break
        except (CallGone, StepTimeout, PeerError, gevent.GreenletExit):
            pass
        finally:
            ch.close()


def log_line(result: CallResult) -> str:
    r = result
    text = rules.summary(
        (
            ("call", r.call_id),
            ("account", r.account),
            ("conference", r.conference),
            ("role", r.role),
            ("outcome", r.outcome),
            ("seconds", rules.entry_seconds_text(r.seconds)),
        )
    )
    if r.outcome == c.OUTCOME_JOINED and not r.confirmed:
        text += " unconfirmed=true"
    if r.reason and r.outcome in (c.OUTCOME_ERROR, c.OUTCOME_HANGUP):
        text += " reason=%r" % r.reason[:200]
    return text
