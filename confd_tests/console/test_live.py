"""What happens on FreeSWITCH shows up without a reload (console.md "What it does" 2-4): the
list from websocket events (never polling, never a PIN), one conference's rows patched in
place in join order, the row under the mouse staying put, the talking indicator's rules."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from confd_tests.console.harness import wait_for

# Every websocket event the page receives, with its arrival time (performance.now()):
# registered before the page's own handler, so it runs first.
RECORD_FRAMES = """
window.__frames = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      try {
        const m = JSON.parse(e.data);
        if (m.action === "event") {
          window.__frames.push([performance.now(), m.data.event, m.data.participant_id]);
        }
      } catch {}
    });
  }
};
"""


def record_announcements(page):
    """Every text of the polite region for joins and leaves (#announcements)."""
    region = page.locator("#announcements")
    expect(region).to_have_attribute("role", "status")
    expect(region).to_have_attribute("aria-live", "polite")
    region.evaluate(
        """r => { window.__said = [];
           new MutationObserver(() => __said.push(r.textContent))
             .observe(r, {childList: true, characterData: true, subtree: true}); }"""
    )


def announced(page, at_least):
    """The announcements made so far, once they count ``at_least`` joins and leaves."""
    said = " ".join(page.evaluate("() => window.__said"))
    named = len(re.findall(r"(?<!people |person )(?:joined|left)\.", said))
    counted = sum(int(n) for n in re.findall(r"(\d+) (?:people|person) (?:joined|left)", said))
    return said if named + counted >= at_least else None


def names(c):
    return c.participant_rows().get_by_role("rowheader").all_inner_texts()


def test_the_list_follows_events_shows_numbers_never_pins_and_does_not_poll(
    signed_in, sim, account, conference
):
    c = signed_in
    page = c.page
    requests = []
    page.on("request", lambda r: requests.append((time.monotonic(), r.method, r.url)))
    conf = conference(
        "List room",
        conference_numbers=["7301"],
        member={"pins": ["98765"], "numbers": ["7302"]},
        moderator={"pins": ["24680"]},
    )
    link = page.get_by_role("link", name="List room")
    expect(link).to_have_count(0)  # not running: not on the list of live conferences
    sim.join(conf, "Alice", "1001")
    expect(link).to_be_visible()
    row = page.get_by_role("row").filter(has=link)
    cells = row.get_by_role("cell")
    expect(cells.nth(0)).to_have_text("7301, 7302")
    expect(cells.nth(1)).to_have_text("1")  # members
    expect(cells.nth(2)).to_have_text("0")  # admins
    expect(cells.nth(4)).to_have_text("Unlocked")
    bob = sim.join(conf, "Bob", "1002", moderator=True)
    expect(cells.nth(2)).to_have_text("1")
    sim.api("conference %s lock" % conf)
    expect(cells.nth(4)).to_have_text("Locked")
    body = page.locator("body").inner_text()
    assert "98765" not in body and "24680" not in body  # PINs never shown
    # No polling: with nothing happening, the page asks confd nothing about conferences
    # (once the requests that followed the last events are done).
    wait_for(lambda: not requests or time.monotonic() - requests[-1][0] > 1.0, 30, "quiet")
    quiet_from = time.monotonic()
    time.sleep(3)
    asked = [u for t, m, u in requests if t >= quiet_from and "/conferences" in u]
    assert asked == []
    sim.leave(bob)
    expect(cells.nth(2)).to_have_text("0")
    for m in sim.members(conf):
        sim.leave(m.id)
    expect(link).to_have_count(0)
    # The list itself was fetched once; later requests were single conferences, each
    # following an event.
    listings = [u for _, m, u in requests if re.search(r"/conferences(\?|$)", u)]
    assert listings == []
    assert c.errors == []


def test_rows_are_patched_in_place_in_join_order_and_the_row_under_the_mouse_stays(
    signed_in, sim, account, conference
):
    conf = conference("Patch room")
    alice = sim.join(conf, "Alice", "1001", moderator=True)
    sim.join(conf, "Bob", "1002")
    carol = sim.join(conf, "Carol", "1003")
    erin = sim.join(conf, "Erin", "1005")
    account.wait_participants(conf, 4)
    c = signed_in
    page = c.page
    page.evaluate("() => { window.__sameDocument = true }")
    c.open_conference(conf)
    record_announcements(page)
    expect(c.participant_rows()).to_have_count(4)
    assert names(c) == ["Alice", "Bob", "Carol", "Erin"]
    expect(c.row("Alice").get_by_role("cell").first).to_have_text("Moderator")
    c.row("Bob").evaluate("tr => { tr.dataset.marker = 'kept' }")
    box = c.row("Bob").bounding_box()
    x, y = box["x"] + 30, box["y"] + box["height"] / 2
    page.mouse.move(x, y)

    dave = sim.join(conf, "Dave", "1004")
    expect(c.participant_rows()).to_have_count(5)
    assert names(c) == ["Alice", "Bob", "Carol", "Erin", "Dave"]  # a join goes last
    sim.talk(carol, True)
    expect(c.row("Carol").get_by_text("Talking", exact=True)).to_be_visible()
    sim.api("conference %s mute %d" % (conf, alice))
    expect(c.page.get_by_role("button", name="Mute Alice")).to_have_attribute(
        "aria-pressed", "true"
    )
    sim.api("conference %s deaf %d" % (conf, dave))
    expect(c.page.get_by_role("button", name="Deaf Dave")).to_have_attribute("aria-pressed", "true")
    sim.leave(alice)  # above the row under the mouse
    sim.leave(erin)  # below it
    expect(c.participant_rows()).to_have_count(3)
    assert names(c) == ["Bob", "Carol", "Dave"]

    after = c.row("Bob").bounding_box()
    assert (after["x"], after["y"], after["height"]) == (box["x"], box["y"], box["height"])
    assert c.row("Bob").get_attribute("data-marker") == "kept"  # the same element, patched
    under = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('tr').dataset.marker", [x, y]
    )
    assert under == "kept"
    # Once the pointer leaves the table, the rows of those who left go.
    page.mouse.move(5, 5)
    expect(page.locator("table.participants tr.gone")).to_have_count(0)
    assert page.locator("table.participants tbody tr").count() == len(sim.members(conf)) == 3
    assert page.evaluate("() => window.__sameDocument") is True  # never reloaded
    expect(page.get_by_text("3 members, 0 admins")).to_be_visible()
    said = wait_for(lambda: announced(page, 3), 20, "the joins and leaves announced")
    assert "Dave joined." in said and "Alice left." in said and "Erin left." in said
    assert c.errors == []


