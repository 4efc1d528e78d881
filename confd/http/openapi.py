"""``GET /v2/openapi.json``: the hand-written API description shipped as ``openapi.yml``."""

from __future__ import annotations

from importlib import resources
from typing import Any, Dict

import yaml
from flask import Blueprint, Response, json

from confd.http.auth import public

SPEC_PACKAGE = "confd.http"
SPEC_RESOURCE = "openapi.yml"
PATH = "/v2/openapi.json"


def load_spec(version: str) -> Dict[str, Any]:
    """The OpenAPI document, with ``info.version`` set to the running version."""
    text = resources.files(SPEC_PACKAGE).joinpath(SPEC_RESOURCE).read_text("utf-8")
    spec = yaml.safe_load(text)
    spec.setdefault("info", {})["version"] = version
    return spec


def blueprint(version: str) -> Blueprint:
    payload = json.dumps(load_spec(version))  # read once, when the app is built
    bp = Blueprint("openapi", __name__)

    @public
    def openapi() -> Response:
        return Response(payload, mimetype="application/json")

    bp.add_url_rule(PATH, "openapi", openapi, methods=["GET"])
    return bp
