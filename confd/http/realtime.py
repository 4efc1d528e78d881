"""Live state as the API shows it (api.md, "Realtime").

Who a live conference belongs to is ``confd.conferences.ownership``.

Pure functions of a ``Conference`` value and the time; no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from confd.conferences.model import Conference

# Markers in ``_read_only`` for conferences that have no document of their own.
AD_HOC = "ad_hoc"
ORPHAN = "orphan"


def duration(conf: Conference, now: float) -> int:
    """Seconds since the conference started on FreeSWITCH (0 when the start is unknown)."""
    if conf.start_time <= 0:
        return 0
    return max(0, int(now - conf.start_time))


def counts(conf: Optional[Conference], now: float) -> Dict[str, Any]:
    """The realtime columns of a list row: zeros when the conference is not running."""
    if conf is None:
        return {"members": 0, "admins": 0, "duration": 0, "is_locked": False}
    return {
        "members": conf.members,
        "admins": conf.admins,
        "duration": duration(conf, now),
        "is_locked": conf.is_locked,
    }


def participants(conf: Optional[Conference], now: float) -> List[Dict[str, Any]]:
    """api.md's participant objects, by member id (join order); [] when not running."""
    if conf is None:
        return []
    return [conf.participants[pid].to_api(now) for pid in sorted(conf.participants)]


def read_only(conf: Optional[Conference], now: float) -> Dict[str, Any]:
    """The ``_read_only`` object of a single conference; ``focus`` is None when not running."""
    body = counts(conf, now)
    body["focus"] = conf.node if conf is not None else None
    body["participants"] = participants(conf, now)
    return body
