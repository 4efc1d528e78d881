"""Every rule and refusal of entry.md through the simulator: a simulated FreeSWITCH call
connects to confd's entry listener, the test types the caller's digits, and each test ends
with confd's live state (fed by the simulator's inbound event socket) showing the caller with
the expected flags, or not at all."""

import gevent
import pytest

from confd.entry import constants as c
from confd.entry import rules
from confd.entry.session import Timeouts
from confd.simulator.outbound import HANGUP
from confd_tests.entry.world import make_world, wait_until

S = rules.Sounds()


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.stop()


def apps(call, name):
    return [arg for app, arg in call.apps if app == name]


def prompts(call):
    return [arg.split(" ")[5] for arg in apps(call, "play_and_get_digits")]


# --- numbers, PINs, roles -----------------------------------------------------------------------


def test_member_pin_via_conference_number(world):
    conf = world.conference(
        {
            "conference_numbers": ["7101"],
            "member": {"pins": ["1234"]},
            "moderator": {"pins": ["5678"]},
        }
    )
    call = world.call(answers=["7101#", "1234#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    p = world.in_room(call, conf)
    assert (p.speak, p.hear, p.is_moderator) == (False, True, False)  # members join muted
    assert p.custom_channel_vars.get("account_id") == world.account
    assert call.vars["confd_role"] == "member" and call.vars["confd_conference_id"] == conf
    assert prompts(call) == [S.enter_number, S.enter_pin]
    assert call.flags == ["mute"]


def test_moderator_pin_via_conference_number(world):
    conf = world.conference(
        {
            "conference_numbers": ["7102"],
            "member": {"pins": ["1234"]},
            "moderator": {"pins": ["5678"]},
        }
    )
    call = world.call(answers=["7102#", "5678#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    p = world.in_room(call, conf)
    assert (p.speak, p.is_moderator) == (True, True)
    assert call.vars["confd_role"] == "moderator"


def test_conference_number_without_pins_makes_a_member_without_prompt(world):
    conf = world.conference({"conference_numbers": ["7103"]})
    call = world.call(answers=["7103#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert world.in_room(call, conf).is_moderator is False
    assert prompts(call) == [S.enter_number]


def test_member_number_asks_the_member_pin_only(world):
    conf = world.conference(
        {"member": {"numbers": ["7104"], "pins": []}, "moderator": {"pins": ["5678"]}}
    )
    call = world.call(answers=["7104#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert prompts(call) == [S.enter_number]  # the member has no PIN to give
    assert not world.in_room(call, conf).is_moderator


def test_moderator_number_with_its_pin(world):
    conf = world.conference(
        {"moderator": {"numbers": ["7105"], "pins": ["5678"]}, "member": {"pins": ["1234"]}}
    )
    call = world.call(answers=["7105#", "1234#", "5678#"])  # a member PIN is wrong here
    assert world.finish(call) == c.OUTCOME_JOINED
    assert world.in_room(call, conf).is_moderator
    assert call.heard.count(S.bad_pin) == 1


def test_number_from_channel_variable_skips_the_prompt(world):
    conf = world.conference({"member": {"numbers": ["7106"]}})
    call = world.call(variables={"confd_conference_number": "7106"})
    assert world.finish(call) == c.OUTCOME_JOINED
    assert prompts(call) == [] and world.in_room(call, conf)


def test_conference_id_variable_skips_the_number_step(world):
    conf = world.conference({"moderator": {"pins": ["5678"]}})
    call = world.call(variables={"confd_conference_id": conf}, answers=["5678#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert prompts(call) == [S.enter_pin]
    assert world.in_room(call, conf).is_moderator


def test_all_digit_destination_is_the_number(world):
    conf = world.conference({"member": {"numbers": ["5551234"]}})
    call = world.call(destination="5551234")
    assert world.finish(call) == c.OUTCOME_JOINED
    assert prompts(call) == [] and world.in_room(call, conf)


def test_unknown_number_then_a_good_one(world):
    conf = world.conference({"member": {"numbers": ["7107"]}})
    call = world.call(answers=["9999#", "7107#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert call.heard.count(S.bad_number) == 1 and world.in_room(call, conf)


def test_unknown_destination_number_is_followed_by_a_prompt(world):
    conf = world.conference({"member": {"numbers": ["7108"]}})
    call = world.call(destination="4444", answers=["7108#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert call.heard[:2] == [S.bad_number, S.enter_number] and world.in_room(call, conf)


def test_out_of_number_tries_goodbye(world):
    conf = world.conference({"member": {"numbers": ["7109"]}})
    call = world.call(answers=["1#", "2#", "3#"])
    assert world.finish(call) == c.OUTCOME_BAD_NUMBER
    assert prompts(call) == [S.enter_number] * 3
    assert call.heard.count(S.bad_number) == 2  # not after the last try: goodbye instead
    assert call.heard[-1] == S.goodbye and call.hangup_cause == c.CAUSE_CALL_REJECTED
    assert world.absent(call, conf)


def test_out_of_pin_tries_rejected(world):
    conf = world.conference({"conference_numbers": ["7110"], "member": {"pins": ["1234"]}})
    call = world.call(answers=["7110#", "1111#", "2222#", "3333#"])
    assert world.finish(call) == c.OUTCOME_BAD_PIN
    assert prompts(call) == [S.enter_number] + [S.enter_pin] * 3
    assert call.heard.count(S.bad_pin) == 2 and call.heard[-1] == S.goodbye
    assert call.hangup_cause == c.CAUSE_CALL_REJECTED and call.hung_up_by == "confd"
    assert world.absent(call, conf)


def test_an_empty_pin_entry_is_a_try_and_not_double_scolded(world):
    conf = world.conference({"conference_numbers": ["7111"], "member": {"pins": ["1234"]}})
    call = world.call(answers=["7111#", None, "1234#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    # the empty try heard the prompt's own invalid sound once, confd added nothing
    assert call.heard.count(S.bad_pin) == 1
    assert world.in_room(call, conf)


def test_partial_pin_then_hangup_is_not_a_pin(world):
    conf = world.conference({"conference_numbers": ["7112"], "member": {"pins": ["12"]}})

    def type_then_hang_up(call):
        call.type("12")  # the right digits, but no '#': the caller hangs up meanwhile
        call.hang_up()

    call = world.call(answers=["7112#", type_then_hang_up])
    assert world.finish(call) == c.OUTCOME_HANGUP
    assert world.absent(call, conf)


def test_digits_typed_before_the_prompt_are_lost(world):
    conf = world.conference({"member": {"numbers": ["7113"]}})
    call = world.call(answers=[None, None, None])
    call.connected.wait(5)
    call.type("7113#")  # before any prompt runs
    assert world.finish(call) == c.OUTCOME_BAD_NUMBER
    assert call.lost_digits.startswith("7113#") and world.absent(call, conf)


# --- accounts -----------------------------------------------------------------------------------


def test_no_account_goodbye(world):
    call = world.call(account=False, answers=["1#"])
    assert world.finish(call) == c.OUTCOME_NO_ACCOUNT
    assert call.heard == [S.goodbye] and call.hangup_cause == c.CAUSE_CALL_REJECTED


def test_unknown_account_goodbye(world):
    call = world.call(variables={"ecallmgr_Account-ID": "f" * 32})
    assert world.finish(call) == c.OUTCOME_NO_ACCOUNT
    assert call.down


def test_default_account(tmp_path):
    w = make_world(tmp_path)
    try:
        w.service.stop()
        from confd.entry.server import EntryService

        service = EntryService(
            listen="127.0.0.1:0",
            settings=rules.EntrySettings(default_account=w.account),
            directory=w.service.ctx.directory,
            rooms=w.service.ctx.rooms,
            on_outcome=w.outcomes.append,
        )
        service.start()
        w.service = service
        conf = w.conference({"member": {"numbers": ["7114"]}})
        call = w.call(account=False, answers=["7114#"])
        assert w.finish(call) == c.OUTCOME_JOINED and w.in_room(call, conf)
    finally:
        w.stop()


def test_a_number_of_another_account_is_unknown(world):
    other, _ = world.store.accounts.create_account("other")
    world.conference({"member": {"numbers": ["7115"]}}, account=other["id"])
    call = world.call(answers=["7115#", "7115#", "7115#"])
    assert world.finish(call) == c.OUTCOME_BAD_NUMBER


# --- admission ----------------------------------------------------------------------------------


def test_locked_room_refuses_members_admits_moderators(world):
    conf = world.conference(
        {
            "conference_numbers": ["7116"],
            "member": {"pins": ["1234"]},
            "moderator": {"pins": ["5678"]},
        }
    )
    first = world.call(answers=["7116#", "5678#"])
    assert world.finish(first) == c.OUTCOME_JOINED
    world.in_room(first, conf)
    world.model.api("conference %s lock" % conf)
    wait_until(lambda: world.state.find(conf)[0].is_locked)
    member = world.call(answers=["7116#", "1234#"])
    assert world.finish(member, 2) == c.OUTCOME_LOCKED
    assert member.heard[-1] == S.locked and member.down
    assert world.absent(member, conf)
    moderator = world.call(answers=["7116#", "5678#"])
    assert world.finish(moderator, 3) == c.OUTCOME_JOINED
    assert world.in_room(moderator, conf).is_moderator
    assert moderator.vars["conference_enforce_security"] == "false"


def test_room_locked_between_the_check_and_the_join(world):
    conf = world.conference({"member": {"numbers": ["7117"]}})
    world.model.join(conf, caller_id_number="1")
    wait_until(lambda: bool(world.state.find(conf)))
    # Locked in FreeSWITCH, not yet in confd's live state (no lock event has come): confd
    # admits the member and the conference application refuses it (e_locked).
    world.model.conferences[conf].locked = True
    call = world.call(answers=["7117#"])
    assert world.finish(call) == c.OUTCOME_LOCKED
    assert apps(call, "conference")  # it tried
    assert call.heard[-1] == S.locked and call.down
    assert world.absent(call, conf)


def test_full_room_hears_max_members_media(world):
    conf = world.conference(
        {"member": {"numbers": ["7118"]}, "max_participants": 1, "max_members_media": "/s/full.wav"}
    )
    first = world.call(answers=["7118#"])
    assert world.finish(first) == c.OUTCOME_JOINED
    world.in_room(first, conf)
    second = world.call(answers=["7118#"])
    assert world.finish(second, 2) == c.OUTCOME_FULL
    assert second.heard[-1] == "/s/full.wav" and world.absent(second, conf)
    assert first.vars["conference_max_members"] == "1"


def test_full_room_without_media_hears_full(world):
    conf = world.conference({"member": {"numbers": ["7119"]}, "max_participants": 1})
    world.model.join(conf, caller_id_number="1")
    wait_until(lambda: bool(world.state.find(conf)))
    call = world.call(answers=["7119#"])
    assert world.finish(call) == c.OUTCOME_FULL
    assert call.heard[-1] == S.full


@pytest.mark.parametrize("freeswitch_enforces", [True, False])
def test_max_participants_never_exceeded_with_many_callers_at_once(tmp_path, freeswitch_enforces):
    # 30 callers dial a room of 5 at the same moment.  With FreeSWITCH's own limit switched
    # off, only confd's admission ledger keeps the room at 5.
    w = make_world(tmp_path, enforce_max_members=freeswitch_enforces)
    try:
        limit, callers = 5, 30
        conf = w.conference({"member": {"numbers": ["7120"]}, "max_participants": limit})
        peak = []

        def watch(pairs):
            room = w.model.conferences.get(conf)
            peak.append(len(room.members) if room else 0)

        w.model.add_listener(watch)
        calls = [w.call(answers=["7120#"]) for _ in range(callers)]
        wait_until(lambda: len(w.outcomes) == callers, 60, "every outcome")
        assert max(peak) == limit
        assert w.outcomes.count(c.OUTCOME_JOINED) == limit
        assert w.outcomes.count(c.OUTCOME_FULL) == callers - limit
        wait_until(lambda: len(w.state.find(conf)[0].participants) == limit)
        joined = [x for x in calls if w.participant(x, conf) is not None]
        assert len(joined) == limit
        assert w.service.ctx.admissions.pending == 0
    finally:
        w.stop()


# --- the join -----------------------------------------------------------------------------------


def test_join_flags_wait_for_moderator_and_require_moderator(world):
    conf = world.conference(
        {
            "conference_numbers": ["7121"],
            "member": {"pins": ["1234"], "join_muted": False, "join_deaf": True},
            "moderator": {"pins": ["5678"], "join_muted": True},
            "wait_for_moderator": True,
            "require_moderator": True,
        }
    )
    member = world.call(answers=["7121#", "1234#"])
    assert world.finish(member) == c.OUTCOME_JOINED
    p = world.in_room(member, conf)
    assert (p.speak, p.hear, p.is_moderator) == (True, False, False)
    assert member.flags == ["deaf", "wait-mod"]
    moderator = world.call(answers=["7121#", "5678#"])
    assert world.finish(moderator, 2) == c.OUTCOME_JOINED
    q = world.in_room(moderator, conf)
    assert (q.speak, q.is_moderator) == (False, True)
    assert moderator.flags == ["mute", "moderator", "endconf"]
    assert world.model.member_by_uuid(moderator.uuid).endconf


def test_tones_true_false_and_string(world):
    tone = "tone_stream://%(100,0,300)"
    a = world.conference(
        {"member": {"numbers": ["7122"]}, "play_entry_tone": True, "play_exit_tone": False}
    )
    b = world.conference({"member": {"numbers": ["7123"]}, "play_entry_tone": tone})
    ca = world.call(answers=["7122#"])
    assert world.finish(ca) == c.OUTCOME_JOINED and world.in_room(ca, a)
    assert "conference_enter_sound" not in ca.vars
    assert ca.vars["conference_exit_sound"] == c.SILENCE
    cb = world.call(answers=["7123#"])
    assert world.finish(cb, 2) == c.OUTCOME_JOINED and world.in_room(cb, b)
    assert cb.vars["conference_enter_sound"] == tone


def test_profile_from_the_document_else_the_default(tmp_path):
    w = make_world(tmp_path, settings=rules.EntrySettings(default_profile="wideband"))
    try:
        a = w.conference({"member": {"numbers": ["7124"]}, "profile_name": "hd_room"})
        b = w.conference({"member": {"numbers": ["7125"]}})
        ca, cb = w.call(answers=["7124#"]), w.call(answers=["7125#"])
        wait_until(lambda: len(w.outcomes) == 2)
        assert w.in_room(ca, a) and w.in_room(cb, b)
        assert w.model.conferences[a].profile == "hd_room"
        assert w.model.conferences[b].profile == "wideband"
        assert w.state.find(a)[0].profile == "hd_room"
    finally:
        w.stop()


def test_play_name_records_then_announces(world):
    conf = world.conference({"member": {"numbers": ["7126"]}, "play_name": True})
    call = world.call(answers=["7126#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    name = c.NAME_FILE % call.uuid
    assert call.heard[-1] == S.record_name and call.recordings == [name]
    assert apps(call, "record") == [name + " 5"]
    assert world.in_room(call, conf)
    assert world.side.played == [(conf, name)]  # played to the room once the caller was in
    order = [app for app, _ in call.apps]
    assert order.index("record") < order.index("conference")


def test_joined_caller_stays_in_the_room_after_confd_lets_go(world):
    conf = world.conference({"member": {"numbers": ["7127"]}})
    call = world.call(answers=["7127#"])
    assert world.finish(call) == c.OUTCOME_JOINED
    assert call.exit_received  # confd sent exit: the call is no longer controlled
    gevent.sleep(0.1)
    assert world.in_room(call, conf) and not call.down
    call.hang_up()
    wait_until(lambda: world.participant(call, conf) is None)


def test_one_log_line_per_call(world, caplog):
    conf = world.conference({"member": {"numbers": ["7128"]}})
    call = world.call(answers=["7128#"])
    world.finish(call)
    lines = [r.getMessage() for r in caplog.records if "outcome=" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    for part in (
        "call=" + call.uuid,
        "account=" + world.account,
        "conference=" + conf,
        "role=member",
        "outcome=joined",
        "seconds=",
    ):
        assert part in line


# --- hostile documents --------------------------------------------------------------------------

HOSTILE = [
    {"profile_name": "default+flags{moderator}"},
    {"profile_name": "default\nexecute-app-name: hangup"},
    {"play_entry_tone": "x.wav\n\nsendmsg\ncall-command: hangup"},
    {"play_entry_tone": "${system(touch /tmp/pwned)}"},
    {"play_exit_tone": "a.wav|b.wav"},
    {"play_exit_tone": "{conference_member_flags=moderator}x.wav"},
    {"play_exit_tone": "tone_stream://%(1,0,2)+flags{moderator}"},
    {"profile": "default@other"},
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_documents_cannot_inject(world, hostile):
    body = {"member": {"numbers": ["7130"], "join_muted": True}}
    body.update(hostile)
    conf = world.conference(body)  # accepted by the schema: free text
    call = world.call(answers=["7130#"])
    assert world.finish(call) == c.OUTCOME_ERROR
    assert apps(call, "conference") == []  # never joined with a smuggled value
    assert call.heard[-1] == S.goodbye and call.down
    assert world.absent(call, conf)
    # nothing but confd's own commands reached the simulated FreeSWITCH
    assert {line.split(" ")[0] for line in call.commands} <= {
        "connect",
        "myevents",
        "linger",
        "sendmsg",
        "exit",
    }
    for app, arg in call.apps:
        assert app in c.APPS and "\n" not in arg and "$" not in arg and "|" not in arg


def test_hostile_max_members_media_falls_back_to_full(world):
    conf = world.conference(
        {
            "member": {"numbers": ["7131"]},
            "max_participants": 1,
            "max_members_media": "x.wav\nsendmsg",
        }
    )
    world.model.join(conf, caller_id_number="1")
    wait_until(lambda: bool(world.state.find(conf)))
    call = world.call(answers=["7131#"])
    assert world.finish(call) == c.OUTCOME_FULL
    assert call.heard[-1] == S.full


# --- hang-ups at every step ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    ["connect", "answer", "play_and_get_digits", "playback", "set", "record", "conference"],
)
def test_hangup_at_every_step_ends_the_session_cleanly(world, step):
    conf = world.conference(
        {"conference_numbers": ["7140"], "member": {"pins": ["1234"]}, "play_name": True}
    )
    # "playback": the first playback is the wrong-PIN sound after a wrong PIN
    answers = ["7140#", "9999#", "1234#"]
    call = world.call(answers=answers, hang_up_at=step)
    outcome = world.finish(call)
    assert outcome == c.OUTCOME_HANGUP
    assert call.wait(5)  # the socket is closed
    assert world.service.active == 0 and world.service.ctx.admissions.pending == 0
    assert world.absent(call, conf)


def test_hangup_by_prompt_answer(world):
    conf = world.conference({"conference_numbers": ["7141"], "member": {"pins": ["1234"]}})
    call = world.call(answers=["7141#", HANGUP])
    assert world.finish(call) == c.OUTCOME_HANGUP
    assert world.absent(call, conf)


def test_sync_mode_caller_joins(world):
    conf = world.conference({"conference_numbers": ["7142"], "member": {"pins": ["1234"]}})
    call = world.call(answers=["7142#", "1234#"], mode="static")
    assert world.finish(call) == c.OUTCOME_JOINED
    assert not world.in_room(call, conf).speak


def test_restart_mid_entry_hangs_up_callers_in_entry_and_keeps_joined_ones(tmp_path):
    w = make_world(tmp_path, timeouts=Timeouts())
    try:
        conf = w.conference({"conference_numbers": ["7143"], "member": {"pins": ["1234"]}})
        joined = w.call(answers=["7143#", "1234#"])
        assert w.finish(joined) == c.OUTCOME_JOINED
        # a caller who never types: waits at the number prompt (long digit timeout)
        waiting = w.call(answers=[], time_scale=10.0)
        wait_until(lambda: w.service.active == 1)
        w.service.stop(timeout=0.5)
        assert waiting.wait(5)  # the socket closed: FreeSWITCH ends the call (dialplan)
        assert waiting.down and waiting.hung_up_by == "dialplan"
        assert w.in_room(joined, conf) and not joined.down  # untouched
    finally:
        w.stop()
