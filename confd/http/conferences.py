"""Conference documents of an account and the conference-level action (api.md, "Conference
documents"): ``/v2/accounts/{A}/conferences[/{C}]``."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

from flask import Blueprint, Response, current_app, g

from confd.conferences.commands import CONFERENCE_ACTIONS
from confd.http import actions, body, lookup, realtime
from confd.http.context import DEFAULTS_EXTENSION
from confd.http.responses import ok
from confd.store import StoredDoc

COLLECTION = "/v2/accounts/<account_id>/conferences"
ITEM = COLLECTION + "/<conference_id>"
FILTER_OWNER_ID = "filter_owner_id"
SUMMARY_DEFAULT_FIELDS = ("member", "moderator", "conference_numbers")


def blueprint() -> Blueprint:
    bp = Blueprint("conferences", __name__)
    bp.add_url_rule(COLLECTION, "list", list_conferences, methods=["GET"])
    bp.add_url_rule(COLLECTION, "create", create_conference, methods=["PUT"])
    bp.add_url_rule(ITEM, "get", get_conference, methods=["GET"])
    bp.add_url_rule(ITEM, "replace", replace_conference, methods=["POST"])
    bp.add_url_rule(ITEM, "patch", patch_conference, methods=["PATCH"])
    bp.add_url_rule(ITEM, "delete", delete_conference, methods=["DELETE"])
    bp.add_url_rule(ITEM, "action", conference_action, methods=["PUT"])
    return bp


def _defaults() -> Dict[str, Any]:
    return current_app.extensions[DEFAULTS_EXTENSION]


def _single(data: Dict[str, Any], revision: Optional[str], status: int = 200) -> Response:
    if revision is None:
        return ok(data, status)
    return ok(data, status, revision=revision, headers={"ETag": body.etag(revision)})


def _with_focus(doc: StoredDoc) -> Dict[str, Any]:
    """A stored document as answered after a write: ``focus`` from live state, if running."""
    data = doc.data
    live = g.ctx.control.live(doc.id)
    if live is not None:
        data["focus"] = live.node
    return data


# --- list ----------------------------------------------------------------------------------------


def _live_row(target: lookup.Target, now: float) -> Dict[str, Any]:
    row: Dict[str, Any] = {"id": target.conference_id}
    for key in SUMMARY_DEFAULT_FIELDS:
        if key in _defaults():
            row[key] = copy.deepcopy(_defaults()[key])
    row.update(realtime.counts(target.live, now))
    row["_read_only"] = {target.kind: True}
    return row


def _merge_pages(
    docs: List[Tuple[str, Dict[str, Any]]],
    next_doc_key: Optional[str],
    extras: List[Tuple[str, Dict[str, Any]]],
    page_size: int,
) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """One page of stored rows and live-only rows, by id; the id the next page starts at."""
    rows = sorted(docs + extras, key=lambda pair: pair[0])
    candidates = [key for key in (next_doc_key,) if key is not None]
    if len(rows) > page_size:
        candidates.append(rows[page_size][0])
        rows = rows[:page_size]
    return [row for _, row in rows], (min(candidates) if candidates else None)


def list_conferences(account_id: str) -> Response:
    ctx, account = g.ctx, g.account
    start_key, page_size = body.paging()
    owner_id = body.query_text(FILTER_OWNER_ID)
    docs, next_doc_key = ctx.store.conferences.list(
        account_id, owner_id=owner_id, start_key=start_key, page_size=page_size
    )
    now = ctx.control.clock()
    view = ctx.control.snapshot()  # every row read from one view of the live conferences
    doc_rows = []
    for doc in docs:
        row = doc.summary
        row.update(realtime.counts(view.live(doc.id), now))
        doc_rows.append((doc.id, row))
    extras: List[Tuple[str, Dict[str, Any]]] = []
    if owner_id is None:  # live-only conferences have no owner_id
        for target in lookup.live_only(ctx, account, {doc.id for doc in docs}, view):
            if start_key is None or target.conference_id >= start_key:
                extras.append((target.conference_id, _live_row(target, now)))
    rows, next_key = _merge_pages(doc_rows, next_doc_key, extras, page_size)
    extra: Dict[str, Any] = {"page_size": len(rows)}
    if next_key is not None:
        extra["next_start_key"] = next_key
    return ok(rows, extra=extra)


# --- one document --------------------------------------------------------------------------------


def create_conference(account_id: str) -> Response:
    data = body.request_data()
    doc = g.ctx.store.conferences.create(account_id, data)
    return _single(doc.data, doc.revision, 201)


def get_conference(account_id: str, conference_id: str) -> Response:
    ctx = g.ctx
    target = lookup.find(ctx, g.account, conference_id)
    data = target.public(_defaults())
    data["_read_only"] = realtime.read_only(target.live, ctx.control.clock())
    if target.kind != lookup.KIND_DOCUMENT:
        data["_read_only"][target.kind] = True
    return _single(data, target.doc.revision if target.doc is not None else None)


def replace_conference(account_id: str, conference_id: str) -> Response:
    data = body.request_data()
    doc = g.ctx.store.conferences.replace(account_id, conference_id, data, body.if_match())
    return _single(_with_focus(doc), doc.revision)


def patch_conference(account_id: str, conference_id: str) -> Response:
    data = body.request_data()
    doc = g.ctx.store.conferences.patch(account_id, conference_id, data, body.if_match())
    return _single(_with_focus(doc), doc.revision)


def delete_conference(account_id: str, conference_id: str) -> Response:
    doc = g.ctx.store.conferences.delete(account_id, conference_id, body.if_match())
    data = doc.data
    data["_read_only"] = {"deleted": True}
    return _single(data, doc.revision)


# --- conference action ---------------------------------------------------------------------------


def conference_action(account_id: str, conference_id: str) -> Response:
    ctx = g.ctx
    action = body.request_action(CONFERENCE_ACTIONS)
    target = lookup.find(ctx, g.account, conference_id)
    result = actions.perform(
        ctx, account_id, target, lambda: ctx.builder.conference_action(conference_id, action)
    )
    return ok(result, 202)
