"""The operator console (console.md): a page served by confd itself at ``/console/``.

The page is static (HTML, CSS and plain ES modules in ``static/``, shipped as package data; no
CDN, nothing built at run time) and uses only what any client may: the public REST API and
``/v2/websocket``.  This module only serves those files: no view here reads or changes state,
so the console can never do what a curl user cannot.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from flask import Blueprint, Response, redirect, request

from confd.http.auth import public

log = logging.getLogger(__name__)

URL_PREFIX = "/console"
INDEX = "index.html"
STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# The page loads its own files and talks to its own origin only (REST and the websocket:
# CSP 3's 'self' covers ws:/wss: of the same host); icons are data: URIs in the CSS.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (the ETag makes that a 304): an upgraded confd is never
    # driven by a page cached from the previous version.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(directory: Path = STATIC_DIR) -> Dict[str, Asset]:
    """Every servable file of ``directory`` by name, read once: the set of URLs is fixed at
    start-up, so no request path ever reaches the file system."""
    assets: Dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:20]
        assets[path.name] = Asset(body, content_type, etag)
    if INDEX not in assets:
        raise RuntimeError("console: %s missing from %s" % (INDEX, directory))
    return assets


def _serve(asset: Optional[Asset]) -> Response:
    if asset is None:
        # Through the app's error handler: the API's 404 envelope, as for any unknown path.
        from werkzeug.exceptions import NotFound

        raise NotFound()
    resp = Response(asset.body, content_type=asset.content_type)
    resp.set_etag(asset.etag)
    resp.headers.update(SECURITY_HEADERS)
    return resp.make_conditional(request)  # 304 when the browser has this version


def blueprint(directory: Path = STATIC_DIR) -> Blueprint:
    """``/console/`` and its files, none of which needs a token (the page signs in itself)."""
    assets = load_assets(directory)
    bp = Blueprint("console", __name__)

    @public
    def index() -> Response:
        return _serve(assets[INDEX])

    @public
    def asset(name: str) -> Response:
        return _serve(assets.get(name))

    @public
    def bare() -> Response:
        # Relative URLs in the page resolve against /console/, never /.
        return redirect(URL_PREFIX + "/", code=308)

    bp.add_url_rule(URL_PREFIX, "bare", bare, methods=["GET"], strict_slashes=True)
    bp.add_url_rule(URL_PREFIX + "/", "index", index, methods=["GET"])
    bp.add_url_rule(URL_PREFIX + "/<name>", "asset", asset, methods=["GET"])
    log.debug("console: %d files", len(assets))
    return bp
