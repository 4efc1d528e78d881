"""``GET /v2/health`` (no token) and ``GET /metrics``."""

from __future__ import annotations

from typing import Optional

from flask import Blueprint, Response, g

from confd.http import envelope
from confd.http.auth import public
from confd.http.responses import render

blueprint = Blueprint("health", __name__)


@blueprint.route("/v2/health", methods=["GET"])
@public
def health() -> Response:
    ctx = g.ctx
    nodes = ctx.health()
    data = {"nodes": nodes}
    data.update(ctx.health_extra())  # e.g. "amqp": the publisher's state, when configured
    # In one process only the FreeSWITCH nodes decide the status: with the broker away confd
    # still controls conferences (events wait in a bounded buffer).  A cluster member that
    # lost its database session or its broker cannot answer for the others: it says why.
    unready = ctx.unready()
    if unready is not None:
        data["unready"] = unready
        failure: Optional[str] = "service_unavailable"
    elif any(n.get("connected") for n in nodes):
        failure = None
    else:
        failure = "focus_unavailable"
    meta = {"request_id": g.request_id, "node": ctx.node_name, "version": ctx.version}
    if failure is None:
        return render(200, envelope.success(data, **meta))
    return render(503, envelope.error(503, failure, data, **meta))


@blueprint.route("/metrics", methods=["GET"])
@public
def metrics() -> Response:
    ctx = g.ctx
    if ctx.metrics_text is None:
        return Response("", mimetype="text/plain")
    payload, content_type = ctx.metrics_text()
    return Response(payload, content_type=content_type)
