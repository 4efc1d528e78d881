"""Which account a live conference belongs to (api.md), for scoping event subscriptions.

The rule is ``confd.conferences.ownership`` (the REST lookup uses it too): nobody's when confd
does not manage the name; else the account of the conference document whose id is the
conference name; else, for an ad-hoc conference, the account its members claim (the hub works
that out at each event: ``Published.account_hint``); else nobody but an admin.  Here: the
document part, which needs the database.

Why a TTL cache rather than a map kept in step with the documents: documents change through
the API *and* through other processes on the same database (the ``confd accounts``/CLI tools,
a second daemon), so only the database knows for sure, and the intake path must never wait
for it.  The websocket fan-out asks once per event; the answer comes from the cache:

- a conference seen for the first time is looked up at once, in one query with the other
  new conferences of the same fan-out round;
- an entry older than ``ttl`` is still answered from the cache, and refreshed in the
  background by one greenlet, in one query for every entry that expired meanwhile: the
  fan-out never waits for the database on a known conference, and 200 conferences expiring
  together cost one query instead of 200 stalls of the event loop;
- so a document created (or moved) for an already live conference is honoured within ``ttl``
  seconds plus one query.

Lookups that fail (database down) are not trusted: the conference's events are withheld from
non-admin subscribers until a lookup succeeds (fail closed), retried every ``ERROR_TTL``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent

from confd.conferences import ownership

log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0
ERROR_TTL = 1.0  # retry a failed lookup this soon, not on every event
MAX_ENTRIES = 10000

# ``document_owner`` results: an account id, or NO_DOCUMENT; UNKNOWN when the database failed.
NO_DOCUMENT = ""
UNKNOWN = None


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


# ``owner`` result: no document, and the members have not said yet (see ``owner``).
PENDING: Any = _Pending()

# ``{conference id: account id}`` for those of the ids that have a live document.
Lookup = Callable[[List[str]], Dict[str, str]]


def store_lookup(store: Any) -> Lookup:
    """Which accounts own the live documents among some conference ids (one query)."""
    return store.conferences.owners


class OwnershipResolver:
    def __init__(
        self,
        lookup: Lookup,
        ttl: float = DEFAULT_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        addressable: Callable[[str], bool] = lambda name: True,
    ) -> None:
        self._lookup = lookup
        self._addressable = addressable
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, Tuple[float, Optional[str]]] = OrderedDict()
        self._expired: Dict[str, None] = {}  # waiting for the refresher, in order
        self._refresher: Optional[gevent.Greenlet] = None

    def document_owner(self, conference_id: str) -> Optional[str]:
        """The document's account, ``NO_DOCUMENT``, or ``UNKNOWN`` (database failed)."""
        hit = self._cache.get(conference_id)
        if hit is None:
            return self._fetch([conference_id])[conference_id]
        if hit[0] <= self._clock() and conference_id not in self._expired:
            self._expired[conference_id] = None
            if self._refresher is None:
                self._refresher = gevent.spawn(self._refresh)
                self._refresher.name = "ownership-refresh"
        return hit[1]

    def owner(self, conference_id: str, claim: Optional[str], pending: bool = False) -> Any:
        """The owning account, or None (nobody's, or unknown right now: fail closed).
        ``claim``: the account the members claim at the event (``Published.account_hint``);
        ``pending``: they have not said yet (``Published.owner_pending``).  Then, when no
        document decides either, the answer is ``PENDING``."""
        if not self._addressable(conference_id):
            return None
        doc_owner = self.document_owner(conference_id)
        if doc_owner is UNKNOWN:
            return None
        if pending and doc_owner == NO_DOCUMENT:
            return PENDING
        return ownership.owner(addressable=True, document_owner=doc_owner, claim=claim)

    def prefetch(self, conference_ids: Iterable[str]) -> None:
        """Look up, in one query, those of ``conference_ids`` never seen before (the fan-out
        calls this once per round: a burst of new conferences costs one query, not one
        each)."""
        cache = self._cache
        unseen = [
            c for c in dict.fromkeys(conference_ids) if c not in cache and self._addressable(c)
        ]
        if unseen:
            self._fetch(unseen)

    def forget(self, conference_id: str) -> None:
        self._cache.pop(conference_id, None)

    def refresh(self) -> None:
        """Refresh the expired entries now (what the refresher greenlet does)."""
        while self._expired:
            ids = list(self._expired)
            self._expired.clear()
            self._fetch([i for i in ids if i in self._cache])

    def _refresh(self) -> None:
        try:
            self.refresh()
        finally:
            self._refresher = None

    def _fetch(self, ids: List[str]) -> Dict[str, Optional[str]]:
        now = self._clock()
        try:
            found = self._lookup(ids)
            owners: Dict[str, Optional[str]] = {i: found.get(i, NO_DOCUMENT) for i in ids}
            expires = now + self._ttl
        except Exception as exc:  # noqa: BLE001 - database errors of any kind
            log.warning("cannot resolve the account of %d conference(s): %s", len(ids), exc)
            owners, expires = dict.fromkeys(ids, UNKNOWN), now + ERROR_TTL
        for i, owner in owners.items():
            self._cache[i] = (expires, owner)
            self._cache.move_to_end(i)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return owners
