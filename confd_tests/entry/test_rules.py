"""The entry decisions with plain values (entry.md steps 2-7)."""

import pytest

from confd.entry import constants as c
from confd.entry import messages as m
from confd.entry import rules
from confd.entry.directory import Room
from confd.entry.session import Admissions

ACCOUNT = "a" * 32
CALL = "a221cacd-9a84-44cb-8263-122b0ce7975b"
CONF = "c" * 32
SETTINGS = rules.EntrySettings()


# --- account and target -------------------------------------------------------------------------


def test_account_from_the_channel_variable_else_the_default():
    s = rules.EntrySettings(default_account="b" * 32)
    assert rules.call_account({"ecallmgr_Account-ID": ACCOUNT}, s) == ACCOUNT
    assert rules.call_account({}, s) == "b" * 32
    assert rules.call_account({}, SETTINGS) is None
    # not an account id: as if absent (it would go back into a `set`)
    assert rules.call_account({"ecallmgr_Account-ID": "x\nexit"}, SETTINGS) is None
    custom = rules.EntrySettings(channel_var_prefix="cv_")
    assert rules.call_account({"cv_Account-ID": ACCOUNT}, custom) == ACCOUNT


def test_target_variable_then_number_variable_then_digit_destination():
    assert rules.call_target({"confd_conference_id": CONF}, "7101").conference_id == CONF
    assert rules.call_target({"confd_conference_number": "42"}, "7101").number == "42"
    assert rules.call_target({}, "7101").number == "7101"
    assert rules.call_target({}, "entry") == rules.Target()  # not all digits: prompt
    assert rules.call_target({"confd_conference_number": "4 2"}, None) == rules.Target()


def test_role_for_number():
    body = {
        "conference_numbers": ["100"],
        "member": {"numbers": ["101"]},
        "moderator": {"numbers": ["102"]},
    }
    assert rules.role_for_number(body, "101") == (True, c.ROLE_MEMBER)
    assert rules.role_for_number(body, "102") == (True, c.ROLE_MODERATOR)
    assert rules.role_for_number(body, "100") == (True, None)
    assert rules.role_for_number(body, "103") == (False, None)
    with pytest.raises(rules.InvalidValue):
        rules.role_for_number({"conference_numbers": "100"}, "1")  # a string is not a list


# --- PIN ----------------------------------------------------------------------------------------


def test_pin_with_a_known_role():
    body = {"member": {"pins": ["1234"]}, "moderator": {"pins": ["5678"]}}
    assert rules.pin_needed(body, c.ROLE_MEMBER)
    assert rules.judge_pin(body, c.ROLE_MEMBER, "1234") == c.ROLE_MEMBER
    assert rules.judge_pin(body, c.ROLE_MEMBER, "5678") is None  # another role's PIN
    assert not rules.pin_needed({"member": {"pins": []}}, c.ROLE_MEMBER)
    assert not rules.pin_needed({"moderator": {"pins": ["1"]}}, c.ROLE_MEMBER)


def test_pin_decides_the_role_via_conference_numbers():
    body = {"member": {"pins": ["1234"]}, "moderator": {"pins": ["5678"]}}
    assert rules.pin_needed(body, None)
    assert rules.judge_pin(body, None, "5678") == c.ROLE_MODERATOR
    assert rules.judge_pin(body, None, "1234") == c.ROLE_MEMBER
    assert rules.judge_pin(body, None, "0000") is None
    only_mod = {"moderator": {"pins": ["5678"]}}
    assert rules.pin_needed(only_mod, None)
    assert rules.judge_pin(only_mod, None, "1234") is None
    assert not rules.pin_needed({}, None)
    assert rules.role_without_pin(None) == c.ROLE_MEMBER
    assert rules.role_without_pin(c.ROLE_MODERATOR) == c.ROLE_MODERATOR


def test_pin_judged_by_digits_never_by_partial_or_absent_entry():
    body = {"member": {"pins": ["1234"]}}
    for digits in (None, "", "12", "12345", "1234#", "１２３４", "1234\n"):
        assert rules.judge_pin(body, c.ROLE_MEMBER, digits) is None


# --- admission ----------------------------------------------------------------------------------


def test_admission_locked_and_full():
    assert rules.admission(c.ROLE_MEMBER, True, 0, 0) == c.OUTCOME_LOCKED
    assert rules.admission(c.ROLE_MODERATOR, True, 0, 0) == rules.ADMIT
    assert rules.admission(c.ROLE_MEMBER, False, 2, 2) == c.OUTCOME_FULL
    assert rules.admission(c.ROLE_MODERATOR, False, 2, 2) == c.OUTCOME_FULL
    assert rules.admission(c.ROLE_MEMBER, False, 1, 2) == rules.ADMIT
    assert rules.admission(c.ROLE_MEMBER, False, 99, 0) == rules.ADMIT  # 0: no limit


