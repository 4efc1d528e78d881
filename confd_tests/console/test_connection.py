"""Connection state (console.md "What it does" 6): the websocket cut -> "Reconnecting…", then
"Stale", controls disabled; back -> snapshot fetched again, events live again; a FreeSWITCH
node that is down shows as such, from /v2/health."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from confd_tests.console.harness import Confd, CutProxy
from confd_tests.netutil import free_port


def test_a_cut_websocket_reconnects_refetches_and_is_live_again(
    console_page, confd, sim, account, conference
):
    proxy = CutProxy(confd.port)
    try:
        conf = conference("Cut room")
        bob = sim.join(conf, "Bob", "1002")
        account.wait_participants(conf, 1)
        c = console_page(base="http://127.0.0.1:%d" % proxy.port).open()
        c.sign_in(account.api_key)
        c.open_conference(conf)
        page = c.page
        snapshots = []
        page.on(
            "request",
            lambda r: (
                snapshots.append(r.url)
                if r.method == "GET" and r.url.endswith("/conferences/" + conf)
                else None
            ),
        )
        status = page.locator("#connection")
        mute = page.get_by_role("button", name="Mute Bob")
        kick_all = page.get_by_role("button", name="Kick all")
        expect(mute).not_to_have_attribute("aria-disabled", "true")

        proxy.refusing = True
        proxy.cut()
        expect(status).to_have_text("Reconnecting…")
        expect(status).to_have_attribute("role", "status")
        for control in (mute, kick_all, page.get_by_role("button", name="Lock", exact=True)):
            expect(control).to_have_attribute("aria-disabled", "true")
        # Clicking a disabled control does nothing.
        since = len(sim.commands())
        mute.click(force=True)
        # While the page cannot hear: a caller joins, Bob is muted by someone else.
        sim.join(conf, "Carol", "1003")
        sim.api("conference %s mute %d" % (conf, bob))
        expect(status).to_have_text("Stale", timeout=30000)
        expect(mute).to_have_attribute("aria-disabled", "true")
        assert sim.conference_commands(conf, since) == []

        proxy.refusing = False
        expect(status).to_have_text("Live", timeout=60000)
        # The snapshot was taken again: what happened meanwhile is there, without a reload.
        expect(c.participant_rows()).to_have_count(2)
        expect(mute).to_have_attribute("aria-pressed", "true")
        expect(mute).not_to_have_attribute("aria-disabled", "true")
        assert len(snapshots) >= 1
        # And the events flow again.
        sim.leave(bob)
        page.mouse.move(5, 5)
        expect(c.participant_rows()).to_have_count(1)
        assert c.errors == []
    finally:
        proxy.close()


def test_a_node_that_is_down_shows_as_such(console_page, sim, tmp_path):
    """confd with two nodes, one of which never answers: /v2/health says so, the page too."""
    from confd.store import Store

    dead = free_port()
    both = Confd(tmp_path, sim.port, extra_nodes=("127.0.0.1:%d:ClueCon" % dead,))
    try:
        both.wait_connected()  # 200: one node is connected
        s = Store.from_url(both.db_url)
        try:
            _, key = s.accounts.create_account("nodes")
        finally:
            s.close()
        c = console_page(base=both.base).open().sign_in(key)
        expect(c.page.locator("#nodes").get_by_role("alert")).to_have_text(
            re.compile(r"^FreeSWITCH node 127\.0\.0\.1:%d is down" % dead), timeout=30000
        )
        expect(c.page.locator("#connection")).to_have_text("Live")  # confd itself is fine
    finally:
        both.stop()
