"""What entry reads about the world: accounts and conference documents (the store), and the
live rooms (the live state).  Plain values out, so the session never sees peewee or the
state's classes; the daemon hands the session these adapters."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Protocol

from confd.entry.rules import role_for_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConferenceDoc:
    id: str
    account_id: str
    body: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Room:
    """A conference as the live state shows it at this moment."""

    locked: bool = False
    call_ids: FrozenSet[str] = frozenset()


EMPTY_ROOM = Room()

RoomReader = Callable[[str], Optional[Room]]  # conference id -> Room (None: not live anywhere)


class Directory(Protocol):
    def account_exists(self, account_id: str) -> bool: ...

    def conference(self, account_id: str, conference_id: str) -> Optional[ConferenceDoc]: ...

    def by_number(self, account_id: str, number: str) -> Optional[ConferenceDoc]: ...


class MemoryDirectory:
    """Accounts and documents held in memory (tests, the simulator's demo)."""

    def __init__(self) -> None:
        self.accounts: Dict[str, Dict[str, Dict[str, Any]]] = {}

    def add(self, account_id: str, conference_id: str, body: Mapping[str, Any]) -> ConferenceDoc:
        self.accounts.setdefault(account_id, {})[conference_id] = dict(body)
        return ConferenceDoc(conference_id, account_id, dict(body))

    def account_exists(self, account_id: str) -> bool:
        return account_id in self.accounts

    def conference(self, account_id: str, conference_id: str) -> Optional[ConferenceDoc]:
        body = self.accounts.get(account_id, {}).get(conference_id)
        return ConferenceDoc(conference_id, account_id, body) if body is not None else None

    def by_number(self, account_id: str, number: str) -> Optional[ConferenceDoc]:
        for conf_id, body in self.accounts.get(account_id, {}).items():
            try:
                found, _ = role_for_number(body, number)
            except ValueError:
                continue  # a document with unreadable numbers reaches nobody
            if found:
                return ConferenceDoc(conf_id, account_id, body)
        return None


class StoreDirectory:
    """The store's accounts and live documents.  A number is found through the store's
    ``(account, number)`` index, then its document is read once."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def account_exists(self, account_id: str) -> bool:
        return bool(self._store.accounts.account_exists(account_id))

    def conference(self, account_id: str, conference_id: str) -> Optional[ConferenceDoc]:
        from confd.store import NotFound

        try:
            doc = self._store.conferences.get(account_id, conference_id)
        except NotFound:
            return None
        return ConferenceDoc(doc.id, doc.account_id, doc.body)

    def by_number(self, account_id: str, number: str) -> Optional[ConferenceDoc]:
        from confd.store import db_session

        num = self._store.models.number
        conf = self._store.models.conference
        with db_session(self._store.db):
            row = (
                conf.select(conf.id, conf.account_id, conf.body)
                .join(num, on=(num.conference == conf.id))
                .where(
                    (num.account == account_id) & (num.number == number) & (conf.deleted == False)  # noqa: E712
                )
                .first()
            )
        if row is None:
            return None
        return ConferenceDoc(row.id, row.account_id, json.loads(row.body))


def live_rooms(state: Any) -> RoomReader:
    """Rooms from confd's LiveState: every live instance of the conference (normally one) is
    counted; locked if any instance is.  Reads memory only, never yields (the admission
    decision and its reservation must not be interleaved with another call's)."""

    def room(conference_id: str) -> Optional[Room]:
        return room_of(state.find(conference_id))

    return room


def room_of(confs: Any) -> Optional[Room]:
    """The room the live instances of one conference make (None: not live)."""
    if not confs:
        return None
    ids = frozenset(p.call_id for conf in confs for p in conf.participants.values())
    return Room(any(conf.is_locked for conf in confs), ids)
