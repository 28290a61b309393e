"""A reliable transport over UDP for lpm's clients, without any I/O (issue 6).

Three channels share one connection: CONTROL and STATE carry reliable,
ordered messages (STATE's may be many megabytes, fragmented and reassembled
under limits), EVENTS carries best-effort messages whose loss the receiver
reports as counts instead of waiting for repairs.  The handshake proves both
ends hold the token, the server keeps no state for a client until it has, and
every packet after it carries an HMAC tag.  See :mod:`lpm.udp.core` for how a
socket shell drives a :class:`ClientConnection` or a :class:`Server`.
"""

from __future__ import annotations

from .core import (
    ClientConnection,
    Closed,
    CloseReason,
    Config,
    Connected,
    Connection,
    Event,
    EventsLost,
    Message,
    Server,
    ServerConnection,
    ServerRestarted,
    State,
)
from .packet import Channel

__all__ = [
    "Channel",
    "ClientConnection",
    "CloseReason",
    "Closed",
    "Config",
    "Connected",
    "Connection",
    "Event",
    "EventsLost",
    "Message",
    "Server",
    "ServerConnection",
    "ServerRestarted",
    "State",
]
