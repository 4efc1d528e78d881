"""Revoked auth tokens end websocket subscriptions within seconds, in one query for all.

A subscription lives as long as its connection, so its token must be checked again: a
``confd accounts rotate-key`` (run by another process, which only changes the database)
revokes every token of the account, and the README promises its subscriptions a close 1008
within 5 seconds, as REST stops within its 5-second token cache.  Asking the database about
each subscription's token every few seconds would be one query per connection per tick; here
one greenlet asks, every ``interval`` seconds, about the distinct tokens of every connection at
once (``Checker.valid_tokens``: one query per 500 tokens), and tells each connection which of
its tokens are gone.  Expiry needs no database: each connection closes at its tokens' expiry
time by itself.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional, Protocol, Set

import gevent

from confd.events.background import Background

log = logging.getLogger(__name__)

# Seconds between two checks: a revocation shows within this plus one query (README: 5 s).
INTERVAL = 2.0


class Watched(Protocol):
    """A connection, as the watch sees it (``WebsocketSession``)."""

    def tokens(self) -> Set[str]:
        """The tokens its subscriptions rely on now."""

    def revoked(self, tokens: Set[str]) -> None:
        """These of its tokens were revoked: end their subscriptions (must not block)."""


class Checker(Protocol):
    def valid_tokens(self, tokens: Iterable[str]) -> Optional[Set[str]]:
        """Which are still valid; None when that cannot be known now (database trouble)."""


class TokenWatch(Background):
    GREENLET_NAME = "ws-token-watch"

    def __init__(
        self,
        checker: Checker,
        connections: Callable[[], Iterable[Watched]],
        interval: float = INTERVAL,
    ) -> None:
        self.checker = checker
        self.connections = connections
        self.interval = interval
        self.checks = 0  # queries made (each covers every connection)
        self._greenlet: Optional[gevent.Greenlet] = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a bug here must not end the watch for good
                log.exception("websocket token watch failed")

    def check(self) -> None:
        """One round: every connection's tokens, one question, each connection told."""
        watched = [(c, c.tokens()) for c in list(self.connections())]
        asked: Set[str] = set()
        for _, tokens in watched:
            asked |= tokens
        if not asked:
            return
        self.checks += 1
        valid = self.checker.valid_tokens(asked)
        if valid is None:
            return  # unknown now: nothing is closed, the next round asks again
        gone = asked - valid
        if not gone:
            return
        log.info("websocket: %d auth token(s) revoked, closing their subscriptions", len(gone))
        for connection, tokens in watched:
            # Only tokens that were asked about: one subscribed during the query is not
            # in ``valid`` yet is no revoked one.
            mine = tokens & gone
            if mine:
                try:
                    connection.revoked(mine)
                except Exception:  # noqa: BLE001 - one connection's bug must not spare others
                    log.exception("websocket token watch: closing a connection failed")
