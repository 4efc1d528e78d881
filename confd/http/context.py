"""What the HTTP layer is handed by the daemon, and the app-wide keys the views share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

# app.extensions key of the conference document defaults (what an ad-hoc conference shows).
DEFAULTS_EXTENSION = "confd.conference_defaults"


@dataclass
class ApiContext:
    """What the HTTP layer may use; handed in by the daemon (no reach-around to ESL)."""

    version: str
    node_name: str
    health: Callable[[], List[Dict[str, Any]]]
    health_extra: Callable[[], Dict[str, Any]] = dict
    # Why this instance cannot serve now though nodes are up (a cluster member that lost its
    # database session or its broker); None: it can.
    unready: Callable[[], Optional[str]] = lambda: None
    observe_request: Callable[[str, str, int], None] = lambda route, method, status: None
    metrics_text: Optional[Callable[[], tuple]] = None
    store: Any = None  # confd.store.Store
    control: Any = None  # confd.conferences.control.ConferenceControl
    builder: Any = None  # confd.conferences.commands.CommandBuilder
    token_ttl: int = 3600
    channel_var_prefix: str = "ecallmgr_"
