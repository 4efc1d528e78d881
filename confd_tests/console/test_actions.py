"""Every button (console.md "What it does" 5, "Accessible names"): the simulated node receives
exactly the command; the control is pending (aria-busy, aria-disabled, same name) until the
event that confirms it, and only then does the row change; -ERR, a stall or no event within
5 s roll it back with an inline alert; kicks ask first, and focus goes where it should."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from confd_tests.console.harness import http, wait_for

# What the page shows of the conference's state: rows, and every toggle's state.
STATE = """() => [...document.querySelectorAll('table.participants tbody tr, .controls')]
  .map(e => (e.dataset.pid || 'conference') + ':' +
    [...e.querySelectorAll('button')].map(b => b.getAttribute('aria-pressed')).join(','))"""


def setup_room(c, sim, account, conference, name):
    conf = conference(name)
    ids = {
        "Alice": sim.join(conf, "Alice", "1001", moderator=True),
        "Bob": sim.join(conf, "Bob", "1002"),
        "Carol": sim.join(conf, "Carol", "1003"),
    }
    account.wait_participants(conf, 3)
    c.open_conference(conf)
    expect(c.participant_rows()).to_have_count(3)
    return conf, ids


def expect_pending(button):
    expect(button).to_have_attribute("aria-busy", "true")
    expect(button).to_have_attribute("aria-disabled", "true")


def expect_settled(button):
    expect(button).not_to_have_attribute("aria-busy", "true")
    expect(button).not_to_have_attribute("aria-disabled", "true")


def press_and_hold_event(c, sim, conf, button, url_part, expected_commands):
    """Click with the node's events held back: the exact commands arrive and confd answers
    202, yet the control stays pending and nothing else changes until the events come."""
    page = c.page
    since = len(sim.commands())
    before = page.evaluate(STATE)
    sim.close_gate()
    try:
        with page.expect_response(
            lambda r: r.request.method == "PUT" and url_part in r.url
        ) as answer:
            button.click()
        assert answer.value.status == 202
        assert sim.conference_commands(conf, since) == expected_commands
        expect_pending(button)
        assert page.evaluate(STATE) == before  # not optimistic: nothing changed yet
        page.wait_for_timeout(300)  # a sample later: nothing may change without the event
        assert page.evaluate(STATE) == before
        expect_pending(button)
    finally:
        sim.open_gate()
    expect_settled(button)


def test_each_participant_toggle_sends_its_command_and_is_confirmed_by_its_event(
    signed_in, sim, account, conference
):
    c = signed_in
    conf, ids = setup_room(c, sim, account, conference, "Toggle room")
    bob = ids["Bob"]
    mute = c.page.get_by_role("button", name="Mute Bob")
    deaf = c.page.get_by_role("button", name="Deaf Bob")
    url = "/participants/%d" % bob
    for button, pressed_after, command in (
        (mute, "true", "mute"),
        (mute, "false", "unmute"),
        (deaf, "true", "deaf"),
        (deaf, "false", "undeaf"),
    ):
        pressed_before = "false" if pressed_after == "true" else "true"
        expect(button).to_have_attribute("aria-pressed", pressed_before)
        press_and_hold_event(
            c, sim, conf, button, url, ["api conference %s %s %d" % (conf, command, bob)]
        )
        expect(button).to_have_attribute("aria-pressed", pressed_after)
    member = sim.member(bob)
    assert (member.can_speak, member.can_hear) == (True, True)
    expect(c.row("Bob").get_by_role("alert")).to_have_count(0)
    assert c.errors == []


def test_each_conference_control_sends_its_command_and_is_confirmed_by_its_events(
    signed_in, sim, account, conference
):
    c = signed_in
    page = c.page
    conf, ids = setup_room(c, sim, account, conference, "Control room")
    lock = page.get_by_role("button", name="Lock", exact=True)
    url = "/conferences/%s" % conf
    press_and_hold_event(c, sim, conf, lock, url, ["api conference %s lock" % conf])
    expect(lock).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_text("Locked", exact=True)).to_be_visible()
    press_and_hold_event(c, sim, conf, lock, url, ["api conference %s unlock" % conf])
    expect(lock).to_have_attribute("aria-pressed", "false")

    members = ["Bob", "Carol"]  # api.md: everyone but the moderators
    for label, word, column, pressed in (
        ("Mute all", "mute", "Mute", "true"),
        ("Unmute all", "unmute", "Mute", "false"),
        ("Deaf all", "deaf", "Deaf", "true"),
        ("Undeaf all", "undeaf", "Deaf", "false"),
    ):
        button = page.get_by_role("button", name=label, exact=True)
        press_and_hold_event(
            c, sim, conf, button, url + "/participants",
            ["api conference %s %s non_moderator" % (conf, word)],
        )  # fmt: skip
        for who in members:
            expect(page.get_by_role("button", name="%s %s" % (column, who))).to_have_attribute(
                "aria-pressed", pressed
            )
        expect(page.get_by_role("button", name="%s Alice" % column)).to_have_attribute(
            "aria-pressed", "false"
        )
    assert c.errors == []


def test_kick_asks_first_and_focus_follows_the_rules(signed_in, sim, account, conference):
    c = signed_in
    page = c.page
    conf, ids = setup_room(c, sim, account, conference, "Kick room")
    kick_bob = page.get_by_role("button", name="Kick Bob")
    since = len(sim.commands())

    kick_bob.click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Bob")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(kick_bob).to_be_focused()  # back to the control that opened it
    assert sim.conference_commands(conf, since) == []  # nothing sent without a yes

    kick_bob.click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Kick", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Kick Carol")).to_be_focused()  # the next row's
    expect(c.participant_rows()).to_have_count(2)
    assert sim.conference_commands(conf, since) == [
        "api conference %s kick %d" % (conf, ids["Bob"])
    ]

    kick_all = page.get_by_role("button", name="Kick all")
    kick_all.click()
    expect(dialog).to_contain_text("Alice")
    expect(dialog).to_contain_text("Carol")
    page.keyboard.press("Escape")  # Escape is Cancel
    expect(dialog).to_be_hidden()
    expect(kick_all).to_be_focused()
    kick_all.click()
    dialog.get_by_role("button", name="Kick", exact=True).click()
    page.mouse.move(5, 5)  # the pointer off the table: rows of people gone are removed
    expect(c.participant_rows()).to_have_count(0)
    expect(page.locator("table.participants")).to_be_focused()  # none left: the table
    assert sim.conference_commands(conf, since)[1:] == ["api conference %s kick all" % conf]
    assert sim.members(conf) == []
    assert c.errors == []


def test_a_freeswitch_error_rolls_back_with_an_inline_alert(signed_in, sim, account, conference):
    c = signed_in
    page = c.page
    conf, ids = setup_room(c, sim, account, conference, "Error room")
    bob = ids["Bob"]
    mute = page.get_by_role("button", name="Mute Bob")
    sim.fail_next("%s mute %d" % (conf, bob), "-ERR simulated failure\n")
    mute.click()
    alert = c.row("Bob").get_by_role("alert")
    expect(alert).to_have_text(re.compile(r"^Mute Bob failed: .*-ERR simulated failure"))
    expect_settled(mute)
    expect(mute).to_have_attribute("aria-pressed", "false")
    assert sim.member(bob).can_speak is True

    lock = page.get_by_role("button", name="Lock", exact=True)
    sim.fail_next("%s lock" % conf, "-ERR simulated failure\n")
    lock.click()
    expect(page.locator(".control-errors").get_by_role("alert")).to_have_text(
        re.compile(r"^Lock failed: .*-ERR simulated failure")
    )
    expect_settled(lock)
    expect(lock).to_have_attribute("aria-pressed", "false")

    # The next try works, and clears the error.
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(alert).to_have_count(0)
    assert c.errors == []


def test_a_stalled_freeswitch_rolls_back_with_an_inline_alert(signed_in, sim, account, conference):
    c = signed_in
    page = c.page
    conf, ids = setup_room(c, sim, account, conference, "Stall room")
    deaf = page.get_by_role("button", name="Deaf Carol")
    since = len(sim.commands())
    sim.hold_replies(True)
    try:
        deaf.click()
        expect_pending(deaf)
        wait_for(lambda: sim.conference_commands(conf, since), 20, "the command to arrive")
        expect(c.row("Carol").get_by_role("alert")).to_have_text(
            re.compile(r"^Deaf Carol (failed|was not confirmed)"), timeout=30000
        )
        expect_settled(deaf)
        expect(deaf).to_have_attribute("aria-pressed", "false")
    finally:
        sim.hold_replies(False)
        # confd dropped the command connection that stalled: wait until it has a new one, so
        # the next test's commands are answered.
        wait_for(
            lambda: http("PUT", account.url("/conferences/" + conf), {"data": {"action": "unlock"}},
                         account.token)[0] == 202,
            30,
            "confd's command connection back",
        )  # fmt: skip
    assert c.errors == []


def test_no_event_within_5_s_rolls_back_and_the_late_event_still_shows(
    signed_in, sim, account, conference
):
    c = signed_in
    page = c.page
    conf, ids = setup_room(c, sim, account, conference, "Silent room")
    mute = page.get_by_role("button", name="Mute Carol")
    sim.close_gate()
    try:
        with page.expect_response(lambda r: r.request.method == "PUT") as answer:
            mute.click()
        assert answer.value.status == 202  # FreeSWITCH said +OK ...
        alert = c.row("Carol").get_by_role("alert")
        expect(alert).to_have_text(  # ... but no event came
            "Mute Carol was not confirmed: FreeSWITCH sent no event within 5 s", timeout=30000
        )
        expect_settled(mute)
        expect(mute).to_have_attribute("aria-pressed", "false")
    finally:
        sim.open_gate()
    # What FreeSWITCH did shows when its event comes, late or not.
    expect(mute).to_have_attribute("aria-pressed", "true")
    assert c.errors == []
