"""confd.config: defaults, YAML, environment overrides, validation, masking."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from confd.config import (
    DEFAULT_CONFIG_PATH,
    AuthConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    EntryConfig,
    EntrySoundsConfig,
    EventsConfig,
    FreeswitchConfig,
    HttpConfig,
    LogConfig,
    NodeConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_config_path,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "confd" / "confd.yml"


def write(tmp_path: Path, text: str, name: str = "confd.yml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------


def test_defaults_without_file():
    cfg = load_config(None, {})
    assert cfg == Config()
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8000)
    assert cfg.database.url == "sqlite:///confd-data/confd.db"
    assert cfg.freeswitch.nodes == (
        NodeConfig(host="127.0.0.1", port=8021, password="ClueCon", name="127.0.0.1:8021"),
    )
    assert cfg.freeswitch.nodes[0].name == "127.0.0.1:8021"
    fs = cfg.freeswitch
    assert (fs.reconnect_min, fs.reconnect_max) == (0.5, 30.0)
    assert (fs.command_timeout, fs.heartbeat_timeout) == (5.0, 60.0)
    assert fs.event_format == "plain"
    assert fs.conference_name_pattern == "[0-9a-f]{32}"
    assert fs.resync_concurrency == 4
    ev = cfg.events
    assert ev.publish_participant_event is None
    assert ev.channel_var_prefix == "ecallmgr_"
    assert ev.amqp_url is None
    assert (ev.subscriber_queue, ev.amqp_buffer) == (1000, 10000)
    assert (ev.websocket_batch_ms, ev.websocket_ping_s) == (2, 30)
    assert cfg.auth.token_ttl == 3600
    assert cfg.log.level == "info"


def test_load_config_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("CONFD_HTTP_PORT", "8123")
    assert load_config(None).http.port == 8123


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), {}) == Config()
    assert load_config(write(tmp_path, "# only a comment\n"), {}) == Config()


def test_empty_section_means_section_defaults(tmp_path):
    assert load_config(write(tmp_path, "http:\nlog:\n"), {}) == Config()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().http.port = 1  # type: ignore[misc]


# --- every key from YAML ----------------------------------------------------------------------

FULL = """
http:
  host: 0.0.0.0
  port: 8080
database:
  url: postgresql://confd:s3cret@db.example/confd
freeswitch:
  nodes:
    - host: 10.0.0.1
      port: 8022
      password: "pw:with:colons"
      name: fs1
    - host: 10.0.0.2
      password: other
  reconnect_min: 1
  reconnect_max: 10.5
  command_timeout: 2.5
  heartbeat_timeout: 45
  event_format: JSON
  conference_name_pattern: "[a-z]+"
  resync_concurrency: 8
events:
  publish_participant_event: [add-member, del-member]
  channel_var_prefix: cv_
  amqp_url: amqps://guest:guest@mq.example:5671/vhost
  subscriber_queue: 50
  amqp_buffer: 500
auth:
  token_ttl: 60
log:
  level: DEBUG
"""


def test_every_key_read_from_yaml(tmp_path):
    cfg = load_config(write(tmp_path, FULL), {})
    assert cfg.http == HttpConfig(host="0.0.0.0", port=8080)
    assert cfg.database == DatabaseConfig(url="postgresql://confd:s3cret@db.example/confd")
    assert cfg.freeswitch == FreeswitchConfig(
        nodes=(
            NodeConfig(host="10.0.0.1", port=8022, password="pw:with:colons", name="fs1"),
            NodeConfig(host="10.0.0.2", port=8021, password="other", name="10.0.0.2:8021"),
        ),
        reconnect_min=1.0,
        reconnect_max=10.5,
        command_timeout=2.5,
        heartbeat_timeout=45.0,
        event_format="json",
        conference_name_pattern="[a-z]+",
        resync_concurrency=8,
    )
    assert isinstance(cfg.freeswitch.reconnect_min, float)  # an int is accepted as a float
    assert cfg.events == EventsConfig(
        publish_participant_event=("add-member", "del-member"),
        channel_var_prefix="cv_",
        amqp_url="amqps://guest:guest@mq.example:5671/vhost",
        subscriber_queue=50,
        amqp_buffer=500,
    )
    assert cfg.auth == AuthConfig(token_ttl=60)
    assert cfg.log == LogConfig(level="debug")  # stored lower-case


def test_example_config_loads_and_equals_defaults():
    assert load_config(str(EXAMPLE), {}) == Config()


def test_example_config_sets_every_key():
    """The shipped example documents every key: each one must be present in the file."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    expected = config_to_dict(Config(), mask_secrets=False)
    assert set(data) == set(expected)
    for section, keys in expected.items():
        assert set(data[section]) == set(keys), section
    node_keys = set(data["freeswitch"]["nodes"][0])
    assert node_keys == {"host", "port", "password"}  # name is commented: it has no fixed default


