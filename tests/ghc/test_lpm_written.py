"""Eventlogs that lpm writes, read by ghc-events; GHC's logs re-encoded by lpm.

A recording of a Python program must be a valid eventlog for GHC's own
tools: the ghc-events library reads it without error, counts what lpm wrote,
and the ``ghc-events show`` command prints it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from lpm.eventlog import EVENT_TYPES, DataEnd, EndOfStream, Event, EventLogWriter, Header, Skipped, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.format import BLOCK_MARKER_ID, GLOBAL_CAP, LPM_ID_FIRST, LPM_ID_LAST
from lpm.eventlog.layout import Value
from lpm.eventlog.sample import sample_eventlog

from . import peers

#: Field values ghc-events needs to be meaningful rather than arbitrary.
FIELD_OVERRIDES: Dict[Tuple[str, str], Value] = {
    # GHC writes an IPE's closure description as the closure type in decimal,
    # and ghc-events 0.17 parses it as a number: anything else is an error.
    ("InfoTableProv", "closure_desc"): "21",
    # ghc-events maps these codes to constructors; keep them to known ones.
    ("HeapProfBegin", "breakdown"): 7,
    ("StopThread", "status"): ev.THREAD_FINISHED,
}

#: A binary payload `ghc-events show` can print: it turns unprintable Latin-1
#: bytes into '.' and then decodes UTF-8, so bytes 0x80..0x9f (C1 controls)
#: inside a UTF-8 sequence, or stray bytes >= 0x80, make it fail.
SHOWABLE_BYTES = bytes(range(128)) + "é".encode()


def field_value(cls: type[Event], name: str, code: str) -> Value:
    override = FIELD_OVERRIDES.get((cls.__name__, name))
    if override is not None:
        return override
    if code in "BH":
        return 7
    if code == "I":
        return 70_000 + cls.ID
    if code == "Q":
        return (1 << 40) + cls.ID
    if code == "q":
        return -(cls.ID + 1)
    if code == "d":
        return cls.ID + 0.25
    if code in "st":
        return f"{cls.__name__} héllo ✓"
    if code == "y":
        return SHOWABLE_BYTES
    if code == "S":
        return ("a b", "ü ✓", "")
    if code == "a":
        return (1, 2, 3)
    if code == "i":
        return (4, 5, 6, 7)
    raise AssertionError(f"{cls.__name__}.{name}: no value for field code {code!r}")


def every_type_events() -> List[Event]:
    """Events of every registered type but the block marker, 1 to 3 of each."""
    classes = [cls for type_id, cls in sorted(EVENT_TYPES.items()) if type_id != BLOCK_MARKER_ID]
    events: List[Event] = []
    ts = 1000
    for k, cls in enumerate(classes):
        values = [field_value(cls, name, code) for name, code in zip(cls.FIELDS, cls.LAYOUT.codes)]
        for _ in range(1 + k % 3):
            events.append(cls(ts, None, *values))
            ts += 1000
    return events


def every_type_eventlog(events: List[Event]) -> bytes:
    """Blocks of 25 events for cap 0, cap 1 and the global buffer in turn; the
    last events outside any block."""
    w = EventLogWriter()
    parts = [w.header()]
    chunks = [events[i : i + 25] for i in range(0, len(events), 25)]
    caps = [0, 1, GLOBAL_CAP]
    for n, chunk in enumerate(chunks[:-1]):
        parts.append(w.block(caps[n % len(caps)], chunk))
    parts += [w.event(e) for e in chunks[-1]]
    parts.append(w.end())
    return b"".join(parts)


def expected_counts(events: List[Event]) -> Dict[str, int]:
    return dict(Counter(peers.ghc_events_name(e.ID) for e in events))


def test_every_type_is_read_by_ghc_events(checker: Callable[[Path], peers.Counts], tmp_path: Path) -> None:
    events = every_type_events()
    path = tmp_path / "every-type.eventlog"
    path.write_bytes(every_type_eventlog(events))
    theirs = checker(path)
    assert theirs.header_types == len(EVENT_TYPES)
    want = expected_counts(events)
    assert theirs.by_name == want
    # lpm's own events are UnknownEvent to ghc-events, the GHC ones have names.
    own = {type_id for type_id in EVENT_TYPES if LPM_ID_FIRST <= type_id <= LPM_ID_LAST}
    assert own and all(f"Unknown:{type_id}" in theirs.by_name for type_id in own)
    ours, end = peers.lpm_fast_counts(path.read_bytes())
    assert end.complete
    assert ours == theirs


def test_every_type_is_shown_by_ghc_events(ghc_events_command: str, tmp_path: Path) -> None:
    events = every_type_events()
    path = tmp_path / "every-type.eventlog"
    path.write_bytes(every_type_eventlog(events))
    proc = peers.ghc_events_show(ghc_events_command, path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    lines = peers.show_lines(proc.stdout.decode("utf-8"), after_events_heading=True)
    assert sum(lines.values()) == len(events)
    # ghc-events prints an event it has no parser for by its header description.
    own = [e for e in events if LPM_ID_FIRST <= e.ID <= LPM_ID_LAST]
    assert sum(n for (_, _, text), n in lines.items() if text.startswith("lpm: ")) == len(own)
    # Events in cap blocks carry their cap; global-buffer and unblocked ones none.
    assert {cap for _, cap, _ in lines} == {0, 1, None}


def test_sample_eventlog_is_read_by_ghc_events(
    checker: Callable[[Path], peers.Counts], ghc_events_command: str, tmp_path: Path
) -> None:
    data = sample_eventlog()
    path = tmp_path / "sample.eventlog"
    path.write_bytes(data)
    theirs = checker(path)
    ours, end = peers.lpm_fast_counts(data)
    assert end.complete
    assert ours == theirs
    assert any(name.startswith("Unknown:") for name in theirs.by_name)
    proc = peers.ghc_events_show(ghc_events_command, path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")


def reencode(data: bytes) -> bytes:
    """Decode ``data`` with lpm and encode every item again, declaring in the
    header exactly the types the original header declared."""
    out: List[bytes] = []
    writer: EventLogWriter | None = None
    for item in read_events(data):
        if isinstance(item, Header):
            writer = EventLogWriter(item.types.values())
            out.append(writer.header())
        elif isinstance(item, Event):
            assert writer is not None
            out.append(writer.event(item))
        elif isinstance(item, DataEnd):
            assert writer is not None
            out.append(writer.end())
        else:
            assert not isinstance(item, Skipped), f"bytes outside the eventlog: {item}"
    return b"".join(out)


@pytest.mark.parametrize("name", peers.ALL_LOGS)
def test_reencoded_ghc_log_is_identical(request: pytest.FixtureRequest, name: str) -> None:
    data = peers.log_path(request, name).read_bytes()
    again = reencode(data)
    # A log cut short re-encodes to its events; a partial last event is lost.
    end = read_events(data)[-1]
    assert isinstance(end, EndOfStream)
    expect = data[: len(data) - end.pending]
    if again != expect:
        at = next((i for i, (a, b) in enumerate(zip(again, expect)) if a != b), min(len(again), len(expect)))
        pytest.fail(f"re-encoded {len(again)} bytes, original {len(expect)}; first difference at byte {at}: "
                    f"{again[at:at + 16].hex()} vs {expect[at:at + 16].hex()}")


def test_stop_statuses_are_shown_alike(ghc_events_command: str, tmp_path: Path) -> None:
    """ghc-events picks its STOP_THREAD table from the header: one that declares
    USER_MARKER (58) and HACK_BUG_T9003 (59), as lpm's does, selects the table
    of GHC >= 7.8.3; without 59 status 20 would print as "No stop thread status".
    The statuses both tools name alike print the same."""
    w = EventLogWriter()
    assert {ev.UserMarker.ID, ev.HackBugT9003.ID} <= set(w.types)
    events: List[Event] = [ev.StopThread(10 + s, None, 1, s, 42 if s == 8 else 0) for s in sorted(ev.STOP_STATUS)]
    path = tmp_path / "stop.eventlog"
    path.write_bytes(w.header() + w.block(0, events) + w.end())
    proc = peers.ghc_events_show(ghc_events_command, path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    lines = peers.show_lines(proc.stdout.decode("utf-8"), after_events_heading=True)
    differ = peers.GHC_EVENTS_STOP_STATUS_DIFFERS
    alike = [e for e in events if isinstance(e, ev.StopThread) and e.status not in differ]
    assert ev.StopThread(30, None, 1, 20, 0) in alike
    assert Counter({line: n for line, n in lines.items() if line[0] in {e.ts for e in alike}}) == Counter(
        (e.ts, 0, e.describe()) for e in alike
    )
