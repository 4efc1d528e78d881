"""Conference documents of an account: create, read, replace, patch, soft delete, list.

A document is stored as its public fields (JSON text) plus columns for what confd keeps
privately (account, timestamps, revision, deleted flag); the ``pvt_*`` view is rebuilt from
those columns. Numbers (``conference_numbers``, ``member.numbers``, ``moderator.numbers``)
share one namespace per account; the ``conference_numbers`` table with its unique
(account, number) index enforces that in the database itself, so two concurrent writers
cannot both claim a number.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import peewee

from confd.store.db import db_session
from confd.store.errors import Conflict, NotFound, ValidationFailed
from confd.store.models import Models
from confd.store.schema import KEYWORD_TEXT, MSG_TEXT, MSG_TYPE, ConferenceSchema
from confd.store.values import text_problem

logger = logging.getLogger(__name__)

CONF_ID_BYTES = 16  # 32 hex characters
REV_HASH_BYTES = 16

# Kazoo counts time in Gregorian seconds (since year 0); this is 1970-01-01 in that scale.
GREGORIAN_UNIX_OFFSET = 62167219200

PVT_TYPE = "conference"
PRIVATE_PREFIXES = ("_", "pvt_")
# Never taken from input: "id" comes from the URL/row, "focus" from live state at read time.
READ_ONLY_FIELDS = ("id", "focus")
NUMBER_LISTS = (("conference_numbers",), ("member", "numbers"), ("moderator", "numbers"))
LIST_SUMMARY_FIELDS = ("name", "owner_id", "member", "moderator", "conference_numbers")

NUMBERS_KEY = "numbers"
MSG_NUMBERS_IN_USE = "Numbers already in use"
IF_MATCH_ANY = "*"

Clock = Callable[[], float]


def gregorian_seconds(unix: float) -> int:
    """Kazoo timestamp (Gregorian seconds) of a Unix time."""
    return int(unix) + GREGORIAN_UNIX_OFFSET


@dataclass(frozen=True)
class StoredDoc:
    """One conference document as stored; ``data`` is the public view returned by the API."""

    id: str
    account_id: str
    body: dict[str, Any] = field(repr=False)
    revision: str
    created: float  # Unix seconds
    modified: float  # Unix seconds
    deleted: bool = False

    @property
    def data(self) -> dict[str, Any]:
        """Public fields plus ``id`` (a fresh copy the caller may modify)."""
        public = copy.deepcopy(self.body)
        public["id"] = self.id
        return public

    @property
    def summary(self) -> dict[str, Any]:
        """The stored part of a list row: ``id`` and the fields api.md lists."""
        row: dict[str, Any] = {"id": self.id}
        for key in LIST_SUMMARY_FIELDS:
            if key in self.body:
                row[key] = copy.deepcopy(self.body[key])
        return row

    @property
    def private(self) -> dict[str, Any]:
        """The ``pvt_*`` fields Kazoo keeps beside a document."""
        return {
            "pvt_type": PVT_TYPE,
            "pvt_account_id": self.account_id,
            "pvt_created": gregorian_seconds(self.created),
            "pvt_modified": gregorian_seconds(self.modified),
            "pvt_deleted": self.deleted,
        }


def public_input(data: dict[str, Any]) -> dict[str, Any]:
    """Request data minus what a client may not set: ``_*``/``pvt_*`` keys, ``id``, ``focus``."""
    return {
        key: copy.deepcopy(value)
        for key, value in data.items()
        if not key.startswith(PRIVATE_PREFIXES) and key not in READ_ONLY_FIELDS
    }


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """PATCH semantics: objects merge recursively, ``None`` removes a key, anything else
    (arrays included) replaces. Returns a new dict; inputs are left untouched."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def document_numbers(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """All numbers of a (valid) document in order, and those used more than once in it."""
    seen: list[str] = []
    repeated: list[str] = []
    for path in NUMBER_LISTS:
        node: Any = body
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        for number in node or ():
            if number in seen:
                if number not in repeated:
                    repeated.append(number)
            else:
                seen.append(number)
    return seen, repeated


def numbers_error(numbers: list[str]) -> ValidationFailed:
    return ValidationFailed(
        {NUMBERS_KEY: {"unique": {"message": MSG_NUMBERS_IN_USE, "cause": ", ".join(numbers)}}}
    )


def _check_object(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValidationFailed(
            {
                "data": {
                    "type": {
                        "message": MSG_TYPE.format(target="object"),
                        "target": "object",
                        "value": data,
                    }
                }
            }
        )


def _check_query_text(**texts: str | None) -> None:
    """Refuse query text no backend can compare (PostgreSQL raises on NUL in a literal)."""
    errors: dict[str, Any] = {}
    for name, text in texts.items():
        reason = text_problem(text) if text is not None else None
        if reason is not None:
            errors[name] = {KEYWORD_TEXT: {"message": MSG_TEXT.format(reason=reason)}}
    if errors:
        raise ValidationFailed(errors)


def _new_rev_hash() -> str:
    return secrets.token_hex(REV_HASH_BYTES)


class ConferenceService:
    """Conference documents of one database, always addressed through their account."""

    def __init__(
        self,
        db: peewee.Database,
        models: Models,
        clock: Clock = time.time,
        schema: ConferenceSchema | None = None,
    ) -> None:
        self._db = db
        self._m = models
        self._clock = clock
        self._schema = schema or ConferenceSchema()

    # -- reading -----------------------------------------------------------------------------

    def _to_doc(self, row: Any) -> StoredDoc:
        return StoredDoc(
            id=row.id,
            account_id=row.account_id,
            body=json.loads(row.body),
            revision=f"{row.revision}-{row.rev_hash}",
            created=row.created,
            modified=row.modified,
            deleted=bool(row.deleted),
        )

    def _live_row(self, account_id: str, conf_id: str) -> Any:
        conf = self._m.conference
        row = conf.get_or_none(
            (conf.id == conf_id) & (conf.account == account_id) & (conf.deleted == False)  # noqa: E712
        )
        if row is None:
            raise NotFound(conf_id)
        return row

    def get(self, account_id: str, conf_id: str) -> StoredDoc:
        """A live document of the account, or ``NotFound(conf_id)``."""
        with db_session(self._db):
            return self._to_doc(self._live_row(account_id, conf_id))

    def get_any(self, conf_id: str) -> tuple[str, StoredDoc] | None:
        """``(account_id, doc)`` of the live document with this id in any account, or None.

        Used to find which account a live FreeSWITCH conference (named by its id) belongs to.
        """
        conf = self._m.conference
        with db_session(self._db):
            row = conf.get_or_none((conf.id == conf_id) & (conf.deleted == False))  # noqa: E712
        if row is None:
            return None
        return row.account_id, self._to_doc(row)

    def owners(self, conf_ids: Iterable[str]) -> dict[str, str]:
        """``{conference id: account id}`` of the live documents among ``conf_ids``: one query
        for a whole listing instead of one per live conference."""
        wanted = list(dict.fromkeys(conf_ids))
        if not wanted:
            return {}
        conf = self._m.conference
        out: dict[str, str] = {}
        with db_session(self._db):
            for i in range(0, len(wanted), 500):  # SQLite's bound on query parameters
                rows = conf.select(conf.id, conf.account_id).where(
                    conf.id.in_(wanted[i : i + 500]) & (conf.deleted == False)  # noqa: E712
                )
                out.update({row.id: row.account_id for row in rows})
        return out

    def list(
        self,
        account_id: str,
        owner_id: str | None = None,
        start_key: str | None = None,
        page_size: int | None = None,
    ) -> tuple[list[StoredDoc], str | None]:
        """Live documents ordered by id, from ``start_key`` (inclusive), at most ``page_size``.

        Returns ``(docs, next_start_key)``; ``next_start_key`` is None on the last page.
        Unknown account -> ``NotFound(account_id)``.
        """
        if page_size is not None and (
            isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
        ):
            raise ValueError("page_size must be a positive integer")
        _check_query_text(owner_id=owner_id, start_key=start_key)
        conf = self._m.conference
        query = conf.select().where(
            (conf.account == account_id) & (conf.deleted == False)  # noqa: E712
        )
        if owner_id is not None:
            query = query.where(conf.owner_id == owner_id)
        if start_key is not None:
            query = query.where(conf.id >= start_key)
        query = query.order_by(conf.id)
        if page_size is not None:
            query = query.limit(page_size + 1)
        with db_session(self._db):
            if self._m.account.get_or_none(self._m.account.id == account_id) is None:
                raise NotFound(account_id)
            rows = list(query)
        next_key = None
        if page_size is not None and len(rows) > page_size:
            next_key = rows[page_size].id
            rows = rows[:page_size]
        return [self._to_doc(r) for r in rows], next_key

    # -- writing -----------------------------------------------------------------------------

    def _prepare(self, public: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Defaults, schema validation and in-document number check; returns (body, numbers)."""
        body = self._schema.with_defaults(public)
        errors = self._schema.errors(body)
        if errors:
            raise ValidationFailed(errors)
        numbers, repeated = document_numbers(body)
        if repeated:
            raise numbers_error(repeated)
        return body, numbers

    def _numbers_in_use(self, account_id: str, numbers: list[str], conf_id: str) -> list[str]:
        if not numbers:
            return []
        num = self._m.number
        taken = {
            r.number
            for r in num.select(num.number).where(
                (num.account == account_id)
                & (num.number.in_(numbers))
                & (num.conference != conf_id)
            )
        }
        return [n for n in numbers if n in taken]

    def _claim_numbers(self, account_id: str, conf_id: str, numbers: list[str]) -> None:
        """Inside a transaction: make ``numbers`` exactly the numbers of ``conf_id``."""
        in_use = self._numbers_in_use(account_id, numbers, conf_id)
        if in_use:
            raise numbers_error(in_use)
        num = self._m.number
        num.delete().where(num.conference == conf_id).execute()
        if numbers:
            num.insert_many(
                [{"account": account_id, "number": n, "conference": conf_id} for n in numbers]
            ).execute()

    def _lost_race(self, account_id: str, conf_id: str, numbers: list[str]) -> ValidationFailed:
        """After an IntegrityError from the unique index: report who took the numbers."""
        in_use = self._numbers_in_use(account_id, numbers, conf_id)
        return numbers_error(in_use or numbers)

    def create(self, account_id: str, data: dict[str, Any]) -> StoredDoc:
        """Validate, fill defaults and store a new document; returns it with its revision."""
        _check_object(data)
        body, numbers = self._prepare(public_input(data))
        conf_id = secrets.token_hex(CONF_ID_BYTES)
        now = self._clock()
        with db_session(self._db):
            try:
                with self._db.atomic():
                    if self._m.account.get_or_none(self._m.account.id == account_id) is None:
                        raise NotFound(account_id)
                    row = self._m.conference.create(
                        id=conf_id,
                        account=account_id,
                        owner_id=body.get("owner_id"),
                        body=json.dumps(body),
                        revision=1,
                        rev_hash=_new_rev_hash(),
                        created=now,
                        modified=now,
                        deleted=False,
                    )
                    self._claim_numbers(account_id, conf_id, numbers)
            except peewee.IntegrityError as exc:
                logger.info("number claim of new conference lost a race: %s", exc)
                raise self._lost_race(account_id, conf_id, numbers) from exc
        logger.info("conference %s created in account %s", conf_id, account_id)
        return self._to_doc(row)

    def replace(
        self, account_id: str, conf_id: str, data: dict[str, Any], if_match: str | None = None
    ) -> StoredDoc:
        """Replace every public field (POST)."""
        _check_object(data)
        public = public_input(data)
        return self._update(account_id, conf_id, if_match, lambda _old: public)

    def patch(
        self, account_id: str, conf_id: str, data: dict[str, Any], if_match: str | None = None
    ) -> StoredDoc:
        """Merge ``data`` into the document (``None`` removes a key), then validate the whole."""
        _check_object(data)
        changes = public_input(data)
        return self._update(account_id, conf_id, if_match, lambda old: merge_patch(old, changes))

    def delete(self, account_id: str, conf_id: str, if_match: str | None = None) -> StoredDoc:
        """Soft delete: later reads are 404 and the numbers are free again.

        Returns the document as it was, with ``deleted=True`` and its final revision (the HTTP
        layer answers it with ``_read_only.deleted: true``).
        """
        conf = self._m.conference
        now = self._clock()
        with db_session(self._db), self._db.atomic():
            row = self._live_row(account_id, conf_id)
            self._check_revision(row, if_match)
            rev_hash = _new_rev_hash()
            updated = (
                conf.update(
                    deleted=True,
                    deleted_at=now,
                    modified=now,
                    revision=row.revision + 1,
                    rev_hash=rev_hash,
                )
                .where((conf.id == conf_id) & (conf.revision == row.revision))
                .execute()
            )
            if not updated:
                raise Conflict()
            self._m.number.delete().where(self._m.number.conference == conf_id).execute()
            row.deleted, row.deleted_at, row.modified = True, now, now
            row.revision, row.rev_hash = row.revision + 1, rev_hash
        logger.info("conference %s deleted in account %s", conf_id, account_id)
        return self._to_doc(row)

    @staticmethod
    def _check_revision(row: Any, if_match: str | None) -> None:
        if if_match is None or if_match == IF_MATCH_ANY:
            return
        if if_match != f"{row.revision}-{row.rev_hash}":
            raise Conflict()

    def _update(
        self,
        account_id: str,
        conf_id: str,
        if_match: str | None,
        build: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> StoredDoc:
        conf = self._m.conference
        now = self._clock()
        numbers: list[str] = []
        with db_session(self._db):
            try:
                with self._db.atomic():
                    row = self._live_row(account_id, conf_id)
                    self._check_revision(row, if_match)
                    body, numbers = self._prepare(build(json.loads(row.body)))
                    rev_hash = _new_rev_hash()
                    # The revision condition makes a concurrent writer that read the same
                    # revision lose with a conflict instead of silently overwriting.
                    updated = (
                        conf.update(
                            body=json.dumps(body),
                            owner_id=body.get("owner_id"),
                            modified=now,
                            revision=row.revision + 1,
                            rev_hash=rev_hash,
                        )
                        .where(
                            (conf.id == conf_id)
                            & (conf.revision == row.revision)
                            & (conf.deleted == False)  # noqa: E712
                        )
                        .execute()
                    )
                    if not updated:
                        raise Conflict()
                    self._claim_numbers(account_id, conf_id, numbers)
            except peewee.IntegrityError as exc:
                logger.info("number claim of conference %s lost a race: %s", conf_id, exc)
                raise self._lost_race(account_id, conf_id, numbers) from exc
        row.body, row.owner_id, row.modified = json.dumps(body), body.get("owner_id"), now
        row.revision, row.rev_hash = row.revision + 1, rev_hash
        logger.info("conference %s updated in account %s", conf_id, account_id)
        return self._to_doc(row)