def test_example_config_mentions_state_directory_database():
    assert "sqlite:////var/lib/confd/confd.db" in EXAMPLE.read_text(encoding="utf-8")


# --- environment overrides --------------------------------------------------------------------


def test_env_http_port(tmp_path):
    path = write(tmp_path, "http: {port: 9000}\n")
    assert load_config(path, {"CONFD_HTTP_PORT": "9100"}).http.port == 9100
    assert load_config(path, {"CONFD_HTTP_PORT": "0"}).http.port == 0
    assert load_config(path, {"CONFD_HTTP_PORT": ""}).http.port == 9000  # empty = unset


@pytest.mark.parametrize("value", ["abc", "80.5", "70000", "-1", "true"])
def test_env_http_port_rejected(value):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CONFD_HTTP_PORT": value})
    assert info.value.key == "CONFD_HTTP_PORT"
    assert str(info.value).startswith("CONFD_HTTP_PORT: expected an integer 0..65535")


def test_env_database_url():
    url = "postgresql://u:p@localhost/confd"
    assert load_config(None, {"CONFD_DATABASE_URL": url}).database.url == url


def test_env_database_url_rejected_without_leaking_password():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CONFD_DATABASE_URL": "mysql://u:topsecret@h/db"})
    assert str(info.value).startswith("CONFD_DATABASE_URL: expected a URL starting with")
    assert "topsecret" not in str(info.value)


def test_env_freeswitch_nodes_replace_file_nodes(tmp_path):
    path = write(tmp_path, "freeswitch: {nodes: [{host: filehost, name: f}]}\n")
    cfg = load_config(path, {"CONFD_FREESWITCH": "fs-a:8021:ClueCon, fs-b:8022:p:a:ss"})
    assert cfg.freeswitch.nodes == (
        NodeConfig(host="fs-a", port=8021, password="ClueCon", name="fs-a:8021"),
        NodeConfig(host="fs-b", port=8022, password="p:a:ss", name="fs-b:8022"),
    )


def test_env_freeswitch_ipv6_host():
    cfg = load_config(None, {"CONFD_FREESWITCH": "[::1]:8021:pw:x"})
    assert cfg.freeswitch.nodes == (NodeConfig(host="::1", port=8021, password="pw:x"),)


