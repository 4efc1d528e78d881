"""Which conferences an account may address (api.md, "Which live conference belongs to which
account").

* A conference document of the account: its id is the FreeSWITCH conference name.
* An ad-hoc conference: live, no document anywhere, and its members' Account-ID channel variable
  names the account (the lowest member id carrying it decides). Listed and controllable; its
  document is the schema defaults.
* An orphan: live, no document, not claimed by an existing account. Only admin accounts see
  orphans, in their own conference list, marked ``_read_only.orphan: true``.

The rule itself is ``confd.conferences.ownership``, shared with the websocket's event scoping, so
a conference an account sees here is the one whose events its subscriptions receive.

Live conferences whose name the command builder refuses (outside the configured conference
name pattern) are never addressable, so they are never listed either.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set

from confd.conferences import ownership
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
    return ownership.name_check(ctx.builder.check_name)(name)


_LOOK_UP = object()  # live_kind: the document's owner is not known yet


def live_kind(
    ctx: Any, account: Dict[str, Any], conf: Conference, document_owner: Any = _LOOK_UP
) -> Optional[str]:
    """``ad_hoc`` or ``orphan`` when this live conference without a document of ``account``
    belongs to ``account`` that way; None otherwise (including when it has a document).
    ``document_owner``: the account of the conference's document (None: no document), when
    the caller knows it.  The caller has checked that the name is addressable."""
    claimed = ownership.claimed_account(conf.participants.values())
    if claimed != account["id"] and not account["admin"]:
        return None  # the members name another account: no need to ask the database
    if document_owner is _LOOK_UP:
        found = ctx.store.conferences.get_any(conf.name)
        document_owner = found[0] if found is not None else None
    if document_owner is not None:
        return None  # a document owns it (one of this account's own was found by find())
    owner = ownership.owner(addressable=True, document_owner=None, claim=claimed)
    if owner == account["id"]:
        return KIND_AD_HOC
    if account["admin"] and (owner is None or not ctx.store.accounts.account_exists(owner)):
        return KIND_ORPHAN
    return None


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


def live_only(
    ctx: Any, account: Dict[str, Any], own_ids: Set[str], view: Any = None
) -> List[Target]:
    """The account's ad-hoc conferences (and orphans, for an admin account), by id.
    ``view``: the live conferences as the request read them (``control.snapshot()``)."""
    view = view if view is not None else ctx.control.snapshot()
    found: Dict[str, Target] = {}
    candidates = [
        conf.name
        for conf in view.conferences()
        if conf.name not in own_ids and addressable(ctx, conf.name)
    ]
    documents = ctx.store.conferences.owners(candidates)  # one query, not one per conference
    for name in candidates:
        if name in found:
            continue
        live = view.live(name)  # the instance actions go to
        if live is None:
            continue
        kind = live_kind(ctx, account, live, document_owner=documents.get(name))
        if kind is not None:
            found[name] = Target(name, kind, None, live)
    return [found[name] for name in sorted(found)]
