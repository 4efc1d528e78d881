"""Which conferences an account may address (api.md, "Which live conference belongs to which
account").

* A conference document of the account: its id is the FreeSWITCH conference name.
* An ad-hoc conference: live, no document anywhere, and its members' Account-ID channel variable
  names the account. Listed and controllable; its document is the schema defaults.
* An orphan: live, no document, not claimed by an existing account. Only admin accounts see
  orphans, in their own conference list, marked ``_read_only.orphan: true``.

Live conferences whose name the command builder refuses (outside the configured conference
name pattern) are never addressable, so they are never listed either.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set

from confd.conferences.commands import InvalidCommand
from confd.conferences.model import Conference
from confd.http import errors as e
from confd.http import realtime
from confd.store import NotFound, StoredDoc

KIND_DOCUMENT = "document"
KIND_AD_HOC = realtime.AD_HOC
KIND_ORPHAN = realtime.ORPHAN


@dataclass(frozen=True)
class Target:
    """A conference an account addresses: its stored document (if any) and its live instance."""

    conference_id: str
    kind: str
    doc: Optional[StoredDoc]
    live: Optional[Conference]

    def public(self, defaults: Dict[str, Any]) -> Dict[str, Any]:
        """The document as the API shows it, ``focus`` filled from live state."""
        data = self.doc.data if self.doc is not None else copy.deepcopy(defaults)
        data["id"] = self.conference_id
        if self.live is not None:
            data["focus"] = self.live.node
        return data


def addressable(ctx: Any, name: str) -> bool:
    """Whether ``name`` can be a conference confd controls (the builder accepts it)."""
    try:
        ctx.builder.check_name(name)
    except InvalidCommand:
        return False
    return True


def live_kind(
    ctx: Any, account: Dict[str, Any], conf: Conference, documented: Optional[bool] = None
) -> Optional[str]:
    """``ad_hoc`` or ``orphan`` when this live conference without a document of ``account``
    belongs to ``account`` that way; None otherwise (including when it has a document).
    ``documented``: whether some account has a document of it, when the caller knows."""
    claimed = realtime.claimed_account(conf)
    if claimed == account["id"]:
        kind = KIND_AD_HOC
    elif account["admin"] and (claimed is None or not ctx.store.accounts.account_exists(claimed)):
        kind = KIND_ORPHAN
    else:
        return None
    if documented is None:
        documented = ctx.store.conferences.get_any(conf.name) is not None
    if documented:
        return None  # a document of some account owns it
    return kind


def find(ctx: Any, account: Dict[str, Any], conference_id: str) -> Target:
    """The conference ``conference_id`` as ``account`` sees it, or 404 ``bad_identifier``."""
    if not addressable(ctx, conference_id):
        raise e.BadIdentifier(conference_id)
    live = ctx.control.live(conference_id)
    try:
        doc = ctx.store.conferences.get(account["id"], conference_id)
    except NotFound:
        doc = None
    if doc is not None:
        return Target(conference_id, KIND_DOCUMENT, doc, live)
    if live is not None:
        kind = live_kind(ctx, account, live)
        if kind is not None:
            return Target(conference_id, kind, None, live)
    raise e.BadIdentifier(conference_id)


def live_only(ctx: Any, account: Dict[str, Any], own_ids: Set[str]) -> List[Target]:
    """The account's ad-hoc conferences (and orphans, for an admin account), by id."""
    found: Dict[str, Target] = {}
    candidates = [
        conf.name
        for conf in ctx.control.conferences()
        if conf.name not in own_ids and addressable(ctx, conf.name)
    ]
    documented = ctx.store.conferences.owners(candidates)  # one query, not one per conference
    for name in candidates:
        if name in found:
            continue
        live = ctx.control.live(name)  # the instance actions go to
        if live is None:
            continue
        kind = live_kind(ctx, account, live, documented=name in documented)
        if kind is not None:
            found[name] = Target(name, kind, None, live)
    return [found[name] for name in sorted(found)]
