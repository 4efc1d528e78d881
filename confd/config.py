"""Typed configuration: defaults, YAML file, environment overrides, validation.

The dataclasses below are the one place where defaults live.  Every dataclass validates itself
in ``__post_init__`` (types, ranges, cross-field rules), so a ``Config`` that exists is a valid
one, whether it came from a file or was built in a test.  The loader only maps YAML mappings
onto the dataclasses and prefixes error keys with the dotted path of the section being built,
so an error always names the offending key, e.g.
``freeswitch.nodes[1].port: expected an integer 1..65535, got 'abc'`` (list indexes count
from 0).

``load_config(path)`` takes the path literally (``None`` = built-in defaults);
``resolve_config_path`` implements the ``--config`` / ``$CONFD_CONFIG`` / ``/etc`` lookup.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from confd.entry import rules as entry_rules

DEFAULT_CONFIG_PATH = "/etc/confd/confd.yml"

# Environment variables (operations.md): the things a container or a test most often changes.
ENV_CONFIG = "CONFD_CONFIG"
ENV_HTTP_PORT = "CONFD_HTTP_PORT"
ENV_DATABASE_URL = "CONFD_DATABASE_URL"
ENV_FREESWITCH = "CONFD_FREESWITCH"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
EVENT_FORMATS = ("plain", "json")
DATABASE_URL_PREFIXES = ("sqlite:///", "postgresql://", "postgres://")
AMQP_URL_PREFIXES = ("amqp://", "amqps://")
# mod_conference actions a client may ask to be told about (events.md).
PARTICIPANT_EVENTS = (
    "add-member",
    "del-member",
    "start-talking",
    "stop-talking",
    "mute-member",
    "unmute-member",
    "deaf-member",
    "undeaf-member",
    "lock",
    "unlock",
    "conference-create",
    "conference-destroy",
    "kick-member",
)

NODE_PASSWORD_MASK = "********"
URL_PASSWORD_MASK = "****"

# Field metadata keys understood by _check_fields.
_RANGE = "range"  # (lo, hi) inclusive, for ints
_MIN = "min"  # inclusive lower bound, for ints
_GT = "gt"  # exclusive lower bound, for floats
_LE = "le"  # inclusive upper bound, for floats
_CHOICES = "choices"  # allowed values, for strings (and each item of a tuple of strings)
_NONEMPTY = "nonempty"  # a string that must not be empty
_LOWER = "lower"  # store the string lower-cased (compare case-insensitively)
_SECRET = "secret"  # never echo the value in an error message


class ConfigError(Exception):
    """The configuration is invalid.  ``str(error)`` is ``"<key>: <reason>"``.

    ``key`` is the dotted path of the offending key (``http.port``, ``freeswitch.nodes[0].port``),
    an environment variable name, ``--config``, or a file name for file-level errors.
    ``source`` is the config file the error was found in, when there is one.
    """

    def __init__(self, key: str, reason: str, source: Optional[str] = None) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.source = source

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key placed under ``prefix`` (a section path)."""
        if not prefix:
            return self
        joiner = "" if self.key.startswith("[") else "."
        return ConfigError(f"{prefix}{joiner}{self.key}", self.reason, self.source)


# ---------------------------------------------------------------------------------------------
# Field checking shared by all sections


def _describe(value: Any, secret: bool = False) -> str:
    """A short, safe rendering of a wrong value for an error message."""
    if secret and value is not None:
        return f"a value of type {type(value).__name__}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expectation(tp: Any, meta: Mapping[str, Any]) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        if _RANGE in meta:
            lo, hi = meta[_RANGE]
            return f"an integer {lo}..{hi}"
        if _MIN in meta:
            return f"an integer >= {meta[_MIN]}"
        return "an integer"
    if tp is float:
        if _GT in meta and _LE in meta:
            return f"a number > {meta[_GT]} and <= {meta[_LE]}"
        if _GT in meta:
            return f"a number > {meta[_GT]}"
        return "a number"
    if tp is str:
        if _CHOICES in meta:
            return "one of " + ", ".join(meta[_CHOICES])
        if meta.get(_NONEMPTY):
            return "a non-empty string"
        return "a string"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__}"
    return "a list" if get_origin(tp) is tuple else str(tp)


