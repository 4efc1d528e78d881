"""The one rule of which account a live conference belongs to (confd.conferences.ownership),
for REST and websocket events alike."""

from confd.conferences import ownership
from confd.conferences.commands import CommandBuilder
from confd.conferences.model import Participant

A, B, C = "a" * 32, "b" * 32, "c" * 32
CONF = "0123456789abcdef0123456789abcdef"


def p(mid, account):
    vars_ = {"account_id": account} if account is not None else {}
    return Participant(mid, "k%d" % mid, CONF, "u", custom_channel_vars=vars_)


def test_the_lowest_member_id_carrying_the_variable_decides():
    members = [p(7, B), p(3, None), p(5, A), p(9, C), p(1, "")]
    assert ownership.claimed_account(members) == A
    assert ownership.member_claim(members) == ownership.Claim(5, A)
    assert ownership.claimed_account([p(3, None)]) is None
    assert ownership.claimed_account([]) is None
    assert ownership.earlier(None, ownership.Claim(2, B)) == ownership.Claim(2, B)
    assert ownership.earlier(ownership.Claim(1, A), ownership.Claim(2, B)) == ownership.Claim(1, A)


def test_document_first_then_members_then_nobody_and_unmanaged_names_are_nobodys():
    assert ownership.owner(addressable=True, document_owner=C, claim=A) == C
    assert ownership.owner(addressable=True, document_owner=None, claim=A) == A
    assert ownership.owner(addressable=True, document_owner="", claim=A) == A
    assert ownership.owner(addressable=True, document_owner=None, claim=None) is None
    assert ownership.owner(addressable=False, document_owner=C, claim=A) is None


def test_managed_names_are_the_command_builders():
    managed = ownership.name_check(CommandBuilder(r"[0-9a-f]{32}").check_name)
    assert managed(CONF)
    assert not managed("ABC") and not managed(CONF + "\n") and not managed(5)
