"""``GET /v2/websocket``: event subscriptions over a websocket, as WSGI middleware.

The middleware answers ``/v2/websocket`` itself and hands every other request to the API's
WSGI app.  The opening handshake goes through the WSGI server like any response (status 101
from ``start_response``); after it the connection's socket carries websocket frames, encoded
and decoded by wsproto (sans-I/O, maintained by python-hyper) and read and written here with
gevent sockets.

Per connection, two greenlets:
- the *reader* (the WSGI request's greenlet) decodes frames and answers subscribe /
  unsubscribe / ping messages (token checks hit the database here, never on the intake path);
- the *sender* takes events from the connection's bounded hub queue, keeps those whose
  conference belongs to a subscription's account (``OwnershipResolver``, cached), and writes
  event frames.  It also ends subscriptions whose token expires.

Close codes: 1000 normal; 1008 policy (the auth token expired or was revoked); 1009 a message
over 64 KiB; 1013 try again later (the client did not keep up with its events, or confd is
stopping); 1002/1007 protocol errors found by wsproto.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
from gevent import socket
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIHandler
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import generate_accept_token

from confd.events import shape
from confd.events.hub import EventHub, Subscriber, SubscriberDropped
from confd.events.ownership import OwnershipResolver
from confd.store.errors import DatabaseUnavailable, InvalidCredentials, NotFound

log = logging.getLogger(__name__)

WEBSOCKET_PATH = "/v2/websocket"
SEND_BATCH = 256  # events written in one send when a client's queue has a backlog
WEBSOCKET_VERSION = "13"
SOCKET_ENVIRON_KEY = "confd.websocket.socket"

MAX_MESSAGE_BYTES = 64 * 1024
MAX_BINDINGS = 100  # per connection: each one is matched on the intake path
READ_CHUNK = 65536
WRITE_TIMEOUT = 10.0  # a frame that cannot be written in this long: the client is gone
CLOSE_WAIT = 2.0  # after our close frame, how long the client has to answer it
TOKEN_RECHECK = 60.0  # re-validate tokens this often (rotate-key revokes them early)
SENDER_TICK = 1.0  # the sender's longest sleep between token deadline checks
CLOSE_WRITE_TIMEOUT = 1.0  # a notice or close frame gets this long to be written

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
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


class WebsocketHandler(WSGIHandler):
    """gevent's WSGI handler, also putting the connection's socket in the environ (the
    websocket writes frames on it after the handshake)."""

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        # pywsgi writes the status line and headers, then the body, in separate sends: with
        # Nagle's algorithm on, the body waits for the client's delayed ACK (~40 ms a request).
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket (tests may pass a socketpair)
        super().__init__(sock, address, server, rfile)

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
    expires_at: Optional[float]  # Unix time, when known
    checked_at: float


class Authorizer:
    """Tokens and accounts for subscriptions (database calls: reader/sender greenlets only)."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def authorize(self, token: Any, account_id: Any) -> Tuple[bool, Optional[float]]:
        """``(sees_all, token expiry)`` for a subscription of ``account_id`` with ``token``."""
        if not isinstance(account_id, str) or not account_id:
            raise Refused("data.account_id is required")
        try:
            account = self._store.accounts.check_token(token)
        except InvalidCredentials:
            raise Refused("invalid credentials") from None
        except DatabaseUnavailable:
            raise Refused("database unavailable, try again") from None
        if account["id"] == account_id:
            sees_all = bool(account.get("admin"))
        elif account.get("admin"):
            try:
                sees_all = bool(self._store.accounts.get_account(account_id).get("admin"))
            except NotFound:
                raise Refused("unknown account %s" % account_id[:64]) from None
        else:
            raise Refused("forbidden: the token does not belong to account %s" % account_id[:64])
        return sees_all, self.expiry(token)

    def still_valid(self, token: str) -> bool:
        try:
            self._store.accounts.check_token(token)
        except InvalidCredentials:
            return False
        except Exception as exc:  # noqa: BLE001 - database trouble: check again later
            log.warning("websocket: cannot re-check a token: %s", exc)
        return True

    def expiry(self, token: str) -> Optional[float]:
        """When the token expires (Unix time), or None when the store cannot say."""
        try:
            return self._store.accounts.token_expiry(token)
        except Exception as exc:  # noqa: BLE001 - then the periodic re-check decides
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


