"""``/console/`` is served by confd itself (no token, no CDN, no build step): the files ship as
package data, every module the page imports is served, and the responses carry a CSP that
keeps the page to its own origin."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from flask import Flask

from confd import console
from confd_tests.console.harness import ROOT, http

STATIC = Path(console.__file__).parent / "static"


def test_the_page_and_its_files_are_served_without_a_token(confd):
    status, body = http("GET", confd.base + "/console/")
    assert status == 200 and b'<script type="module" src="console.js">' in body
    for name in ("console.js", "console.css", "model.js"):
        status, _ = http("GET", confd.base + "/console/" + name)
        assert status == 200, name


def test_headers_keep_the_page_to_its_own_origin(confd):
    import urllib.request

    with urllib.request.urlopen(confd.base + "/console/console.js") as resp:
        assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
    req = urllib.request.Request(
        confd.base + "/console/console.js", headers={"If-None-Match": etag}
    )
    try:
        urllib.request.urlopen(req)
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as exc:
        assert exc.code == 304


def test_unknown_files_are_the_api_404_and_the_bare_path_redirects(confd):
    status, body = http("GET", confd.base + "/console/nope.js")
    assert status == 404 and body["message"] == "not_found"
    status, body = http("GET", confd.base + "/console/..%2Fconsole%2F__init__.py")
    assert status == 404
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(confd.base + "/console")
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 308 and exc.headers["Location"].endswith("/console/")


def test_every_module_the_page_imports_is_served():
    assets = console.load_assets()
    imported = set()
    for name, asset in assets.items():
        if name.endswith(".js"):
            imported.update(re.findall(r'from "\./([\w.-]+)"', asset.body.decode()))
    assert imported and imported <= set(assets)
    index = assets["index.html"].body.decode()
    for ref in re.findall(r'(?:src|href)="([\w.-]+\.(?:js|css))"', index):
        assert ref in assets


def test_the_files_ship_as_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["confd"].split(",")]
    assert "console/static/*" in globs
    assert {p.name for p in STATIC.iterdir()} >= {"index.html", "console.css", "console.js"}


def test_a_console_without_its_page_refuses_to_start(tmp_path):
    (tmp_path / "console.js").write_text("")
    with pytest.raises(RuntimeError, match="index.html"):
        console.blueprint(tmp_path)


def test_the_blueprint_needs_no_token():
    from confd.http.auth import PUBLIC_ATTR

    app = Flask("t")
    app.register_blueprint(console.blueprint())
    views = [v for k, v in app.view_functions.items() if k.startswith("console.")]
    assert len(views) == 3 and all(getattr(v, PUBLIC_ATTR, False) for v in views)


def test_confd_demo_prints_the_console_url_and_the_key_to_paste():
    from confd.simulator.demo import instructions

    text = instructions("http://127.0.0.1:8000", "a" * 32, "b" * 64, "c" * 32)
    line = next(ln for ln in text.splitlines() if "/console/" in ln)
    assert "http://127.0.0.1:8000/console/" in line and "api key" in line
    assert "b" * 64 in text
