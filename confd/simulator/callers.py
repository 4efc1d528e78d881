"""Dial-in callers for ``confd demo``: simulated calls that enter through confd's caller entry
(FreeSWITCH's outbound event socket, ``confd.simulator.outbound``), typing numbers and PINs
from a fixed script, some right and some wrong, so a newcomer sees entry at work in the log
(``entry: call=... outcome=...``), in the REST view (the callers who got in) and on the
websocket (their add-member events).

The script goes round in order, so the first minute shows every path: a member PIN, a wrong
PIN three times, an unknown number, a moderator PIN, a number dialled directly, a wrong PIN
then the right one, a room without a PIN.  Callers who get in stay a while and hang up; at most
``max_live`` simulated calls exist at once, and finished ones are forgotten.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import gevent

from confd.simulator.activity import NAMES, StopEvent
from confd.simulator.outbound import OutboundSide, SimulatedCall

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds between two dial-ins
STAY = (10.0, 40.0)  # seconds a caller who got in stays (uniform)
MAX_LIVE = 8  # simulated calls at once (in entry or in a room)
TIME_SCALE = 1.0  # the prompts' tones and the digit timeout at their real length


@dataclass(frozen=True)
class Caller:
    """One scripted caller: what it types at each prompt, in order ("#" ends an entry)."""

    says: str  # for the demo's log: what this caller tries and what should happen
    answers: Tuple[str, ...] = ()
    destination: str = "entry"  # Caller-Destination-Number: all digits = the number itself


def demo_script(pin_room: str, open_room: str, member_pin: str, moderator_pin: str) -> List[Caller]:
    """The callers of the demo, for a room whose number asks a PIN (``member_pin`` makes a
    member, ``moderator_pin`` a moderator) and one whose number asks none."""
    wrong = "0000" if "0000" not in (member_pin, moderator_pin) else "0001"
    unknown = "7999" if "7999" not in (pin_room, open_room) else "7998"
    return [
        Caller(
            "dials %s, PIN %s: joins as a member" % (pin_room, member_pin),
            (pin_room + "#", member_pin + "#"),
        ),
        Caller(
            "dials %s, a wrong PIN three times: goodbye (bad_pin)" % pin_room,
            (pin_room + "#", wrong + "#", wrong + "#", wrong + "#"),
        ),
        Caller(
            "dials %s, a number no conference has, three times: goodbye (bad_number)" % unknown,
            (unknown + "#", unknown + "#", unknown + "#"),
        ),
        Caller(
            "dials %s, PIN %s: joins as a moderator" % (pin_room, moderator_pin),
            (pin_room + "#", moderator_pin + "#"),
        ),
        Caller(
            "calls %s directly (the destination number): joins, no PIN asked" % open_room,
            (),
            destination=open_room,
        ),
        Caller(
            "dials %s, a wrong PIN, then %s: joins as a member" % (pin_room, member_pin),
            (pin_room + "#", wrong + "#", member_pin + "#"),
        ),
        Caller("dials %s: joins, no PIN asked" % open_room, (open_room + "#",)),
    ]


def run_callers(
    side: OutboundSide,
    address: Tuple[str, int],
    script: Sequence[Caller],
    *,
    account_variable: str,
    account_id: str,
    rng: random.Random,
    interval: float = INTERVAL,
    stay: Tuple[float, float] = STAY,
    max_live: int = MAX_LIVE,
    stop_event: Optional[StopEvent] = None,
    max_calls: Optional[int] = None,
) -> int:
    """Dial the script's callers in order, one every ``interval`` seconds, into confd's entry
    listener at ``address``, until ``stop_event`` is set (or ``max_calls`` were dialled);
    returns how many were dialled.  Meant to run in its own greenlet; every call it made is
    hung up when it ends."""
    if not script:
        raise ValueError("run_callers needs at least one scripted caller")
    dialled = 0
    leaving: List[gevent.Greenlet] = []
    try:
        while not (stop_event is not None and stop_event.is_set()):
            if max_calls is not None and dialled >= max_calls:
                break
            side.calls[:] = [call for call in side.calls if not call.done.is_set()]
            leaving[:] = [g for g in leaving if not g.dead]
            if len(side.calls) < max_live:
                caller = script[dialled % len(script)]
                name = rng.choice(NAMES)
                log.info("demo: %s %s", name, caller.says)
                call = side.dial(
                    address,
                    variables={account_variable: account_id},
                    answers=list(caller.answers),
                    destination=caller.destination,
                    caller_id_name=name,
                    caller_id_number="1555%04d" % rng.randint(0, 9999),
                    time_scale=TIME_SCALE,
                )
                leaving.append(gevent.spawn(_stay_then_leave, call, rng.uniform(*stay)))
                dialled += 1
            if stop_event is not None:
                if stop_event.wait(interval):
                    break
            else:
                gevent.sleep(interval)
    finally:
        gevent.killall(leaving, block=False)
        for call in side.calls:
            call.hang_up()
    return dialled


def _stay_then_leave(call: SimulatedCall, seconds: float) -> None:
    """A caller who got in hangs up after ``seconds``; one refused is hung up by confd."""
    if not call.done.wait(seconds):
        call.hang_up()
