"""Which account a live conference belongs to (api.md), for scoping event subscriptions.

The rule: the account of the conference document whose id is the conference name; else, for
an ad-hoc conference, the ``<prefix>Account-ID`` channel variable of its members (the hub
attaches it to each event as ``account_hint``); else nobody but an admin.

Why a TTL cache, resolved in each subscriber's sender greenlet, rather than a map kept in
step with the documents: documents change through the API *and* through other processes on
the same database (the ``confd accounts``/CLI tools, a second daemon), so only the database
knows for sure, and the intake path must never wait for it.  Conferences are created and
deleted rarely compared with the events they produce, so one ``get_any`` per conference per
``ttl`` is negligible, and a document created for an already live conference is honoured
within ``ttl`` seconds.  Lookups that fail (database down) are not trusted: the event is
withheld from non-admin subscribers until a lookup succeeds (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Optional, Tuple

log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0
ERROR_TTL = 1.0  # retry a failed lookup this soon, not on every event
MAX_ENTRIES = 10000

# ``lookup`` results: an account id, or NO_DOCUMENT; UNKNOWN when the database failed.
NO_DOCUMENT = ""
UNKNOWN = None

Lookup = Callable[[str], str]


def store_lookup(store: Any) -> Lookup:
    """``conference id -> account id`` (``NO_DOCUMENT`` when no live document has that id)."""

    def lookup(conference_id: str) -> str:
        found = store.conferences.get_any(conference_id)
        return found[0] if found is not None else NO_DOCUMENT

    return lookup


class OwnershipResolver:
    def __init__(
        self,
        lookup: Lookup,
        ttl: float = DEFAULT_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, Tuple[float, Optional[str]]] = OrderedDict()
        self.lookups = 0

    def document_owner(self, conference_id: str) -> Optional[str]:
        """The document's account, ``NO_DOCUMENT``, or ``UNKNOWN`` (database failed)."""
        now = self._clock()
        hit = self._cache.get(conference_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.lookups += 1
        try:
            owner: Optional[str] = self._lookup(conference_id)
            expires = now + self._ttl
        except Exception as exc:  # noqa: BLE001 - database errors of any kind
            log.warning("cannot resolve the account of conference %s: %s", conference_id, exc)
            owner, expires = UNKNOWN, now + ERROR_TTL
        self._cache[conference_id] = (expires, owner)
        self._cache.move_to_end(conference_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return owner

    def owner(self, conference_id: str, account_hint: Optional[str]) -> Optional[str]:
        """The owning account, or None (nobody's, or unknown right now)."""
        doc_owner = self.document_owner(conference_id)
        if doc_owner is UNKNOWN:
            return None
        if doc_owner != NO_DOCUMENT:
            return doc_owner
        return account_hint or None

    def forget(self, conference_id: str) -> None:
        self._cache.pop(conference_id, None)