@pytest.mark.parametrize(
    "value, key",
    [
        ("fs-a", "CONFD_FREESWITCH[0]"),
        ("fs-a:8021", "CONFD_FREESWITCH[0]"),
        ("fs-a:8021:", "CONFD_FREESWITCH[0]"),
        (":8021:pw", "CONFD_FREESWITCH[0]"),
        ("fs-a:8021:pw,", "CONFD_FREESWITCH[1]"),
        ("fs-a:8021:pw,fs-b:abc:pw", "CONFD_FREESWITCH[1].port"),
        ("fs-a:0:pw", "CONFD_FREESWITCH[0].port"),
        ("fs-a:65536:pw", "CONFD_FREESWITCH[0].port"),
        ("[::1:8021:pw", "CONFD_FREESWITCH[0]"),
        ("fs-a:8021:pw,fs-a:8021:other", "CONFD_FREESWITCH[1].name"),
    ],
)
def test_env_freeswitch_malformed(value, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CONFD_FREESWITCH": value})
    assert info.value.key == key
    assert "CONFD_FREESWITCH" in str(info.value)


def test_env_freeswitch_error_never_echoes_password():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CONFD_FREESWITCH": "host-only-hunter2"})
    assert "hunter2" not in str(info.value)


# --- unknown keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"htpp": {}}, "htpp: unknown key"),
        ({"http": {"prot": 8000}}, "http.prot: unknown key"),
        ({"freeswitch": {"nodes": [{}, {"pasword": "x"}]}}, "freeswitch.nodes[1].pasword"),
        ({"events": {"amqp": None}}, "events.amqp: unknown key"),
    ],
)
def test_unknown_keys_rejected(data, message):
    assert error_of(data).startswith(message)


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = write(tmp_path, "http:\n  host: 0.0.0.0\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == "http.prot: unknown key"
    assert info.value.key == "http.prot"
    assert info.value.source == path


# --- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"http": {"port": "8000"}}, "http.port: expected an integer 0..65535, got '8000'"),
        ({"http": {"port": True}}, "http.port: expected an integer 0..65535, got True"),
        ({"http": {"port": 80.0}}, "http.port: expected an integer 0..65535, got 80.0"),
        ({"http": [1, 2]}, "http: expected a mapping, got a list"),
        ({"http": "x"}, "http: expected a mapping, got 'x'"),
        (
            {"freeswitch": {"nodes": [{}, {"port": "abc"}]}},
            "freeswitch.nodes[1].port: expected an integer 1..65535, got 'abc'",
        ),
        ({"freeswitch": {"nodes": {"host": "x"}}}, "freeswitch.nodes: expected a list"),
        ({"freeswitch": {"nodes": ["x"]}}, "freeswitch.nodes[0]: expected a mapping, got 'x'"),
        ({"freeswitch": {"nodes": [None]}}, "freeswitch.nodes[0]: expected a mapping"),
        ({"freeswitch": {"reconnect_min": "1"}}, "freeswitch.reconnect_min: expected a number"),
        ({"freeswitch": {"reconnect_min": False}}, "freeswitch.reconnect_min: expected a number"),
        ({"freeswitch": {"resync_concurrency": 1.5}}, "freeswitch.resync_concurrency: expected"),
        ({"http": {"host": 12}}, "http.host: expected a non-empty string, got 12 (quote it"),
        ({"events": {"publish_participant_event": "add-member"}}, "events.publish_partici"),
        ({"events": {"amqp_url": 5}}, "events.amqp_url: expected a string"),
        ({"auth": {"token_ttl": "1h"}}, "auth.token_ttl: expected an integer >= 1"),
        ({"log": {"level": 10}}, "log.level: expected one of debug"),
    ],
)
def test_wrong_types_rejected(data, message):
    assert error_of(data).startswith(message)


