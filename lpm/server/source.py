"""One source's stream inside the server: bytes in, what to forward out.

Sans-IO: :meth:`Source.feed` takes bytes as they arrive from a FIFO or file
and returns :class:`Chunk` objects, which say what the server forwards (the
raw header, the raw bytes of whole events, never re-encoded) while the live
state (:class:`~lpm.server.state.SourceState`) is kept up to date.

The reader is lenient: garbage is skipped to the next header, a restarted
stream starts a new header, a payload that does not fit its layout is
counted; nothing a program writes can stop the server.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..eventlog import format as fmt
from ..eventlog.reader import NEED_DATA, DataEnd, EndOfStream, EventLogReader, Header, RawEvent, Skipped
from ..eventlog.writer import EventType, encode_header
from ..leech.redact import REDACTED, mask, redact_argv, redact_entry
from .state import Limits, SourceState

#: Kinds of source, as ``sources`` lists them.
LEECH, FIFO, FILE, REPLAY = "leech", "fifo", "file", "replay"


@dataclass
class Piece:
    """Consecutive whole events: their bytes, and (type id, timestamp, payload
    start, payload end) per event, offsets into ``raw``.  Each event starts
    where the one before it ends."""

    raw: bytes
    events: List[Tuple[int, int, int, int]]


@dataclass
class Chunk:
    """What one feed produced: a new header (a (re)started stream), then events."""

    header: Optional[bytes] = None
    pieces: List[Piece] = field(default_factory=list)
    end: bool = False  #: the stream's end marker came (its two bytes follow the events)

    @functools.cached_property
    def count(self) -> int:
        return sum(len(p.events) for p in self.pieces)

    @functools.cached_property
    def raw(self) -> bytes:
        """The events' bytes as the program wrote them (and the end marker);
        computed once, after the source made the chunk, for the recorder and
        every client."""
        return b"".join(p.raw for p in self.pieces) + (fmt.DATA_END if self.end else b"")

    def from_first_block(self) -> Optional[Tuple[bytes, int]]:
        """(bytes, events) from the first block marker on; None without one."""
        for i, piece in enumerate(self.pieces):
            if piece.events and piece.events[0][0] == fmt.BLOCK_MARKER_ID:
                rest = self.pieces[i:]
                raw = b"".join(p.raw for p in rest) + (fmt.DATA_END if self.end else b"")
                return raw, sum(len(p.events) for p in rest)
        return None

    def only(self, types: frozenset[int]) -> Tuple[bytes, int]:
        """(bytes, events) of the events of these types (and the end marker)."""
        out: List[bytes] = []
        count = 0
        for piece in self.pieces:
            start = 0
            raw = piece.raw
            for tid, _, _, end in piece.events:
                if tid in types:
                    out.append(raw[start:end])
                    count += 1
                start = end
        if self.end:
            out.append(fmt.DATA_END)
        return b"".join(out), count


#: ProgramArgs and ProgramEnv.
_PROGRAM_IDS = frozenset({30, 31})


def _mask(value: str) -> str:
    return value if value == REDACTED else mask(value)


def mask_secrets(piece: Piece) -> Piece:
    """``piece`` with secret argv and environment values hidden.

    A GHC runtime writes its whole environment and argv into the eventlog
    (the leech redacts its own before they leave the program).  The server
    forwards and records events as they came, without re-encoding, and a
    block marker already sent fixes its block's size: so the values are
    hidden in place, byte for byte (``*`` for each), the same rule as the
    leech's (:mod:`lpm.leech.redact`), and every size stays true.  A leech's
    own stream is not looked at (it hid them already, as ``<redacted>``).
    """
    raw = piece.raw
    out = bytearray(raw)
    for tid, _, start, end in piece.events:
        if tid in _PROGRAM_IDS and end - start > 4:
            parts = bytes(raw[start + 4 : end]).decode("latin-1").split("\0")
            if tid == 30:
                hidden = redact_argv(parts, _mask)
            else:
                hidden = [redact_entry(*p.partition("=")[::2], _mask) if "=" in p else p for p in parts]
            out[start + 4 : end] = "\0".join(hidden).encode("latin-1")
            assert len(out) == len(raw), "masking keeps every size"
    return Piece(bytes(out), piece.events)


def header_bytes(header: Header) -> bytes:
    """A header's bytes as written (re-encoded only for a Header made by hand)."""
    if header.raw:
        return header.raw
    return encode_header(EventType(t.id, t.size, t.description, t.extra) for t in header.types.values())


