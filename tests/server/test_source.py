"""The server's fast path (runs framed, decoded only where the state needs it)
gives exactly the state and the bytes the event-by-event path gives."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from lpm.eventlog import Header, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.sample import sample_eventlog
from lpm.server.source import Source
from lpm.server.state import Limits, SourceState

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from server_throughput import synthetic_stream  # noqa: E402


def one_by_one(data: bytes, limits: Limits) -> Dict[str, Any]:
    state = SourceState(limits)
    for item in read_events(data, strict=False):
        if isinstance(item, Header):
            state.new_header()
        elif isinstance(item, ev.Event):
            state.add(item)
    return state.snapshot()


def streams() -> List[tuple[str, bytes]]:
    out = [(f"sample-{seed}", sample_eventlog(seed=seed)) for seed in (1, 2, 9)]
    out.append(("synthetic", synthetic_stream(20_000)[0]))
    out += [(p.name, p.read_bytes()) for p in sorted(GOLDEN.glob("*.eventlog"))]
    out.append(("restarted", sample_eventlog(seed=4) + b"junk" + sample_eventlog(seed=5)[:-7]))
    return out


@pytest.mark.parametrize("name,data", streams(), ids=[n for n, _ in streams()])
@pytest.mark.parametrize("chunk", [1 << 16, 4096, 777, 1])
def test_fast_path_state_and_bytes_equal_the_slow_path(name: str, data: bytes, chunk: int) -> None:
    if chunk == 1 and len(data) > 200_000:
        pytest.skip("byte by byte is for the small streams")
    limits = Limits(recent=7, functions=50)  # small tables: eviction and pruning on both paths
    source = Source(1, name, "file", limits=limits)
    forwarded = bytearray()
    rng = random.Random(chunk)
    at = 0
    while at < len(data):
        size = rng.randint(1, chunk)
        for c in source.feed(data[at : at + size]):
            forwarded += (c.header or b"") + c.raw
        at += size
    for c in source.close():
        forwarded += (c.header or b"") + c.raw
    assert source.state.snapshot() == one_by_one(data, limits)
    # What is forwarded decodes to the same events as the input.
    ours = [e for e in read_events(bytes(forwarded), strict=False) if isinstance(e, ev.Event)]
    theirs = [e for e in read_events(data, strict=False) if isinstance(e, ev.Event)]
    assert ours == theirs
