"""Which account a live conference belongs to (api.md): the one rule, for REST and events alike.

1. A conference whose name confd does not manage (outside ``freeswitch.conference_name_pattern``,
   refused by the command builder) is nobody's: it can never be addressed.
2. Else the account whose conference *document* has that id.
3. Else (ad-hoc) the account named by the ``<prefix>Account-ID`` channel variable of the member
   with the lowest member id that carries one.  FreeSWITCH hands out member ids in join order,
   so this is the earliest caller still there: the answer does not change while the conference
   runs unless that caller leaves, and it does not depend on which member an event is about.
4. Else nobody's (an orphan: admin accounts only).

The REST lookup (``confd.http.lookup``) applies it to the live conference it addresses; the
event hub (``confd.events.hub``) applies step 3 to the conference as it is at each event and
the websocket fan-out adds steps 1-2 (``confd.events.ownership``).  At an event, a leaving
member is still present (its ``del-member`` goes where its conference belonged), and a
conference without members belongs to whoever it last belonged to by step 3 (its
``conference-destroy`` follows its last member's ``del-member``).

Pure functions of plain values; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from confd.conferences.commands import InvalidCommand
from confd.conferences.model import Participant

# events.md: ``variable_<prefix>Account-ID`` becomes custom_channel_vars["account_id"].
ACCOUNT_VAR = "account_id"


@dataclass(frozen=True)
class Claim:
    """A member naming an account in its Account-ID variable."""

    member_id: int
    account: str


def claim_of(p: Participant) -> Optional[Claim]:
    """The member's claim, if it carries the variable (a non-empty string)."""
    account = p.custom_channel_vars.get(ACCOUNT_VAR)
    if not account or not isinstance(account, str):
        return None
    return Claim(p.participant_id, account)


def earlier(a: Optional[Claim], b: Optional[Claim]) -> Optional[Claim]:
    """The claim that decides between two: the lower member id's."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.member_id <= b.member_id else b


def member_claim(participants: Iterable[Participant]) -> Optional[Claim]:
    """Rule 3: the claim of the lowest member id carrying the variable, or None."""
    best: Optional[Claim] = None
    for p in participants:
        best = earlier(best, claim_of(p))
    return best


def claimed_account(participants: Iterable[Participant]) -> Optional[str]:
    claim = member_claim(participants)
    return claim.account if claim is not None else None


def owner(
    *, addressable: bool, document_owner: Optional[str], claim: Optional[str]
) -> Optional[str]:
    """Rules 1-4 together: the owning account, or None (nobody's)."""
    if not addressable:
        return None
    return document_owner or claim or None


def name_check(check_name: Callable[[str], Any]) -> Callable[[str], bool]:
    """Rule 1 as a predicate, from the command builder's ``check_name`` (which raises
    ``InvalidCommand`` for a name confd does not manage)."""

    def addressable(name: str) -> bool:
        try:
            check_name(name)
        except InvalidCommand:
            return False
        return True

    return addressable
