"""A model of one FreeSWITCH process's mod_conference, without sockets.

Every behaviour here is copied from real traffic in ``confd_tests/captures`` (named ``sN`` in the
comments): the events a step produces, their order, their headers in order, and the exact text of
each api reply.  The model is driven two ways: directly (``join``, ``leave``, ``set_talking``: what
callers do) and through ``api(line)`` (what an ESL client asks).  Each event is handed to every
listener as an ordered list of ``(header, value)`` pairs with decoded values; headers repeat where
FreeSWITCH repeats them (floor-change carries the ``Conference-*`` block twice, s1).
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

log = logging.getLogger(__name__)

Header = Tuple[str, str]
EventPairs = List[Header]
Listener = Callable[[EventPairs], None]

# --- protocol text (from the captures) ---------------------------------------------------------

SUBCLASS = "conference::maintenance"
EVENT_CUSTOM = "CUSTOM"
EVENT_HEARTBEAT = "HEARTBEAT"
VERSION_TEXT = "1.11.3-dev~64bit"
VERSION_REPLY = "FreeSWITCH Version 1.11.3-dev~64bit ( 64bit)\n"  # s6 `api version`
OUTBOUND_CALLER_NAME = "Outbound Call"  # s1: originated calls show this as Caller-Caller-ID-Name
NO_CONFERENCES = "+OK No active conferences.\n"
EMPTY_XML_LIST = '<?xml version="1.0"?>\n<conferences></conferences>\n'
NO_SUCH_CHANNEL = "-ERR No such channel!\n"
NOT_SPECIFIED = "Conference command, not specified.\nTry 'help'\n"
CONF_FLAGS = "running|answered|enforce_min|dynamic|exit_sound|enter_sound|json_status"
ENTER_SOUND = "tone_stream://%(200,0,500,600,700)"  # s1 play-file-done after a join
EXIT_SOUND = "tone_stream://%(500,0,300,200,100,50,25)"  # s5 play-file-done after a leave
FLOOR_NONE = "none"  # s1: floor-change Old-ID/New-ID when nobody holds the floor

# Usage lines: the bare reply to a missing, non-numeric or zero member id (s1, s6).
USAGE = {
    "mute": "<[member_id|all]|last|non_moderator> [<quiet>]",
    "tmute": "<[member_id|all]|last|non_moderator> [<quiet>]",
    "unmute": "<[member_id|all]|last|non_moderator> [<quiet>]",
    "deaf": "<[member_id|all]|last|non_moderator>",
    "undeaf": "<[member_id|all]|last|non_moderator>",
    "kick": "<[member_id|all|last|non_moderator]> [<optional sound file>]",
    "hup": "<[member_id|all|last|non_moderator]>",
    "energy": "<member_id|all|last|non_moderator> [<newval>]",
}

# Event-Calling-{File,Function,Line-Number} per Action, as the captures show them.
CALLING = {
    "conference-create": ("mod_conference.c", "conference_new", 3848),
    "conference-destroy": ("mod_conference.c", "conference_thread_run", 863),
    "add-member": ("conference_member.c", "conference_member_add", 962),
    "del-member": ("conference_member.c", "conference_member_del", 1355),
    "floor-change": ("conference_member.c", "conference_member_set_floor_holder", 1158),
    "mute-member": ("conference_api.c", "conference_api_sub_mute", 339),
    "unmute-member": ("conference_api.c", "conference_api_sub_unmute", 492),
    "deaf-member": ("conference_api.c", "conference_api_sub_deaf", 797),
    "undeaf-member": ("conference_api.c", "conference_api_sub_undeaf", 839),
    "hup-member": ("conference_api.c", "conference_api_sub_hup", 871),
    "kick-member": ("conference_api.c", "conference_api_sub_kick", 902),
    "energy-level-member": ("conference_api.c", "conference_api_sub_energy", 1228),
    "lock": ("conference_api.c", "conference_api_sub_lock", 3474),
    "unlock": ("conference_api.c", "conference_api_sub_unlock", 3496),
    "start-talking": ("conference_loop.c", "conference_loop_input", 1154),
    "stop-talking": ("conference_loop.c", "stop_talking_handler", 783),
    "play-file-done": ("conference_file.c", "conference_file_close", 52),
}

# The `api conference` help text (s1), returned verbatim.
HELP_TEXT = (
    "<conf name> canvas-auto-clear <canvas_id> <true|false>\n<conf name> count \n"
    "<conf name> list [delim <string>]|[count]\n<conf name> xml_list \n"
    "<conf name> json_list [compact]\n"
    "<conf name> energy <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> auto-energy <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> max-energy <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> agc <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> vid-canvas <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> vid-watching-canvas <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> vid-layer <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> volume_in <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> volume_out <member_id|all|last|non_moderator> [<newval>]\n"
    "<conf name> position <member_id> <x>:<y>:<z>\n<conf name> auto-3d-position [on|off]\n"
    "<conf name> play <file_path> [async|<member_id> [nomux]]\n"
    "<conf name> moh <file_path>|toggle|[on|off]\n<conf name> pause [<member_id>]\n"
    "<conf name> play_status [<member_id>]\n<conf name> file_seek [+-]<val> [<member_id>]\n"
    "<conf name> say <text>\n<conf name> saymember <member_id> <text>\n<conf name> cam \n"
    "<conf name> stop <[current|all|async|last]> [<member_id>]\n"
    "<conf name> dtmf <[member_id|all|last|non_moderator]> <digits>\n"
    "<conf name> kick <[member_id|all|last|non_moderator]> [<optional sound file>]\n"
    "<conf name> vid-flip <[member_id|all|last|non_moderator]>\n"
    "<conf name> vid-border <[member_id|all|last|non_moderator]>\n"
    "<conf name> hup <[member_id|all|last|non_moderator]>\n"
    "<conf name> hold <[member_id|all]|last|non_moderator> [file]\n"
    "<conf name> unhold <[member_id|all]|last|non_moderator>\n"
    "<conf name> mute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> tmute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> unmute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> vmute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> tvmute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> vmute-snap <[member_id|all]|last|non_moderator>\n"
    "<conf name> unvmute <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> vblind <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> tvblind <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> unvblind <[member_id|all]|last|non_moderator> [<quiet>]\n"
    "<conf name> deaf <[member_id|all]|last|non_moderator>\n"
    "<conf name> undeaf <[member_id|all]|last|non_moderator>\n"
    "<conf name> vid-filter <[member_id|all]|last|non_moderator> <string>\n"
    "<conf name> relate <member_id>[,<member_id>] <other_member_id>[,<other_member_id>] "
    "[nospeak|nohear|clear]\n"
    "<conf name> getvar <varname>\n<conf name> setvar <varname> <value>\n"
    "<conf name> lock \n<conf name> unlock \n"
    "<conf name> dial <endpoint_module_name>/<destination> <callerid number> <callerid name>\n"
    "<conf name> bgdial <endpoint_module_name>/<destination> <callerid number> <callerid name>\n"
    "<conf name> transfer <conference_name> <member id> [...<member id>]\n"
    "<conf name> record <filename>\n<conf name> chkrecord <confname>\n"
    "<conf name> norecord <[filename|all]>\n<conf name> pause <filename>\n"
    "<conf name> resume <filename>\n"
    "<conf name> recording [start|stop|check|pause|resume] [<filename>|all]\n"
    "<conf name> exit_sound on|off|none|file <filename>\n"
    "<conf name> enter_sound on|off|none|file <filename>\n"
    "<conf name> pin <pin#>\n<conf name> nopin \n<conf name> get <parameter-name>\n"
    "<conf name> set <max_members|sound_prefix|caller_id_name|caller_id_number|"
    "endconference_grace_time> <value>\n"
    "<conf name> file-vol <vol#>\n<conf name> floor <member_id|last>\n"
    "<conf name> vid-floor <member_id|last> [force]\n"
    "<conf name> vid-banner <member_id|last> <text>\n"
    "<conf name> vid-mute-img <member_id|last> [<path>|clear]\n"
    "<conf name> vid-logo-img <member_id|last> [<path>|clear]\n"
    "<conf name> vid-codec-group <member_id|last> [<group>|clear]\n"
    "<conf name> vid-res-id <member_id>|all <val>|clear [force]\n"
    "<conf name> vid-role-id <member_id|last> <val>|clear\n<conf name> get-uuid <member_id|last>\n"
    "<conf name> clear-vid-floor \n"
    "<conf name> vid-layout <layout name>|group <group name> [<canvas id>]\n"
    "<conf name> vid-write-png <path>\n<conf name> vid-fps <fps>\n<conf name> vid-res <WxH>\n"
    "<conf name> vid-fgimg <file> | clear [<canvas-id>]\n"
    "<conf name> vid-bgimg <file> | clear [<canvas-id>]\n<conf name> vid-bandwidth <BW>\n"
    "<conf name> vid-personal [on|off]\n"
)

DEFAULT_ENERGY_LEVEL = 100  # profile `default`, energy-level 100 (captures README)
TALKING_ENERGY = 6500  # about what the 440 Hz tone measured in s2
MAX_SESSIONS = 200  # s5 `api status`: "200 session(s) max"

_ORIGINATE_RE = re.compile(
    r"^originate\s+(?:\{(?P<vars>[^}]*)\})?(?P<dial>\S+)\s+"
    r"&conference\((?P<conf>[^@)+]+)(?:@(?P<profile>[^)+]+))?(?:\+flags\{(?P<flags>[^}]*)\})?\)\s*\Z"
)


@dataclass
class Member:
    id: int
    conference: Conference
    uuid: str
    caller_id_name: str
    caller_id_number: str
    channel_name: str
    direction: str
    moderator: bool
    can_speak: bool
    can_hear: bool
    endconf: bool
    channel_vars: Dict[str, str]
    joined: float  # clock() seconds
    talking: bool = False
    energy_level: int = DEFAULT_ENERGY_LEVEL
    current_energy: int = 0
    talking_since: float = 0.0
    last_talking: float = 0.0

    @property
    def has_floor(self) -> bool:
        return self.conference.floor == self.id


@dataclass
class Conference:
    name: str
    uuid: str
    profile: str
    created: float
    locked: bool = False
    floor: Optional[int] = None
    members: Dict[int, Member] = field(default_factory=dict)  # join order, oldest first

    def newest_first(self) -> List[Member]:
        return list(reversed(list(self.members.values())))


def fs_member_id(text: str) -> int:
    """Member id as mod_conference reads it: ``atoi()`` into a uint32 (s6).

    "7abc" is 7, "-1" is 4294967295, "4294967297" wraps to 1, a huge number saturates
    (strtol) to LONG_MAX whose low 32 bits are 4294967295; non-numeric is 0.
    """
    m = re.match(r"\s*([+-]?)(\d+)", text)
    if not m:
        return 0
    value = int(m.group(2))
    value = min(value, 2**63 - 1) if m.group(1) != "-" else -min(value, 2**63)
    return value & 0xFFFFFFFF


def _bool(value: bool) -> str:
    return "true" if value else "false"


def cjson_print(value: object, depth: int = 0) -> str:
    """``cJSON_Print`` layout, which `conference json_list` uses (s1): tabs, ``":\\t"``, and
    arrays kept on one line with ``", "`` between elements."""
    if isinstance(value, dict):
        if not value:
            return "{\n" + "\t" * depth + "}"
        inner = ",\n".join(
            "\t" * (depth + 1)
            + json.dumps(k, ensure_ascii=False)
            + ":\t"
            + cjson_print(v, depth + 1)
            for k, v in value.items()
        )
        return "{\n" + inner + "\n" + "\t" * depth + "}"
    if isinstance(value, list):
        return "[" + ", ".join(cjson_print(v, depth + 1) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


class ConferenceModel:
    """mod_conference of one FreeSWITCH process: conferences, members, events, api replies."""

    def __init__(
        self,
        hostname: str = "sim",
        core_uuid: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        emit: Optional[Listener] = None,
        *,
        ipv4: str = "127.0.0.1",
        ipv6: str = "::1",
        domain: str = "127.0.0.1",
        sounds: bool = True,
    ) -> None:
        self.hostname = hostname
        self.clock = clock
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.domain = domain
        # Entry/exit tones make play-file-done events, as the captures' `default` profile does.
        self.sounds = sounds
        self._listeners: List[Listener] = []
        if emit is not None:
            self._listeners.append(emit)
        self._reset(core_uuid)

    # --- lifecycle -------------------------------------------------------------------------

    def _reset(self, core_uuid: Optional[str]) -> None:
        self.core_uuid = core_uuid or str(uuidlib.uuid4())
        self.started = self.clock()
        self.conferences: Dict[str, Conference] = {}  # creation order
        self._next_member_id = 1
        self._sequence = 0
        self._sessions_since_start = 0
        self._pending_files: List[Tuple[Conference, str]] = []

    def restart(self, core_uuid: Optional[str] = None) -> None:
        """A new FreeSWITCH process: nothing survives, member ids start again at 1 (s5)."""
        self._reset(core_uuid)

    def add_listener(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- queries ---------------------------------------------------------------------------

    def members(self, conference: Optional[str] = None) -> List[Member]:
        if conference is None:
            confs = list(self.conferences.values())
        else:
            confs = [c for c in (self.conferences.get(conference),) if c is not None]
        return [m for c in confs for m in c.members.values()]

    def member(self, member_id: int) -> Optional[Member]:
        for conf in self.conferences.values():
            if member_id in conf.members:
                return conf.members[member_id]
        return None

    def member_by_uuid(self, call_id: str) -> Optional[Member]:
        for m in self.members():
            if m.uuid == call_id:
                return m
        return None

    # --- what callers do -------------------------------------------------------------------

    def join(
        self,
        conference: str,
        *,
        caller_id_name: str = "",
        caller_id_number: str = "",
        moderator: bool = False,
        muted: bool = False,
        deaf: bool = False,
        channel_vars: Optional[Dict[str, str]] = None,
        uuid: Optional[str] = None,
        profile: str = "default",
        endconf: bool = False,
        direction: str = "outbound",
        channel_name: Optional[str] = None,
        ignore_lock: bool = False,
    ) -> Optional[int]:
        """A call enters ``conference``; returns its member id, or None when refused.

        A locked conference refuses the caller and no event at all is sent (s1: Eve, Frank).
        Real FreeSWITCH still lets an *originated* leg in (s1: Dave); ``ignore_lock`` models that.
        """
        conf = self.conferences.get(conference)
        if conf is not None and conf.locked and not ignore_lock:
            log.debug("join refused: %s is locked", conference)
            return None
        if conf is None:
            conf = Conference(conference, str(uuidlib.uuid4()), profile, self.clock())
            self.conferences[conference] = conf
            self._conf_event(conf, "conference-create")
        member_id = self._next_member_id
        self._next_member_id += 1
        self._sessions_since_start += 1
        m = Member(
            id=member_id,
            conference=conf,
            uuid=uuid or str(uuidlib.uuid4()),
            caller_id_name=caller_id_name,
            caller_id_number=caller_id_number,
            channel_name=channel_name or "null/%s" % (caller_id_number or member_id),
            direction=direction,
            moderator=moderator,
            can_speak=not muted,
            can_hear=not deaf,
            endconf=endconf,
            channel_vars=dict(channel_vars or {}),
            joined=self.clock(),
        )
        conf.members[member_id] = m
        # Join flags show only as Speak/Hear in add-member; no mute-member follows (s1 Carol).
        self._member_event(m, "add-member")
        if conf.floor is None:
            self._set_floor(conf, m)  # s1: the first member gets the floor after add-member
        if self.sounds and len(conf.members) > 1:
            self._pending_files.append((conf, ENTER_SOUND))
        self._flush_files()
        return member_id

    def leave(self, member_id: int) -> bool:
        """The caller hangs up: del-member (conference-destroy after the last one)."""
        m = self.member(member_id)
        if m is None:
            return False
        self._remove([m], cause=None)
        return True

    def set_talking(self, member_id: int, talking: bool, energy: int = TALKING_ENERGY) -> bool:
        """start-talking / stop-talking; returns False when nothing changed.

        A muted member cannot be talking (FreeSWITCH does not run the energy detector for it).
        The talker takes the floor right after start-talking (s2).
        """
        m = self.member(member_id)
        if m is None or m.talking == talking or (talking and not m.can_speak):
            return False
        now = self.clock()
        if talking:
            m.talking, m.current_energy, m.talking_since = True, int(energy), now
            self._member_event(m, "start-talking")
            if not m.has_floor:
                self._set_floor(m.conference, m)
        else:
            duration = max(now - m.talking_since, 0.0)
            m.talking, m.current_energy, m.last_talking = False, 0, now
            packets = max(int(duration * 50), 1)  # 20 ms packets
            hits = max(int(packets * 0.65), 1)
            extra = [
                ("talking-gate-hits", str(hits)),
                ("talking-total-packets", str(packets)),
                ("talking-duration-ms", str(int(duration * 1000))),
                ("talking-average-energy", f"{float(energy):f}"),
                ("talking-delta-average", f"{100.0:f}"),
                ("talking-hit-on-percent", "%f" % (100.0 * hits / packets)),
                ("talking-non-hit-ratio", "%f" % ((packets - hits) / hits)),
                ("talking-hit-off-percent", f"{0.0:f}"),
                ("talking-hit-off-differential", "%f" % (100.0 * hits / packets)),
            ]
            self._member_event(m, "stop-talking", before_action=extra)
        return True

    def heartbeat(self) -> EventPairs:
        """A HEARTBEAT event (none in the captures: the usual FreeSWITCH core headers)."""
        up = max(self.clock() - self.started, 0.0)
        sessions = len(self.members())
        pairs = self._core_headers(EVENT_HEARTBEAT, ("switch_core.c", "send_heartbeat", 74))
        pairs += [
            ("Event-Info", "System Ready"),
            ("Up-Time", _uptime_text(up)),
            ("FreeSWITCH-Version", VERSION_TEXT),
            ("Uptime-msec", str(int(up * 1000))),
            ("Session-Count", str(sessions)),
            ("Max-Sessions", str(MAX_SESSIONS)),
            ("Session-Per-Sec", "30"),
            ("Session-Per-Sec-Last", "0"),
            ("Session-Per-Sec-Max", "0"),
            ("Session-Per-Sec-FiveMin", "0"),
            ("Session-Since-Startup", str(self._sessions_since_start)),
            ("Session-Peak-Max", str(sessions)),
            ("Session-Peak-FiveMin", str(sessions)),
            ("Idle-CPU", "98.000000"),
        ]
        self._emit(pairs)
        return pairs

    # --- api -------------------------------------------------------------------------------

    def api(self, line: str) -> str:
        """The body of the api/response FreeSWITCH sends for ``api <line>``."""
        cmd, _, args = line.strip(" ").partition(" ")
        args = args.strip()
        if cmd == "conference":
            return self._api_conference(args.split())
        if cmd == "version":
            return VERSION_REPLY
        if cmd == "status":
            return self._status()
        if cmd == "uuid_dump":
            return self._uuid_dump(args.split())
        if cmd == "originate":
            return self._originate(line.strip())
        # s6: `api frobnicate now` and `api ` (empty: two spaces).
        return f"-ERR {cmd} Command not found!\n"

    def _api_conference(self, argv: List[str]) -> str:
        if not argv:
            return HELP_TEXT
        name = argv[0]
        conf = self.conferences.get(name)
        if conf is None:
            if name == "list":
                return self._list_all(argv[1:])
            if name == "json_list":
                return self._json_list(list(self.conferences.values()), argv[1:])
            if name == "xml_list":
                return self._xml_list(list(self.conferences.values()))
            if name == "count":
                return str(len(self.conferences))
            return f"-ERR Conference {name} not found\n"
        if len(argv) < 2:
            return NOT_SPECIFIED
        sub, rest = argv[1], argv[2:]
        if sub == "list":
            return self._list_conf(conf, rest)
        if sub == "count":
            return str(len(conf.members))
        if sub == "json_list":
            return self._json_list([conf], rest)
        if sub == "xml_list":
            return self._xml_list([conf])
        if sub in ("lock", "unlock"):
            conf.locked = sub == "lock"
            self._conf_event(conf, sub)
            return f"+OK {conf.name} {sub}ed\n"
        if sub in USAGE:
            return self._member_command(conf, sub, rest)
        return f"-ERR Conference command '{sub}' not found.\n"

    def _select(self, conf: Conference, cmd: str, rest: List[str]) -> Union[str, List[Member]]:
        """The members a selector names, or the reply text when it names none (s1, s6)."""
        if not rest:
            return f"{cmd} {USAGE[cmd]}"
        arg = rest[0]
        low = arg.lower()  # s6: `mute ALL` and `unmute All` act on everyone
        if low in ("all", "non_moderator"):
            return conf.newest_first()
        if low == "last":
            return conf.newest_first()[:1]
        if "=" in arg:  # s6: `deaf caller_id_number=6102` selects by channel variable
            var, _, value = arg.partition("=")
            found = [m for m in conf.newest_first() if self._channel_var(m, var) == value]
            return found or "-ERR Non-Existant member\n"
        member_id = fs_member_id(arg)
        if member_id == 0:
            return f"{cmd} {USAGE[cmd]}"
        m = conf.members.get(member_id)
        if m is None:
            return f"-ERR Non-Existant ID {member_id}\n"
        return [m]

    def _member_command(self, conf: Conference, cmd: str, rest: List[str]) -> str:
        selected = self._select(conf, cmd, rest)
        if isinstance(selected, str):
            return selected
        skip_moderators = rest[0].lower() == "non_moderator"
        out: List[str] = []
        acted: List[Member] = []
        for m in selected:
            if skip_moderators and m.moderator:
                out.append(f"Skipping moderator (member id {m.id}).\n")
                continue
            acted.append(m)
            out.append(self._apply(cmd, m, rest[1:]))
        if cmd in ("kick", "hup") and acted:
            self._remove(acted, cause=cmd)
        return "".join(out)

    def _apply(self, cmd: str, m: Member, rest: List[str]) -> str:
        if cmd == "tmute":
            cmd = "unmute" if not m.can_speak else "mute"
        if cmd == "mute":
            # Muting stops talking with no stop-talking event (events.md); mute-member fires
            # even when already muted (s1).
            m.can_speak, m.talking, m.current_energy = False, False, 0
            self._member_event(m, "mute-member")
            return f"+OK mute {m.id}\n"
        if cmd == "unmute":
            m.can_speak = True
            self._member_event(m, "unmute-member")
            return f"+OK unmute {m.id}\n"
        if cmd in ("deaf", "undeaf"):
            m.can_hear = cmd == "undeaf"
            self._member_event(m, cmd + "-member")
            return f"+OK {cmd} {m.id}\n"
        if cmd == "energy":
            if rest:
                m.energy_level = fs_member_id(rest[0]) & 0x7FFFFFFF
                self._member_event(
                    m, "energy-level-member", after_action=[("Energy-Level", str(m.energy_level))]
                )
            return f"Energy {m.id} = {m.energy_level}\n"
        # kick / hup: the *-member event now, del-member once all are announced (s1 kick all).
        self._member_event(m, "kick-member" if cmd == "kick" else "hup-member")
        return f"+OK kicked {m.id}\n" if cmd == "kick" else f"+OK hup {m.id}\n"

    # --- removal, floor, files -------------------------------------------------------------

    def _remove(self, leaving: List[Member], cause: Optional[str]) -> None:
        """del-member for each (oldest first, which reproduces s1's `kick all` order), the floor
        released before the holder's del-member and given to the newest member left after it
        (s1 kick 1, hup last), exit tones, then conference-destroy after the last one."""
        conf = leaving[0].conference
        order = sorted(leaving, key=lambda x: x.id)
        if any(m.endconf for m in leaving):
            # s4: an `endconf` member's hangup ends the conference for everyone else too.
            order += [m for m in conf.members.values() if m not in order]
        going = {m.id for m in order}
        for m in order:
            was_holder = m.has_floor
            if was_holder:
                conf.floor = None
                self._floor_event(conf, None)
            del conf.members[m.id]
            m.talking = False
            self._member_event(m, "del-member")
            remaining = [x for x in conf.newest_first() if x.id not in going]
            if was_holder and remaining:
                self._set_floor(conf, remaining[0])
            if self.sounds and conf.members:
                self._pending_files.append((conf, EXIT_SOUND))
        self._flush_files()
        if not conf.members:
            self._conf_event(conf, "conference-destroy")
            self.conferences.pop(conf.name, None)

    def _set_floor(self, conf: Conference, m: Member) -> None:
        old = conf.floor
        conf.floor = m.id
        self._floor_event(conf, m, old)

    def _floor_event(
        self, conf: Conference, new: Optional[Member], old: Optional[int] = None
    ) -> None:
        # s1/s2: conference headers, Action, Old-ID, then (when someone gets the floor) the
        # Conference-* block again with the new holder's member headers, then New-ID.
        pairs = self._core_headers(EVENT_CUSTOM, CALLING["floor-change"])
        pairs += self._conf_headers(conf)
        pairs += [("Action", "floor-change"), ("Old-ID", FLOOR_NONE if old is None else str(old))]
        if new is not None:
            pairs += self._conf_headers(conf) + self._member_headers(new)
        pairs.append(("New-ID", FLOOR_NONE if new is None else str(new.id)))
        self._emit(pairs)

    def _flush_files(self) -> None:
        files, self._pending_files = self._pending_files, []
        for conf, path in files:
            samples = 3200 if path == ENTER_SOUND else 960
            pairs = self._core_headers(EVENT_CUSTOM, CALLING["play-file-done"])
            pairs += self._conf_headers(conf)
            pairs += [
                ("seconds", "0"),
                ("milliseconds", str(samples // 8)),
                ("samples", str(samples)),
                ("Action", "play-file-done"),
                ("File", path),
            ]
            self._emit(pairs)

    # --- event building --------------------------------------------------------------------

    def _emit(self, pairs: EventPairs) -> None:
        for listener in list(self._listeners):
            try:
                listener(list(pairs))
            except Exception:  # a broken listener must not break the model
                log.exception("event listener failed")

    def _core_headers(
        self, name: str, calling: Tuple[str, str, int], *, fired: bool = True
    ) -> EventPairs:
        now = self.clock()
        if fired:
            self._sequence += 1
        pairs: EventPairs = []
        if name == EVENT_CUSTOM:
            pairs.append(("Event-Subclass", SUBCLASS))
        pairs += self.core_pairs(name, calling, now)
        if fired:
            pairs.append(("Event-Sequence", str(self._sequence)))
        return pairs

    def core_pairs(self, name: str, calling: Tuple[str, str, int], now: float) -> EventPairs:
        """The headers every event of this switch carries, up to (not with) Event-Sequence;
        the outbound simulator's channel events share them."""
        return [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", self.ipv4),
            ("FreeSWITCH-IPv6", self.ipv6),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
            ("Event-Date-GMT", email.utils.formatdate(now, usegmt=True)),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", calling[0]),
            ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", str(calling[2])),
        ]

    def _conf_headers(self, conf: Conference) -> EventPairs:
        return [
            ("Conference-Name", conf.name),
            ("Conference-Domain", self.domain),
            ("Conference-Size", str(len(conf.members))),
            ("Conference-Ghosts", "0"),
            ("Conference-Profile-Name", conf.profile),
            ("Conference-Unique-ID", conf.uuid),
        ]

    def _channel_headers(self, m: Member) -> EventPairs:
        """What switch_channel_event_set_data() adds: channel, caller profile, variables."""
        joined_us = str(int(m.joined * 1_000_000))
        inbound = m.direction == "inbound"
        if inbound:
            caller = (m.caller_id_name, m.caller_id_number)
            callee = (m.conference.name, m.conference.name)
        else:
            # s1: an originated leg's own caller id is "Outbound Call"/<number>; the configured
            # one is only in Caller-Orig-* and Caller-Callee-*.
            caller = (OUTBOUND_CALLER_NAME, m.caller_id_number)
            callee = (m.caller_id_name, m.caller_id_number)
        pairs: EventPairs = [
            ("Channel-State", "CS_EXECUTE"),
            ("Channel-Call-State", "ACTIVE"),
            ("Channel-State-Number", "4"),
            ("Channel-Name", m.channel_name),
            ("Unique-ID", m.uuid),
            ("Call-Direction", m.direction),
            ("Presence-Call-Direction", m.direction),
            ("Channel-HIT-Dialplan", "true"),
        ]
        if m.channel_vars.get("presence_id"):
            pairs.append(("Channel-Presence-ID", m.channel_vars["presence_id"]))
        pairs += [
            ("Channel-Call-UUID", m.uuid),
            ("Answer-State", "answered"),
            ("Channel-Read-Codec-Name", "L16"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "128000"),
            ("Channel-Write-Codec-Name", "L16"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "128000"),
            ("Caller-Direction", m.direction),
            ("Caller-Logical-Direction", m.direction),
        ]
        if inbound:
            pairs.append(("Caller-Dialplan", "xml"))  # s1 Frank (an inbound leg)
        pairs += [
            ("Caller-Caller-ID-Name", caller[0]),
            ("Caller-Caller-ID-Number", caller[1]),
            ("Caller-Orig-Caller-ID-Name", m.caller_id_name),
            ("Caller-Orig-Caller-ID-Number", m.caller_id_number),
            ("Caller-Callee-ID-Name", callee[0]),
            ("Caller-Callee-ID-Number", callee[1]),
            ("Caller-ANI", m.caller_id_number),
            ("Caller-Destination-Number", m.conference.name if inbound else m.caller_id_number),
            ("Caller-Unique-ID", m.uuid),
            ("Caller-Source", "mod_sofia"),
            ("Caller-Context", "default"),
            ("Caller-Channel-Name", m.channel_name),
            ("Caller-Profile-Index", "1"),
            ("Caller-Profile-Created-Time", joined_us),
            ("Caller-Channel-Created-Time", joined_us),
            ("Caller-Channel-Answered-Time", joined_us),
            ("Caller-Channel-Progress-Time", "0"),
            ("Caller-Channel-Progress-Media-Time", "0"),
            ("Caller-Channel-Hangup-Time", "0"),
            ("Caller-Channel-Transfer-Time", "0"),
            ("Caller-Channel-Resurrect-Time", "0"),
            ("Caller-Channel-Bridged-Time", "0"),
            ("Caller-Channel-Last-Hold", "0"),
            ("Caller-Channel-Hold-Accum", "0"),
            ("Caller-Screen-Bit", "true"),
            ("Caller-Privacy-Hide-Name", "false"),
            ("Caller-Privacy-Hide-Number", "false"),
        ]
        pairs += [("variable_" + k, str(v)) for k, v in m.channel_vars.items()]
        return pairs

    def _member_headers(self, m: Member) -> EventPairs:
        pairs: EventPairs = [("Floor", _bool(m.has_floor))]
        pairs += self._channel_headers(m)
        pairs += [
            ("Video", "false"),
            ("Hear", _bool(m.can_hear)),
            ("See", "true"),
            ("Speak", _bool(m.can_speak)),
            ("Talking", _bool(m.talking)),
            ("Mute-Detect", "false"),
            ("Hold", "false"),
            ("Member-ID", str(m.id)),
            ("Member-Type", "moderator" if m.moderator else "member"),
            ("Member-Ghost", "false"),
            ("Energy-Level", str(m.energy_level)),
            ("Current-Energy", str(m.current_energy)),
        ]
        return pairs

    def _conf_event(self, conf: Conference, action: str) -> None:
        pairs = self._core_headers(EVENT_CUSTOM, CALLING[action])
        pairs += self._conf_headers(conf)
        pairs.append(("Action", action))
        self._emit(pairs)

    def _member_event(
        self,
        m: Member,
        action: str,
        *,
        before_action: Iterable[Header] = (),
        after_action: Iterable[Header] = (),
    ) -> None:
        pairs = self._core_headers(EVENT_CUSTOM, CALLING[action])
        pairs += self._conf_headers(m.conference)
        pairs += self._member_headers(m)
        pairs += list(before_action)
        pairs.append(("Action", action))
        pairs += list(after_action)
        self._emit(pairs)

    def _channel_var(self, m: Member, name: str) -> Optional[str]:
        builtin = {
            "caller_id_number": m.caller_id_number,
            "caller_id_name": m.caller_id_name,
            "uuid": m.uuid,
            "conference_name": m.conference.name,
        }
        if name in m.channel_vars:
            return str(m.channel_vars[name])
        return builtin.get(name)

    # --- listings --------------------------------------------------------------------------

    def _list_line(self, m: Member, delim: str) -> str:
        flags = [
            f
            for f, on in (
                ("hear", m.can_hear),
                ("speak", m.can_speak),
                ("talking", m.talking),
                ("floor", m.has_floor),
                ("moderator", m.moderator),
            )
            if on
        ]
        name, number = self._listed_caller_id(m)
        cols = [str(m.id), m.channel_name, m.uuid, name, number, "|".join(flags), "0", "0"]
        cols.append(str(m.energy_level))
        return delim.join(cols) + "\n"

    def _listed_caller_id(self, m: Member) -> Tuple[str, str]:
        # s1: list/json_list show the channel's own caller id ("Outbound Call" when originated).
        if m.direction == "inbound":
            return m.caller_id_name, m.caller_id_number
        return OUTBOUND_CALLER_NAME, m.caller_id_number

    def _list_conf(self, conf: Conference, rest: List[str]) -> str:
        if rest[:1] == ["count"]:
            return str(len(conf.members))
        delim = rest[1] if rest[:1] == ["delim"] and len(rest) > 1 else ";"
        return "".join(self._list_line(m, delim) for m in conf.newest_first())

    def _list_all(self, rest: List[str]) -> str:
        if not self.conferences:
            return NO_CONFERENCES
        out = []
        for conf in self.conferences.values():
            n = len(conf.members)
            flags = CONF_FLAGS.replace("running", "running|locked") if conf.locked else CONF_FLAGS
            out.append(
                f"+OK Conference {conf.name} ({n} member{'' if n == 1 else 's'} "
                f"rate: 8000 flags: {flags})\n"
            )
            out.append(self._list_conf(conf, rest))
        return "".join(out)

    def conference_json(self, conf: Conference) -> Dict[str, object]:
        """One conference as `json_list` describes it (keys and order from s1)."""
        now = self.clock()
        members = []
        for m in conf.newest_first():
            name, number = self._listed_caller_id(m)
            members.append(
                {
                    "type": "caller",
                    "id": m.id,
                    "flags": {
                        "can_hear": m.can_hear,
                        "can_see": True,
                        "can_speak": m.can_speak,
                        "hold": False,
                        "mute_detect": False,
                        "talking": m.talking,
                        "has_video": False,
                        "video_bridge": False,
                        "has_floor": m.has_floor,
                        "is_moderator": m.moderator,
                        "end_conference": m.endconf,
                        "mandatory_member_end_conference": False,
                        "pass_digits": False,
                    },
                    "uuid": m.uuid,
                    "caller_id_name": name,
                    "caller_id_number": number,
                    "join_time": _seconds_between(m.joined, now),
                    "last_talking": _seconds_between(m.last_talking, now) if m.last_talking else 0,
                    "energy": m.energy_level,
                    "volume_in": 0,
                    "volume_out": 0,
                    "output-volume": 0,
                    "input-volume": 0,
                }
            )
        return {
            "conference_name": conf.name,
            "member_count": len(conf.members),
            "ghost_count": 0,
            "rate": 8000,
            "run_time": _seconds_between(conf.created, now),
            "conference_uuid": conf.uuid,
            "canvas_count": 0,
            "max_bw_in": 0,
            "force_bw_in": 0,
            "video_floor_packets": 0,
            "locked": conf.locked,
            "destruct": False,
            "wait_mod": False,
            "audio_always": False,
            "running": True,
            "answered": True,
            "enforce_min": True,
            "bridge_to": False,
            "dynamic": True,
            "exit_sound": self.sounds,
            "enter_sound": self.sounds,
            "recording": False,
            "video_bridge": False,
            "video_floor_only": False,
            "video_rfc4579": False,
            "variables": {},
            "members": members,
        }

    def _json_list(self, confs: List[Conference], rest: List[str]) -> str:
        data = [self.conference_json(c) for c in confs]
        if rest[:1] == ["compact"]:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        # s5 after restart: no conferences is a bare "[]"; with some, cJSON_Print layout.
        return cjson_print(data) if data else "[]"

    def _xml_list(self, confs: List[Conference]) -> str:
        if not confs:
            return EMPTY_XML_LIST
        now = self.clock()
        out = ['<?xml version="1.0"?>\n<conferences>\n']
        for c in confs:
            locked = ' locked="true"' if c.locked else ""
            out.append(
                f'  <conference name={quoteattr(c.name)} member-count="{len(c.members)}" '
                f'ghost-count="0" rate="8000" uuid="{c.uuid}" running="true" answered="true" '
                f'enforce_min="true" dynamic="true" exit_sound="true" enter_sound="true"{locked} '
                f'run_time="{_seconds_between(c.created, now)}">\n'
            )
            out.append("    <variables></variables>\n    <members>\n")
            for mj in self.conference_json(c)["members"]:  # type: ignore[union-attr]
                out.append(f'      <member type="caller">\n        <id>{mj["id"]}</id>\n')
                out.append("        <flags>\n")
                for k in (
                    "can_hear",
                    "can_see",
                    "can_speak",
                    "mute_detect",
                    "talking",
                    "hold",
                    "has_video",
                    "video_bridge",
                    "has_floor",
                    "is_moderator",
                    "end_conference",
                    "mandatory_member_end_conference",
                ):
                    out.append("          <{}>{}</{}>\n".format(k, _bool(mj["flags"][k]), k))
                out.append("          <is_ghost>false</is_ghost>\n        </flags>\n")
                out.append("        <uuid>{}</uuid>\n".format(mj["uuid"]))
                out.append(
                    "        <caller_id_name>{}</caller_id_name>\n".format(
                        quote(mj["caller_id_name"], safe="")
                    )
                )
                out.append(
                    "        <caller_id_number>{}</caller_id_number>\n".format(
                        quote(mj["caller_id_number"], safe="")
                    )
                )
                out.append(f"        <join_time>{mj['join_time']}</join_time>\n")
                out.append(f"        <last_talking>{mj['last_talking'] or 'N/A'}</last_talking>\n")
                out.append(f"        <energy>{mj['energy']}</energy>\n")
                out.append("        <volume_in>0</volume_in>\n        <volume_out>0</volume_out>\n")
                out.append("        <output-volume>0</output-volume>\n      </member>\n")
            out.append("    </members>\n  </conference>\n")
        out.append("</conferences>\n")
        return "".join(out)

    # --- other api commands ----------------------------------------------------------------

    def _status(self) -> str:
        up = max(self.clock() - self.started, 0.0)
        n = len(self.members())
        # Layout of s5's `api status` reply.
        return (
            f"UP {_uptime_text(up)}\n"
            "FreeSWITCH (Version 1.11.3-dev  64bit) is ready\n"
            f"{self._sessions_since_start} session(s) since startup\n"
            f"{n} session(s) - peak {n}, last 5min {n} \n"
            "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            f"{MAX_SESSIONS} session(s) max\n"
            "min idle cpu 0.00/98.00\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def _uuid_dump(self, argv: List[str]) -> str:
        m = self.member_by_uuid(argv[0]) if argv else None
        if m is None:
            return NO_SUCH_CHANNEL
        calling = ("mod_commands.c", "uuid_dump_function", 0)
        pairs = self._core_headers("CHANNEL_DATA", calling, fired=False)
        pairs += self._channel_headers(m)
        pairs += [
            ("variable_conference_name", m.conference.name),
            ("variable_conference_member_id", str(m.id)),
            ("variable_conference_uuid", m.conference.uuid),
        ]
        data: Dict[str, str] = {}
        for k, v in pairs:
            data.setdefault(k, v)
        if argv[1:2] == ["json"]:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return "".join(f"{k}: {v}\n" for k, v in data.items())

    def _originate(self, line: str) -> str:
        """`originate {vars}dial &conference(room@profile+flags{...})` as the captures use it.

        The originated leg joins even a locked conference (s1 Dave) unless it sets
        ``conference_enforce_security=true`` (s1 Eve)."""
        match = _ORIGINATE_RE.match(line)
        if not match:
            return "-ERR INVALID_PROFILE\n"
        cvars: Dict[str, str] = {}
        for item in (match.group("vars") or "").split(","):
            if "=" in item:
                k, _, v = item.partition("=")
                cvars[k.strip()] = v.strip()
        flags = set((match.group("flags") or "").split("|"))
        name = cvars.pop("origination_caller_id_name", "")
        number = cvars.pop("origination_caller_id_number", "")
        call_id = cvars.pop("origination_uuid", None) or str(uuidlib.uuid4())
        self.join(
            match.group("conf"),
            caller_id_name=name,
            caller_id_number=number,
            moderator="moderator" in flags,
            muted="mute" in flags,
            deaf="deaf" in flags,
            endconf="endconf" in flags,
            channel_vars=cvars,
            uuid=call_id,
            profile=match.group("profile") or "default",
            channel_name=match.group("dial"),
            ignore_lock=cvars.get("conference_enforce_security") != "true",
        )
        return f"+OK {call_id}\n"


def _seconds_between(start: float, end: float) -> int:
    """mod_conference keeps join and start times as whole epoch seconds (s1: run_time 24 for a
    conference 23.8 s old)."""
    return int(end) - int(start)


def _uptime_text(seconds: float) -> str:
    """s5/s6 `api status`: "0 years, 0 days, 0 hours, 1 minute, 7 seconds, ..." (plural aware)."""
    total_us = int(seconds * 1_000_000)
    us = total_us % 1000
    ms = (total_us // 1000) % 1000
    s = total_us // 1_000_000
    years, s = divmod(s, 365 * 86400)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = zip(
        (years, days, hours, minutes, s, ms, us),
        ("year", "day", "hour", "minute", "second", "millisecond", "microsecond"),
    )
    return ", ".join(f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts)