def test_wrong_type_password_is_not_echoed():
    message = error_of({"freeswitch": {"nodes": [{"password": 987654}]}})
    assert message.startswith("freeswitch.nodes[0].password: expected a non-empty string")
    assert "987654" not in message


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- http\n- log\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == f"{path}: expected a mapping at the top level, got a list"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "http:\n  port: 8000\n bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line 3")
    assert info.value.source == path


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.yml"), {})
    assert "missing.yml" in str(info.value)


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"freeswitch": {"reconnect_min": 5, "reconnect_max": 2}},
            "freeswitch.reconnect_max: must be >= reconnect_min (5.0), got 2.0",
        ),
        ({"freeswitch": {"reconnect_min": 0}}, "freeswitch.reconnect_min: expected a number > 0"),
        ({"freeswitch": {"command_timeout": -1}}, "freeswitch.command_timeout: expected a num"),
        ({"freeswitch": {"heartbeat_timeout": 0}}, "freeswitch.heartbeat_timeout: expected a n"),
        ({"freeswitch": {"reconnect_max": float("inf")}}, "freeswitch.reconnect_max: expected"),
        ({"freeswitch": {"reconnect_max": float("nan")}}, "freeswitch.reconnect_max: expected"),
        ({"freeswitch": {"resync_concurrency": 0}}, "freeswitch.resync_concurrency: expected an"),
        ({"freeswitch": {"event_format": "xml"}}, "freeswitch.event_format: expected one of pl"),
        ({"freeswitch": {"nodes": []}}, "freeswitch.nodes: at least one FreeSWITCH node"),
        ({"freeswitch": {"nodes": [{"port": 0}]}}, "freeswitch.nodes[0].port: expected an in"),
        ({"freeswitch": {"nodes": [{"host": ""}]}}, "freeswitch.nodes[0].host: expected a non"),
        ({"freeswitch": {"nodes": [{"password": ""}]}}, "freeswitch.nodes[0].password: expec"),
        (
            {"freeswitch": {"conference_name_pattern": "[0-9"}},
            "freeswitch.conference_name_pattern: not a valid regular expression",
        ),
        (
            {"freeswitch": {"nodes": [{"name": "fs1"}, {"host": "h2", "name": "fs1"}]}},
            "freeswitch.nodes[1].name: duplicate node name 'fs1'",
        ),
        (
            {"freeswitch": {"nodes": [{}, {"name": "127.0.0.1:8021", "host": "other"}]}},
            "freeswitch.nodes[1].name: duplicate node name '127.0.0.1:8021'",
        ),
        (
            {"events": {"publish_participant_event": ["add-member", "joined"]}},
            "events.publish_participant_event[1]: expected one of add-member",
        ),
        ({"events": {"amqp_url": "http://mq/"}}, "events.amqp_url: expected a URL starting"),
        ({"events": {"subscriber_queue": 0}}, "events.subscriber_queue: expected an integer >= 1"),
        ({"events": {"amqp_buffer": -5}}, "events.amqp_buffer: expected an integer >= 1"),
        (
            {"events": {"websocket_ping_s": 3601}},
            "events.websocket_ping_s: expected an integer 0..3600, got 3601",
        ),
        ({"database": {"url": "mysql://x/y"}}, "database.url: expected a URL starting with"),
        ({"database": {"url": "sqlite:///"}}, "database.url: a sqlite URL needs a file path"),
        ({"auth": {"token_ttl": 0}}, "auth.token_ttl: expected an integer >= 1, got 0"),
        ({"log": {"level": "verbose"}}, "log.level: expected one of debug, info, warning"),
        ({"http": {"port": 65536}}, "http.port: expected an integer 0..65535, got 65536"),
    ],
)
def test_bad_values_rejected(data, message):
    assert error_of(data).startswith(message)


def test_accepted_edge_values():
    cfg = config_from_dict(
        {
            "http": {"port": 0},
            "database": {"url": "postgres://db/confd"},
            "freeswitch": {"reconnect_min": 2, "reconnect_max": 2, "event_format": "json"},
            "events": {"publish_participant_event": [], "amqp_url": "amqp://mq/"},
            "log": {"level": "Warning"},
        }
    )
    assert cfg.http.port == 0
    assert cfg.freeswitch.reconnect_max == 2.0
    assert cfg.events.publish_participant_event == ()
    assert cfg.log.level == "warning"


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError) as info:
        HttpConfig(port=-1)
    assert str(info.value).startswith("port: expected an integer 0..65535")
    assert NodeConfig(host="fs9", port=9000).name == "fs9:9000"
    assert NodeConfig(name="x").name == "x"


# --- resolve_config_path ----------------------------------------------------------------------


def test_resolve_prefers_argument_then_env_then_default(tmp_path):
    arg = write(tmp_path, "", "arg.yml")
    from_env = write(tmp_path, "", "env.yml")
    default = write(tmp_path, "", "default.yml")
    env = {"CONFD_CONFIG": from_env}
    assert resolve_config_path(arg, env, default_path=default) == arg
    assert resolve_config_path(None, env, default_path=default) == from_env
    assert resolve_config_path(None, {}, default_path=default) == default
    assert resolve_config_path(None, {"CONFD_CONFIG": ""}, default_path=default) == default
    assert resolve_config_path(None, {}, default_path=str(tmp_path / "absent.yml")) is None