class Source:
    """A named stream: its reader, its live state, and counters."""

    def __init__(self, id: int, name: str, kind: str, path: str = "", pid: int | None = None,
                 limits: Limits | None = None) -> None:
        self.id = id
        self.name = name
        self.kind = kind
        self.path = path
        self.pid = pid
        # ProgramArgs and ProgramEnv come apart from runs, to be masked.
        self.reader = EventLogReader(strict=False, apart=frozenset() if kind == LEECH else _PROGRAM_IDS)
        self.state = SourceState(limits, label=f"source {id} ({name})")
        self.header: Optional[bytes] = None
        self.bytes_in = 0
        self.events_in = 0
        self.skipped_bytes = 0
        self.blocks = False  #: the stream has block markers (late joiners start at one)
        self.live = True
        self.ended = False  #: the end marker of the current stream arrived
        #: A pause was sent to its leech through this server and no resume
        #: since (a command written to the control FIFO by hand is not seen).
        self.paused = False

    def feed(self, data: bytes) -> List[Chunk]:
        """Bytes from the source; the chunks to forward, in order."""
        self.bytes_in += len(data)
        self.reader.feed(data)
        return self._drain()

    def close(self) -> List[Chunk]:
        """The source ended (EOF with its writer gone)."""
        self.reader.close()
        self.live = False
        return self._drain()

    def _drain(self) -> List[Chunk]:
        chunks: List[Chunk] = []
        current = Chunk()
        reader = self.reader
        state = self.state
        while True:
            run = reader.raw_run()
            if run is not None:
                # The fast path: whole runs of ordinary events, decoded only
                # where the state needs them (see SourceState.add_run).
                current.pieces.append(Piece(run.raw, run.events))
                self.events_in += len(run.events)
                state.add_run(run, reader.decode_in)
                continue
            item = reader.next_raw()
            if item is NEED_DATA:
                break
            if isinstance(item, RawEvent):
                start = reader.payload_offset(item.type_id)
                piece = Piece(item.raw, [(item.type_id, item.ts, start, len(item.raw))])
                current.pieces.append(mask_secrets(piece) if item.type_id in _PROGRAM_IDS else piece)
                self.events_in += 1
                if item.type_id == fmt.BLOCK_MARKER_ID:
                    self.blocks = True
                state.add(reader.decode(item))
            elif isinstance(item, Header):
                if current.pieces or current.header is not None or current.end:
                    chunks.append(current)
                self.header = header_bytes(item)
                self.ended = False
                self.blocks = False
                state.new_header(reader.declared_sizes())
                current = Chunk(header=self.header)
            elif isinstance(item, DataEnd):
                current.end = True
                self.ended = True
                chunks.append(current)
                current = Chunk()
            elif isinstance(item, Skipped):
                self.skipped_bytes += item.length
            elif isinstance(item, EndOfStream):
                break
        if current.pieces or current.header is not None:
            chunks.append(current)
        return chunks

    def info(self) -> dict[str, object]:
        """What ``sources`` lists about this source."""
        program = self.state.program
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "pid": self.pid if self.pid is not None else program.get("pid"),
            "live": self.live,
            "paused": self.paused and self.live,
            "ended": self.ended,
            "bytes": self.bytes_in,
            "events": self.events_in,
            "skipped_bytes": self.skipped_bytes,
            "format_errors": self.reader.errors,
            "rts": program.get("rts"),
        }