def _wrong(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> ConfigError:
    reason = f"expected {_expectation(tp, meta)}, got {_describe(value, meta.get(_SECRET, False))}"
    if tp is str and isinstance(value, (bool, int, float)):
        # YAML turns unquoted 1234, yes, 1.5 into non-strings; say how to keep it a string.
        reason += " (quote it in YAML)"
    return ConfigError(key, reason)


def _coerce(value: Any, tp: Any, key: str, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against type ``tp`` and the field's ``meta`` constraints.

    Returns the value normalised: an int where a float is expected becomes a float, a list
    where a tuple is expected becomes a tuple, a lower-cased string where asked for.
    """
    origin = get_origin(tp)
    if origin is Union:
        if value is None:
            return None
        (inner,) = [arg for arg in get_args(tp) if arg is not type(None)]
        return _coerce(value, inner, key, meta)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, value, tp, meta)
        item_type = get_args(tp)[0]
        return tuple(_coerce(item, item_type, f"{key}[{i}]", meta) for i, item in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        raise _wrong(key, value, tp, meta)
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(key, value, tp, meta)
        return value
    if tp is int:
        # bool is a subclass of int, but "port: yes" is a mistake, not port 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(key, value, tp, meta)
        lo, hi = meta.get(_RANGE, (meta.get(_MIN), None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _wrong(key, value, tp, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(key, value, tp, meta)
        number = float(value)
        if not math.isfinite(number) or (_GT in meta and not number > meta[_GT]):
            raise _wrong(key, value, tp, meta)
        if _LE in meta and not number <= meta[_LE]:
            raise _wrong(key, value, tp, meta)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise _wrong(key, value, tp, meta)
        if meta.get(_LOWER):
            value = value.lower()
        if _CHOICES in meta and value not in meta[_CHOICES]:
            raise _wrong(key, value, tp, meta)
        if meta.get(_NONEMPTY) and not value:
            raise _wrong(key, value, tp, meta)
        return value
    raise TypeError(f"unsupported config field type {tp!r}")  # a bug in this module


def _check_fields(obj: Any) -> None:
    """Type- and range-check every field of a config dataclass instance, normalising in place."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _coerce(getattr(obj, f.name), hints[f.name], f.name, f.metadata)
        object.__setattr__(obj, f.name, value)


def _check_prefix(key: str, value: Optional[str], prefixes: Tuple[str, ...]) -> None:
    if value is not None and not value.startswith(prefixes):
        raise ConfigError(
            key, f"expected a URL starting with {' or '.join(prefixes)}, got {_mask_url(value)!r}"
        )


# ---------------------------------------------------------------------------------------------
# The configuration sections (defaults live here and nowhere else)


# A browser origin as the Origin header spells it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
ANY_ORIGIN = "*"


@dataclass(frozen=True)
class HttpConfig:
    host: str = field(default="127.0.0.1", metadata={_NONEMPTY: True})
    port: int = field(default=8000, metadata={_RANGE: (0, 65535)})  # 0 = ephemeral (tests)
    # Seconds a client has to send a request's line and headers once it started (a new
    # connection: from its accept), and again its body: a client that sends nothing or
    # drips bytes does not hold a connection.
    header_timeout: float = field(default=10.0, metadata={_GT: 0})
    # Seconds an idle keep-alive connection waits for its next request.
    keepalive_timeout: float = field(default=60.0, metadata={_GT: 0})
    # HTTP connections open at once, idle ones included.  At the bound, the connection idle
    # the longest is closed to make room (a client that connects and sends nothing cannot
    # lock others out); when none is idle, new connections wait in the listen backlog.
    max_connections: int = field(default=1000, metadata={_MIN: 1})
    # Websocket connections open at once, a bound of their own (an upgraded connection no
    # longer counts against max_connections); past it an upgrade is answered 503.
    max_websockets: int = field(default=1000, metadata={_MIN: 1})
    # One log line per request (request id, method, route, status, milliseconds) at info;
    # false: at debug (seen with log.level debug).
    access_log: bool = False
    # Browser origins (scheme://host[:port]) whose pages may call the API; "*" = any.
    # None (the default): no CORS headers at all.
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self)
        for i, origin in enumerate(self.cors_origins):
            if origin != ANY_ORIGIN and not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"cors_origins[{i}]",
                    f"expected an origin such as https://app.example.com (scheme://host[:port],"
                    f" no path) or *, got {_describe(origin)}",
                )


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///confd-data/confd.db"

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_prefix("url", self.url, DATABASE_URL_PREFIXES)
        if self.url == "sqlite:///":
            raise ConfigError("url", "a sqlite URL needs a file path after sqlite:///")


