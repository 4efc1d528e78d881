"""What the contract (spec api.md) fixes that several test suites check."""

# Every key of a participant in the API (api.md, "Participants"), no more, no fewer.
PARTICIPANT_KEYS = {
    "call_id",
    "conference_name",
    "conference_uuid",
    "switch_hostname",
    "floor",
    "hear",
    "speak",
    "talking",
    "mute_detect",
    "participant_id",
    "energy_level",
    "current_energy",
    "video",
    "is_moderator",
    "join_time",
    "duration",
    "caller_id_name",
    "caller_id_number",
    "custom_channel_vars",
}

# Every key of a participant event and of a conference event (events.md), in its order.
PARTICIPANT_EVENT_KEYS = [
    "custom_channel_vars", "channel_presence_id", "caller_id_number", "caller_id_name",
    "mute_detect", "video", "energy_level", "current_energy", "talking", "speak", "hear",
    "floor", "participant_id", "is_moderator", "join_time", "instance_id", "conference_id",
    "focus", "call_id", "event", "node", "msg_id", "event_name", "event_category", "app_version",
    "app_name", "routing_key",
]  # fmt: skip
CONFERENCE_EVENT_KEYS = [
    "conference_id", "instance_id", "focus", "event", "is_locked", "members", "admins",
    "node", "msg_id", "event_name", "event_category", "app_version", "app_name", "routing_key",
]  # fmt: skip
# The one optional key (events.md, lifecycle steps 5-6): last, only on the events confd
# publishes of its own accord, with one of EVENT_REASONS; events reflecting what really
# happened on FreeSWITCH have the keys above and no more.
OPTIONAL_EVENT_KEY = "reason"
EVENT_REASONS = ("node_lost", "resync")