def test_resolve_default_path_is_etc():
    assert DEFAULT_CONFIG_PATH == "/etc/confd/confd.yml"
    expected = DEFAULT_CONFIG_PATH if os.path.isfile(DEFAULT_CONFIG_PATH) else None
    assert resolve_config_path(None, {}) == expected


def test_resolve_explicit_missing_path_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError) as info:
        resolve_config_path(missing, {})
    assert info.value.key == "--config"
    assert missing in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve_config_path(None, {"CONFD_CONFIG": missing})
    assert info.value.key == "CONFD_CONFIG"
    with pytest.raises(ConfigError) as info:
        resolve_config_path(str(tmp_path), {})
    assert "directory" in str(info.value)


# --- config_to_dict and masking ---------------------------------------------------------------


def test_config_to_dict_masks_secrets(tmp_path):
    cfg = load_config(write(tmp_path, FULL), {})
    data = config_to_dict(cfg)
    assert [n["password"] for n in data["freeswitch"]["nodes"]] == ["********", "********"]
    assert data["database"]["url"] == "postgresql://confd:****@db.example/confd"
    assert data["events"]["amqp_url"] == "amqps://guest:****@mq.example:5671/vhost"
    dumped = yaml.safe_dump(data)  # plain types only: safe_dump would reject tuples
    for secret in ("s3cret", "pw:with:colons", "other", "guest@"):
        assert secret not in dumped
    assert data["events"]["publish_participant_event"] == ["add-member", "del-member"]
    assert data["freeswitch"]["nodes"][0]["name"] == "fs1"


def test_config_to_dict_unmasked_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, FULL), {})
    data = config_to_dict(cfg, mask_secrets=False)
    assert data["freeswitch"]["nodes"][0]["password"] == "pw:with:colons"
    assert data["database"]["url"] == "postgresql://confd:s3cret@db.example/confd"
    assert config_from_dict(data) == cfg


@pytest.mark.parametrize(
    "url, masked",
    [
        ("sqlite:///confd-data/confd.db", "sqlite:///confd-data/confd.db"),
        ("postgresql://db.example/confd", "postgresql://db.example/confd"),
        ("postgresql://user@db.example/confd", "postgresql://user@db.example/confd"),
        (
            "postgres://u:p%40ss@db:5433/c?sslmode=require",
            "postgres://u:****@db:5433/c?sslmode=require",
        ),
        ("postgresql://u:a@b@db/c", "postgresql://u:****@db/c"),
    ],
)
def test_database_url_masking(url, masked):
    cfg = Config(database=DatabaseConfig(url=url))
    assert config_to_dict(cfg)["database"]["url"] == masked


# --- entry ------------------------------------------------------------------------------------


def test_entry_defaults_are_off():
    entry = Config().entry
    assert entry == EntryConfig()
    assert entry.listen is None and entry.default_account is None
    assert (entry.default_profile, entry.number_tries, entry.pin_tries) == ("default", 3, 3)
    assert (entry.digit_timeout, entry.max_calls) == (5.0, 500)
    assert entry.sounds == EntrySoundsConfig()
    assert all(getattr(entry.sounds, name) is None for name in ENTRY_SOUNDS)


ENTRY_SOUNDS = (
    "enter_number",
    "bad_number",
    "enter_pin",
    "bad_pin",
    "locked",
    "full",
    "record_name",
    "goodbye",
)