@dataclass(frozen=True)
class NodeConfig:
    host: str = field(default="127.0.0.1", metadata={_NONEMPTY: True})
    port: int = field(default=8021, metadata={_RANGE: (1, 65535)})
    password: str = field(default="ClueCon", metadata={_NONEMPTY: True, _SECRET: True})
    name: str = ""  # "" = "host:port"

    def __post_init__(self) -> None:
        _check_fields(self)
        if not self.name:
            object.__setattr__(self, "name", f"{self.host}:{self.port}")


@dataclass(frozen=True)
class FreeswitchConfig:
    nodes: tuple[NodeConfig, ...] = (NodeConfig(),)
    reconnect_min: float = field(default=0.5, metadata={_GT: 0})
    reconnect_max: float = field(default=30.0, metadata={_GT: 0})
    # Seconds a command may wait for its reply.
    command_timeout: float = field(default=5.0, metadata={_GT: 0})
    # FreeSWITCH sends a HEARTBEAT event every 20 s, so this long without a byte on the event
    # connection means the node (or the path to it) is dead.
    heartbeat_timeout: float = field(default=60.0, metadata={_GT: 0})
    event_format: str = field(default="plain", metadata={_CHOICES: EVENT_FORMATS, _LOWER: True})
    # Which conference names confd manages.  Whatever this allows, the command builder still
    # refuses any name outside [A-Za-z0-9_.@-]{1,128}.
    conference_name_pattern: str = "[0-9a-f]{32}"
    # uuid_dump requests in flight while resynchronising after a (re)connect.
    resync_concurrency: int = field(default=4, metadata={_MIN: 1})

    def __post_init__(self) -> None:
        _check_fields(self)
        if not self.nodes:
            raise ConfigError("nodes", "at least one FreeSWITCH node is required")
        seen: Dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                raise ConfigError(
                    f"nodes[{i}].name",
                    f"duplicate node name {node.name!r} (also nodes[{seen[node.name]}])",
                )
            seen[node.name] = i
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError(
                "reconnect_max",
                f"must be >= reconnect_min ({self.reconnect_min}), got {self.reconnect_max}",
            )
        try:
            re.compile(self.conference_name_pattern)
        except re.error as exc:
            raise ConfigError(
                "conference_name_pattern", f"not a valid regular expression: {exc}"
            ) from None


@dataclass(frozen=True)
class EventsConfig:
    # None = publish every participant event; otherwise only these.
    publish_participant_event: Optional[tuple[str, ...]] = field(
        default=None, metadata={_CHOICES: PARTICIPANT_EVENTS}
    )
    channel_var_prefix: str = "ecallmgr_"
    amqp_url: Optional[str] = None
    # Bound of the event frames waiting for one websocket client (and of the events waiting
    # for the fan-out itself).
    subscriber_queue: int = field(default=1000, metadata={_MIN: 1})
    # Bound of the queue of events waiting to be published to AMQP.
    amqp_buffer: int = field(default=10000, metadata={_MIN: 1})
    # AMQP heartbeat interval proposed to the broker, in seconds (it may choose less): a
    # broker silent for two intervals (a half-open connection) is reconnected.  0: none.
    amqp_heartbeat: int = field(default=10, metadata={_RANGE: (0, 3600)})
    # Websocket writes go out in rounds; the next round waits as long as the last one took, up
    # to this many milliseconds (0: never waits): the latency batching may add under load.
    websocket_batch_ms: int = field(default=2, metadata={_RANGE: (0, 100)})
    # A websocket client silent (no frame at all) this many seconds is sent a ping; silent
    # as long again, it is closed (1011): a vanished dashboard does not hold a connection
    # forever.  0: never.
    websocket_ping_s: int = field(default=30, metadata={_RANGE: (0, 3600)})
    # A websocket that has had no subscription this many seconds (since it opened, or since its
    # last one ended) is closed (1008), answering pings or not: an idle socket must not hold a
    # connection.  0: never.
    websocket_subscribe_s: int = field(default=10, metadata={_RANGE: (0, 3600)})

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_prefix("amqp_url", self.amqp_url, AMQP_URL_PREFIXES)