def event_frame(binding: str, pub: shape.Published) -> str:
    key = json.dumps(binding)
    return '{"action":"event","subscribed_key":%s,"subscription_key":%s,"name":%s,' % (
        key,
        key,
        json.dumps(pub.name),
    ) + '"routing_key":%s,"data":%s}' % (json.dumps(pub.routing_key), pub.json())


def encoded_event_frame(binding: str, pub: shape.Published) -> bytes:
    """The websocket frame of an event for a binding, encoded once and shared by every
    connection with that binding: no extension is ever negotiated and server frames are not
    masked, so the bytes are the same on every connection."""
    cache = pub.frames
    data = cache.get(binding)
    if data is None:
        encoder = FrameProtocol(client=False, extensions=[])
        data = cache[binding] = bytes(encoder.send_data(event_frame(binding, pub), fin=True))
    return data


# --- one connection ------------------------------------------------------------------------


class _Closed(Exception):
    pass


class WebsocketSession:
    def __init__(
        self,
        sock: Any,
        rfile: Any,
        *,
        hub: EventHub,
        authorizer: Authorizer,
        resolver: OwnershipResolver,
        queue_bound: int,
        metrics: Any = None,
        name: str = "",
        clock: Callable[[], float] = time.time,
        max_message: int = MAX_MESSAGE_BYTES,
        token_recheck: float = TOKEN_RECHECK,
    ) -> None:
        self.sock = sock
        self.rfile = rfile
        self.hub = hub
        self.auth = authorizer
        self.resolver = resolver
        self.metrics = metrics
        self.name = name
        self.clock = clock
        self.max_message = max_message
        self.token_recheck = token_recheck
        self.ws = Connection(ConnectionType.SERVER)
        self.subscriptions: Dict[Tuple[str, str], Subscription] = {}
        self._write_lock = Semaphore()
        self._closing = False
        self._dead = False
        self.subscriber: Subscriber = hub.subscribe(queue_bound, self._wants, name)
        self.subscriber.on_drop = lambda reason: gevent.spawn(self._dropped, reason)
        self._sender: Optional[gevent.Greenlet] = None
        self.close_code: Optional[int] = None

    # --- called on the intake path: cheap and non-blocking -------------------------------------

    def _wants(self, pub: shape.Published) -> bool:
        for sub in self.subscriptions.values():
            if sub.binding.matches(pub.conference_id, pub.call_id):
                return True
        return False

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        self._sender = gevent.spawn(self._send_loop)
        self._sender.name = "ws-sender-%s" % self.name
        try:
            self._read_loop()
        except (OSError, ValueError, _Closed):
            pass
        finally:
            self._finish()

    def stop(self) -> None:
        """confd is stopping."""
        self.close(CLOSE_GOING_AWAY, "confd stopping")

    def _finish(self) -> None:
        self.hub.unsubscribe(self.subscriber)
        self._dead = True
        if self._sender is not None and gevent.getcurrent() is not self._sender:
            self._sender.kill(block=False)
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _abort(self) -> None:
        """Close the TCP connection at once (the reader then ends)."""
        self._dead = True
        try:
            self.sock.shutdown(2)
        except OSError:
            pass

    # --- writing -------------------------------------------------------------------------------

    def _write(self, event: Any, timeout: float = WRITE_TIMEOUT) -> None:
        """A wsproto event (message, close), encoded by this connection's wsproto state."""
        self._send(lambda: self.ws.send(event), lambda: self._dead, timeout)

    def _write_raw(self, data: bytes, timeout: float = WRITE_TIMEOUT) -> None:
        """Pre-encoded data frames (see encoded_event_frame), in one send; never after the
        close frame."""

        def gone() -> bool:
            return self._dead or self._closing or self.ws.state != ConnectionState.OPEN

        self._send(lambda: data, gone, timeout)

    def _send(self, encode: Callable[[], bytes], gone: Callable[[], bool], timeout: float) -> None:
        """One write at a time; a client that does not read for ``timeout`` is cut off."""
        if not self._write_lock.acquire(timeout=timeout):
            self._abort()
            raise _Closed()
        try:
            if gone():
                raise _Closed()
            data = encode()
            try:
                with gevent.Timeout(timeout):
                    self.sock.sendall(data)
            except gevent.Timeout:
                log.info("websocket %s: client not reading for %.0fs, aborting", self.name, timeout)
                self._abort()
                raise _Closed() from None
            except OSError:
                self._abort()
                raise _Closed() from None
        finally:
            self._write_lock.release()

    def send_text(self, text: str) -> None:
        if self._closing:
            raise _Closed()
        self._write(TextMessage(data=text))

    def close(self, code: int, reason: str, notice_text: Optional[str] = None) -> None:
        """Send ``notice_text`` (if any) and a close frame, then give the client CLOSE_WAIT
        seconds to answer before the socket is shut."""
        if self._closing or self._dead:
            return
        try:
            self._closing = True
            self.close_code = code
            if notice_text is not None:
                self._write(TextMessage(data=notice_text), CLOSE_WRITE_TIMEOUT)
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self._write(CloseConnection(code=code, reason=reason), CLOSE_WRITE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - closing anyway
            log.debug("websocket %s: close: %r", self.name, exc)
        finally:
            self._closing = True
            if self.metrics is not None:
                self.metrics.websocket_closed(code)
            gevent.spawn_later(CLOSE_WAIT, self._abort)

    # --- reading -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        parts: List[str] = []
        size = 0
        while not self._dead:
            data = self.rfile.read1(READ_CHUNK)
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    if self.ws.state == ConnectionState.REMOTE_CLOSING:
                        # The client closes: answer with the same code, then we are done.
                        try:
                            self._write(event.response())
                        except _Closed:
                            pass
                    return
                if isinstance(event, Ping):
                    try:
                        self._write(event.response())
                    except _Closed:
                        return
                    continue
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

    def _message(self, text: str) -> None:
        request_id = None
        try:
            try:
                msg = json.loads(text)
            except ValueError:
                raise Refused("message is not valid JSON") from None
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
        except Refused as exc:
            answer = error_reply(request_id, [str(exc)])
        except shape.BindingError as exc:
            answer = error_reply(request_id, [str(exc)])
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
        bindings = shape.parse_bindings(data)
        account_id = data.get("account_id")
        sees_all, expires = self.auth.authorize(msg.get("auth_token"), account_id)
        new = {(account_id, b.text) for b in bindings} - set(self.subscriptions)
        if len(self.subscriptions) + len(new) > MAX_BINDINGS:
            raise Refused("too many bindings on one connection (at most %d)" % MAX_BINDINGS)
        now = self.clock()
        for b in bindings:
            self.subscriptions[(account_id, b.text)] = Subscription(
                b, account_id, sees_all, msg["auth_token"], expires, now
            )
        return {"subscribed": self._bindings()}

    def _unsubscribe(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        data = self._data(msg)
        bindings = shape.parse_bindings(data)
        account_id = data.get("account_id")
        self.auth.authorize(msg.get("auth_token"), account_id)
        removed = []
        for b in bindings:
            if self.subscriptions.pop((account_id, b.text), None) is not None:
                removed.append(b.text)
        return {"unsubscribed": removed, "subscribed": self._bindings()}

    def _bindings(self) -> List[str]:
        return sorted({b for _, b in self.subscriptions})

    # --- the sender ----------------------------------------------------------------------------

    def _next_check(self) -> Optional[float]:
        due = None
        for sub in self.subscriptions.values():
            at = sub.checked_at + self.token_recheck
            if sub.expires_at is not None:
                at = min(at, sub.expires_at)
            due = at if due is None else min(due, at)
        return due

    def _check_tokens(self) -> None:
        now = self.clock()
        expired: Dict[str, List[str]] = {}
        for key, sub in list(self.subscriptions.items()):
            due = sub.checked_at + self.token_recheck
            if sub.expires_at is not None:
                due = min(due, sub.expires_at)
            if due > now:
                continue
            if (sub.expires_at is not None and sub.expires_at <= now) or not self.auth.still_valid(
                sub.token
            ):
                expired.setdefault(sub.token, []).append(sub.binding.text)
                del self.subscriptions[key]
            else:
                sub.checked_at = now
        if expired:
            bindings = [b for bs in expired.values() for b in bs]
            log.info("websocket %s: auth token expired, closing", self.name)
            self.close(CLOSE_POLICY, "auth token expired", notice("auth token expired", bindings))

    def _send_loop(self) -> None:
        try:
            while not self._closing and not self._dead:
                due = self._next_check()
                # Wake at least every SENDER_TICK: a subscription added meanwhile may have an
                # earlier token deadline than the one computed here.
                timeout = SENDER_TICK if due is None else min(SENDER_TICK, due - self.clock())
                try:
                    pub = self.subscriber.get(timeout=max(0.0, timeout))
                except SubscriberDropped:
                    return  # _dropped (spawned by the hub's on_drop) tells the client
                if due is not None and self.clock() >= due:
                    self._check_tokens()
                    if self._closing:
                        return
                if pub is not None:
                    # Everything already waiting goes out in one write.
                    out = [self._frames_for(pub)]
                    for _ in range(SEND_BATCH):
                        more = self.subscriber.get(timeout=0)
                        if more is None:
                            break
                        out.append(self._frames_for(more))
                    data = b"".join(out)
                    if data:
                        self._write_raw(data)
        except _Closed:
            pass
        except Exception:  # noqa: BLE001 - one client's bug must not go unnoticed
            log.exception("websocket %s: sender failed", self.name)
            self._abort()

    def _dropped(self, reason: str) -> None:
        """The hub dropped this client (its queue hit the bound).  Its socket is most likely
        full, with the sender stuck writing: the notice and the close frame get
        CLOSE_WRITE_TIMEOUT, then the socket is shut, which also frees the sender."""
        log.warning("websocket %s: %s, closing", self.name, reason)
        text = "too slow: more than %d events waiting" % self.subscriber.bound
        self.close(CLOSE_TRY_AGAIN, "too slow", notice(text, self._bindings()))

    def _frames_for(self, pub: shape.Published) -> bytes:
        """The frames this connection gets for ``pub``: one per matching subscription of an
        account that owns the conference."""
        owner: Optional[str] = None
        resolved = False
        out = []
        for sub in list(self.subscriptions.values()):
            if not sub.binding.matches(pub.conference_id, pub.call_id):
                continue
            if not sub.sees_all:
                if not resolved:
                    # An ad-hoc conference's conference-create comes before any member: the
                    # hub may have learned its account since (usually from the add-member in
                    # the same TCP read).
                    hint = pub.account_hint or self.hub.account_hint(pub.conference_id)
                    owner = self.resolver.owner(pub.conference_id, hint)
                    resolved = True
                if owner != sub.account_id:
                    continue
            out.append(encoded_event_frame(sub.binding.text, pub))
        return b"".join(out)


# --- the middleware ------------------------------------------------------------------------


def _plain_response(start_response: Callable, status: str, message: str, headers=()) -> List[bytes]:
    body = json.dumps({"status": "error", "error": status.split()[0], "message": message}).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + list(headers),
    )
    return [body]


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
    ) -> None:
        self.app = app
        self.hub = hub
        self.authorizer = Authorizer(store, clock)
        self.resolver = resolver
        self.queue_bound = queue_bound
        self.metrics = metrics
        self.clock = clock
        self.sessions: List[WebsocketSession] = []
        self._count = 0

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != WEBSOCKET_PATH:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return _plain_response(
                start_response, "405 Method Not Allowed", "invalid_method", [("Allow", "GET")]
            )
        if (
            environ.get("HTTP_UPGRADE", "").lower() != "websocket"
            or "upgrade" not in environ.get("HTTP_CONNECTION", "").lower()
            or not environ.get("HTTP_SEC_WEBSOCKET_KEY")
        ):
            return _plain_response(start_response, "400 Bad Request", "websocket_upgrade_required")
        if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != WEBSOCKET_VERSION:
            return _plain_response(
                start_response,
                "426 Upgrade Required",
                "unsupported_websocket_version",
                [("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
            )
        rfile = environ["wsgi.input"]
        sock = environ.get(SOCKET_ENVIRON_KEY)
        if sock is None:
            # Without WebsocketHandler: gevent's rfile is the socket's makefile().
            sock = getattr(getattr(rfile, "raw", None), "_sock", None)
        if sock is None:
            return _plain_response(
                start_response, "500 Internal Server Error", "websocket_unavailable"
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
            hub=self.hub,
            authorizer=self.authorizer,
            resolver=self.resolver,
            queue_bound=self.queue_bound,
            metrics=self.metrics,
            name=name,
            clock=self.clock,
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
            log.debug("websocket %s: closed", name)
        return []

    def stop(self) -> None:
        """Tell every client confd is going away (close 1001)."""
        for session in list(self.sessions):
            session.stop()