def test_entry_every_key_read_from_yaml(tmp_path):
    path = write(
        tmp_path,
        """
        entry:
          listen: "[::1]:8084"
          default_account: 0123456789abcdef0123456789abcdef
          default_profile: wideband_16k
          number_tries: 1
          pin_tries: 10
          digit_timeout: 60
          max_calls: 1
          sounds:
            enter_number: conference/conf-enter_conf_number.wav
            bad_number: conference/conf-bad-pin.wav
            enter_pin: conference/conf-pin.wav
            bad_pin: conference/conf-bad-pin.wav
            locked: conference/conf-locked.wav
            full: tone_stream://%(500,500,480,620)
            record_name: silence_stream://500
            goodbye: /usr/share/freeswitch/sounds/en/us/callie/voicemail/8000/vm-goodbye.wav
        """,
    )
    entry = load_config(path, {}).entry
    assert entry.listen == "[::1]:8084"
    assert entry.default_account == "0123456789abcdef0123456789abcdef"
    assert (entry.default_profile, entry.number_tries, entry.pin_tries) == ("wideband_16k", 1, 10)
    assert entry.digit_timeout == 60.0 and isinstance(entry.digit_timeout, float)
    assert entry.max_calls == 1
    assert entry.sounds.enter_pin == "conference/conf-pin.wav"
    assert entry.sounds.full == "tone_stream://%(500,500,480,620)"
    assert entry.sounds.record_name == "silence_stream://500"


def test_entry_settings_are_what_the_service_builds():
    from confd.entry import constants as c
    from confd.entry.rules import settings_from

    cfg = config_from_dict(
        {
            "entry": {"listen": "127.0.0.1:0", "pin_tries": 2, "sounds": {"goodbye": "/b.wav"}},
            "events": {"channel_var_prefix": "cv_"},
        }
    )
    s = settings_from(cfg.entry, cfg.events.channel_var_prefix, "[0-9]+")
    assert (s.pin_tries, s.account_variable, s.sounds.goodbye) == (2, "cv_Account-ID", "/b.wav")
    assert s.sounds.enter_pin == c.DEFAULT_SOUNDS["enter_pin"]  # None: confd's default tone


@pytest.mark.parametrize(
    "data, message",
    [
        ({"entry": {"lisen": "x"}}, "entry.lisen: unknown key"),
        ({"entry": {"sounds": {"welcome": "x.wav"}}}, "entry.sounds.welcome: unknown key"),
        ({"entry": {"sounds": ["x.wav"]}}, "entry.sounds: expected a mapping, got a list"),
        ({"entry": {"listen": 8084}}, "entry.listen: expected a string, got 8084 (quote it"),
        ({"entry": {"listen": "8084"}}, "entry.listen: expected host:port or [ipv6]:port"),
        ({"entry": {"listen": "host:99999"}}, "entry.listen: expected host:port"),
        ({"entry": {"listen": ":8084"}}, "entry.listen: expected host:port"),
        ({"entry": {"default_account": "acme"}}, "entry.default_account: expected an account id"),
        ({"entry": {"default_profile": "a b"}}, "entry.default_profile: expected a profile name"),
        ({"entry": {"default_profile": "x}"}}, "entry.default_profile: expected a profile name"),
        ({"entry": {"number_tries": 0}}, "entry.number_tries: expected an integer 1..10, got 0"),
        ({"entry": {"pin_tries": 11}}, "entry.pin_tries: expected an integer 1..10, got 11"),
        ({"entry": {"pin_tries": True}}, "entry.pin_tries: expected an integer 1..10, got True"),
        ({"entry": {"digit_timeout": 0}}, "entry.digit_timeout: expected a number > 0 and <= 60"),
        ({"entry": {"digit_timeout": 60.5}}, "entry.digit_timeout: expected a number > 0 and"),
        ({"entry": {"max_calls": 0}}, "entry.max_calls: expected an integer >= 1, got 0"),
        ({"entry": {"sounds": {"goodbye": 5}}}, "entry.sounds.goodbye: expected a string"),
        # A sound goes into a sendmsg argument: nothing FreeSWITCH reads as syntax.
        ({"entry": {"sounds": {"goodbye": "a.wav\nhangup"}}}, "entry.sounds.goodbye: a sound may"),
        ({"entry": {"sounds": {"locked": "${api(x)}"}}}, "entry.sounds.locked: a sound may"),
        ({"entry": {"sounds": {"full": "a.wav b.wav"}}}, "entry.sounds.full: a sound may"),
        ({"entry": {"sounds": {"bad_pin": "{x=1}a.wav"}}}, "entry.sounds.bad_pin: a sound may"),
        (
            {"entry": {"sounds": {"enter_pin": "tone_stream://%(1,2),x"}}},
            "entry.sounds.enter_pin: ',' or parentheses outside a %(...) tone group",
        ),
        # The account variable entry sets is named from the prefix: only checked when entry
        # is on (the rest of confd takes any prefix).
        (
            {"entry": {"listen": "127.0.0.1:8084"}, "events": {"channel_var_prefix": "a.b"}},
            "events.channel_var_prefix: with entry.listen set, 'a.bAccount-ID'",
        ),
    ],
)
def test_entry_bad_values_rejected(data, message):
    assert error_of(data).startswith(message)