@dataclass(frozen=True)
class AuthConfig:
    token_ttl: int = field(default=3600, metadata={_MIN: 1})  # seconds

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata={_CHOICES: LOG_LEVELS, _LOWER: True})

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True)
class EntrySoundsConfig:
    """What a caller in entry hears: each a FreeSWITCH playable (a file path, tone_stream://,
    silence_stream://, say:...).  None: confd's default, a distinct tone (confd.entry.constants
    DEFAULT_SOUNDS), so entry works on a FreeSWITCH without sound packages."""

    enter_number: Optional[str] = None
    bad_number: Optional[str] = None
    enter_pin: Optional[str] = None
    bad_pin: Optional[str] = None
    locked: Optional[str] = None
    full: Optional[str] = None
    record_name: Optional[str] = None
    goodbye: Optional[str] = None

    def __post_init__(self) -> None:
        _check_fields(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                # A sound goes into a sendmsg argument: nothing FreeSWITCH would read as syntax.
                try:
                    entry_rules.check_sound(value, f.name)
                except entry_rules.InvalidValue as exc:
                    raise ConfigError(f.name, f"{exc.reason}, got {_describe(value)}") from None


@dataclass(frozen=True)
class EntryConfig:
    """Caller entry over FreeSWITCH's outbound event socket (entry.md): off until ``listen``
    is set."""

    listen: Optional[str] = None  # "host:port" ("[v6]:port") for the outbound socket
    # The account of a call without a <events.channel_var_prefix>Account-ID variable.
    default_account: Optional[str] = None
    default_profile: str = "default"  # conference profile when the document names none
    number_tries: int = field(default=3, metadata={_RANGE: (1, 10)})
    pin_tries: int = field(default=3, metadata={_RANGE: (1, 10)})
    # Seconds FreeSWITCH waits for the caller's digits after a prompt.
    digit_timeout: float = field(default=5.0, metadata={_GT: 0, _LE: 60})
    # Calls in entry at once; one more hears `goodbye` and is hung up (outcome busy).
    max_calls: int = field(default=500, metadata={_MIN: 1})
    sounds: EntrySoundsConfig = field(default_factory=EntrySoundsConfig)

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.listen is not None:
            try:
                entry_rules.parse_listen(self.listen)
            except ValueError:
                raise ConfigError(
                    "listen", f"expected host:port or [ipv6]:port, got {_describe(self.listen)}"
                ) from None
        checks = (
            ("default_account", entry_rules.check_account_id, "an account id (32 hex digits)"),
            ("default_profile", entry_rules.check_profile, "a profile name [A-Za-z0-9_-]{1,64}"),
        )
        for key, check, wanted in checks:
            value = getattr(self, key)
            if value is not None:
                try:
                    check(value)
                except entry_rules.InvalidValue:
                    raise ConfigError(key, f"expected {wanted}, got {_describe(value)}") from None


# An instance's and a cluster's names go into PostgreSQL's application_name
# ("confd:<instance>", at most 63 bytes) and into AMQP exchange and queue names and routing
# keys: letters, digits and . _ - only.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")


@dataclass(frozen=True)
class ClusterConfig:
    """Several instances on one PostgreSQL and one RabbitMQ (cluster.md): off until
    ``instance`` is set."""

    instance: Optional[str] = None  # this instance's unique name; set = cluster mode
    amqp_url: Optional[str] = None  # required in cluster mode
    # Prefixes the exchanges and queues used between instances and the advisory-lock keys,
    # so that two clusters can share a broker and a database.
    name: str = "confd"
    claim_interval: float = field(default=1.0, metadata={_GT: 0, _LE: 60})
    request_timeout: float = field(default=0.5, metadata={_GT: 0, _LE: 60})

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_prefix("amqp_url", self.amqp_url, AMQP_URL_PREFIXES)
        for key in ("instance", "name"):
            value = getattr(self, key)
            if value is not None and not _CLUSTER_NAME.fullmatch(value):
                raise ConfigError(
                    key,
                    "expected a name of letters, digits, '.', '_' and '-' (at most 50, starting"
                    f" with a letter or digit), got {_describe(value)}",
                )
        if self.instance is not None and self.amqp_url is None:
            raise ConfigError("amqp_url", "required when cluster.instance is set")

    @property
    def enabled(self) -> bool:
        return self.instance is not None


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    freeswitch: FreeswitchConfig = field(default_factory=FreeswitchConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    entry: EntryConfig = field(default_factory=EntryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.entry.listen is not None:
            # What entry builds from this section and the two values it shares with others
            # (the account variable's name must be one FreeSWITCH's `set` takes).
            try:
                entry_rules.settings_from(
                    self.entry,
                    self.events.channel_var_prefix,
                    self.freeswitch.conference_name_pattern,
                )
            except entry_rules.InvalidValue as exc:
                if exc.field != entry_rules.FIELD_VARIABLE:
                    raise ConfigError("entry", str(exc)) from None  # EntryConfig checked the rest
                raise ConfigError(
                    "events.channel_var_prefix",
                    f"with entry.listen set, {exc.value!r} (the account variable entry sets)"
                    " must be [A-Za-z0-9_-]{1,64}",
                ) from None


# ---------------------------------------------------------------------------------------------
# Building sections from plain data (YAML)


def _build(cls: Any, data: Any, path: str, none_is_empty: bool = True) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; error keys are placed under ``path``."""
    if data is None and none_is_empty:
        # "http:" with every key below it commented out = that section's defaults
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(str(key), "unknown key").under(path)
        kwargs[key] = _from_plain(value, hints[key], _join(path, key))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.under(path) from None


def _from_plain(value: Any, tp: Any, path: str) -> Any:
    """Turn mappings into the dataclasses ``tp`` asks for; leave scalars for ``_check_fields``."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if get_origin(tp) is tuple and isinstance(value, list):
        item_type = get_args(tp)[0]
        if dataclasses.is_dataclass(item_type):
            return tuple(
                _build(item_type, v, f"{path}[{i}]", none_is_empty=False)
                for i, v in enumerate(value)
            )
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def config_from_dict(data: Any) -> Config:
    """Build a validated ``Config`` from plain data shaped like the YAML file."""
    cfg = _build(Config, data, "")
    check_cluster(cfg)
    return cfg


def check_cluster(cfg: Config) -> None:
    """What cluster mode needs of the other sections (checked once the environment's overrides
    are applied: the database URL may come from CONFD_DATABASE_URL)."""
    if not cfg.cluster.enabled:
        return
    if not cfg.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "database.url",
            "cluster mode (cluster.instance set) needs a PostgreSQL database: node"
            " ownership is a PostgreSQL advisory lock; SQLite is not shared",
        )
    if cfg.events.amqp_url is not None and cfg.events.amqp_url != cfg.cluster.amqp_url:
        raise ConfigError(
            "events.amqp_url",
            "in cluster mode the owners publish events on cluster.amqp_url; leave"
            " events.amqp_url unset or give it the same URL",
        )


# ---------------------------------------------------------------------------------------------
# Environment overrides

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _env_int(text: str) -> Any:
    """An integer if ``text`` spells one; otherwise the text itself, for the field check to
    reject with the usual message."""
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else text


def _parse_freeswitch_env(text: str) -> tuple[NodeConfig, ...]:
    """``host:port:password[,host:port:password...]``; the password may contain ':'.

    An IPv6 host is written in brackets: ``[::1]:8021:ClueCon``.  Error messages never echo
    an entry (it holds a password), only its index and the offending part.
    """
    nodes = []
    for i, entry in enumerate(text.split(",")):
        key = f"{ENV_FREESWITCH}[{i}]"
        entry = entry.strip()
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ConfigError(key, "expected [ipv6-host]:port:password")
            parts = [host, *rest[1:].split(":", 1)]
        else:
            parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError(key, "expected host:port:password (entries separated by ',')")
        host, port, password = parts
        try:
            nodes.append(NodeConfig(host=host, port=_env_int(port), password=password))
        except ConfigError as exc:
            raise exc.under(key) from None
    return tuple(nodes)


def _apply_env(cfg: Config, env: Mapping[str, str]) -> Config:
    """Apply CONFD_HTTP_PORT, CONFD_DATABASE_URL and CONFD_FREESWITCH (empty = unset)."""
    port = env.get(ENV_HTTP_PORT, "")
    if port:
        try:
            cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=_env_int(port)))
        except ConfigError as exc:
            raise ConfigError(ENV_HTTP_PORT, exc.reason) from None
    url = env.get(ENV_DATABASE_URL, "")
    if url:
        try:
            cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, url=url))
        except ConfigError as exc:
            raise ConfigError(ENV_DATABASE_URL, exc.reason) from None
    nodes_text = env.get(ENV_FREESWITCH, "")
    if nodes_text:
        nodes = _parse_freeswitch_env(nodes_text)
        try:
            freeswitch = dataclasses.replace(cfg.freeswitch, nodes=nodes)
        except ConfigError as exc:
            # "nodes[1].name: duplicate ..." -> "CONFD_FREESWITCH[1].name: duplicate ..."
            key = exc.key[len("nodes") :] if exc.key.startswith("nodes") else f".{exc.key}"
            raise ConfigError(ENV_FREESWITCH + key, exc.reason) from None
        cfg = dataclasses.replace(cfg, freeswitch=freeswitch)
    return cfg


