"""rtchat: a full-duplex spoken dialogue agent built as processes on a ZeroMQ bus."""

__version__ = "0.1.0"
