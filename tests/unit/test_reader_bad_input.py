"""Hostile and broken input: every outcome is an item or a FormatError."""

from __future__ import annotations

import random
import struct

import pytest

from lpm.errors import FormatError
from lpm.eventlog import (
    NEED_DATA,
    EndOfStream,
    Event,
    EventLogReader,
    EventLogWriter,
    EventType,
    Header,
    MalformedEvent,
    Skipped,
    read_events,
)
from lpm.eventlog import format as fmt
from lpm.eventlog.events import CreateThread, GCStatsGHC, TaskCreate, UserMarker, UserMessage

from .gen import random_events

SMALL_TYPES = [EventType.of(c) for c in (CreateThread, UserMarker, UserMessage)] + [
    EventType(18, 14, "Block marker")
]


def small_stream() -> bytes:
    w = EventLogWriter(SMALL_TYPES)
    first = [CreateThread(1, 0, 1), UserMarker(2, 0, "héllo"), UserMessage(3, 0, "x" * 40)]
    second = [UserMessage(10 + i, 1, f"message {i}") for i in range(12)]
    return w.header() + w.block(0, first) + w.block(1, second) + w.end()


def drain(reader: EventLogReader) -> list[object]:
    out: list[object] = []
    while True:
        item = reader.next_event()
        if item is NEED_DATA:
            return out
        out.append(item)


def test_truncated_at_every_offset() -> None:
    data = small_stream()
    full = read_events(data)
    full_events = [i for i in full if isinstance(i, Event)]
    for cut in range(len(data)):
        items = read_events(data[:cut])
        end = items[-1]
        assert isinstance(end, EndOfStream), cut
        assert not end.complete, cut
        assert end.offset == cut
        events = [i for i in items if isinstance(i, Event)]
        assert events == full_events[: len(events)], cut
    assert isinstance(full[-1], EndOfStream) and full[-1].complete


def test_truncated_stream_reports_the_pending_bytes() -> None:
    w = EventLogWriter(SMALL_TYPES)
    head = w.header() + w.event(UserMarker(1, None, "complete"))
    partial = w.event(UserMessage(2, None, "cut short"))[:7]
    items = read_events(head + partial)
    assert items[-1] == EndOfStream(len(head) + 7, complete=False, pending=7)
    assert UserMarker(1, None, "complete") in items


def test_random_bytes_give_items_or_format_error() -> None:
    rnd = random.Random(1234)
    header = EventLogWriter(SMALL_TYPES).header()
    cases = 0
    for _ in range(3000):
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 300)))
        for data in (junk, header + junk, b"hdrbhetb" + junk):
            cases += 1
            try:
                read_events(data)
            except FormatError as err:
                assert 0 <= err.offset <= len(data)
            lenient = read_events(data, strict=False)
            assert isinstance(lenient[-1], EndOfStream)
    assert cases == 9000


def test_bit_flips_in_a_valid_stream() -> None:
    rnd = random.Random(99)
    w = EventLogWriter()
    data = w.header() + w.block(1, random_events(rnd, 200, cap=1)) + w.end()
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            mutated[rnd.randrange(len(mutated))] ^= 1 << rnd.randrange(8)
        try:
            read_events(bytes(mutated))
        except FormatError as err:
            assert 0 <= err.offset <= len(mutated)
        assert isinstance(read_events(bytes(mutated), strict=False)[-1], EndOfStream)


def test_lying_description_length_fails_at_once() -> None:
    data = fmt.HEADER_BEGIN + fmt.HET_BEGIN + fmt.ET_HEAD.pack(fmt.ET_BEGIN, 0, 4, 0xFFFFFFF0)
    reader = EventLogReader()
    reader.feed(data)
    with pytest.raises(FormatError) as err:
        reader.next_event()
    assert err.value.offset == 16
    assert "description length 4294967280" in str(err.value)


