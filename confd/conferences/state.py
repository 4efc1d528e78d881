"""Live conferences and participants, per FreeSWITCH node.

``LiveState.apply`` is the only writer; node connections are its only callers.  Every call
returns the updates it made, as values the event hub can publish.  Under gevent nothing in
here yields, so a reader never sees a half-applied change.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from confd.conferences import events as ev
from confd.conferences.model import FLAG_FIELDS, Conference, Participant

log = logging.getLogger(__name__)


# Why confd publishes an event that FreeSWITCH did not send (events.md, lifecycle steps 5-6):
# confd forgot a node's conferences when it lost the node, or learned them from a resync.
# Events that reflect what really happened on FreeSWITCH carry no reason.
REASON_NODE_LOST = "node_lost"
REASON_RESYNC = "resync"


@dataclass(frozen=True)
class Update:
    """One change made to the live state, for publishing."""

    event: str  # an Action name of events.md (add-member, lock, ...)
    node: str
    conference: Conference  # a detached copy, safe to keep
    participant: Optional[Participant] = None
    reason: Optional[str] = None  # REASON_NODE_LOST / REASON_RESYNC; None for real events


def _detached(conf: Conference) -> Conference:
    """The conference without its participants: what an Update carries (cheap, on intake)."""
    return Conference(
        conf.name, conf.uuid, conf.node, conf.profile, conf.start_time, conf.is_locked
    )


def _clone(p: Participant) -> Participant:
    """A shallow copy, cheaper than copy.copy() on the intake path."""
    q = object.__new__(Participant)
    q.__dict__.update(p.__dict__)
    return q


class LiveState:
    def __init__(self) -> None:
        self._nodes: Dict[str, Dict[str, Conference]] = {}
        # conference name -> {(node, conference uuid)}: finding "where is conference X live"
        self._by_name: Dict[str, set] = {}

    # --- the only writer ---------------------------------------------------------------------

    def apply(self, node: str, change: ev.Change, report: bool = True) -> List[Update]:
        """Apply ``change``; returns the updates made.  ``report=False`` (nobody listens) skips
        building the updates of flag changes -- most of the traffic -- but never those of joins,
        leaves and conference changes."""
        confs = self._nodes.setdefault(node, {})
        if isinstance(change, ev.MemberFlags):
            conf = confs.get(change.conference_uuid)
            known = conf.participants.get(change.participant_id) if conf is not None else None
            if known is None:
                # A member event about a member we do not know still describes a live member
                # (its headers are complete), so it is taken as a join.
                return self._member_event(node, confs, change.full())
            known.__dict__.update(change.flags)
            if not report:
                return []
            return [Update(change.action, node, _detached(conf), _clone(known))]
        if isinstance(change, ev.MemberEvent):
            return self._member_event(node, confs, change)
        if isinstance(change, ev.ConferenceCreated):
            conf = confs.get(change.uuid)
            if conf is None:
                conf = self._add_conference(
                    node, change.name, change.uuid, change.profile, change.start_time
                )
            return [Update(ev.CONFERENCE_CREATE, node, _detached(conf))]
        if isinstance(change, ev.ConferenceDestroyed):
            conf = confs.get(change.uuid)
            if conf is None:
                return []
            updates = [
                Update(ev.DEL_MEMBER, node, _detached(conf), p) for p in conf.participants.values()
            ]
            self._remove_conference(node, conf)
            updates.append(Update(ev.CONFERENCE_DESTROY, node, _detached(conf)))
            return updates
        if isinstance(change, ev.LockChanged):
            conf = confs.get(change.uuid)
            if conf is None:
                return []
            conf.is_locked = change.locked
            return [Update(ev.LOCK if change.locked else ev.UNLOCK, node, _detached(conf))]
        if isinstance(change, ev.FloorChanged):
            conf = confs.get(change.uuid)
            if conf is not None:
                for p in conf.participants.values():
                    p.floor = p.participant_id == change.new_id
            return []
        if isinstance(change, ev.Snapshot):
            return self._replace_node(node, change.conferences, change.channel_data)
        if isinstance(change, ev.ChannelData):
            self._channel_data(confs, change)
            return []
        raise TypeError("unknown change %r" % (change,))

    def drop_node(self, node: str) -> List[Update]:
        """The node is gone: FreeSWITCH loses its conferences on restart and member ids start
        again at 1, so nothing of it may remain (events.md, lifecycle step 5).  Returns a
        ``del-member`` per participant, then a ``conference-destroy`` per conference, each with
        ``REASON_NODE_LOST``.  The dropped ``Conference`` objects are left as they were: a
        request that resolved one before the loss can still tell which call a member id named
        (``member``)."""
        confs = self._nodes.pop(node, {})
        updates = []
        members = 0
        for conf in confs.values():
            self._unindex(node, conf)
            gone = _detached(conf)
            for p in conf.participants.values():
                updates.append(Update(ev.DEL_MEMBER, node, gone, p, REASON_NODE_LOST))
            members += len(conf.participants)
            updates.append(Update(ev.CONFERENCE_DESTROY, node, gone, None, REASON_NODE_LOST))
        if confs:
            log.info(
                "node %s: dropped %d conference(s), %d participant(s)",
                node,
                len(confs),
                members,
            )
        return updates

    # --- internals -----------------------------------------------------------------------------

    def _add_conference(
        self, node: str, name: str, uuid: str, profile: str, start: float
    ) -> Conference:
        conf = Conference(name=name, uuid=uuid, node=node, profile=profile, start_time=start)
        self._nodes.setdefault(node, {})[uuid] = conf
        self._by_name.setdefault(name, set()).add((node, uuid))
        return conf

    def _unindex(self, node: str, conf: Conference) -> None:
        keys = self._by_name.get(conf.name)
        if keys is not None:
            keys.discard((node, conf.uuid))
            if not keys:
                del self._by_name[conf.name]

    def _remove_conference(self, node: str, conf: Conference) -> None:
        self._nodes.get(node, {}).pop(conf.uuid, None)
        self._unindex(node, conf)

    def _member_event(
        self, node: str, confs: Dict[str, Conference], change: ev.MemberEvent
    ) -> List[Update]:
        new = change.participant
        conf = confs.get(new.conference_uuid)
        if change.action == ev.DEL_MEMBER:
            if conf is None:
                return []
            old = conf.participants.pop(new.participant_id, None)
            # The del-member headers hold the member's last state; keep what only we know.
            gone = _merged(old, new) if old is not None else new
            return [Update(ev.DEL_MEMBER, node, _detached(conf), _clone(gone))]
        if conf is None:
            # add-member creates the conference if its conference-create was missed.
            conf = self._add_conference(
                node, new.conference_name, new.conference_uuid, change.profile, change.event_time
            )
        old = conf.participants.get(new.participant_id)
        if change.action == ev.ADD_MEMBER or old is None:
            # A member event about a member we do not know still describes a live member
            # (its headers are complete), so it is taken as a join.
            if old is not None and change.action == ev.ADD_MEMBER:
                new = _merged(old, new)
            conf.participants[new.participant_id] = new
            current = new
        else:
            for name in FLAG_FIELDS:
                setattr(old, name, getattr(new, name))
            if new.custom_channel_vars:
                old.custom_channel_vars = new.custom_channel_vars
            current = old
        return [Update(change.action, node, _detached(conf), _clone(current))]

    def _replace_node(
        self, node: str, conferences: List[Conference], channel_data: Dict[str, ev.ChannelData]
    ) -> List[Update]:
        """A resync: replace everything known about ``node`` with the snapshot, keeping what
        json_list does not carry (channel variables, events' caller id) for members that are
        still the same call.  What confd learns or forgets this way is published with
        ``REASON_RESYNC`` (events.md, lifecycle step 6): ``del-member`` / ``conference-destroy``
        for what it knew and the snapshot lacks, then ``conference-create`` and ``add-member``
        for what the snapshot has and it did not know (after a node loss: everything)."""
        # A copy: _remove_conference below empties the node's own dict.
        old_confs = dict(self._nodes.get(node, {}))
        updates: List[Update] = []
        old_members: Dict[Tuple[int, str], Participant] = {}
        for conf in old_confs.values():
            for p in conf.participants.values():
                old_members[(p.participant_id, p.call_id)] = p
        new_keys = {
            (p.participant_id, p.call_id) for c in conferences for p in c.participants.values()
        }
        new_uuids = {c.uuid for c in conferences}
        for conf in list(old_confs.values()):
            gone = _detached(conf)
            for p in conf.participants.values():
                if (p.participant_id, p.call_id) not in new_keys:
                    updates.append(Update(ev.DEL_MEMBER, node, gone, p, REASON_RESYNC))
            if conf.uuid not in new_uuids:
                updates.append(Update(ev.CONFERENCE_DESTROY, node, gone, None, REASON_RESYNC))
            self._remove_conference(node, conf)
        self._nodes[node] = {}
        for snap in conferences:
            previous = old_confs.get(snap.uuid)
            conf = self._add_conference(
                node,
                snap.name,
                snap.uuid,
                snap.profile or (previous.profile if previous else ""),
                previous.start_time if previous else snap.start_time,
            )
            conf.is_locked = snap.is_locked
            if previous is None:
                updates.append(
                    Update(ev.CONFERENCE_CREATE, node, _detached(conf), None, REASON_RESYNC)
                )
            for mid, p in snap.participants.items():
                old = old_members.get((mid, p.call_id))
                data = channel_data.get(p.call_id)
                if data is not None:
                    _fill(p, data)
                merged = _merged(old, p) if old is not None else p
                if old is not None:
                    merged.join_time = old.join_time
                conf.participants[mid] = merged
                if old is None:
                    updates.append(
                        Update(ev.ADD_MEMBER, node, _detached(conf), _clone(merged), REASON_RESYNC)
                    )
        return updates

    def _channel_data(self, confs: Dict[str, Conference], data: ev.ChannelData) -> None:
        for conf in confs.values():
            p = conf.by_call_id(data.call_id)
            if p is not None:
                _fill(p, data)
                return

    # --- reads ---------------------------------------------------------------------------------

    def conferences(self, node: Optional[str] = None) -> List[Conference]:
        if node is not None:
            return list(self._nodes.get(node, {}).values())
        return [c for confs in self._nodes.values() for c in confs.values()]

    def find(self, name: str) -> List[Conference]:
        """Every live instance of conference ``name`` (normally one)."""
        out = []
        for node, uuid in self._by_name.get(name, ()):
            conf = self._nodes.get(node, {}).get(uuid)
            if conf is not None:
                out.append(conf)
        out.sort(key=lambda c: c.start_time)
        return out

    def member(self, node: str, conference_uuid: str, participant_id: int) -> Optional[Participant]:
        """The live participant ``participant_id`` of that conference instance, if it is live."""
        conf = self._nodes.get(node, {}).get(conference_uuid)
        return conf.participants.get(participant_id) if conf is not None else None

    def is_live(self, conference: Conference) -> bool:
        """Whether this very instance (node, uuid) of a conference is still live."""
        return conference.uuid in self._nodes.get(conference.node, {})

    def counts(self, node: str) -> Tuple[int, int]:
        confs = self._nodes.get(node, {})
        return len(confs), sum(len(c.participants) for c in confs.values())


def _fill(p: Participant, data: ev.ChannelData) -> None:
    """What ``uuid_dump`` tells about the participant's channel, into ``p``."""
    p.caller_id_name = data.caller_id_name or p.caller_id_name
    p.caller_id_number = data.caller_id_number or p.caller_id_number
    p.custom_channel_vars = dict(data.custom_channel_vars)
    p.channel_presence_id = data.channel_presence_id
    if data.switch_hostname:
        p.switch_hostname = data.switch_hostname


def _merged(old: Participant, new: Participant) -> Participant:
    """``new`` (fresher flags) with what only ``old`` knows (channel data, join time)."""
    merged = copy.copy(new)
    if not merged.custom_channel_vars and old.custom_channel_vars:
        merged.custom_channel_vars = dict(old.custom_channel_vars)
    if merged.channel_presence_id is None:
        merged.channel_presence_id = old.channel_presence_id
    if not merged.switch_hostname:
        merged.switch_hostname = old.switch_hostname
    if old.join_time and (not merged.join_time or merged.join_time > old.join_time):
        merged.join_time = old.join_time
    # json_list reports "Outbound Call" for originated calls where events carry the
    # configured caller id (events.md); the events' view wins.
    if old.caller_id_name:
        merged.caller_id_name = old.caller_id_name
    if old.caller_id_number:
        merged.caller_id_number = old.caller_id_number
    return merged
