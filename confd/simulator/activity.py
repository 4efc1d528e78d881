"""Simulated callers for `confd demo`: people join, talk, get muted and unmuted, and leave.

Everything goes through the ConferenceModel, so the events a demo user sees are the ones a real
FreeSWITCH would send for the same steps.  Mutes go through ``model.api`` (what an operator's
command does); joins, talking and hangups are what callers do.
"""

from __future__ import annotations

import logging
import random
from typing import Dict, List, Optional, Protocol

import gevent

from confd.simulator.model import ConferenceModel

log = logging.getLogger(__name__)

MAX_MEMBERS = 6  # per conference: enough to look alive, few enough to read
NAMES = (
    "Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
)  # fmt: skip
ACCOUNT_ID_VAR = "ecallmgr_Account-ID"  # what Kazoo's ecallmgr sets on every channel


class StopEvent(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: Optional[float] = None) -> bool: ...


def run_activity(
    model: ConferenceModel,
    conferences: List[str],
    *,
    rng: random.Random,
    interval: float = 1.0,
    stop_event: Optional[StopEvent] = None,
    account_id: Optional[str] = None,
    max_members: int = MAX_MEMBERS,
    max_steps: Optional[int] = None,
) -> int:
    """Drive ``model`` with one caller action every ``interval`` seconds until ``stop_event`` is
    set (or ``max_steps`` actions were taken); returns the number of actions taken.

    Meant to run in its own greenlet; it waits with ``stop_event.wait`` (or ``gevent.sleep``).
    """
    if not conferences:
        raise ValueError("run_activity needs at least one conference name")
    steps = 0
    while not (stop_event is not None and stop_event.is_set()):
        if max_steps is not None and steps >= max_steps:
            break
        try:
            step(model, rng.choice(conferences), rng, account_id, max_members)
        except Exception:  # the demo must keep going whatever one step did
            log.exception("simulated activity step failed")
        steps += 1
        if stop_event is not None:
            if stop_event.wait(interval):
                break
        elif interval > 0:
            gevent.sleep(interval)
        else:
            gevent.sleep(0)
    return steps


def step(
    model: ConferenceModel,
    conference: str,
    rng: random.Random,
    account_id: Optional[str] = None,
    max_members: int = MAX_MEMBERS,
) -> str:
    """One caller action on ``conference``; returns what was done (for logs and tests)."""
    members = model.members(conference)
    if len(members) < 2 or (len(members) < max_members and rng.random() < 0.25):
        return _join(model, conference, rng, account_id)
    member = rng.choice(members)
    roll = rng.random()
    if roll < 0.12 or len(members) > max_members:
        model.leave(member.id)
        return "leave"
    if roll < 0.55:
        if member.talking:
            model.set_talking(member.id, False)
            return "stop-talking"
        if member.can_speak and model.set_talking(member.id, True, energy=rng.randint(900, 9000)):
            return "start-talking"
        model.api(f"conference {conference} unmute {member.id}")
        return "unmute"
    if roll < 0.75:
        verb = "unmute" if not member.can_speak else "mute"
        model.api(f"conference {conference} {verb} {member.id}")
        return verb
    if roll < 0.85:
        verb = "undeaf" if not member.can_hear else "deaf"
        model.api(f"conference {conference} {verb} {member.id}")
        return verb
    # Talking streaks end on their own.
    for m in members:
        if m.talking:
            model.set_talking(m.id, False)
    return "quiet"


def _join(
    model: ConferenceModel, conference: str, rng: random.Random, account_id: Optional[str]
) -> str:
    number = f"1{rng.randint(0, 999):03d}"
    channel_vars: Dict[str, str] = {}
    if account_id:
        channel_vars[ACCOUNT_ID_VAR] = account_id
    model.join(
        conference,
        caller_id_name=rng.choice(NAMES),
        caller_id_number=number,
        moderator=rng.random() < 0.15,
        muted=rng.random() < 0.1,
        channel_vars=channel_vars,
        # Demo callers dial in: real callers are inbound legs, and a lock refuses them.
        direction="inbound",
    )
    return "join"
