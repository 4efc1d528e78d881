"""``GET /v2/health`` (no token) and ``GET /metrics``."""

from __future__ import annotations

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
    # Only the FreeSWITCH nodes decide the status: with the broker away confd still controls
    # conferences (events wait in a bounded buffer).
    up = any(n.get("connected") for n in nodes)
    unready = ctx.unready()
    if unready is not None:
        data["unready"] = unready
        body = envelope.error(
            503,
            "service_unavailable",
            data,
            request_id=g.request_id,
            node=ctx.node_name,
            version=ctx.version,
        )
        return render(503, body)
    if up:
        body = envelope.success(
            data, request_id=g.request_id, node=ctx.node_name, version=ctx.version
        )
    else:
        body = envelope.error(
            503,
            "focus_unavailable",
            data,
            request_id=g.request_id,
            node=ctx.node_name,
            version=ctx.version,
        )
    return render(200 if up else 503, body)


@blueprint.route("/metrics", methods=["GET"])
@public
def metrics() -> Response:
    ctx = g.ctx
    if ctx.metrics_text is None:
        return Response("", mimetype="text/plain")
    payload, content_type = ctx.metrics_text()
    return Response(payload, content_type=content_type)
