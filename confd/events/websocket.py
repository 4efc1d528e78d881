"""``GET /v2/websocket``: event subscriptions over a websocket, as WSGI middleware.

The middleware answers ``/v2/websocket`` itself and hands every other request to the API's
WSGI app.  The opening handshake goes through the WSGI server like any response (status 101
from ``start_response``); after it the connection's socket carries websocket frames, encoded
and decoded by wsproto (sans-I/O, maintained by python-hyper) and read and written here with
gevent sockets.

Per connection:
- the *reader* (the WSGI request's greenlet) decodes frames and answers subscribe /
  unsubscribe / ping messages (token checks hit the database here, never on the intake path);
- an ``Outbox`` (``confd.events.fanout``) holds the frames waiting to be written, replies and
  events alike, in order; the fan-out's dispatcher and the reader only put frames in it, and
  its writer greenlet, the one that writes to the socket, writes them;
- the *checker* greenlet closes the connection when a subscription's token expires, when it
  has had no subscription for ``subscribe_deadline`` seconds (an idle socket holds nothing),
  and pings a client that has sent nothing for ``ping_interval`` seconds, closing it when it
  stays silent as long again (a vanished client holds nothing forever);
- revoked tokens (``confd accounts rotate-key``, from any process) are found by one
  ``TokenWatch`` for every connection, in one query every few seconds.

Close codes: 1000 normal; 1001 confd stopping; 1008 policy (the auth token expired or was
revoked, or no subscription within the deadline); 1009 a message over 64 KiB; 1011 no answer
to a ping; 1013 try again later (the client did not keep up with its events); 1002/1007
protocol errors found by wsproto.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import gevent
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import generate_accept_token

from confd import strict_json
from confd.events import shape, tokenwatch
from confd.events.fanout import (
    DROP_BEHIND,
    DROP_TOO_SLOW,
    FLUSH_INTERVAL,
    Fanout,
    Outbox,
    Route,
    socket_error_text,
)
from confd.events.hub import EventHub
from confd.events.ownership import OwnershipResolver
from confd.http import responses
from confd.http.server import UPGRADE_KEY, ApiHandler
from confd.store.errors import DatabaseUnavailable, Forbidden, InvalidCredentials, NotFound

log = logging.getLogger(__name__)

WEBSOCKET_PATH = "/v2/websocket"
WEBSOCKET_VERSION = "13"
SOCKET_ENVIRON_KEY = "confd.websocket.socket"
UPGRADE_RETRY_AFTER = 10  # seconds, the Retry-After of an upgrade refused at the bound

MAX_MESSAGE_BYTES = 64 * 1024
MAX_BINDINGS = 100  # per connection: each one is matched on the intake path
READ_CHUNK = 16384  # per read; then the reader pauses (see _read_loop)
READ_PAUSE = 0.001
MAX_CLOSE_REASON = 120  # bytes of a close frame's reason (its payload is at most 125)
CLOSE_WAIT = 2.0  # after our close frame, how long the client has to answer it
TOKEN_TICK = 1.0  # the checker's longest sleep between deadline checks
SUBSCRIBE_DEADLINE = 10.0  # default of events.websocket_subscribe_s
PING_INTERVAL = 30.0  # default of events.websocket_ping_s
PING_PAYLOAD = b"confd"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
REASON_TOKEN_EXPIRED = "auth token expired"
REASON_TOKEN_REVOKED = "auth token revoked"
REASON_NO_SUBSCRIPTION = "no subscription"
CLOSE_TOO_BIG = 1009
CLOSE_NO_PONG = 1011
CLOSE_TRY_AGAIN = 1013

# Message actions and reply words (events.md).
ACTION_SUBSCRIBE = "subscribe"
ACTION_UNSUBSCRIBE = "unsubscribe"
ACTION_PING = "ping"
ACTION_REPLY = "reply"
ACTION_EVENT = "event"
ACTION_ERROR = "error"
STATUS_SUCCESS = "success"
STATUS_ERROR = "error"


class WebsocketHandler(ApiHandler):
    """The API server's handler (``confd.http.server``: deadlines, bounds, envelopes), also
    putting the connection's socket in the environ (the websocket writes frames on it after
    the handshake)."""

    def get_environ(self) -> Dict[str, Any]:
        env = super().get_environ()
        env[SOCKET_ENVIRON_KEY] = self.socket
        return env


# --- authorisation -------------------------------------------------------------------------


class Refused(Exception):
    """A message that gets an error reply; ``str()`` is the error text."""


@dataclass
class Subscription:
    binding: shape.Binding
    account_id: str
    sees_all: bool  # the subscribed account is an admin account: every conference is its own
    token: str
    expires_at: Optional[float]  # Unix time, when known (revocations: the token watch)


class LocalBindings:
    """Where a subscription's events come from: one process, its own hub; nothing to bind.
    (A cluster binds its events queue: ``confd.cluster.events.BusBindings``.)"""

    def acquire(self, patterns: Iterable[str]) -> None:
        """Returns once events matching ``patterns`` reach the fan-out (raises to refuse)."""

    def release(self, patterns: Iterable[str]) -> None:
        """No subscription of the connection uses ``patterns`` any more (never blocks)."""


class Authorizer:
    """Tokens and accounts for subscriptions (database calls: reader greenlets and the token
    watch only, never the intake path)."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def authorize(self, token: Any, account_id: Any) -> Tuple[bool, Optional[float]]:
        """``(sees_all, token expiry)`` for a subscription of ``account_id`` with ``token``:
        the store's one "may this token act for that account" (``AccountService.scope``), as
        HTTP account paths use it."""
        if not isinstance(account_id, str) or not account_id:
            raise Refused("data.account_id is required")
        try:
            _, account = self._store.accounts.scope(token, account_id)
        except InvalidCredentials:
            raise Refused("invalid credentials") from None
        except Forbidden:
            raise Refused(
                "forbidden: the token does not belong to account %s" % account_id[:64]
            ) from None
        except NotFound:
            raise Refused("unknown account %s" % account_id[:64]) from None
        except DatabaseUnavailable:
            raise Refused("database unavailable, try again") from None
        # An admin account's subscription for itself sees every conference; for another
        # account, that account's (or every one, when it is an admin account too).
        return bool(account.get("admin")), self.expiry(token)

    def valid_tokens(self, tokens: Iterable[str]) -> Optional[set]:
        """Which of ``tokens`` are still valid, in one query; None when the database cannot
        say (then nothing is closed: they are checked again at the next tick)."""
        try:
            return self._store.accounts.valid_tokens(tokens)
        except Exception as exc:  # noqa: BLE001 - database trouble of any kind
            log.warning("websocket: cannot re-check %d token(s): %s", len(tokens), exc)
            return None

    def expiry(self, token: str) -> Optional[float]:
        """When the token expires (Unix time), or None when the store cannot say."""
        try:
            return self._store.accounts.token_expiry(token)
        except Exception as exc:  # noqa: BLE001 - then the token watch decides
            log.debug("websocket: token expiry unknown: %s", exc)
            return None