def test_admissions_never_pass_the_limit_counting_reservations_once():
    ledger = Admissions()
    room = Room(False, frozenset({"x"}))
    assert ledger.admit(CONF, "a", c.ROLE_MEMBER, room, 3) == rules.ADMIT
    assert ledger.admit(CONF, "b", c.ROLE_MEMBER, room, 3) == rules.ADMIT
    assert ledger.admit(CONF, "c", c.ROLE_MEMBER, room, 3) == c.OUTCOME_FULL
    # "a" now shows in the live room as well as in the ledger: counted once
    room2 = Room(False, frozenset({"x", "a"}))
    assert ledger.admit(CONF, "c", c.ROLE_MEMBER, room2, 3) == c.OUTCOME_FULL
    ledger.release(CONF, "b")
    assert ledger.admit(CONF, "c", c.ROLE_MEMBER, room2, 3) == rules.ADMIT
    assert ledger.pending == 2


def test_refusal_sound_uses_max_members_media_only_when_valid():
    sounds = rules.Sounds()
    assert rules.refusal_sound(c.OUTCOME_FULL, {}, sounds) == sounds.full
    assert rules.refusal_sound(c.OUTCOME_FULL, {"max_members_media": "/s/full.wav"}, sounds) == (
        "/s/full.wav"
    )
    hostile = {"max_members_media": "x.wav\nsendmsg"}
    assert rules.refusal_sound(c.OUTCOME_FULL, hostile, sounds) == sounds.full
    assert rules.refusal_sound(c.OUTCOME_LOCKED, {}, sounds) == sounds.locked


# --- the join -----------------------------------------------------------------------------------


def plan(body, role=c.ROLE_MEMBER, settings=SETTINGS):
    return rules.join_plan(CONF, ACCOUNT, body, role, CALL, settings)


def test_member_defaults_join_muted_and_sets_the_channel_variables():
    p = plan({})
    assert p.conference_arg == f"{CONF}@default+flags{{mute}}"
    assert p.variables == (
        ("confd_role", "member"),
        ("confd_conference_id", CONF),
        ("ecallmgr_Account-ID", ACCOUNT),
    )
    assert p.name_file is None and p.limit == 0


def test_flags_from_the_role():
    body = {
        "member": {"join_muted": False, "join_deaf": True},
        "moderator": {"join_muted": True},
        "wait_for_moderator": True,
        "require_moderator": True,
    }
    assert plan(body).conference_arg.endswith("+flags{deaf|wait-mod}")
    assert plan(body, c.ROLE_MODERATOR).conference_arg.endswith("+flags{mute|moderator|endconf}")
    plain = plan({"member": {"join_muted": False}}).conference_arg
    assert plain == f"{CONF}@default"  # no flags: no +flags{}


def test_moderator_enters_locked_rooms():
    names = dict(plan({}, c.ROLE_MODERATOR).variables)
    assert names["confd_role"] == "moderator"
    assert names["conference_enforce_security"] == "false"
    assert "conference_enforce_security" not in dict(plan({}).variables)


def test_tones_true_false_string():
    assert "conference_enter_sound" not in dict(plan({"play_entry_tone": True}).variables)
    v = dict(
        plan({"play_entry_tone": False, "play_exit_tone": "tone_stream://%(100,0,300)"}).variables
    )
    assert v["conference_enter_sound"] == c.SILENCE
    assert v["conference_exit_sound"] == "tone_stream://%(100,0,300)"


def test_profile_string_then_profile_name_then_default():
    assert "@p1+" in plan({"profile": "p1", "profile_name": "p2"}).conference_arg
    assert "@p2+" in plan({"profile": {"rate": 8000}, "profile_name": "p2"}).conference_arg
    s = rules.EntrySettings(default_profile="wideband")
    assert "@wideband+" in plan({}, settings=s).conference_arg


def test_max_participants_sets_conference_max_members():
    p = plan({"max_participants": 3})
    assert p.limit == 3
    assert dict(p.variables)["conference_max_members"] == "3"


def test_play_name_records_to_a_file_named_by_the_call():
    p = plan({"play_name": True})
    assert p.name_file == c.NAME_FILE % CALL
    assert rules.record_arg(p.name_file) == p.name_file + " 5"