def test_talking_is_held_after_stop_talking_and_cleared_at_once_on_mute(
    console_page, account, sim, conference
):
    c = console_page()
    c.page.add_init_script(RECORD_FRAMES)
    c.open().sign_in(account.api_key)
    page = c.page
    conf = conference("Talk room")
    bob = sim.join(conf, "Bob", "1002")
    account.wait_participants(conf, 1)
    c.open_conference(conf)
    talk = c.row("Bob").locator(".talk")
    # Each change of the indicator, and whether it was on when Bob's Mute turned pressed
    # (a MutationObserver batch holds the changes of one task: "at once" means in it).
    c.row("Bob").evaluate(
        """tr => {
          window.__talk = []; window.__talkAtMute = null;
          const talk = tr.querySelector('.talk');
          new MutationObserver(() => {
            window.__talk.push([performance.now(), talk.classList.contains('on')]);
          }).observe(talk, {attributes: true, attributeFilter: ['class']});
          const mute = tr.querySelector('button[data-act=mute]');
          new MutationObserver(() => {
            if (mute.getAttribute('aria-pressed') === 'true' && window.__talkAtMute === null)
              window.__talkAtMute = talk.classList.contains('on');
          }).observe(mute, {attributes: true, attributeFilter: ['aria-pressed']});
        }"""
    )
    sim.talk(bob, True)
    expect(talk).to_have_text("Talking")
    expect(talk).to_have_class(re.compile(r"\bon\b"))
    sim.talk(bob, False)
    expect(talk).to_have_text("Not talking")
    stop = page.evaluate(
        "pid => window.__frames.filter(f => f[1] === 'stop-talking' && f[2] === pid)", bob
    )
    off = [t for t, on in page.evaluate("() => window.__talk") if not on]
    assert len(stop) == 1 and len(off) == 1
    assert off[0] - stop[0][0] >= 390  # held ~400 ms after the event arrived

    sim.talk(bob, True)
    expect(talk).to_have_text("Talking")
    sim.api("conference %s mute %d" % (conf, bob))  # FreeSWITCH sends no stop-talking
    expect(page.get_by_role("button", name="Mute Bob")).to_have_attribute("aria-pressed", "true")
    expect(talk).to_have_text("Not talking")
    assert page.evaluate("() => window.__talkAtMute") is False  # cleared with the mute
    frames = [f[1] for f in page.evaluate("() => window.__frames") if f[2] == bob]
    assert frames[-2:] == ["start-talking", "mute-member"]
    assert c.errors == []


def test_no_talking_animation_when_the_user_prefers_reduced_motion(
    console_page, account, sim, conference
):
    conf = conference("Motion room")
    bob = sim.join(conf, "Bob", "1002")
    sim.talk(bob, True)
    account.wait_participants(conf, 1)
    try:
        for motion, expected in (("reduce", "none"), ("no-preference", "talk-start")):
            c = console_page(reduced_motion=motion).open().sign_in(account.api_key)
            c.open_conference(conf)
            icon = c.row("Bob").locator(".talk.on .ico")
            expect(icon).to_have_count(1)
            animation = icon.evaluate("e => getComputedStyle(e).animationName")
            assert animation == expected, motion
    finally:
        sim.talk(bob, False)


def test_a_participant_known_only_from_its_event_is_placed_by_its_join_time(
    signed_in, sim, account, conference
):
    """Late joiners go after everyone already there, and each keeps its place when others
    talk: 12 joins and 40 talking changes later the order is the join order."""
    conf = conference("Order room")
    first = sim.join(conf, "Caller 00", "2000")
    account.wait_participants(conf, 1)
    c = signed_in
    c.open_conference(conf)
    record_announcements(c.page)
    ids = [first] + [sim.join(conf, "Caller %02d" % i, "20%02d" % i) for i in range(1, 13)]
    expect(c.participant_rows()).to_have_count(13)
    # Announced in batches (names when few, counts when many), every join counted once.
    said = wait_for(lambda: announced(c.page, 12), 20, "12 joins announced")
    assert "left" not in said
    for n in range(40):
        sim.talk(ids[(n * 7) % 13], n % 2 == 0)
    for i in ids:
        sim.talk(i, False)
    wait_for(lambda: c.page.locator("table.participants .talk.on").count() == 0, 20, "quiet room")
    assert names(c) == ["Caller %02d" % i for i in range(13)]
