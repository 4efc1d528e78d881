"""EntryService as the daemon will hold it: off without ``listen``, status for /v2/health,
hooks for the metrics, built from configuration values."""

from types import SimpleNamespace

import pytest

from confd.entry import constants as c
from confd.entry import rules
from confd.entry.directory import MemoryDirectory, Room, live_rooms
from confd.entry.server import EntryService, from_config, parse_listen, settings_from
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide
from confd_tests.entry.world import wait_until

ACCOUNT = "a" * 32


def entry_section(**kw):
    values = dict(
        listen="127.0.0.1:0",
        default_account=ACCOUNT,
        default_profile="default",
        number_tries=3,
        pin_tries=3,
        digit_timeout=5,
        max_calls=500,
        sounds=SimpleNamespace(**{name: None for name in c.SOUND_NAMES}),
    )
    values.update(kw)
    return SimpleNamespace(**values)


def directory():
    d = MemoryDirectory()
    d.add(ACCOUNT, "7101", {"member": {"numbers": ["7101"]}})
    return d


def test_off_until_listen_is_set():
    svc = from_config(
        entry_section(listen=None),
        channel_var_prefix="ecallmgr_",
        name_pattern="[0-9]{4}",
        directory=directory(),
        rooms=lambda conf: None,
    )
    svc.start()
    assert not svc.enabled and svc.port is None
    assert svc.status() == {"listen": None, "active": 0, "max_calls": 500, "admitting": 0}
    svc.stop()


def test_settings_from_configuration_values():
    section = entry_section(
        sounds={"goodbye": "/s/bye.wav", "enter_pin": None}, digit_timeout=7, pin_tries=2
    )
    s = settings_from(section, "cv_", "[0-9]{4}")
    assert s.sounds.goodbye == "/s/bye.wav"
    assert s.sounds.enter_pin == c.DEFAULT_SOUNDS["enter_pin"]  # None: the default
    assert (s.digit_timeout, s.pin_tries, s.account_variable) == (7.0, 2, "cv_Account-ID")
    with pytest.raises(rules.InvalidValue):
        settings_from(entry_section(sounds={"goodbye": "a b"}), "cv_", ".*")


def test_parse_listen():
    assert parse_listen("127.0.0.1:8084") == ("127.0.0.1", 8084)
    assert parse_listen("[::1]:8084") == ("::1", 8084)
    for bad in ("8084", "host:", ":8084", "h:99999", "h:８０"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_status_hooks_and_the_metrics_names():
    outcomes, steps = [], []
    svc = from_config(
        entry_section(),
        channel_var_prefix="ecallmgr_",
        name_pattern="[0-9]{4}",
        directory=directory(),
        rooms=lambda conf: Room(),
        on_outcome=outcomes.append,
        on_step=steps.append,
    )
    svc.start()
    try:
        status = svc.status()
        assert status["listen"] == "127.0.0.1:%d" % svc.port and status["active"] == 0
        side = OutboundSide(ConferenceModel(), time_scale=10.0)
        call = side.dial(("127.0.0.1", svc.port), answers=[])
        wait_until(lambda: svc.status()["active"] == 1)  # confd_entry_active
        wait_until(lambda: [a for a, _ in call.apps] == ["answer", "play_and_get_digits"])
        call.hang_up()
        wait_until(lambda: outcomes == [c.OUTCOME_HANGUP])  # confd_entry_calls_total{outcome}
        assert svc.status()["active"] == 0
        assert steps and all(s >= 0 for s in steps)
    finally:
        svc.stop()


def test_a_failing_outcome_hook_does_not_break_entry():
    def boom(outcome):
        raise RuntimeError("metrics down")

    svc = EntryService(
        listen="127.0.0.1:0",
        settings=rules.EntrySettings(default_account=ACCOUNT, name_pattern="[0-9]{4}"),
        directory=directory(),
        rooms=lambda conf: Room(),
        on_outcome=boom,
    )
    svc.start()
    try:
        side = OutboundSide(ConferenceModel())
        call = side.dial(("127.0.0.1", svc.port), answers=["9#", "9#", "9#"])
        assert call.wait(10)
        wait_until(lambda: svc.outcomes.get(c.OUTCOME_BAD_NUMBER) == 1)
    finally:
        svc.stop()


def test_live_rooms_reads_every_instance():
    from confd.conferences.model import Conference, Participant

    class State:
        def find(self, name):
            a = Conference(name, "u1", "fs1", is_locked=False)
            a.participants[1] = Participant(1, "call-1", name, "u1")
            b = Conference(name, "u2", "fs2", is_locked=True)
            b.participants[1] = Participant(1, "call-2", name, "u2")
            return [a, b] if name == "x" else []

    room = live_rooms(State())("x")
    assert room == Room(True, frozenset({"call-1", "call-2"}))
    assert live_rooms(State())("y") is None


def test_stop_twice_and_before_start():
    svc = EntryService(
        listen="127.0.0.1:0",
        settings=rules.EntrySettings(),
        directory=directory(),
        rooms=lambda conf: None,
    )
    svc.stop()
    svc.start()
    svc.stop()
    svc.stop()
    with pytest.raises(ValueError):
        EntryService(
            listen=None,
            settings=rules.EntrySettings(),
            directory=directory(),
            rooms=None,
            max_calls=0,
        )
