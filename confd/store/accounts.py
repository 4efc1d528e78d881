"""Accounts, api keys and auth tokens.

Api keys and tokens are 256-bit values from ``secrets``; only their SHA-256 is stored. A fast
unsalted hash is enough here because the inputs are uniformly random and far too large to
brute-force or precompute; slow password hashes (bcrypt, scrypt) exist for low-entropy,
human-chosen secrets, which these are not.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import peewee

from confd.store.db import db_session
from confd.store.errors import Forbidden, InvalidCredentials, NotFound
from confd.store.models import Models
from confd.store.values import shown, text_problem

logger = logging.getLogger(__name__)

ACCOUNT_ID_BYTES = 16  # 32 hex characters
API_KEY_BYTES = 32  # 64 hex characters
TOKEN_BYTES = 32  # 64 hex characters
# What issued ids and tokens look like: anything else is refused without a query.
ACCOUNT_ID_RE = re.compile(r"[0-9a-f]{%d}" % (2 * ACCOUNT_ID_BYTES))
TOKEN_RE = re.compile(r"[0-9a-f]{%d}" % (2 * TOKEN_BYTES))
TOKEN_QUERY_CHUNK = 500  # token hashes per query (SQLite's bound on query parameters)

# Compared against when a lookup finds nothing, so a miss costs the same comparison as a hit.
_NO_MATCH_HASH = "0" * 64
TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_SIZE = 10_000

Clock = Callable[[], float]


def secret_hash(secret: str) -> str:
    """Hex SHA-256 of an api key or token (see the module docstring for why SHA-256).

    ``surrogatepass``: a presented secret may hold a lone surrogate (JSON allows the escape);
    it must hash to something (that matches nothing: keys and tokens are hex), not raise.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def iso_utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=UTC).isoformat().replace("+00:00", "Z")


