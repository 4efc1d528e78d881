"""confd: REST and websocket control of live FreeSWITCH conferences."""

__version__ = "0.1.0"
