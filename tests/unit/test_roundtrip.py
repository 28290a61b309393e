"""Encode, decode, compare: every registered type, any chunking."""

from __future__ import annotations

import random
from typing import Sequence

import pytest

from lpm.eventlog import (
    EVENT_TYPES,
    DataEnd,
    EndOfStream,
    Event,
    EventBlock,
    EventLogReader,
    EventLogWriter,
    EventType,
    Header,
    UnknownEvent,
    read_events,
)

from .gen import random_event, random_events


def _events_of(items: Sequence[object]) -> list[Event]:
    return [i for i in items if isinstance(i, Event) and not isinstance(i, EventBlock)]


def feed_in_chunks(data: bytes, rnd: random.Random, max_chunk: int) -> list[object]:
    reader = EventLogReader()
    items: list[object] = []
    pos = 0
    while pos < len(data):
        n = rnd.randint(1, max_chunk)
        reader.feed(data[pos : pos + n])
        pos += n
        items.extend(reader.events())
    reader.close()
    items.extend(reader.events())
    return items


ALL_BUT_MARKERS = sorted((c for c in EVENT_TYPES.values() if c is not EventBlock), key=lambda c: c.ID)


@pytest.mark.parametrize("cls", ALL_BUT_MARKERS, ids=lambda c: c.__name__)
def test_every_type_round_trips(cls: type[Event]) -> None:
    rnd = random.Random(cls.ID)
    w = EventLogWriter()
    events = [random_event(cls, rnd, ts=i, cap=3) for i in range(20)]
    data = w.eventlog(events, cap=3)
    items = read_events(data)
    assert [i for i in items if isinstance(i, cls)] == events
    assert isinstance(items[-1], EndOfStream) and items[-1].complete


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_in_random_chunkings(seed: int) -> None:
    rnd = random.Random(seed)
    w = EventLogWriter()
    blocks = []
    expected: list[Event] = []
    for b in range(rnd.randint(1, 6)):
        cap = rnd.choice([0, 1, 7, 0xFFFF])
        evs = random_events(rnd, rnd.randint(0, 120), cap=None if cap == 0xFFFF else cap)
        blocks.append(w.block(cap, evs))
        expected += evs
    data = w.header() + b"".join(blocks) + w.end()
    whole = read_events(data)
    assert _events_of(whole) == expected
    for max_chunk in (1, 3, 17, 4096):
        assert feed_in_chunks(data, rnd, max_chunk) == whole


def test_events_outside_blocks_have_no_cap() -> None:
    w = EventLogWriter()
    evs = random_events(random.Random(5), 30, cap=None)
    items = read_events(w.eventlog(evs))
    assert _events_of(items) == evs


def test_block_cap_ends_with_its_block() -> None:
    from lpm.eventlog.events import UserMarker

    w = EventLogWriter()
    inside = [UserMarker(1, 4, "in")]
    after = UserMarker(2, None, "after")
    data = w.header() + w.block(4, inside) + w.event(after) + w.end()
    got = _events_of(read_events(data))
    assert got == [inside[0], after]


def test_unknown_declared_types_are_skipped_by_size_and_kept_raw() -> None:
    from lpm.eventlog.events import UserMarker

    fixed = EventType(0x7000, 5, "someone else's fixed event")
    variable = EventType(0x7001, 0xFFFF, "someone else's variable event")
    w = EventLogWriter([EventType.of(UserMarker), fixed, variable])
    evs: list[Event] = [
        UnknownEvent(1, None, 0x7000, b"12345"),
        UserMarker(2, None, "between"),
        UnknownEvent(3, None, 0x7001, b"any length at all"),
        UserMarker(4, None, "after"),
    ]
    items = read_events(w.eventlog(evs))
    header = items[0]
    assert isinstance(header, Header) and header.types[0x7000] == fixed
    assert _events_of(items) == evs
    assert isinstance(items[-2], DataEnd)


def test_writer_reproduces_bytes_from_decoded_events() -> None:
    rnd = random.Random(9)
    w = EventLogWriter()
    data = w.header() + w.block(2, random_events(rnd, 300, cap=2)) + w.end()
    items = read_events(data)
    header = items[0]
    assert isinstance(header, Header)
    again = EventLogWriter(header.types.values())
    body = b"".join(again.event(i) for i in items if isinstance(i, Event))
    assert again.header() + body + again.end() == data


def test_raw_events_carry_the_exact_bytes_and_offsets() -> None:
    from lpm.eventlog import NEED_DATA, RawEvent

    rnd = random.Random(11)
    w = EventLogWriter()
    evs = random_events(rnd, 150, cap=6)
    header = w.header()
    data = header + w.block(6, evs) + w.end()
    reader = EventLogReader()
    reader.feed(data)
    reader.close()
    raws: list[RawEvent] = []
    while (item := reader.next_raw()) is not NEED_DATA:
        if isinstance(item, RawEvent):
            raws.append(item)
    assert raws[0].type_id == 18
    assert b"".join(r.raw for r in raws) == data[len(header) : -2]
    for raw, ev in zip(raws[1:], evs):
        assert raw.raw == w.event(ev)
        assert data[raw.offset : raw.offset + len(raw.raw)] == raw.raw
        assert (raw.type_id, raw.ts, raw.cap) == (ev.ID, ev.ts, 6)