class AccountService:
    """Accounts, api keys and tokens of one database."""

    def __init__(self, db: peewee.Database, models: Models, clock: Clock = time.time) -> None:
        self._db = db
        self._m = models
        self._clock = clock
        self._token_cache: dict[str, tuple[dict[str, Any], float]] = {}

    # -- accounts ----------------------------------------------------------------------------

    @staticmethod
    def _account_dict(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "admin": bool(row.admin),
            "created": iso_utc(row.created),
        }

    def create_account(self, name: str, admin: bool = False) -> tuple[dict[str, Any], str]:
        """Create an account; return ``(account, api_key)``. The key is shown only this once."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("account name must be a non-empty string")
        reason = text_problem(name)
        if reason is not None:
            raise ValueError(f"account name '{shown(name)}' holds {reason}")
        account_id = secrets.token_hex(ACCOUNT_ID_BYTES)
        api_key = secrets.token_hex(API_KEY_BYTES)
        with db_session(self._db), self._db.atomic():
            row = self._m.account.create(
                id=account_id,
                name=name,
                api_key_hash=secret_hash(api_key),
                admin=bool(admin),
                created=self._clock(),
            )
        logger.info("account %s created (admin=%s)", account_id, bool(admin))
        return self._account_dict(row), api_key

    def list_accounts(self) -> list[dict[str, Any]]:
        """Every account, oldest first; never any key material."""
        acc = self._m.account
        with db_session(self._db):
            rows = list(acc.select().order_by(acc.created, acc.id))
        return [self._account_dict(r) for r in rows]

    def get_account(self, account_id: str) -> dict[str, Any]:
        """The account, or ``NotFound(account_id)``."""
        with db_session(self._db):
            row = self._m.account.get_or_none(self._m.account.id == account_id)
        if row is None:
            raise NotFound(account_id)
        return self._account_dict(row)

    def account_exists(self, account_id: str) -> bool:
        with db_session(self._db):
            return self._m.account.get_or_none(self._m.account.id == account_id) is not None

    def rotate_key(self, account_id: str) -> str:
        """Give the account a new api key and return it; the old key stops working at once.

        Tokens obtained with the old key are revoked too: rotating is what an operator does
        when a key may have leaked, and tokens minted with it are just as suspect.
        """
        api_key = secrets.token_hex(API_KEY_BYTES)
        self._token_cache.clear()  # its tokens are revoked below
        acc = self._m.account
        with db_session(self._db), self._db.atomic():
            updated = (
                acc.update(api_key_hash=secret_hash(api_key)).where(acc.id == account_id).execute()
            )
            if not updated:
                raise NotFound(account_id)
            self._m.token.delete().where(self._m.token.account == account_id).execute()
        logger.info("api key of account %s rotated", account_id)
        return api_key

    def authenticate(self, api_key: str) -> dict[str, Any]:
        """The account owning ``api_key``, or ``InvalidCredentials``."""
        if not isinstance(api_key, str) or not api_key:
            raise InvalidCredentials()
        wanted = secret_hash(api_key)
        acc = self._m.account
        with db_session(self._db):
            row = acc.get_or_none(acc.api_key_hash == wanted)
        stored = row.api_key_hash if row is not None else _NO_MATCH_HASH
        # The index lookup finds the row; the constant-time comparison is what decides.
        if not hmac.compare_digest(stored, wanted) or row is None:
            raise InvalidCredentials()
        return self._account_dict(row)

    # -- tokens ------------------------------------------------------------------------------

    def issue_token(self, account_id: str, ttl: int) -> str:
        """A new auth token for the account, valid ``ttl`` seconds (stored hashed)."""
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        token = secrets.token_hex(TOKEN_BYTES)
        now = self._clock()
        tok = self._m.token
        with db_session(self._db), self._db.atomic():
            if self._m.account.get_or_none(self._m.account.id == account_id) is None:
                raise NotFound(account_id)
            # Opportunistic purge: issuing is rare enough that this costs nothing noticeable.
            tok.delete().where(tok.expires_at <= now).execute()
            tok.create(token_hash=secret_hash(token), account=account_id, expires_at=now + ttl)
        return token

    def check_token(self, token: str | None) -> dict[str, Any]:
        """The account of a valid token, or ``InvalidCredentials`` (missing/unknown/expired)."""
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise InvalidCredentials()
        wanted = secret_hash(token)
        now = self._clock()
        cached = self._token_cache.get(wanted)
        if cached is not None and now < cached[1]:
            return dict(cached[0])
        tok, acc = self._m.token, self._m.account
        with db_session(self._db):
            row = tok.select(tok, acc).join(acc).where(tok.token_hash == wanted).get_or_none()
            stored = row.token_hash if row is not None else _NO_MATCH_HASH
            if not hmac.compare_digest(stored, wanted) or row is None:
                raise InvalidCredentials()
            if row.expires_at <= now:
                tok.delete().where(tok.token_hash == wanted).execute()
                raise InvalidCredentials()
            account = self._account_dict(row.account)
        # Every request checks its token: remember a valid one briefly (never past its expiry).
        # A revocation in this process clears it at once; one made by another process (the
        # accounts CLI) takes effect within TOKEN_CACHE_SECONDS.
        if len(self._token_cache) >= TOKEN_CACHE_SIZE:
            self._token_cache.pop(next(iter(self._token_cache)))
        self._token_cache[wanted] = (account, min(now + TOKEN_CACHE_SECONDS, row.expires_at))
        return dict(account)

    def scope(self, token: str | None, account_id: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """May ``token`` act for account ``account_id``? The one answer, for HTTP account paths
        and websocket subscriptions alike (operations.md): a token acts for its own account; an
        admin account's token for every account.  Returns ``(the token's account, the account
        it acts for)``.  ``InvalidCredentials``: a missing, unknown or expired token (checked
        first); ``Forbidden``: a non-admin token and another account, existing or not (it
        cannot probe which exist); ``NotFound``: an admin token and no such account."""
        account = self.check_token(token)
        if account_id == account["id"]:
            return account, account
        if not account["admin"]:
            raise Forbidden(str(account_id))
        if not isinstance(account_id, str) or not ACCOUNT_ID_RE.fullmatch(account_id):
            raise NotFound(str(account_id))
        return account, self.get_account(account_id)

    def valid_tokens(self, tokens: Iterable[str]) -> set[str]:
        """Which of ``tokens`` are still valid (issued, neither revoked nor expired): one query
        per TOKEN_QUERY_CHUNK, never answered from the cache, so a revocation made by another
        process (``confd accounts rotate-key``) shows at once.  For long-lived subscriptions,
        re-checked together every few seconds."""
        by_hash = {
            secret_hash(t): t for t in tokens if isinstance(t, str) and TOKEN_RE.fullmatch(t)
        }
        hashes = list(by_hash)
        now = self._clock()
        tok = self._m.token
        valid: set[str] = set()
        with db_session(self._db):
            for i in range(0, len(hashes), TOKEN_QUERY_CHUNK):
                rows = tok.select(tok.token_hash).where(
                    tok.token_hash.in_(hashes[i : i + TOKEN_QUERY_CHUNK]) & (tok.expires_at > now)
                )
                valid.update(by_hash[row.token_hash] for row in rows)
        return valid

    def token_expiry(self, token: str) -> float | None:
        """When a token expires (Unix time), or None for an unknown token."""
        tok = self._m.token
        with db_session(self._db):
            row = tok.get_or_none(tok.token_hash == secret_hash(token))
        return float(row.expires_at) if row is not None else None

    def revoke_token(self, token: str) -> None:
        """Forget a token (no error if it is unknown)."""
        self._token_cache.pop(secret_hash(token), None)
        tok = self._m.token
        with db_session(self._db):
            tok.delete().where(tok.token_hash == secret_hash(token)).execute()
