"""Decoding eventlogs incrementally: bytes in, items out, no I/O.

Theory of operation
-------------------

:class:`EventLogReader` holds at most one incomplete item (an event is at most
:data:`~lpm.eventlog.format.MAX_EVENT` bytes; a header type declaration is
capped by ``MAX_DESCRIPTION`` and ``MAX_EXTRA``), so what it buffers stays
bounded whatever the producer does.  Feed it bytes in any chunking; call
:meth:`~EventLogReader.next_event` until it returns :data:`NEED_DATA`.  It
returns, in stream order:

- :class:`Skipped` for bytes that came before a header (a reader that joined a
  FIFO mid-stream, a runtime that wrote events before its header, garbage);
- :class:`Header` when a header is complete; a later ``Header`` means the
  writer restarted its stream, and everything known about the old one is stale;
- events (:class:`~lpm.eventlog.events.Event` subclasses, block markers
  included), each with the capability of the block it came in;
- :class:`DataEnd` at the ``0xffff`` end marker;
- :class:`EndOfStream` once, after :meth:`~EventLogReader.close`, saying whether
  the stream ended with its end marker.

Framing follows the header: an event is as long as its type's declaration
says, so declared types lpm does not know are skipped whole and returned as
:class:`~lpm.eventlog.events.UnknownEvent`.  The payload of a known type is then
decoded with lpm's layout for it; a payload longer than the layout is a newer
version of the event and its tail is ignored.

A *strict* reader (the default) raises :class:`~lpm.errors.FormatError` with the
byte offset for corrupt input: an id the header never declared, a payload that
does not fit its layout, a malformed header.  A *lenient* reader (``strict=False``,
for live sources that must never stop) instead counts the error in
:attr:`~EventLogReader.errors`, yields malformed payloads as
:class:`~lpm.eventlog.events.MalformedEvent`, and after a framing error scans
forward for the next ``hdrb``.  Either way nothing but ``FormatError`` escapes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, NamedTuple, Union

from ..errors import FormatError
from . import format as fmt
from .events import EVENT_TYPES, Event, MalformedEvent, UnknownEvent
from .layout import LayoutError
from .writer import EventType


class _Need(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned when the reader needs more bytes (or, after ``close``, has no more).
NEED_DATA = _Need.NEED_DATA


@dataclass(frozen=True)
class Header:
    """A complete header: the declared event types by id."""

    offset: int
    types: Mapping[int, EventType]
    #: The header's bytes as written (a server forwards them, never re-encoded).
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class Skipped:
    """``length`` bytes at ``offset`` that were not part of any eventlog."""

    offset: int
    length: int


@dataclass(frozen=True)
class DataEnd:
    """The end-of-data marker, at ``offset``."""

    offset: int


@dataclass(frozen=True)
class EndOfStream:
    """The input is closed.

    Attributes:
        offset: the stream length.
        complete: the last eventlog in the stream ended with its end marker.
        pending: bytes of an incomplete item (event or header) left at the end.
    """

    offset: int
    complete: bool
    pending: int


class RawEvent(NamedTuple):
    """An event as framed but not decoded: what a server forwards and records."""

    type_id: int
    ts: int
    cap: int | None
    offset: int
    raw: bytes


class RawRun(NamedTuple):
    """Consecutive events as framed, not decoded (:meth:`EventLogReader.raw_run`).

    ``events`` holds (type id, timestamp, payload start, payload end) per
    event, offsets into ``raw``; an event whose payload starts at or before
    ``cap_limit`` is in the block of capability ``block_cap``.
    """

    raw: bytes
    events: list[tuple[int, int, int, int]]
    block_cap: int | None
    cap_limit: int
    decoders: dict[int, _Decoder]


Item = Union[Header, Skipped, DataEnd, EndOfStream]

_HDRB = fmt.HEADER_BEGIN
_U16 = struct.Struct(">H")
_HEAD = fmt.EVENT_HEAD
_HEAD_SIZE = fmt.EVENT_HEAD.size
_LEN_SIZE = fmt.PAYLOAD_LEN.size
_MARKER = fmt.BLOCK_MARKER
_END = 0xFFFF
_COMPACT_AT = 1 << 16


class _State(enum.Enum):
    SEEK = "looking for a header"
    HEADER = "reading a header"
    DATA = "reading events"


# Module names: an enum member lookup per event costs several times more.
_SEEK = _State.SEEK
_HEADER = _State.HEADER
_DATA = _State.DATA
#: Events decoded per run of the fast path before it yields to the caller.
_RUN = 4096


# A decoder builds an event from (ts, cap, buffer, payload start, payload end).
_Decoder = Callable[[int, "int | None", "bytes | bytearray", int, int], Event]


class EventLogReader:
    """Incremental, sans-IO eventlog decoder.

    Args:
        strict: raise ``FormatError`` on corrupt input (the default); when
            false, count it, skip it, and keep going.
    """

    def __init__(self, *, strict: bool = True, apart: frozenset[int] = frozenset()) -> None:
        self.strict = strict
        #: Type ids that never join a run (:meth:`raw_run`): each comes alone
        #: from :meth:`next_raw`, for a caller that must look at it.
        self.apart = apart
        #: The header of the eventlog being read, once one is complete.
        self.header: Header | None = None
        #: Corrupt items a lenient reader skipped.
        self.errors = 0
        #: The last error a lenient reader skipped, for its log.
        self.last_error: FormatError | None = None
        self._header_raw = bytearray()
        self._buf = bytearray()
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._eof = False
        self._finished = False
        self._state = _SEEK
        self._ended = False  # the last eventlog ended with 0xffff
        self._skip_from: int | None = None
        self._types: dict[int, EventType] = {}
        self._sizes: dict[int, int] = {}
        self._plain: dict[int, int] = {}  # _sizes without the block marker
        # Fixed-layout known types, decoded inline by the fast path.
        self._fixed: dict[int, tuple[type[Event], Callable[[bytearray, int], tuple[int, ...]], int]] = {}
        self._decoders: dict[int, _Decoder] = {}
        self._block_end = 0
        self._block_cap: int | None = None

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes; ``b""`` means end of input, like :meth:`close`."""
        if self._eof:
            if data:
                raise RuntimeError("feed() after close()")
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    def close(self) -> None:
        """No more input will come."""
        self._eof = True

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be read."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """Bytes held for items not yet complete or not yet returned."""
        return len(self._buf) - self._pos

    @property
    def complete(self) -> bool:
        """The last eventlog seen ended with its end marker."""
        return self._ended

    # -- output --------------------------------------------------------------

    def next_event(self) -> Item | Event | _Need:
        """The next item, decoded; ``NEED_DATA`` when more bytes are needed."""
        got = self._step()
        if type(got) is not tuple:
            return got  # type: ignore[return-value]
        type_id, ts, start, end = got
        return self._decode(type_id, ts, start, end)

    def next_raw(self) -> Item | RawEvent | _Need:
        """The next item with events left undecoded, as :class:`RawEvent`."""
        got = self._step()
        if type(got) is not tuple:
            return got  # type: ignore[return-value]
        type_id, ts, start, end = got
        pos = start - _HEAD_SIZE - (_LEN_SIZE if self._sizes[type_id] < 0 else 0)
        return RawEvent(type_id, ts, self._cap_at(start), self._base + pos, bytes(self._buf[pos:end]))

    def raw_run(self) -> RawRun | None:
        """A run of ordinary complete events, framed but not decoded, as one
        bytes object: what a server forwards and records without touching each
        event.  None when the next item is anything else (a block marker, the
        end, a header, an undeclared id, an incomplete event): take it with
        :meth:`next_raw`."""
        if self._state is not _DATA:
            return None
        buf = self._buf
        first = pos = self._pos
        size_of = self._plain.get
        head = _HEAD.unpack_from
        u16 = _U16.unpack_from
        n = len(buf)
        limit = n - _HEAD_SIZE - _LEN_SIZE
        events: list[tuple[int, int, int, int]] = []
        append = events.append
        while pos <= limit:
            tid, ts = head(buf, pos)
            size = size_of(tid)
            if size is None:
                break
            if size < 0:
                start = pos + _HEAD_SIZE + _LEN_SIZE
                end = start + u16(buf, pos + _HEAD_SIZE)[0]
            else:
                start = pos + _HEAD_SIZE
                end = start + size
            if end > n:
                break
            append((tid, ts, start - first, end - first))
            pos = end
        if pos == first:
            return None
        self._pos = pos
        return RawRun(bytes(buf[first:pos]), events, self._block_cap, self._block_end - self._base - first, self._decoders)

    def declared_sizes(self) -> dict[int, int]:
        """Type id -> payload size of the current header (-1: variable), with
        the sizes GHC misdeclares corrected."""
        return dict(self._sizes)

    def payload_offset(self, type_id: int) -> int:
        """Where an event's payload starts: after id and timestamp, and length
        when the type is variable-size."""
        return _HEAD_SIZE + (_LEN_SIZE if self._sizes.get(type_id, 0) < 0 else 0)

    def decode_in(self, run: RawRun, event: tuple[int, int, int, int]) -> Event:
        """Decode one event of a :meth:`raw_run` (with the decoders of the
        header it came under, even after a new one)."""
        tid, ts, start, end = event
        cap = run.block_cap if start <= run.cap_limit else None
        try:
            return run.decoders[tid](ts, cap, run.raw, start, end)
        except LayoutError as err:
            return self._malformed(-1, tid, ts, cap, run.raw[start:end], err)

    def decode(self, event: RawEvent) -> Event:
        """Decode an event :meth:`next_raw` returned since the last header:
        what a server does with the events it also forwards as they are."""
        variable = self._sizes.get(event.type_id, 0) < 0
        start = _HEAD_SIZE + (_LEN_SIZE if variable else 0)
        decoder = self._decoders.get(event.type_id)
        if decoder is None:
            raise ValueError(f"event type {event.type_id} is not declared by the current header")
        try:
            return decoder(event.ts, event.cap, event.raw, start, len(event.raw))
        except LayoutError as err:
            return self._malformed(event.offset + start, event.type_id, event.ts, event.cap, event.raw[start:], err)

    def count(self, by_id: dict[int, int]) -> Item | _Need:
        """Walk events, adding one per event to ``by_id[type_id]``, until the
        next non-event item (returned) or ``NEED_DATA``.  The fastest way through
        a stream: payloads are not decoded."""
        get = by_id.get
        u16 = _U16.unpack_from
        while True:
            if self._state is _DATA:
                # Fast path: a run of ordinary, complete events.  Anything
                # else (block marker, end, restart, undeclared id, a partial
                # event) is left to _step.
                buf = self._buf
                pos = self._pos
                size_of = self._plain.get
                n = len(buf)
                limit = n - _HEAD_SIZE - _LEN_SIZE
                while pos <= limit:
                    (tid,) = u16(buf, pos)
                    size = size_of(tid)
                    if size is None:
                        break
                    if size < 0:
                        end = pos + _HEAD_SIZE + _LEN_SIZE + u16(buf, pos + _HEAD_SIZE)[0]
                    else:
                        end = pos + _HEAD_SIZE + size
                    if end > n:
                        break
                    by_id[tid] = get(tid, 0) + 1
                    pos = end
                self._pos = pos
            got = self._step()
            if type(got) is not tuple:
                return got  # type: ignore[return-value]
            tid = got[0]
            by_id[tid] = get(tid, 0) + 1

    def events(self) -> Iterator[Item | Event]:
        """Decoded items until more bytes are needed."""
        while True:
            if self._state is _DATA:
                yield from self._decode_run()
            item = self.next_event()
            if item is NEED_DATA:
                return
            yield item

    def _decode_run(self) -> list[Event]:
        """Decode up to _RUN ordinary complete events in one go (the fast path
        of :meth:`events`); stops before anything _step must handle."""
        out: list[Event] = []
        append = out.append
        buf = self._buf
        pos = self._pos
        size_of = self._plain.get
        decoders = self._decoders
        fixed = self._fixed.get
        head = _HEAD.unpack_from
        u16 = _U16.unpack_from
        n = len(buf)
        limit = n - _HEAD_SIZE - _LEN_SIZE
        cap_limit = self._block_end - self._base  # payloads starting at or before this are in the block
        block_cap = self._block_cap
        try:
            while pos <= limit and len(out) < _RUN:
                tid, ts = head(buf, pos)
                size = size_of(tid)
                if size is None:
                    break
                if size < 0:
                    start = pos + _HEAD_SIZE + _LEN_SIZE
                    end = start + u16(buf, pos + _HEAD_SIZE)[0]
                else:
                    start = pos + _HEAD_SIZE
                    end = start + size
                if end > n:
                    break
                known = fixed(tid)
                if known is not None and end - start >= known[2]:
                    append(known[0](ts, block_cap if start <= cap_limit else None, *known[1](buf, start)))
                else:
                    append(decoders[tid](ts, block_cap if start <= cap_limit else None, buf, start, end))
                pos = end
        except LayoutError:
            pass  # _step will meet the same event and report it
        self._pos = pos
        return out

    # -- framing -------------------------------------------------------------

    def _step(self) -> Item | _Need | tuple[int, int, int, int]:
        got: Item | _Need | tuple[int, int, int, int] | None
        while True:
            try:
                if self._state is _DATA:
                    got = self._data()
                elif self._state is _SEEK:
                    got = self._seek()
                else:
                    got = self._header()
            except FormatError as err:
                if self.strict:
                    self._finished = True
                    raise
                self.errors += 1
                self.last_error = err
                self._state = _SEEK
                if self._skip_from is None:
                    self._skip_from = self._base + self._pos
                self._pos += 1
                continue
            if got is None:
                continue
            if got is NEED_DATA:
                return self._at_end()
            return got

    def _at_end(self) -> Item | _Need:
        if self._pos > _COMPACT_AT:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        if not self._eof or self._finished:
            return NEED_DATA
        skipped = self._flush_skipped(self._base + len(self._buf))
        if skipped is not None:
            return skipped
        self._finished = True
        pending = 0 if self._state is _SEEK else len(self._buf) - self._pos
        complete = self._ended and self._state is _SEEK
        return EndOfStream(self._base + len(self._buf), complete, pending)

    def _flush_skipped(self, upto: int) -> Skipped | None:
        start = self._skip_from
        if start is None or upto <= start:
            self._skip_from = None
            return None
        self._skip_from = None
        return Skipped(start, upto - start)

    def _seek(self) -> Item | _Need | None:
        buf = self._buf
        pos = self._pos
        at = buf.find(_HDRB, pos)
        if at < 0:
            # Keep three bytes: they may be the start of a "hdrb" not yet fed.
            keep = max(pos, len(buf) - 3)
            if keep > pos:
                if self._skip_from is None:
                    self._skip_from = self._base + pos
                del buf[:keep]
                self._base += keep
                self._pos = 0
            return NEED_DATA
        if at > pos and self._skip_from is None:
            self._skip_from = self._base + pos
        self._pos = at
        if len(buf) - at < 8:
            return NEED_DATA
        if buf[at + 4 : at + 8] != fmt.HET_BEGIN:
            # "hdrb" inside garbage or inside an event, not a header.
            if self._skip_from is None:
                self._skip_from = self._base + at
            self._pos = at + 1
            return None
        skipped = self._flush_skipped(self._base + at)
        self._state = _HEADER
        self._pos = at + 8
        self._header_start = self._base + at
        self._types = {}
        self._header_raw = bytearray(fmt.HEADER_BEGIN + fmt.HET_BEGIN)
        if skipped is not None:
            return skipped
        return None

    def _header(self) -> Item | _Need | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            return NEED_DATA
        tag = bytes(buf[pos : pos + 4])
        if tag == fmt.HET_END:
            if len(buf) - pos < 12:
                return NEED_DATA
            if buf[pos + 4 : pos + 8] != fmt.HEADER_END:
                raise FormatError(self._base + pos + 4, "expected 'hdre' after the event types")
            if buf[pos + 8 : pos + 12] != fmt.DATA_BEGIN:
                raise FormatError(self._base + pos + 8, "expected 'datb' after the header")
            self._pos = pos + 12
            self._header_raw += buf[pos : pos + 12]
            self._start_data()
            assert self.header is not None
            return self.header
        if tag != fmt.ET_BEGIN:
            raise FormatError(self._base + pos, f"expected an event type ('etb\\0') or 'hete', found {tag!r}")
        if len(buf) - pos < fmt.ET_HEAD.size:
            return NEED_DATA
        _, type_id, size, desc_len = fmt.ET_HEAD.unpack_from(buf, pos)
        if desc_len > fmt.MAX_DESCRIPTION:
            raise FormatError(
                self._base + pos + 8, f"event type {type_id}: description length {desc_len} exceeds {fmt.MAX_DESCRIPTION}"
            )
        at = pos + fmt.ET_HEAD.size + desc_len
        if len(buf) - at < 4:
            return NEED_DATA
        (extra_len,) = fmt.U32.unpack_from(buf, at)
        if extra_len > fmt.MAX_EXTRA:
            raise FormatError(self._base + at, f"event type {type_id}: extra length {extra_len} exceeds {fmt.MAX_EXTRA}")
        end = at + 4 + extra_len
        if len(buf) - end < 4:
            return NEED_DATA
        if buf[end : end + 4] != fmt.ET_END:
            raise FormatError(self._base + end, f"event type {type_id}: expected 'ete\\0', found {bytes(buf[end:end + 4])!r}")
        if type_id in self._types:
            raise FormatError(self._base + pos, f"event type {type_id} is declared twice")
        if len(self._header_raw) + (end + 4 - pos) > fmt.MAX_HEADER:
            raise FormatError(self._base + pos, f"the header exceeds {fmt.MAX_HEADER} bytes")
        if type_id == _END:
            raise FormatError(self._base + pos, "event type 65535 is reserved for the end marker")
        desc = bytes(buf[pos + fmt.ET_HEAD.size : at]).decode("utf-8", "replace")
        self._types[type_id] = EventType(type_id, size, desc, bytes(buf[at + 4 : end]))
        self._header_raw += buf[pos : end + 4]
        self._pos = end + 4
        return None

    def _start_data(self) -> None:
        self.header = Header(self._header_start, dict(self._types), bytes(self._header_raw))
        self._sizes = {}
        self._decoders = {}
        for type_id, et in self._types.items():
            size = fmt.SIZE_QUIRKS.get((type_id, et.size), et.size)
            if type_id == fmt.BLOCK_MARKER_ID and size != _MARKER.size:
                raise FormatError(self._header_start, f"block marker declared with size {size}, must be {_MARKER.size}")
            self._sizes[type_id] = -1 if size == fmt.VARIABLE else size
            self._decoders[type_id] = _decoder_for(type_id)
        self._plain = {k: v for k, v in self._sizes.items() if k != fmt.BLOCK_MARKER_ID and k not in self.apart}
        self._fixed = {}
        for type_id in self._plain:
            cls = EVENT_TYPES.get(type_id)
            if cls is not None and cls.LAYOUT.fixed is not None and not cls.OLD_SIZES:
                self._fixed[type_id] = (cls, cls.LAYOUT.fixed.unpack_from, cls.LAYOUT.fixed.size)
        self._state = _DATA
        self._ended = False
        self._block_end = 0
        self._block_cap = None

    def _data(self) -> Item | _Need | tuple[int, int, int, int] | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            return NEED_DATA
        if avail >= _HEAD_SIZE:
            type_id, ts = _HEAD.unpack_from(buf, pos)
        else:
            (type_id,) = _U16.unpack_from(buf, pos)
            ts = -1  # not needed unless the event is complete, which it cannot be
        size = self._sizes.get(type_id)
        if size is None:
            if type_id == _END:
                self._pos = pos + 2
                self._state = _SEEK
                self._ended = True
                return DataEnd(self._base + pos)
            if avail < 4:
                return NEED_DATA
            if buf[pos : pos + 4] == _HDRB:
                # The writer restarted without an end marker; a new header follows.
                self._state = _SEEK
                return None
            raise FormatError(self._base + pos, f"event type {type_id} is not declared in the header")
        if size < 0:
            if avail < _HEAD_SIZE + _LEN_SIZE:
                return NEED_DATA
            (size,) = _U16.unpack_from(buf, pos + _HEAD_SIZE)
            start = pos + _HEAD_SIZE + _LEN_SIZE
        else:
            start = pos + _HEAD_SIZE
        end = start + size
        if len(buf) < end:
            return NEED_DATA
        self._pos = end
        if type_id == fmt.BLOCK_MARKER_ID:
            block_size, _, block_cap = _MARKER.unpack_from(buf, start)
            self._block_end = self._base + pos + block_size
            self._block_cap = None if block_cap == fmt.GLOBAL_CAP else block_cap
        return (type_id, ts, start, end)

    def _cap_at(self, start: int) -> int | None:
        return self._block_cap if self._base + start <= self._block_end else None

    def _decode(self, type_id: int, ts: int, start: int, end: int) -> Event:
        cap = self._cap_at(start)
        try:
            return self._decoders[type_id](ts, cap, self._buf, start, end)
        except LayoutError as err:
            return self._malformed(self._base + start, type_id, ts, cap, bytes(self._buf[start:end]), err)

    def _malformed(self, offset: int, type_id: int, ts: int, cap: int | None, data: bytes, err: LayoutError) -> Event:
        if self.strict:
            raise FormatError(offset, f"event type {type_id}: {err}") from None
        self.errors += 1
        self.last_error = FormatError(offset, f"event type {type_id}: {err}")
        return MalformedEvent(ts, cap, type_id, data, str(err))


def _decoder_for(type_id: int) -> _Decoder:
    cls = EVENT_TYPES.get(type_id)
    if cls is None:

        def unknown(ts: int, cap: int | None, buf: bytes | bytearray, start: int, end: int) -> Event:
            return UnknownEvent(ts, cap, type_id, bytes(buf[start:end]))

        return unknown
    layout = cls.LAYOUT
    old = cls.OLD_SIZES
    fixed = layout.fixed
    if fixed is not None and not old:
        unpack = fixed.unpack_from
        need = fixed.size

        def fixed_size(ts: int, cap: int | None, buf: bytes | bytearray, start: int, end: int) -> Event:
            if end - start < need:
                raise LayoutError(f"payload of {end - start} bytes, {cls.__name__} needs {need}")
            return cls(ts, cap, *unpack(buf, start))

        return fixed_size
    n_fields = len(layout)

    def general(ts: int, cap: int | None, buf: bytes | bytearray, start: int, end: int) -> Event:
        older = old.get(end - start)
        if older is not None and end - start < layout.min_size:
            values = older.decode(buf, start, end)
            return cls(ts, cap, *values, *([None] * (n_fields - len(values))))
        return cls(ts, cap, *layout.decode(buf, start, end))

    return general


def read_events(data: bytes, *, strict: bool = True) -> list[Item | Event]:
    """Decode a whole stream held in memory (a convenience for tests and tools)."""
    reader = EventLogReader(strict=strict)
    reader.feed(data)
    reader.close()
    return list(reader.events())


__all__ = [
    "NEED_DATA",
    "DataEnd",
    "EndOfStream",
    "EventLogReader",
    "EventType",
    "Header",
    "Item",
    "RawEvent",
    "Skipped",
    "read_events",
]