def test_lying_extra_length_fails_at_once() -> None:
    data = fmt.HEADER_BEGIN + fmt.HET_BEGIN + fmt.ET_HEAD.pack(fmt.ET_BEGIN, 0, 4, 3) + b"abc" + fmt.U32.pack(1 << 30)
    with pytest.raises(FormatError, match="extra length 1073741824"):
        read_events(data)


def test_lying_event_length_waits_for_at_most_one_event() -> None:
    w = EventLogWriter(SMALL_TYPES)
    # A user message claiming 65,535 bytes, followed by far fewer.
    data = w.header() + fmt.EVENT_HEAD.pack(19, 5) + fmt.PAYLOAD_LEN.pack(0xFFFF) + b"short"
    reader = EventLogReader()
    reader.feed(data)
    assert isinstance(reader.next_event(), Header)
    assert reader.next_event() is NEED_DATA
    assert reader.buffered <= fmt.MAX_EVENT
    reader.close()
    end = reader.next_event()
    assert isinstance(end, EndOfStream) and not end.complete and end.pending == 17


def test_undeclared_event_type_is_an_error_with_its_offset() -> None:
    w = EventLogWriter(SMALL_TYPES)
    good = w.header() + w.event(UserMarker(1, None, "ok"))
    data = good + struct.pack(">HQ", 4711, 2) + b"\x00" * 8
    with pytest.raises(FormatError) as err:
        read_events(data)
    assert err.value.offset == len(good)
    assert "event type 4711 is not declared" in str(err.value)


def test_lenient_reader_resynchronises_on_the_next_header() -> None:
    w = EventLogWriter(SMALL_TYPES)
    first = w.header() + w.event(UserMarker(1, None, "before"))
    junk = struct.pack(">HQ", 4711, 2) + b"junk" * 10
    second = w.header() + w.event(UserMarker(2, None, "after")) + w.end()
    reader = EventLogReader(strict=False)
    reader.feed(first + junk + second)
    reader.close()
    items = drain(reader)
    markers = [i.marker for i in items if isinstance(i, UserMarker)]
    assert markers == ["before", "after"]
    assert reader.errors == 1
    assert Skipped(len(first), len(junk)) in items
    assert isinstance(items[-1], EndOfStream) and items[-1].complete


def test_garbage_before_the_header_is_skipped_and_counted() -> None:
    data = small_stream()
    # 52 bytes of events before the header, as GHC 9.0.2 writes after a restart,
    # with a decoy "hdrb" that is not followed by "hetb".
    junk = b"\x00\x12" + b"hdrbXXXX" + bytes(range(42))
    items = read_events(junk + data)
    assert items[0] == Skipped(0, len(junk))
    assert isinstance(items[1], Header) and items[1].offset == len(junk)
    assert [i for i in items if isinstance(i, Event)] == [i for i in read_events(data) if isinstance(i, Event)]


def test_garbage_without_a_header_is_bounded_in_memory() -> None:
    reader = EventLogReader()
    rnd = random.Random(3)
    for _ in range(100):
        reader.feed(bytes(rnd.getrandbits(8) for _ in range(10_000)).replace(b"hdrb", b"xxxx"))
        assert reader.next_event() is NEED_DATA
        assert reader.buffered <= 3
    reader.close()
    assert reader.next_event() == Skipped(0, 1_000_000)
    assert reader.next_event() == EndOfStream(1_000_000, complete=False, pending=0)


def test_restarted_stream_without_end_marker() -> None:
    w = EventLogWriter(SMALL_TYPES)
    one = w.header() + w.event(UserMarker(1, None, "one"))
    two = w.header() + w.event(UserMarker(2, None, "two")) + w.end()
    items = read_events(one + two)
    headers = [i for i in items if isinstance(i, Header)]
    assert [h.offset for h in headers] == [0, len(one)]
    assert [i.marker for i in items if isinstance(i, UserMarker)] == ["one", "two"]
    assert isinstance(items[-1], EndOfStream) and items[-1].complete