# ---------------------------------------------------------------------------------------------
# Files


def resolve_config_path(
    arg: Optional[str],
    env: Mapping[str, str],
    default_path: Optional[str] = None,
) -> Optional[str]:
    """Which config file to read: ``--config``, else ``$CONFD_CONFIG``, else ``default_path``
    (``DEFAULT_CONFIG_PATH``) if it exists, else ``None`` (built-in defaults).  A path given
    explicitly must exist; an empty value counts as not given."""
    if default_path is None:
        default_path = DEFAULT_CONFIG_PATH
    for key, candidate in (("--config", arg), (ENV_CONFIG, env.get(ENV_CONFIG))):
        if candidate:
            if not os.path.exists(candidate):
                raise ConfigError(key, f"no such file: {candidate}")
            if os.path.isdir(candidate):
                raise ConfigError(key, f"is a directory, not a file: {candidate}")
            return candidate
    return default_path if os.path.isfile(default_path) else None


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}", source=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text: {exc}", source=path) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, f"invalid YAML{where}: {problem}", source=path) from None


def load_config(path: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Config:
    """Load ``path`` (``None`` = no file, built-in defaults), then apply environment overrides.

    ``env`` defaults to ``os.environ``.  Raises ``ConfigError`` naming the offending key;
    errors found in the file carry it in ``error.source``.
    """
    if env is None:
        env = os.environ
    cfg = Config()
    if path is not None:
        data = _read_yaml(path)
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(
                path, f"expected a mapping at the top level, got {_describe(data)}", source=path
            )
        try:
            cfg = _build(Config, data, "")
        except ConfigError as exc:
            exc.source = path
            raise
    cfg = _apply_env(cfg, env)
    try:
        check_cluster(cfg)
    except ConfigError as exc:
        if exc.key == "database.url" and env.get(ENV_DATABASE_URL, ""):
            raise ConfigError(ENV_DATABASE_URL, exc.reason) from None
        if path is not None:
            exc.source = path
        raise
    return cfg


# ---------------------------------------------------------------------------------------------
# Showing the effective config


def _mask_url(url: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://user:****@host/...``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:{URL_PASSWORD_MASK}@{hostport}"
    return parts._replace(netloc=netloc).geturl()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def config_to_dict(cfg: Config, mask_secrets: bool = True) -> Dict[str, Any]:
    """The effective config as plain dicts/lists/scalars (safe for ``yaml.safe_dump``).

    With ``mask_secrets`` node passwords become ``********`` and URL passwords ``****``.
    """
    data: Dict[str, Any] = _plain(cfg)
    if mask_secrets:
        for node in data["freeswitch"]["nodes"]:
            node["password"] = NODE_PASSWORD_MASK
        data["database"]["url"] = _mask_url(data["database"]["url"])
        if data["events"]["amqp_url"] is not None:
            data["events"]["amqp_url"] = _mask_url(data["events"]["amqp_url"])
        if data["cluster"]["amqp_url"] is not None:
            data["cluster"]["amqp_url"] = _mask_url(data["cluster"]["amqp_url"])
    return data