def test_entry_prefix_is_free_while_entry_is_off():
    assert config_from_dict({"events": {"channel_var_prefix": "a.b"}}).entry.listen is None


def test_example_config_lists_confd_default_sounds():
    """The shipped file's comment beside each sound is confd's default for it."""
    from confd.entry import constants as c

    text = EXAMPLE.read_text(encoding="utf-8")
    for name in ENTRY_SOUNDS:
        assert f"    {name}: null" in text
        line = next(ln for ln in text.splitlines() if ln.startswith(f"    {name}: null"))
        assert line.split("# ", 1)[1].split(" ")[0] == c.DEFAULT_SOUNDS[name], name


# --- cluster (cluster.md) ---------------------------------------------------------------------

CLUSTER_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
CLUSTER_PG = "postgresql://postgres@127.0.0.1:5432/confd"


def cluster_data(database_url: str = CLUSTER_PG, **cluster: object) -> dict:
    section = {"instance": "confd-a", "amqp_url": CLUSTER_AMQP}
    section.update(cluster)
    return {"database": {"url": database_url}, "cluster": section}


def test_cluster_defaults_are_off():
    c = Config().cluster
    assert c == ClusterConfig()
    assert (c.instance, c.amqp_url, c.name) == (None, None, "confd")
    assert (c.claim_interval, c.request_timeout) == (1.0, 0.5)
    assert not c.enabled


def test_cluster_section_from_yaml(tmp_path):
    path = write(
        tmp_path,
        f"""
        database:
          url: {CLUSTER_PG}
        events:
          amqp_url: {CLUSTER_AMQP}
        cluster:
          instance: confd-a
          amqp_url: {CLUSTER_AMQP}
          name: site1
          claim_interval: 2
          request_timeout: 1.5
        """,
    )
    c = load_config(path, {}).cluster
    assert c == ClusterConfig(
        instance="confd-a",
        amqp_url=CLUSTER_AMQP,
        name="site1",
        claim_interval=2.0,
        request_timeout=1.5,
    )
    assert c.enabled


@pytest.mark.parametrize("name", ["a", "confd-a", "A.b_c-1", "9", "x" * 50, "i-10.0.0.7"])
def test_cluster_instance_names_accepted(name):
    assert config_from_dict(cluster_data(instance=name)).cluster.instance == name


@pytest.mark.parametrize(
    "name", ["", "-a", ".a", "_a", "a b", "a/b", "a:b", "a*", "a#", "é", "a\n", "x" * 51]
)
def test_cluster_instance_names_refused(name):
    # The name goes into application_name ("confd:<instance>", 63 bytes) and into queue names
    # and routing keys.
    assert error_of(cluster_data(instance=name)).startswith("cluster.instance: expected a name")


@pytest.mark.parametrize("name", ["", "-c", "c d", "c#", "x" * 51])
def test_cluster_names_refused(name):
    assert error_of(cluster_data(name=name)).startswith("cluster.name: expected a name")


def test_cluster_instance_must_be_a_string():
    assert error_of(cluster_data(instance=5)).startswith("cluster.instance: expected")


def test_cluster_amqp_url_required_with_an_instance():
    data = cluster_data()
    del data["cluster"]["amqp_url"]
    assert error_of(data) == "cluster.amqp_url: required when cluster.instance is set"


