"""The whole daemon against a fake FreeSWITCH, served by a gevent hub in a thread of its own.

The fuzzers' HTTP clients (schemathesis uses ``requests``; the raw-path fuzzer ``http.client``)
block on real sockets. Run in the test's own greenlets, the daemon would freeze while they wait;
so the ``Harness`` of the HTTP tests (``Daemon`` with its WSGIServer on 127.0.0.1 port 0, node
supervisors, store, and a ``FakeFreeSwitch``) lives in a separate thread with its own hub, and
the test thread talks to it over loopback only. Nothing is monkey-patched.

Every object of the harness is touched in the server thread only: the test thread asks for work
with ``call`` (run there, result handed back) and reads ``snapshot`` (an immutable value that the
server thread replaces).

While it runs, a keeper greenlet holds the fuzzed account's live conferences up: fuzzed
``kick`` actions empty them and fuzzed ``DELETE``\\s remove their documents, so it rejoins
callers and replaces deleted documents with new live ones.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

import gevent
from gevent.event import Event

from confd.store import NotFound
from confd_tests.http.conftest import ACCOUNT_VAR, Harness, hexid

log = logging.getLogger(__name__)

T = TypeVar("T")

START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
KEEP_INTERVAL = 0.02
MEMBERS_PER_CONFERENCE = 3  # one moderator, two members
LIVE_DOCUMENTS = 2
FUZZ_NODE = "fs1"


@dataclass(frozen=True)
class Snapshot:
    """What the test thread may read without a round trip."""

    conference_ids: Tuple[str, ...]  # live documents, an idle document, an ad-hoc conference
    live_ids: Tuple[str, ...]  # of those, the ones live right now
    member_ids: Tuple[int, ...]  # member ids in the fake right now
    members_of: Dict[str, Tuple[int, ...]]  # the same by conference (a fresh dict each time)


class LiveApi:
    """A running confd (real HTTP on a free port) with live conferences of one account."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.observed: Dict[Tuple[str, str], Set[int]] = defaultdict(set)
        self.port = 0
        self.account_id = ""
        self.token = ""
        self.other_account_id = ""
        self.snapshot = Snapshot((), (), (), {})
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._loop: Any = None
        self._done: Optional[Event] = None
        self._h: Optional[Harness] = None
        self._live_docs: List[str] = []
        self._idle_doc = ""
        self._ad_hoc = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle (test thread) ---------------------------------------------------------------

    def start(self) -> LiveApi:
        self._thread = threading.Thread(target=self._run, name="confd-fuzz-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise AssertionError("the fuzz server did not start in %.0fs" % START_TIMEOUT)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread is None or self._done is None:
            return
        self._loop.run_callback_threadsafe(self._done.set)
        self._thread.join(START_TIMEOUT)
        assert not self._thread.is_alive(), "the fuzz server thread did not stop"

    def call(self, fn: Callable[[Harness], T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``fn(harness)`` in a greenlet of the server thread; its result or exception."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                assert self._h is not None
                future.set_result(fn(self._h))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        self._loop.run_callback_threadsafe(lambda: gevent.spawn(run))
        return future.result(timeout)

    def refresh(self) -> None:
        """Put back now what earlier fuzzed requests removed (the keeper does it every
        KEEP_INTERVAL), so that ``snapshot`` is current when this returns."""
        self.call(lambda h: self._keep())

    def commands(self) -> List[str]:
        """Every line the fake FreeSWITCH received so far."""
        return self.call(lambda h: [line for _conn, line in h.fakes[FUZZ_NODE].commands])

    # --- server thread ---------------------------------------------------------------------

    def _run(self) -> None:
        hub = gevent.get_hub()
        self._loop = hub.loop
        try:
            self._setup()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._done = Event()
        keeper = gevent.spawn(self._keep_loop)
        self._ready.set()
        self._done.wait()
        keeper.kill()
        assert self._h is not None
        self._h.stop()
        gevent.sleep(0)
        hub.destroy(destroy_loop=True)

    def _setup(self) -> None:
        h = Harness(self.db_url, self.observed)
        self._h = h
        h.start((FUZZ_NODE,))
        assert h.daemon is not None
        self.port = h.daemon.http_port
        acc = h.account("fuzz")
        other = h.account("other")
        self.account_id, self.token, self.other_account_id = acc.id, acc.token, other.id
        for i in range(LIVE_DOCUMENTS):
            conf = h.conference(acc, name=f"live {i}")
            self._live_docs.append(conf)
            self._populate(conf, wait=True)
        self._idle_doc = h.conference(acc, name="idle")
        # Live, no document, claimed by the account's Account-ID channel variable.
        self._ad_hoc = hexid(0xAD0C)
        self._populate(self._ad_hoc, wait=True, account=acc.id)
        self._publish()

    def _populate(self, conf: str, *, wait: bool = False, account: Optional[str] = None) -> None:
        """Join callers until ``conf`` has MEMBERS_PER_CONFERENCE (the first a moderator)."""
        h = self._h
        assert h is not None
        model = h.fakes[FUZZ_NODE].model
        present = model.members(conf)
        has_moderator = any(m.moderator for m in present)
        channel_vars = {ACCOUNT_VAR: account} if account else {}
        for n in range(len(present), MEMBERS_PER_CONFERENCE):
            moderator = not has_moderator
            has_moderator = True
            member_id = model.join(
                conf,
                caller_id_name=f"caller {n}",
                caller_id_number=f"10{n}",
                moderator=moderator,
                channel_vars=channel_vars,
                ignore_lock=True,  # a fuzzed lock must not starve the conference
            )
            if wait and member_id is not None:
                h.wait_participant(conf, member_id)

    def _keep_loop(self) -> None:
        while True:
            try:
                self._keep()
            except Exception:
                log.exception("fuzz keeper")
            gevent.sleep(KEEP_INTERVAL)

    def _keep(self) -> None:
        h = self._h
        assert h is not None and h.daemon is not None
        docs = h.daemon.store.conferences
        for conf in list(self._live_docs):
            try:
                docs.get(self.account_id, conf)
            except NotFound:  # a fuzzed DELETE: a new live document takes its place
                self._live_docs.remove(conf)
                self._live_docs.append(docs.create(self.account_id, {"name": "live"}).id)
        if not self._docs_exist(self._idle_doc):
            self._idle_doc = docs.create(self.account_id, {"name": "idle"}).id
        for conf in self._live_docs:
            self._populate(conf)
        self._populate(self._ad_hoc, account=self.account_id)
        self._publish()

    def _docs_exist(self, conf: str) -> bool:
        assert self._h is not None and self._h.daemon is not None
        try:
            self._h.daemon.store.conferences.get(self.account_id, conf)
        except NotFound:
            return False
        return True

    def _publish(self) -> None:
        h = self._h
        assert h is not None
        model = h.fakes[FUZZ_NODE].model
        ids = tuple(self._live_docs) + (self._idle_doc, self._ad_hoc)
        live = tuple(c for c in ids if h.live(c) is not None)
        members = tuple(sorted(m.id for m in model.members()))
        members_of = {c: tuple(sorted(m.id for m in model.members(c))) for c in ids}
        self.snapshot = Snapshot(ids, live, members, members_of)