def test_variable_size_declared_for_a_fixed_type() -> None:
    types = [EventType(0, 0xFFFF, "Create thread"), EventType.of(UserMarker)]
    w = EventLogWriter(types)
    head = w.header()

    def var_event(payload: bytes) -> bytes:
        return fmt.EVENT_HEAD.pack(0, 7) + fmt.PAYLOAD_LEN.pack(len(payload)) + payload

    exact = read_events(head + var_event(struct.pack(">I", 42)) + w.end())
    assert CreateThread(7, None, 42) in exact
    longer = read_events(head + var_event(struct.pack(">IH", 42, 9)) + w.end())
    assert CreateThread(7, None, 42) in longer, "a longer payload is a newer layout: its tail is ignored"
    short = head + var_event(b"\x00\x01")
    with pytest.raises(FormatError) as err:
        read_events(short)
    assert err.value.offset == len(head) + 12
    lenient = read_events(short + w.event(UserMarker(8, None, "still here")) + w.end(), strict=False)
    assert MalformedEvent(7, None, 0, b"\x00\x01", "payload of 2 bytes, CreateThread needs 4") in lenient
    assert UserMarker(8, None, "still here") in lenient


def test_fixed_size_declared_for_a_variable_type() -> None:
    types = [EventType(19, 5, "User message")]
    data = EventLogWriter(types).header() + fmt.EVENT_HEAD.pack(19, 1) + b"hello" + fmt.DATA_END
    assert UserMessage(1, None, "hello") in read_events(data)


def test_known_misdeclared_task_create_size_is_framed_as_written() -> None:
    types = [EventType(55, 14, "Task create"), EventType.of(UserMarker)]
    w = EventLogWriter(types)
    data = (
        w.header()
        + fmt.EVENT_HEAD.pack(55, 3)
        + struct.pack(">QHQ", 0xABC, 1, 777)
        + w.event(UserMarker(4, None, "next"))
        + w.end()
    )
    items = read_events(data)
    assert TaskCreate(3, None, 0xABC, 1, 777) in items
    assert UserMarker(4, None, "next") in items


def test_gc_stats_from_before_the_balanced_field() -> None:
    types = [EventType(53, 50, "GC statistics")]
    payload = struct.pack(">IHQQQIQQ", 0, 1, 2, 3, 4, 5, 6, 7)
    data = EventLogWriter(types).header() + fmt.EVENT_HEAD.pack(53, 9) + payload + fmt.DATA_END
    assert GCStatsGHC(9, None, 0, 1, 2, 3, 4, 5, 6, 7, None) in read_events(data)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda h: h.replace(fmt.HEADER_END, b"hdrX"), "expected 'hdre'"),
        (lambda h: h.replace(fmt.DATA_BEGIN, b"datX"), "expected 'datb'"),
        (lambda h: h.replace(fmt.ET_END, b"ete\x01", 1), "expected 'ete"),
        (lambda h: h.replace(fmt.ET_BEGIN, b"etX\x00", 1), "expected an event type"),
    ],
)
def test_malformed_headers(mangle: object, message: str) -> None:
    header = EventLogWriter(SMALL_TYPES).header()
    bad = mangle(header)  # type: ignore[operator]
    with pytest.raises(FormatError, match=message):
        read_events(bad)


def test_duplicate_declaration_is_an_error() -> None:
    et = EventType.of(UserMarker)
    from lpm.eventlog.writer import encode_header

    header = encode_header([et]).replace(fmt.HET_END, encode_header([et])[8:-12] + fmt.HET_END)
    with pytest.raises(FormatError, match="declared twice"):
        read_events(header)


def test_block_marker_with_a_wrong_declared_size() -> None:
    header = EventLogWriter([EventType(18, 10, "Block marker")]).header()
    with pytest.raises(FormatError, match="block marker declared with size 10"):
        read_events(header)


def test_feed_after_close_is_refused() -> None:
    reader = EventLogReader()
    reader.close()
    with pytest.raises(RuntimeError):
        reader.feed(b"more")