def test_cluster_amqp_url_must_be_amqp():
    message = error_of(cluster_data(amqp_url="http://127.0.0.1:5672/"))
    assert message.startswith("cluster.amqp_url: expected a URL starting with")


def test_cluster_amqp_url_alone_leaves_cluster_mode_off():
    cfg = config_from_dict({"cluster": {"amqp_url": CLUSTER_AMQP}})
    assert not cfg.cluster.enabled  # and SQLite is fine then


@pytest.mark.parametrize(
    "url", ["sqlite:///confd-data/confd.db", "sqlite:////var/lib/confd/confd.db"]
)
def test_cluster_mode_refuses_sqlite_naming_database_url(url):
    message = error_of(cluster_data(database_url=url))
    assert message.startswith("database.url: cluster mode")
    assert "PostgreSQL" in message


def test_cluster_mode_refuses_the_default_sqlite_database():
    data = cluster_data()
    del data["database"]
    assert error_of(data).startswith("database.url: cluster mode")


@pytest.mark.parametrize("url", ["postgresql://db/confd", "postgres://u:p@db:5433/confd"])
def test_cluster_mode_accepts_postgresql(url):
    assert config_from_dict(cluster_data(database_url=url)).cluster.enabled


def test_cluster_events_amqp_url_unset_or_the_same():
    data = cluster_data()
    assert config_from_dict(data).events.amqp_url is None
    data["events"] = {"amqp_url": CLUSTER_AMQP}
    assert config_from_dict(data).events.amqp_url == CLUSTER_AMQP
    data["events"] = {"amqp_url": "amqp://guest:guest@10.0.0.9:5672/"}
    assert error_of(data).startswith("events.amqp_url: in cluster mode")


def test_events_amqp_url_is_free_while_cluster_mode_is_off():
    data = {"events": {"amqp_url": "amqp://a/"}, "cluster": {"amqp_url": "amqp://b/"}}
    assert config_from_dict(data).events.amqp_url == "amqp://a/"


@pytest.mark.parametrize("key", ["claim_interval", "request_timeout"])
@pytest.mark.parametrize("value", [0.01, 0.5, 1, 60])
def test_cluster_durations_accepted(key, value):
    assert getattr(config_from_dict(cluster_data(**{key: value})).cluster, key) == value


@pytest.mark.parametrize("key", ["claim_interval", "request_timeout"])
@pytest.mark.parametrize("value", [0, -1, 60.5, 3600, "fast", None, True])
def test_cluster_durations_refused(key, value):
    assert error_of(cluster_data(**{key: value})).startswith(f"cluster.{key}: expected")


def test_cluster_unknown_key_refused():
    assert error_of(cluster_data(instances=3)).startswith("cluster.instances: unknown key")


def test_cluster_amqp_url_masked():
    cfg = config_from_dict(cluster_data(amqp_url="amqp://confd:s3cret@mq:5672/"))
    shown = config_to_dict(cfg)["cluster"]
    assert "s3cret" not in shown["amqp_url"] and shown["instance"] == "confd-a"


def test_cluster_with_the_database_url_from_the_environment(tmp_path):
    # The database URL (a secret) often comes from CONFD_DATABASE_URL, not the file: cluster
    # mode must see the URL confd will use, the environment's.
    path = write(
        tmp_path,
        f"""
        cluster:
          instance: confd-a
          amqp_url: {CLUSTER_AMQP}
        """,
    )
    cfg = load_config(path, {"CONFD_DATABASE_URL": CLUSTER_PG})
    assert cfg.cluster.enabled and cfg.database.url == CLUSTER_PG


def test_cluster_sqlite_from_the_environment_is_refused_naming_the_variable(tmp_path):
    path = write(
        tmp_path,
        f"""
        database:
          url: {CLUSTER_PG}
        cluster:
          instance: confd-a
          amqp_url: {CLUSTER_AMQP}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {"CONFD_DATABASE_URL": "sqlite:///tmp/confd.db"})
    assert info.value.key == "CONFD_DATABASE_URL"
    assert "cluster mode" in info.value.reason
