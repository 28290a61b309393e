"""Events cut into datagrams (lpm.server.datagrams) and stacks merged for
flame graphs (lpm.server.flame)."""

from __future__ import annotations

from typing import List

from lpm.eventlog import events as ev
from lpm.eventlog import read_events
from lpm.eventlog.writer import EventLogWriter
from lpm.protocol.frames import Frame, FrameDecoder
from lpm.server.datagrams import EventPacker, Piece
from lpm.server.flame import Stacks


def frames(pieces: List[Piece]) -> List[Frame]:
    out = []
    for piece in pieces:
        decoder = FrameDecoder()
        decoder.feed(piece.frame)
        frame = decoder.next_frame()
        assert frame is not None and decoder.buffered == 0, "one whole frame per piece"
        out.append(frame)
    return out


def test_blocks_are_cut_into_pieces_that_each_decode_alone_with_their_capability() -> None:
    w = EventLogWriter()
    markers = [ev.UserMarker(ts=i, cap=None, marker=f"marker {i:04}") for i in range(400)]
    big = ev.UserMessage(ts=500, cap=None, message="x" * 3000)
    header = w.header()
    body = w.block(3, markers[:250]) + w.block(7, markers[250:] + [big]) + w.end()
    packer = EventPacker(1109)
    packer.header(1, header)
    pieces = packer.pack(1, body)
    assert all(len(p.frame) <= 1109 for p in pieces if not p.reliable)
    assert sum(p.items for p in pieces) == 400 + 1 + 2, "every event and both original block markers, once"
    reliable = [f for p, f in zip(pieces, frames(pieces)) if p.reliable]
    assert [f.payload for f in reliable][-1] == b"\xff\xff", "the end goes reliably"
    assert len(reliable) == 2, "and the event too big for a datagram"
    # Drop every other datagram: the rest still decode, on the right capability.
    kept = b"".join(f.payload for i, f in enumerate(frames(pieces)) if i % 2 == 0 or pieces[i].reliable)
    got = [e for e in read_events(header + kept) if isinstance(e, (ev.UserMarker, ev.UserMessage))]
    assert got and all(e.cap == (3 if e.ts < 250 else 7) for e in got)
    numbers = [int(e.marker.split()[1]) for e in got if isinstance(e, ev.UserMarker)]
    assert numbers == sorted(numbers) and len(numbers) < 400


def test_a_filtered_stream_without_blocks_gets_no_markers() -> None:
    w = EventLogWriter()
    header = w.header()
    body = b"".join(w.event(ev.UserMarker(ts=i, cap=None, marker="m")) for i in range(100))
    packer = EventPacker(1200)
    packer.header(2, header)
    pieces = packer.pack(2, body)
    assert sum(p.items for p in pieces) == 100
    decoded = [e for f in frames(pieces) for e in read_events(header + f.payload) if isinstance(e, ev.Event)]
    assert len(decoded) == 100 and not any(isinstance(e, ev.EventBlock) for e in decoded)


def test_events_before_a_header_and_garbage_are_not_sent() -> None:
    packer = EventPacker(1200)
    assert packer.pack(9, b"\x00\x13garbage") == []
    packer.header(9, EventLogWriter().header())
    assert packer.pack(9, b"\x7f\x7f" + b"\x00" * 40) == [], "undeclared ids: skipped by the lenient reader"


def test_flame_trees_of_the_whole_run_and_of_the_last_seconds() -> None:
    stacks = Stacks()
    a, b, c = ("main", "m.py", 1), ("work", "m.py", 5), ("idle", "m.py", 9)
    for second in range(100):
        stacks.add(second * 1_000_000_000, (a, b) if second < 90 else (a, c))
    whole = stacks.tree(0)
    assert whole["value"] == 100 and whole["children"][0]["name"] == "main"
    assert {ch["name"]: ch["value"] for ch in whole["children"][0]["children"]} == {"work": 90, "idle": 10}
    recent = stacks.tree(10)
    assert recent["value"] == 10 and [ch["name"] for ch in recent["children"][0]["children"]] == ["idle"]
    assert stacks.tree(1000)["value"] == 60, "at most the window"


def test_flame_trees_are_bounded() -> None:
    stacks = Stacks(max_nodes=50)
    for i in range(100):
        stacks.add(0, (("root", "", 0), (f"leaf{i}", "", i)))
    # The root, "root" and 48 leaves; the other 52 samples stop at "root".
    assert stacks.nodes == 50 and stacks.truncated == 52
    tree = stacks.tree(0, max_nodes=10)
    assert tree["children"][0]["value"] == 100
    leaves = tree["children"][0]["children"]
    assert len(leaves) == 9 and leaves[-1] == {"name": "(other)", "file": "", "line": 0, "value": 40, "children": []}
    assert sum(leaf["value"] for leaf in leaves) == 48


def test_stream_updates_carry_the_busiest_threads_only() -> None:
    from lpm.server.hub import Hub
    from lpm.server.web import STREAM_THREADS, _snapshot

    w = EventLogWriter()
    events: List[ev.Event] = []
    for n in range(250):
        events.append(ev.CreateThread(n, None, n))
        events.append(ev.PyThreadCpu(n, None, n, n * 1000))
    hub = Hub()
    source = hub.add_source("many", "file")
    assert source is not None
    hub.source_data(source, w.eventlog(events))
    full = _snapshot(source)["state"]
    trimmed = _snapshot(source, STREAM_THREADS)["state"]
    assert len(full["threads"]) == full["threads_total"] == trimmed["threads_total"] == 250
    assert [t["id"] for t in trimmed["threads"]] == list(range(250 - STREAM_THREADS, 250)), "the busiest, by id"
