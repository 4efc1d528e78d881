"""Accessibility (console.md "What it does" 7): axe-core (vendored: vendor/axe.min.js, 4.14.1,
MPL-2.0, for the tests only) run in the page in every state an operator sees: zero serious or
critical violations, AA contrast included. And the page at 360 px wide: nothing scrolls
sideways, every control is on screen.

The README's screenshots are taken here (CONFD_SCREENSHOTS=docs)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text("utf-8")
SERIOUS = ("serious", "critical")
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ")),
  }));
}"""


def serious_violations(page):
    # Evaluated over the DevTools protocol, so the page's CSP (script-src 'self') allows it.
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE)
    return [v for v in page.evaluate(RUN_AXE) if v["impact"] in SERIOUS]


def busy_room(sim, account, conference, name, number):
    conf = conference(name, conference_numbers=[number], member={"pins": ["4242"]})
    ids = {}
    for name, number, moderator in (
        ("Alice Moderator", "1001", True),
        ("Bob", "1002", False),
        ("Carol", "1003", False),
        ("Dave", "1004", False),
    ):
        ids[name] = sim.join(conf, name, number, moderator=moderator)
    sim.talk(ids["Bob"], True)
    sim.api("conference %s mute %d" % (conf, ids["Dave"]))
    account.wait_participants(conf, 4)
    return conf, ids


def test_zero_serious_violations_in_every_state(console_page, sim, account, conference):
    c = console_page().open()
    page = c.page
    page.get_by_label("API key").fill("not a key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That API key was refused.")
    assert serious_violations(page) == [], "sign-in"
    # The scan is not vacuous: a button without a name is found.
    page.evaluate(
        "() => document.body.append(Object.assign(document.createElement('button'), {id: 'probe'}))"
    )
    assert [v["id"] for v in serious_violations(page)] == ["button-name"]
    page.evaluate("() => document.getElementById('probe').remove()")

    conf, ids = busy_room(sim, account, conference, "Daily standup", "7100")
    try:
        c.sign_in(account.api_key)
        expect(page.get_by_role("link", name="Daily standup")).to_be_visible()
        assert serious_violations(page) == [], "list"
        c.screenshot("list")

        c.open_conference(conf)
        expect(c.row("Bob").get_by_text("Talking", exact=True)).to_be_visible()
        assert serious_violations(page) == [], "conference"
        c.screenshot("conference")

        # A pending control (FreeSWITCH's event held back) and an inline error.
        sim.fail_next("%s deaf %d" % (conf, ids["Carol"]))
        page.get_by_role("button", name="Deaf Carol").click()
        expect(c.row("Carol").get_by_role("alert")).to_be_visible()
        sim.close_gate()
        try:
            page.get_by_role("button", name="Mute Carol").click()
            expect(page.get_by_role("button", name="Mute Carol")).to_have_attribute(
                "aria-busy", "true"
            )
            assert serious_violations(page) == [], "pending and error"
            c.screenshot("pending")
        finally:
            sim.open_gate()

        page.get_by_role("button", name="Kick Dave").click()
        expect(page.get_by_role("alertdialog")).to_be_visible()
        assert serious_violations(page) == [], "kick dialog"
        page.keyboard.press("Escape")
    finally:
        for m in sim.members(conf):
            sim.leave(m.id)
    assert c.errors == []


def test_usable_at_360_px_wide(console_page, sim, account, conference):
    conf, ids = busy_room(sim, account, conference, "Support bridge", "7101")
    try:
        c = console_page(viewport={"width": 360, "height": 740}).open()
        c.sign_in(account.api_key)
        page = c.page
        assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 360, "list"
        c.open_conference(conf)
        expect(c.participant_rows()).to_have_count(4)
        assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 360
        for button in page.get_by_role("button").all():
            if not button.is_visible():
                continue
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 360, button.inner_text()
            assert box["height"] >= 24  # a target a finger can hit (WCAG 2.5.8)
        assert serious_violations(page) == [], "360 px"
        c.screenshot("narrow")
        # Operable there too.
        page.get_by_role("button", name="Mute Carol").click()
        expect(page.get_by_role("button", name="Mute Carol")).to_have_attribute(
            "aria-pressed", "true"
        )
    finally:
        for m in sim.members(conf):
            sim.leave(m.id)
