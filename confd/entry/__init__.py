"""Caller entry: FreeSWITCH hands each dialling caller to confd over the outbound event socket
and confd takes the call through number and PIN into the right conference (entry.md).

``constants`` holds the protocol text, ``rules`` the pure decisions, ``messages`` the bytes on
the wire, ``session`` one call's dialogue, ``server`` the listener and the ``EntryService`` the
daemon wires in, ``directory`` the adapters onto the store and the live state.
"""
