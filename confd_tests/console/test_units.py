"""The console's pure parts (static/model.js, static/pending.js), imported into a page and
checked with plain values: ordering, formatting, backoff, batching, PINs kept out, and the
pending-action rules (confirmed only by 2xx AND the event, in either order; failed by an HTTP
error or the timeout; settled once)."""

from __future__ import annotations

import pytest

IMPORT = (
    "async () => { window.m = await import('./model.js'); window.p = await import('./pending.js') }"
)


@pytest.fixture(scope="module")
def page(browser, confd):
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.goto(confd.base + "/console/")
    pg.evaluate(IMPORT)
    yield pg
    ctx.close()


def js(page, body):
    return page.evaluate("() => { %s }" % body)


def test_rows_are_ordered_by_join_time_then_participant_id(page):
    assert js(
        page,
        """const rows = [{join_time: 5, participant_id: 9}, {join_time: 3, participant_id: 4},
                         {join_time: 5, participant_id: 2}, {join_time: 3, participant_id: 1}];
           const sorted = [];
           for (const r of rows) sorted.splice(m.insertionIndex(sorted, r, m.compareJoin), 0, r);
           return sorted.map(r => r.participant_id);""",
    ) == [1, 4, 2, 9]
    # Equal keys go after the ones already there: an insertion never moves earlier rows.
    assert js(page, "return m.insertionIndex([1, 2, 2, 3], 2, (a, b) => a - b)") == 3


def test_formatting_and_gregorian_time(page):
    assert js(page, "return [0, 7, 59, 60, 723, 3600, 3723].map(m.formatElapsed)") == [
        "0:00", "0:07", "0:59", "1:00", "12:03", "1:00:00", "1:02:03",
    ]  # fmt: skip
    assert js(page, "return m.unixFromGregorian(63635217275)") == 1467998075


def test_backoff_is_exponential_jittered_and_capped(page):
    low = js(page, "return [0, 1, 2, 3, 4, 5, 10].map(a => m.backoffDelay(a, () => 0))")
    high = js(page, "return [0, 1, 2, 3, 4, 5, 10].map(a => m.backoffDelay(a, () => 1))")
    assert low == [250, 500, 1000, 2000, 4000, 7500, 7500]
    assert high == [500, 1000, 2000, 4000, 8000, 15000, 15000]
    spread = js(page, "return new Set([...Array(50)].map(() => m.backoffDelay(3))).size")
    assert spread > 1  # jittered: consoles cut together do not come back together


def test_numbers_never_pins_and_batched_announcements(page):
    numbers = js(
        page,
        """return m.conferenceNumbers({conference_numbers: ['100'],
             member: {numbers: ['101'], pins: ['9999']},
             moderator: {numbers: ['102'], pins: ['8888']}})""",
    )
    assert numbers == ["100", "101", "102 (moderator)"]
    assert js(page, "return m.summarizeChanges(['Ann', 'Bo'], ['Cy'])") == (
        "Ann joined. Bo joined. Cy left."
    )
    assert js(page, "return m.summarizeChanges(['a', 'b', 'c'], ['d', 'e'])") == (
        "3 people joined, 2 people left."
    )


PENDING = """
  const timers = [];
  const fake = {timeoutMs: 5000, setTimer: (fn) => { timers.push(fn); return timers.length; },
                clearTimer: () => {}};
  const settled = [];
  const make = (waiting) => new p.Pending('Mute Bob', waiting,
      (ev) => ev.all ? p.ALL : (ev.event === 'mute-member' ? ev.participant_id : null), fake)
    .start((ok, message) => settled.push([ok, message]));
"""


def test_pending_needs_both_the_answer_and_the_event_in_either_order(page):
    assert js(
        page,
        PENDING
        + """
        const a = make([7]);
        a.replied(); const afterReply = settled.length;
        a.seen({event: 'unmute-member', participant_id: 7}); const afterOther = settled.length;
        a.seen({event: 'mute-member', participant_id: 7});
        const b = make([7]);
        b.seen({event: 'mute-member', participant_id: 7}); const afterEvent = settled.length;
        b.replied();
        return [afterReply, afterOther, afterEvent, settled];""",
    ) == [0, 0, 1, [[True, None], [True, None]]]


def test_pending_fails_on_an_http_error_or_the_timeout_and_settles_once(page):
    assert js(
        page,
        PENDING
        + """
        const a = make([7]);
        a.failed({explain: () => 'FreeSWITCH refused it (-ERR no)'});
        a.replied(); a.seen({event: 'mute-member', participant_id: 7});
        const b = make([7]);
        b.replied();
        timers[1]();
        b.seen({event: 'mute-member', participant_id: 7});
        const c = make([1, 2, 3]);
        c.replied(); c.seen({all: true});
        return settled;""",
    ) == [
        [False, "Mute Bob failed: FreeSWITCH refused it (-ERR no)"],
        [False, "Mute Bob was not confirmed: FreeSWITCH sent no event within 5 s"],
        [True, None],
    ]
