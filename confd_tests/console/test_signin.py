"""Sign-in (console.md "What it does" 1): api key -> token in sessionStorage only; a refused
key is announced; a 401 anywhere, an expired or a revoked token, return to sign-in."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from confd_tests.console.harness import Confd, http, wait_for

SESSION_KEY = "confd.console.session"
MSG_EXPIRED = "Your session has expired or was revoked. Sign in again."


def storage(page):
    return page.evaluate(
        """() => ({session: {...sessionStorage}, local: {...localStorage},
                   cookie: document.cookie})"""
    )


def test_a_refused_key_is_announced_and_nothing_is_stored(console_page):
    c = console_page().open()
    page = c.page
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill("0" * 64)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That API key was refused.")
    expect(page.get_by_label("API key")).to_be_visible()
    assert storage(page) == {"session": {}, "local": {}, "cookie": ""}
    assert c.errors == []


def test_a_good_key_signs_in_and_the_token_lives_in_session_storage_only(console_page, account):
    c = console_page().open().sign_in(account.api_key)
    page = c.page
    expect(page.get_by_role("heading", name="Live conferences")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Live")).to_have_text("Live")
    saved = storage(page)
    assert saved["local"] == {} and saved["cookie"] == ""
    session = json.loads(saved["session"][SESSION_KEY])
    assert session["accountId"] == account.id
    assert len(session["token"]) == 64
    # The token works: it is confd's, not something the page made up.
    status, _ = http("GET", account.url("/conferences"), token=session["token"])
    assert status == 200
    # A reload keeps the session (sessionStorage): no second sign-in.
    page.reload()
    c.wait_live()
    expect(page.get_by_role("heading", name="Live conferences")).to_be_visible()
    assert c.errors == []


def test_a_401_from_any_request_returns_to_sign_in_with_a_message(
    console_page, account, conference
):
    c = console_page().open().sign_in(account.api_key)
    page = c.page
    conf = conference()
    # confd answers this one request 401, as it would for a token that just expired.
    page.route(
        "**/v2/accounts/*/conferences/%s" % conf,
        lambda route: route.fulfill(
            status=401,
            content_type="application/json",
            body=json.dumps(
                {
                    "status": "error",
                    "error": "401",
                    "message": "invalid_credentials",
                    "data": {"message": "invalid credentials"},
                }
            ),
        ),
    )
    page.evaluate("id => { location.hash = '#/conference/' + id }", conf)
    expect(page.get_by_role("alert")).to_have_text(MSG_EXPIRED)
    expect(page.get_by_label("API key")).to_be_focused()
    assert SESSION_KEY not in storage(page)["session"]
    expect(page.locator("#connection")).to_be_hidden()


def test_a_revoked_token_returns_to_sign_in(console_page, account, store):
    c = console_page().open().sign_in(account.api_key)
    page = c.page
    token = json.loads(storage(page)["session"][SESSION_KEY])["token"]
    store.accounts.revoke_token(token)  # as `confd accounts rotate-key` does, from elsewhere
    expect(page.get_by_role("alert")).to_have_text(MSG_EXPIRED, timeout=30000)
    assert SESSION_KEY not in storage(page)["session"]


def test_an_expired_token_returns_to_sign_in(console_page, sim, tmp_path):
    """A confd whose tokens live 3 s: the page notices the expiry by itself (confd closes the
    websocket 1008 at the token's expiry), with no user action."""
    from confd.store import Store

    short = Confd(tmp_path, sim.port, {"auth": {"token_ttl": 3}})
    try:
        short.wait_connected()
        s = Store.from_url(short.db_url)
        try:
            acc, key = s.accounts.create_account("expiry")
        finally:
            s.close()
        c = console_page(base=short.base).open().sign_in(key)
        page = c.page
        expect(page.get_by_role("alert")).to_have_text(MSG_EXPIRED, timeout=30000)
        expect(page.get_by_label("API key")).to_be_visible()
        wait_for(lambda: SESSION_KEY not in storage(page)["session"], 10, "session cleared")
    finally:
        short.stop()


def test_an_admin_picks_any_account(console_page, store, account, sim, conference):
    conf = conference("Admin view room")
    sim.join(conf, "Alice", "1001")
    admin, key = store.accounts.create_account("console-admin", admin=True)
    c = console_page().open().sign_in(key)
    page = c.page
    field = page.get_by_label("Account ID")
    expect(field).to_have_value(admin["id"])
    field.fill("f" * 32)
    page.get_by_role("button", name="Open account").click()
    expect(page.locator("#account").get_by_role("alert")).to_have_text(
        "No account %s." % ("f" * 32)
    )
    field.fill(account.id)
    page.get_by_role("button", name="Open account").click()
    expect(page.get_by_role("link", name="Admin view room")).to_be_visible()
    expect(page.locator("#account-name")).to_contain_text("viewing account %s" % account.id)
    c.wait_live()
    # Events of that account reach the admin's page too.
    sim.join(conf, "Bob", "1002")
    cells = page.get_by_role("row").filter(has=page.get_by_role("link", name="Admin view room"))
    expect(cells.get_by_role("cell").nth(1)).to_have_text("2")
    for m in sim.members(conf):
        sim.leave(m.id)
