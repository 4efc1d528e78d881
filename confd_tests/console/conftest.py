"""Fixtures of the console's browser tests: one simulated FreeSWITCH node and one ``confd``
process for the whole session, a headless Chromium, and a signed-in page per test.

Every test makes conferences of its own (fresh ids), so tests never see each other's callers;
the list tests look for their own conferences by name.

The browser is Debian's ``chromium`` driven by Playwright through ``executable_path``: when it
cannot start, every browser test FAILS with the reason (never a skip).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from confd_tests.console.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    Account,
    Confd,
    Sim,
    wait_for,
)

# Set (e.g. CONFD_SCREENSHOTS=docs) to save the README's screenshots into that folder.
SCREENSHOTS_ENV = "CONFD_SCREENSHOTS"
DESKTOP = {"width": 1180, "height": 760}


@pytest.fixture(scope="session")
def sim() -> Iterator[Sim]:
    node = Sim().start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def confd(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Confd]:
    proc = Confd(tmp_path_factory.mktemp("console-confd"), sim.port)
    try:
        yield proc.wait_connected()
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def store(confd: Confd) -> Iterator[Any]:
    from confd.store import Store

    s = Store.from_url(confd.db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def account(confd: Confd, store: Any) -> Account:
    acc, key = store.accounts.create_account("console-%s" % uuid.uuid4().hex[:6])
    return Account(confd.base, acc, key)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - the reason is the point of the failure
            pytest.fail(
                "the browser cannot start (%s): %s\nInstall Debian's chromium (apt-get install"
                " chromium) and Playwright for Python (pip install playwright); .ci/run does"
                " both." % (CHROMIUM, str(exc).splitlines()[0] if str(exc) else exc),
                pytrace=False,
            )
        yield chromium
        chromium.close()


class Console:
    """A browser page on the console, with the errors it raised."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def open(self, path: str = "/console/") -> Console:
        self.page.goto(self.base + path)
        return self

    def sign_in(self, api_key: str) -> Console:
        page = self.page
        page.get_by_label("API key").fill(api_key)
        page.get_by_role("button", name="Sign in").click()
        self.wait_live()
        return self

    def wait_live(self) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#connection")).to_have_text("Live", timeout=30000)

    def open_conference(self, conference_id: str) -> None:
        from playwright.sync_api import expect

        self.page.evaluate("id => { location.hash = '#/conference/' + id }", conference_id)
        # Synced: the controls are usable once the snapshot is in and the page is live.
        expect(self.page.get_by_role("button", name="Kick all")).not_to_have_attribute(
            "aria-disabled", "true", timeout=30000
        )

    def row(self, name: str) -> Any:
        return self.page.get_by_role("row").filter(
            has=self.page.get_by_role("rowheader", name=name, exact=True)
        )

    def participant_rows(self) -> Any:
        return (
            self.page.locator("table.participants")
            .get_by_role("row")
            .filter(has=self.page.get_by_role("rowheader"))
        )

    def screenshot(self, name: str) -> None:
        """Saved for the README when CONFD_SCREENSHOTS names a folder (relative: the repo)."""
        folder = os.environ.get(SCREENSHOTS_ENV)
        if not folder:
            return
        path = Path(folder)
        if not path.is_absolute():
            path = ROOT / path
        path.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path / ("console-%s.png" % name)))


@pytest.fixture
def console_page(browser: Any, confd: Confd) -> Iterator[Callable[..., Console]]:
    contexts = []

    def make(base: str = "", **context_args: Any) -> Console:
        context_args.setdefault("viewport", DESKTOP)
        ctx = browser.new_context(**context_args)
        ctx.set_default_timeout(30000)
        contexts.append(ctx)
        return Console(ctx.new_page(), base or confd.base)

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def signed_in(console_page: Callable[..., Console], account: Account) -> Console:
    return console_page().open().sign_in(account.api_key)


@pytest.fixture
def conference(account: Account) -> Callable[..., str]:
    """A new conference document of the account; returns its id."""

    def make(name: str = "", **doc: Any) -> str:
        return account.create_conference(name or "Room %s" % uuid.uuid4().hex[:6], **doc)

    return make


def caller_vars(account: Account) -> Dict[str, Any]:
    return {"channel_vars": {"ecallmgr_Account-ID": account.id}}


__all__ = ["Console", "wait_for"]
