"""Retry pacing shared by everything that reconnects (FreeSWITCH nodes, the AMQP broker)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: attempt 0 waits ``lo``; then up to ``lo * 2**n`` capped
    at ``hi``, drawn uniformly from the upper half so retries of many daemons spread out."""
    if attempt <= 0:
        return lo
    ceiling = min(hi, lo * (2**attempt))
    return max(lo, rng.uniform(ceiling / 2, ceiling))
