"""Keyboard only (console.md "What it does" 7): sign in, open a conference, mute, deaf, kick
(with its dialog), lock, mute all and kick all, with Tab, Shift+Tab, Enter, Space and Escape;
no mouse event at all."""

from __future__ import annotations

from playwright.sync_api import expect

MAX_TABS = 80


def tab_to(page, locator, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until ``locator`` has the focus: it is reachable."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(MAX_TABS):
        page.keyboard.press(key)
        if locator.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError("not reachable with %s: %s" % (key, locator))


def test_everything_is_reachable_and_operable_from_the_keyboard(
    console_page, sim, account, conference
):
    conf = conference("Keys room")
    ids = {
        name: sim.join(conf, name, number, moderator=(name == "Alice"))
        for name, number in (("Alice", "1001"), ("Bob", "1002"), ("Carol", "1003"))
    }
    account.wait_participants(conf, 3)
    c = console_page().open()
    page = c.page
    page.evaluate("() => { window.__mouse = 0; addEventListener('mousedown', () => __mouse++) }")

    expect(page.get_by_label("API key")).to_be_focused()  # where sign-in starts
    tab_to(page, page.get_by_role("link", name="Skip to content"), backwards=True)
    page.keyboard.press("Tab")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(account.api_key)
    page.keyboard.press("Enter")
    c.wait_live()

    tab_to(page, page.get_by_role("link", name="Keys room"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Keys room")).to_be_focused()
    kick_all = page.get_by_role("button", name="Kick all")
    expect(kick_all).not_to_have_attribute("aria-disabled", "true")

    mute_bob = page.get_by_role("button", name="Mute Bob")
    tab_to(page, mute_bob)
    page.keyboard.press("Space")
    expect(mute_bob).to_have_attribute("aria-pressed", "true")
    expect(mute_bob).to_be_focused()  # it kept the focus while pending
    deaf_bob = page.get_by_role("button", name="Deaf Bob")
    tab_to(page, deaf_bob)
    page.keyboard.press("Enter")
    expect(deaf_bob).to_have_attribute("aria-pressed", "true")

    kick_bob = page.get_by_role("button", name="Kick Bob")
    tab_to(page, kick_bob)
    page.keyboard.press("Enter")
    dialog = page.get_by_role("alertdialog")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(kick_bob).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Kick", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Kick Carol")).to_be_focused()
    expect(c.participant_rows()).to_have_count(2)
    assert sim.member(ids["Bob"]) is None

    lock = page.get_by_role("button", name="Lock", exact=True)
    tab_to(page, lock, backwards=True)
    page.keyboard.press("Space")
    expect(lock).to_have_attribute("aria-pressed", "true")
    mute_all = page.get_by_role("button", name="Mute all", exact=True)
    tab_to(page, mute_all)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Mute Carol")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Mute Alice")).to_have_attribute("aria-pressed", "false")

    tab_to(page, kick_all)
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Kick", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(c.participant_rows()).to_have_count(0)
    expect(page.locator("table.participants")).to_be_focused()
    assert sim.members(conf) == []

    tab_to(page, page.get_by_role("link", name="All conferences"), backwards=True)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Live conferences")).to_be_focused()
    assert page.evaluate("() => window.__mouse") == 0
    assert c.errors == []