# --- frames --------------------------------------------------------------------------------


def reply(request_id: Any, data: Any) -> str:
    return json.dumps(
        {"action": ACTION_REPLY, "request_id": request_id, "status": STATUS_SUCCESS, "data": data}
    )


def error_reply(request_id: Any, errors: List[str]) -> str:
    return json.dumps(
        {
            "action": ACTION_REPLY,
            "request_id": request_id,
            "status": STATUS_ERROR,
            "data": {"errors": errors},
        }
    )


def notice(reason: str, bindings: Iterable[str] = ()) -> str:
    """Told before confd closes the socket or ends subscriptions on its own."""
    return json.dumps(
        {
            "action": ACTION_ERROR,
            "status": STATUS_ERROR,
            "data": {"errors": [reason], "bindings": sorted(bindings)},
        }
    )


# --- one connection ------------------------------------------------------------------------


class _Closed(Exception):
    pass


class WebsocketSession:
    def __init__(
        self,
        sock: Any,
        rfile: Any,
        *,
        fanout: Fanout,
        authorizer: Authorizer,
        queue_bound: int,
        metrics: Any = None,
        name: str = "",
        clock: Callable[[], float] = time.time,
        max_message: int = MAX_MESSAGE_BYTES,
        ping_interval: float = PING_INTERVAL,
        subscribe_deadline: float = SUBSCRIBE_DEADLINE,
        is_conference_id: Callable[[str], bool] = lambda name: True,
        bindings: Any = None,
    ) -> None:
        self.sock = sock
        self.bindings = bindings if bindings is not None else LocalBindings()
        self._acquired: Set[str] = set()  # binding texts held with ``bindings``
        self.rfile = rfile
        self.fanout = fanout
        self.auth = authorizer
        self.metrics = metrics
        self.name = name
        self.clock = clock
        self.max_message = max_message
        self.ping_interval = ping_interval
        self.subscribe_deadline = subscribe_deadline
        self.is_conference_id = is_conference_id
        self.heard = time.monotonic()  # when the client last sent anything
        self.unsubscribed_since: Optional[float] = time.monotonic()  # None while subscribed
        self._pinged = False  # a ping is out since the client was last heard
        self.ws = Connection(ConnectionType.SERVER)
        self.subscriptions: Dict[Tuple[str, str], Subscription] = {}
        self._routes: List[Tuple[Optional[str], Route]] = []
        self.outbox = Outbox(sock, queue_bound, name, on_error=self._abort)
        self._closing = False
        self._dead = False
        self._checker: Optional[gevent.Greenlet] = None
        self.close_code: Optional[int] = None
        self.ended: Optional[str] = None  # why the connection ended: the first cause seen

    # --- what the fan-out asks (``confd.events.fanout.Member``) --------------------------------

    def routes(self) -> List[Tuple[Optional[str], Route]]:
        return self._routes

    def overflowed(self, reason: str) -> None:
        gevent.spawn(self._dropped, reason)

    def _subscriptions_changed(self) -> None:
        self._routes = [
            (
                sub.binding.conference_id,
                Route(sub.binding.text, sub.binding.call_id, sub.account_id, sub.sees_all),
            )
            for sub in self.subscriptions.values()
        ]
        gone = self._acquired - {text for _, text in self.subscriptions}
        if gone:
            self._acquired -= gone
            self.bindings.release(gone)
        if self.subscriptions:
            self.unsubscribed_since = None
        elif self.unsubscribed_since is None:
            self.unsubscribed_since = time.monotonic()
        self.fanout.changed()

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        self.fanout.join(self)
        self._checker = gevent.spawn(self._check_loop)
        self._checker.name = "ws-checker-%s" % self.name
        try:
            self._read_loop()
        except OSError as exc:
            self._end("read failed: %s" % socket_error_text(exc))
        except (ValueError, _Closed) as exc:
            self._end("read ended: %s" % (type(exc).__name__))
        finally:
            self._end("client disconnected")
            self._finish()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason

    def stop(self) -> None:
        """confd is stopping."""
        self.close(CLOSE_GOING_AWAY, "confd stopping")

    def _finish(self) -> None:
        self.fanout.leave(self)
        held, self._acquired = self._acquired, set()
        if held:
            self.bindings.release(held)
        self._dead = True
        self.outbox.stop()
        if self._checker is not None and gevent.getcurrent() is not self._checker:
            self._checker.kill(block=False)
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _abort(self, reason: str = "closing handshake not answered in time") -> None:
        """Close the TCP connection at once (the reader then ends)."""
        self._end(reason)
        self._dead = True
        try:
            self.sock.shutdown(2)
        except OSError:
            pass

    # --- writing -------------------------------------------------------------------------------

    def _write(self, event: Any, last: bool = False) -> None:
        """A wsproto event (message, close), encoded by this connection's wsproto state and
        written after the frames already waiting; never blocks."""
        if self._dead or self.outbox.failed:
            raise _Closed()
        data = self.ws.send(event)
        if last:
            self.outbox.seal(data)
        else:
            self.outbox.put(data)
        if not self._closing and self.outbox.too_slow():
            # A client that sends but never reads our answers.
            self.fanout.drop(self, DROP_TOO_SLOW)
            raise _Closed()
        self.outbox.flush()

    def send_text(self, text: str) -> None:
        if self._closing:
            raise _Closed()
        self._write(TextMessage(data=text))

    def close(self, code: int, reason: str, notice_text: Optional[str] = None) -> None:
        """Queue ``notice_text`` (if any) and a close frame; once the close frame is written
        the client has CLOSE_WAIT seconds to answer before the socket is shut."""
        if self._closing or self._dead:
            return
        self._closing = True
        self.close_code = code
        self._end("closed by confd: %d %s" % (code, reason))
        self.fanout.leave(self)
        try:
            if notice_text is not None:
                self._write(TextMessage(data=notice_text))
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self._write(CloseConnection(code=code, reason=reason), last=True)
        except Exception as exc:  # noqa: BLE001 - closing anyway
            log.debug("websocket %s: close: %r", self.name, exc)
        finally:
            if self.metrics is not None:
                self.metrics.websocket_closed(code)
            gevent.spawn(self._shut_after_close).name = "ws-close-%s" % self.name

    def _shut_after_close(self) -> None:
        """The socket is shut CLOSE_WAIT seconds after our close frame was written (a client
        reading a backlog still gets the notice and the close frame), or once the writer
        gave up on a client that took nothing for its write timeout."""
        self.outbox.wait_drained(self.outbox.write_timeout)
        gevent.sleep(CLOSE_WAIT)
        self._abort()

    # --- reading -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        parts: List[str] = []
        size = 0
        while not self._dead:
            data = self.rfile.read1(READ_CHUNK)
            if not data:
                return
            self.heard = time.monotonic()
            self._pinged = False
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    self._closed_by_client(event)
                    return
                if isinstance(event, Ping):
                    if self.ws.state != ConnectionState.OPEN:
                        # It crossed our close frame: after a close frame nothing more is
                        # sent (wsproto refuses to), and the client's close answer follows.
                        continue
                    try:
                        self._write(event.response())
                    except _Closed:
                        return
                    continue
                if isinstance(event, Pong):
                    continue  # an answer to our ping: being heard was the point
                if not isinstance(event, (TextMessage, BytesMessage)) or self._closing:
                    continue
                chunk = event.data
                if isinstance(chunk, (bytes, bytearray)):
                    chunk = bytes(chunk).decode("utf-8", "replace")
                size += len(chunk.encode("utf-8")) if not chunk.isascii() else len(chunk)
                if size > self.max_message:
                    self.close(CLOSE_TOO_BIG, "message over %d bytes" % self.max_message)
                    parts, size = [], 0
                    continue
                parts.append(chunk)
                if event.message_finished:
                    text, parts, size = "".join(parts), [], 0
                    self._message(text)
            # read1() does not yield while data is waiting, and sleep(0) did not let the loop
            # poll sockets either: a client sending without pause kept intake, the fan-out and
            # every request waiting for seconds (measured).  A short timed pause lets the loop
            # turn and still reads a flooding client at READ_CHUNK per pause.
            gevent.sleep(READ_PAUSE)

    def _closed_by_client(self, event: CloseConnection) -> None:
        """The client's close frame, or frames wsproto could not parse (then ``event`` is the
        close it proposes: 1002 protocol error, 1007 invalid UTF-8, 1009 too big)."""
        state = self.ws.state
        if state == ConnectionState.REMOTE_CLOSING:
            # The client closes: answer with the same code, then we are done.
            self._end("closed by the client: %d" % event.code)
            answer = event.response()
        elif state == ConnectionState.OPEN:
            # A protocol error: the client is told which before the socket is closed.
            reason = (event.reason or "").encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
            self._end("protocol error: %d %s" % (event.code, reason))
            log.info("websocket %s: protocol error: %d %s", self.name, event.code, reason)
            self.close_code = event.code
            if self.metrics is not None:
                self.metrics.websocket_closed(event.code)
            answer = CloseConnection(code=event.code, reason=reason)
        else:
            # The client answered our close (or broke the stream while we were closing).
            self._end("closed by confd, answered: %d" % event.code)
            return
        try:
            self._write(answer, last=True)
            self.outbox.wait_drained(CLOSE_WAIT)
        except _Closed:
            pass

    def _message(self, text: str) -> None:
        request_id = None
        try:
            try:
                msg = strict_json.loads(text)
            except strict_json.JsonRefused as exc:
                # Standard JSON only, as HTTP bodies: a NaN taken in would be echoed back in
                # request_id as JSON no browser can parse.
                raise Refused("message is not valid JSON: %s" % exc) from None
            if not isinstance(msg, dict):
                raise Refused("message must be a JSON object")
            request_id = msg.get("request_id")
            action = msg.get("action")
            if action == ACTION_PING:
                answer = reply(request_id, {"response": "pong"})
            elif action == ACTION_SUBSCRIBE:
                answer = reply(request_id, self._subscribe(msg))
            elif action == ACTION_UNSUBSCRIBE:
                answer = reply(request_id, self._unsubscribe(msg))
            else:
                raise Refused(
                    "unknown action %s: expected subscribe, unsubscribe or ping"
                    % json.dumps(action)[:64]
                )
        except (Refused, shape.BindingError) as exc:
            answer = error_reply(request_id, [str(exc)])
        except Exception:  # noqa: BLE001 - one message's bug must not drop the connection
            log.exception("websocket %s: a message failed", self.name)
            answer = error_reply(request_id, ["internal error"])
        try:
            self.send_text(answer)
        except _Closed:
            pass

    def _data(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        data = msg.get("data")
        if not isinstance(data, dict):
            raise Refused("data must be an object")
        return data

    def _subscribe(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        data = self._data(msg)
        bindings = shape.parse_bindings(data, self.is_conference_id)
        account_id = data.get("account_id")
        sees_all, expires = self.auth.authorize(msg.get("auth_token"), account_id)
        new = {(account_id, b.text) for b in bindings} - set(self.subscriptions)
        if len(self.subscriptions) + len(new) > MAX_BINDINGS:
            raise Refused("too many bindings on one connection (at most %d)" % MAX_BINDINGS)
        # The reply goes out once the events can arrive (cluster.md: none after it is missed).
        wanted = {b.text for b in bindings} - self._acquired
        if wanted:
            try:
                self.bindings.acquire(sorted(wanted))
            except Exception as exc:  # noqa: BLE001 - told to the client, not a crash
                raise Refused("cannot subscribe now, try again: %s" % exc) from None
            self._acquired |= wanted
        for b in bindings:
            self.subscriptions[(account_id, b.text)] = Subscription(
                b, account_id, sees_all, msg["auth_token"], expires
            )
        self._subscriptions_changed()
        return {"subscribed": self._bindings()}

    def _unsubscribe(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        data = self._data(msg)
        bindings = shape.parse_bindings(data, self.is_conference_id)
        account_id = data.get("account_id")
        self.auth.authorize(msg.get("auth_token"), account_id)
        removed = []
        for b in bindings:
            if self.subscriptions.pop((account_id, b.text), None) is not None:
                removed.append(b.text)
        self._subscriptions_changed()
        return {"unsubscribed": removed, "subscribed": self._bindings()}

    def _bindings(self) -> List[str]:
        return sorted({b for _, b in self.subscriptions})

    # --- tokens and deadlines ------------------------------------------------------------------

    def tokens(self) -> Set[str]:
        """The auth tokens its subscriptions rely on (what the token watch re-checks)."""
        return {sub.token for sub in self.subscriptions.values()}

    def revoked(self, tokens: Set[str]) -> None:
        """The token watch found ``tokens`` revoked: their subscriptions end, and the
        connection is closed 1008 after a notice naming them."""
        self._check_expiry()  # an expired token is not valid either: say which it was
        self._end_subscriptions(lambda sub: sub.token in tokens, REASON_TOKEN_REVOKED)

    def _check_expiry(self) -> None:
        now = self.clock()
        self._end_subscriptions(
            lambda sub: sub.expires_at is not None and sub.expires_at <= now,
            REASON_TOKEN_EXPIRED,
        )

    def _end_subscriptions(self, which: Callable[[Subscription], bool], reason: str) -> None:
        ended = [key for key, sub in self.subscriptions.items() if which(sub)]
        if not ended or self._closing or self._dead:
            return
        for key in ended:
            del self.subscriptions[key]
        self._subscriptions_changed()
        log.info("websocket %s: %s, closing", self.name, reason)
        self.close(CLOSE_POLICY, reason, notice(reason, {b for _, b in ended}))

    def _next_expiry(self) -> Optional[float]:
        expiries = [s.expires_at for s in self.subscriptions.values() if s.expires_at is not None]
        return min(expiries) if expiries else None

    def _check_subscribed(self) -> None:
        """A connection that has had no subscription for ``subscribe_deadline`` seconds (since
        it opened, or since its last one ended) is closed, answering pings or not: an idle
        socket must not hold one of the connections confd serves at once."""
        since = self.unsubscribed_since
        if not self.subscribe_deadline or since is None:
            return
        idle = time.monotonic() - since
        if idle >= self.subscribe_deadline:
            log.info("websocket %s: no subscription for %.0fs, closing", self.name, idle)
            text = "no subscription within %gs" % self.subscribe_deadline
            self.close(CLOSE_POLICY, REASON_NO_SUBSCRIPTION, notice(text))

    def _check_liveness(self) -> None:
        """Ping a client silent for ``ping_interval``; close one silent twice as long."""
        silent = time.monotonic() - self.heard
        if silent >= 2 * self.ping_interval:
            log.info("websocket %s: no answer to a ping for %.0fs, closing", self.name, silent)
            self.close(CLOSE_NO_PONG, "no answer to ping")
        elif silent >= self.ping_interval and not self._pinged:
            self._pinged = True
            self._write(Ping(payload=PING_PAYLOAD))

    def _check_loop(self) -> None:
        try:
            while not self._closing and not self._dead:
                # Wake at least every TOKEN_TICK: a subscription added meanwhile may expire
                # sooner than any known now.
                timeout = TOKEN_TICK
                expiry = self._next_expiry()
                if expiry is not None:
                    timeout = min(timeout, expiry - self.clock())
                if self.ping_interval:
                    timeout = min(timeout, self.ping_interval / 2)
                gevent.sleep(max(0.0, timeout))
                self._check_expiry()
                if not self._closing:
                    self._check_subscribed()
                if self.ping_interval and not self._closing:
                    self._check_liveness()
        except _Closed:
            pass
        except Exception:  # noqa: BLE001 - one client's bug must not go unnoticed
            log.exception("websocket %s: checker failed", self.name)
            self._abort("checker failed")

    def _dropped(self, reason: str) -> None:
        """The fan-out dropped this client: it did not take its frames (``Outbox.too_slow``),
        or confd itself fell behind.  The client is told why after the frame being written
        (its stale backlog is discarded), then closed."""
        if reason == DROP_BEHIND:
            text = "confd fell behind: events were lost, subscribe again"
        else:
            text = "too slow: %s" % self.outbox.slow
        log.warning("websocket %s: %s, closing", self.name, text)
        self.close(CLOSE_TRY_AGAIN, reason, notice(text, self._bindings()))


# --- the middleware ------------------------------------------------------------------------


def _plain_response(
    environ: Dict[str, Any],
    start_response: Callable,
    status: int,
    message: str,
    text: str,
    headers: Iterable[Tuple[str, str]] = (),
) -> List[bytes]:
    """An error answer before the upgrade: the API's error envelope (api.md), as every other
    endpoint's."""
    # A client that asked for an upgrade and did not get one starts again on a new connection.
    headers = list(headers) + [("Connection", "close")]
    return responses.wsgi_error(
        environ, start_response, status, message, {"message": text}, headers
    )


class WebsocketMiddleware:
    """WSGI middleware: ``/v2/websocket`` here, everything else to ``app``."""

    def __init__(
        self,
        app: Callable,
        *,
        hub: EventHub,
        store: Any,
        resolver: OwnershipResolver,
        queue_bound: int,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL,
        ping_interval: float = PING_INTERVAL,
        subscribe_deadline: float = SUBSCRIBE_DEADLINE,
        is_conference_id: Callable[[str], bool] = lambda name: True,
        token_watch_interval: float = tokenwatch.INTERVAL,
        bindings: Any = None,
    ) -> None:
        self.app = app
        self.bindings = bindings
        self.ping_interval = ping_interval
        self.subscribe_deadline = subscribe_deadline
        self.is_conference_id = is_conference_id
        self.authorizer = Authorizer(store, clock)
        self.queue_bound = queue_bound
        self.metrics = metrics
        self.clock = clock
        self.fanout = Fanout(
            resolver,
            flush_interval=flush_interval,
            metrics=metrics,
        )
        hub.add_sink(self.fanout.offer, active=self.fanout.active)
        self.sessions: List[WebsocketSession] = []
        self.token_watch = tokenwatch.TokenWatch(
            self.authorizer, lambda: self.sessions, interval=token_watch_interval
        )
        self._count = 0

    def start(self) -> gevent.Greenlet:
        """The fan-out's dispatcher (the daemon watches the greenlet) and the token watch."""
        self.token_watch.start()
        return self.fanout.start()

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != WEBSOCKET_PATH:
            return self.app(environ, start_response)
        environ[responses.ROUTE_KEY] = WEBSOCKET_PATH  # for the access log
        if environ.get("REQUEST_METHOD") != "GET":
            return _plain_response(
                environ,
                start_response,
                405,
                "invalid_method",
                "method not allowed",
                [("Allow", "GET")],
            )
        if (
            environ.get("HTTP_UPGRADE", "").lower() != "websocket"
            or "upgrade" not in environ.get("HTTP_CONNECTION", "").lower()
            or not environ.get("HTTP_SEC_WEBSOCKET_KEY")
            # A handshake has no body (the server gives a request with one no raw stream).
            or environ.get("CONTENT_LENGTH", "") not in ("", "0")
            or environ.get("HTTP_TRANSFER_ENCODING")
        ):
            return _plain_response(
                environ,
                start_response,
                400,
                "websocket_upgrade_required",
                "a websocket upgrade is required (Upgrade: websocket, Connection: Upgrade,"
                " Sec-WebSocket-Key)",
            )
        if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != WEBSOCKET_VERSION:
            return _plain_response(
                environ,
                start_response,
                426,
                "unsupported_websocket_version",
                "Sec-WebSocket-Version %s is required" % WEBSOCKET_VERSION,
                [("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
            )
        rfile = environ["wsgi.input"]
        sock = environ.get(SOCKET_ENVIRON_KEY)
        if sock is None:
            # Without WebsocketHandler: gevent's rfile is the socket's makefile().
            sock = getattr(getattr(rfile, "raw", None), "_sock", None)
        if sock is None:
            return _plain_response(
                environ, start_response, 500, "websocket_unavailable", "no socket to upgrade"
            )
        # The server moves the connection under its websocket bound (http.max_websockets),
        # apart from the HTTP connections: past that bound the upgrade is refused.
        upgrade = environ.get(UPGRADE_KEY)
        if upgrade is not None and not upgrade():
            return _plain_response(
                environ,
                start_response,
                503,
                "service_unavailable",
                "too many websocket connections, try again later",
                [("Retry-After", str(UPGRADE_RETRY_AFTER))],
            )
        accept = generate_accept_token(environ["HTTP_SEC_WEBSOCKET_KEY"].encode("latin-1"))
        write = start_response(
            "101 Switching Protocols",
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept.decode("ascii")),
            ],
        )
        write(b"")  # the 101 goes out now; frames follow on the same socket
        self._count += 1
        name = "%s:%s#%d" % (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"), self._count)
        session = WebsocketSession(
            sock,
            rfile,
            fanout=self.fanout,
            authorizer=self.authorizer,
            queue_bound=self.queue_bound,
            metrics=self.metrics,
            name=name,
            clock=self.clock,
            ping_interval=self.ping_interval,
            subscribe_deadline=self.subscribe_deadline,
            is_conference_id=self.is_conference_id,
            bindings=self.bindings,
        )
        self.sessions.append(session)
        if self.metrics is not None:
            self.metrics.websocket_clients.inc()
        log.debug("websocket %s: open", name)
        try:
            session.run()
        finally:
            self.sessions.remove(session)
            if self.metrics is not None:
                self.metrics.websocket_clients.dec()
            log.info("websocket %s: ended: %s", name, session.ended)
        return []

    def stop(self) -> None:
        """Tell every client confd is going away (close 1001)."""
        for session in list(self.sessions):
            session.stop()
        self.token_watch.stop()
        self.fanout.stop()
