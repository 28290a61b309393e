"""A client's event frames cut to datagrams for the UDP events channel.

Over TCP a client gets the events of a source as the program wrote them.
Over UDP any datagram may be lost and none is sent again, so each must
decode on its own: whole events only, and those of a block behind a block
marker of their own.  :class:`EventPacker` re-blocks: the events of one
block go out in pieces, each opened by a new marker with the block's
capability, the piece's size and its last event's time, so a lost datagram
costs its own events and the rest still decode and keep their thread.  (This
is the one place lpm re-encodes what a program wrote: a TCP client, a
recording and a replay still get the original bytes.)

Each piece is a complete ``EVENTS`` frame of :mod:`lpm.protocol.frames`, so
the client hands it to the same decoder as a TCP stream's.  Its item count,
for the transport's loss report, is the events it carries that the hub
counted as sent (the original block markers included, on the piece that
takes their first events), so that a UDP client's events received plus
events reported lost equal the server's count of events sent to it.

What does not fit a datagram goes to the reliable STATE channel instead, in
a frame of its own whose ``flags`` carry its item count: an event larger
than a datagram, and the end of a stream (the end marker, whose loss would
leave a client waiting).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..eventlog import format as fmt
from ..eventlog.reader import DataEnd, EventLogReader, Header, RawEvent, Skipped
from ..protocol.frames import HEAD as FRAME_HEAD
from ..protocol.frames import Frame, Kind, encode_frame

_MARKER_SIZE = fmt.EVENT_HEAD.size + fmt.BLOCK_MARKER.size


@dataclass
class Piece:
    """One frame to send: over the events channel unless ``reliable``."""

    frame: bytes
    items: int
    reliable: bool = False


@dataclass
class _Open:
    """The piece being filled."""

    cap: Optional[int]
    events: List[bytes] = field(default_factory=list)
    size: int = 0
    items: int = 0
    first_ts: int = 0
    last_ts: int = 0


class EventPacker:
    """Cuts one client's ``EVENTS`` frames into datagram-sized pieces.

    Args:
        limit: the most bytes of one piece's frame (the transport's largest
            events message).
    """

    def __init__(self, limit: int) -> None:
        if limit < FRAME_HEAD.size + _MARKER_SIZE + fmt.EVENT_HEAD.size:
            raise ValueError(f"a datagram of {limit} bytes cannot carry an event")
        self.limit = limit
        self._readers: Dict[int, EventLogReader] = {}
        self._carried: Dict[int, int] = {}  # source -> items of markers not yet on a piece

    def header(self, source: int, header: bytes) -> None:
        """A (re)started stream of ``source``: its events follow this header."""
        reader = EventLogReader(strict=False)
        reader.feed(header)
        self._readers[source] = reader
        self._carried[source] = 0

    def pack(self, source: int, events: bytes) -> List[Piece]:
        """The pieces of one ``EVENTS`` frame's payload (whole events)."""
        reader = self._readers.get(source)
        if reader is None:
            return []  # events before any header: the hub never sends those
        reader.feed(events)
        room = self.limit - FRAME_HEAD.size
        pieces: List[Piece] = []
        open_: Optional[_Open] = None

        def close() -> None:
            nonlocal open_
            if open_ is not None and open_.events:
                pieces.append(Piece(encode_frame(Frame(Kind.EVENTS, source, _body(open_))), open_.items))
            open_ = None

        while True:
            item = reader.next_raw()
            if isinstance(item, RawEvent):
                if item.type_id == fmt.BLOCK_MARKER_ID:
                    self._carried[source] += 1
                    close()  # a new block: a new piece
                    continue
                marker = _MARKER_SIZE if item.cap is not None else 0
                if marker + len(item.raw) > room:
                    close()
                    items = 1 + self._take(source)
                    body = _blocked(item.cap, item.ts, item.ts, [item.raw])
                    pieces.append(Piece(encode_frame(Frame(Kind.EVENTS, source, body, items)), items, reliable=True))
                    continue
                if open_ is not None and (open_.cap != item.cap or open_.size + len(item.raw) > room):
                    close()
                if open_ is None:
                    open_ = _Open(item.cap, size=marker, first_ts=item.ts)
                open_.events.append(item.raw)
                open_.size += len(item.raw)
                open_.items += 1 + self._take(source)
                open_.last_ts = item.ts
            elif isinstance(item, DataEnd):
                close()
                items = self._take(source)
                pieces.append(Piece(encode_frame(Frame(Kind.EVENTS, source, fmt.DATA_END, items)), items, True))
            elif isinstance(item, (Header, Skipped)):
                continue  # the header fed by header(); garbage a lenient reader stepped over
            else:
                break  # NEED_DATA, or the end: the hub sends whole events, so nothing is left
        close()
        return pieces

    def _take(self, source: int) -> int:
        carried = self._carried.get(source, 0)
        self._carried[source] = 0
        return carried


def _body(piece: _Open) -> bytes:
    return _blocked(piece.cap, piece.first_ts, piece.last_ts, piece.events)


def _blocked(cap: Optional[int], first_ts: int, last_ts: int, events: List[bytes]) -> bytes:
    body = b"".join(events)
    if cap is None:
        return body
    size = _MARKER_SIZE + len(body)
    head = struct.pack(">HQ", fmt.BLOCK_MARKER_ID, first_ts) + fmt.BLOCK_MARKER.pack(size, last_ts, cap)
    return head + body