HOSTILE = [
    ({"profile_name": "default+flags{moderator}"}, rules.FIELD_PROFILE),
    ({"profile_name": "default\nexecute-app-name: hangup"}, rules.FIELD_PROFILE),
    ({"profile": "a b"}, rules.FIELD_PROFILE),
    ({"play_entry_tone": "x.wav\n\nsendmsg\ncall-command: hangup"}, "play_entry_tone"),
    ({"play_entry_tone": "${system(rm -rf /)}"}, "play_entry_tone"),
    ({"play_exit_tone": "a.wav|b.wav"}, "play_exit_tone"),
    ({"play_exit_tone": "file.wav,x=1"}, "play_exit_tone"),
    ({"play_exit_tone": "{var=1}file.wav"}, "play_exit_tone"),
    ({"play_exit_tone": "tone_stream://%(1,0,2),x"}, "play_exit_tone"),
    ({"play_exit_tone": "tone_stream://%(1,0,2)} {"}, "play_exit_tone"),
    ({"member": {"join_muted": "false"}}, rules.FIELD_FLAG),
    ({"wait_for_moderator": 1}, rules.FIELD_FLAG),
    ({"max_participants": "3"}, rules.FIELD_MAX),
    ({"max_participants": True}, rules.FIELD_MAX),
    ({"max_participants": -1}, rules.FIELD_MAX),
    ({"member": "x"}, c.ROLE_MEMBER),
]


@pytest.mark.parametrize("body,field", HOSTILE)
def test_hostile_documents_are_refused_not_rendered(body, field):
    with pytest.raises(rules.InvalidValue) as info:
        plan(body)
    assert info.value.field == field


def test_hostile_conference_id_and_account():
    with pytest.raises(rules.InvalidValue):
        rules.join_plan("7101@x+flags{moderator}", ACCOUNT, {}, c.ROLE_MEMBER, CALL, SETTINGS)
    with pytest.raises(rules.InvalidValue):
        rules.join_plan(CONF, "acct\nexit", {}, c.ROLE_MEMBER, CALL, SETTINGS)
    with pytest.raises(rules.InvalidValue):
        rules.join_plan(CONF, ACCOUNT, {"play_name": True}, c.ROLE_MEMBER, "../../x", SETTINGS)


def test_settings_refuse_hostile_sounds_and_prefix():
    with pytest.raises(rules.InvalidValue):
        rules.Sounds(goodbye="bye.wav\n\napi system reboot")
    with pytest.raises(rules.InvalidValue):
        rules.EntrySettings(default_profile="x y")
    with pytest.raises(rules.InvalidValue):
        rules.EntrySettings(channel_var_prefix="a b")
    with pytest.raises(rules.InvalidValue):
        rules.EntrySettings(pin_tries=0)
    for name in c.SOUND_NAMES:  # the defaults themselves are valid
        rules.check_sound(c.DEFAULT_SOUNDS[name])
    assert len(set(c.DEFAULT_SOUNDS.values())) == len(c.DEFAULT_SOUNDS)  # distinct


def test_sounds_operators_use_are_accepted():
    for sound in (
        "/usr/share/freeswitch/sounds/en/us/callie/conference/8000/conf-pin.wav",
        "conference/conf-bad-pin.wav",
        "silence_stream://500",
        "tone_stream://%(300,100,440);%(300,0,480)",
        "tone_stream://L=2;%(500,500,480,620)",
        "http://media.example/enter.wav",
    ):
        assert rules.check_sound(sound) == sound


def test_read_digits_argument_layout():
    arg = rules.read_digits_arg(
        "tone_stream://%(200,0,800)", "tone_stream://%(200,0,400)", "pin", 5
    )
    assert arg == ("1 16 1 5000 # tone_stream://%(200,0,800) tone_stream://%(200,0,400) pin \\d+")


# --- the wire -----------------------------------------------------------------------------------


def test_sendmsg_bytes_carry_event_lock_and_uuid():
    uuid = "0cafb2e1-4c34-4448-84ef-ecf6d6ddc8e1"
    assert m.execute(c.APP_ANSWER, None, uuid) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: answer\nevent-lock: true\n"
        b"Event-UUID: 0cafb2e1-4c34-4448-84ef-ecf6d6ddc8e1\n\n"
    )
    assert m.hangup("CALL_REJECTED") == (
        b"sendmsg\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n"
    )


@pytest.mark.parametrize(
    "arg", ["a\nb", "a\n\nexit", "a\rb", "a\x00b", "a  b", " a", "a ", "é", "x" * 2000]
)
def test_sendmsg_refuses_any_argument_that_could_split_it(arg):
    with pytest.raises(m.BadCommand):
        m.execute(c.APP_PLAYBACK, arg, "0cafb2e1-4c34-4448-84ef-ecf6d6ddc8e1")


def test_sendmsg_refuses_unknown_apps_and_bad_uuids():
    with pytest.raises(m.BadCommand):
        m.execute("system", "reboot", "0cafb2e1-4c34-4448-84ef-ecf6d6ddc8e1")
    with pytest.raises(m.BadCommand):
        m.execute(c.APP_ANSWER, None, "x\nexit")
    with pytest.raises(m.BadCommand):
        m.hangup("X\nexit")
