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
from lpm.eventlog.writer import EventLogWriter
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


def _forwarded(data: bytes, step: int) -> tuple[bytes, Source]:
    """What a source forwards of ``data`` fed ``step`` bytes at a time."""
    source = Source(1, "ghc", "fifo")
    out: List[bytes] = []
    for i in range(0, len(data), step):
        for chunk in source.feed(data[i : i + step]):
            out.append((chunk.header or b"") + chunk.raw)
    for chunk in source.close():
        out.append((chunk.header or b"") + chunk.raw)
    return b"".join(out), source


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_secrets_a_ghc_runtime_writes_are_hidden_in_place(step: int) -> None:
    """A GHC runtime writes argv and the environment unredacted; the server
    hides their secret values byte for byte, so every event and block keeps
    its size and the stream stays valid; the state says <redacted>."""
    args = ("prog", "--password=hunter2-argv", "--token", "next-arg-secret", "--jobs", "4",
            "postgres://app:url-secret@db/x")
    env = ("HOME=/root", "API_TOKEN=env-secret-value", "ALREADY_SECRET=<redacted>", "PWD=/work", "NOEQUALS")
    w = EventLogWriter()
    data = w.header() + w.block(0, [ev.ProgramArgs(5, None, 0, args), ev.ProgramEnv(6, None, 0, env),
                                    ev.UserMarker(7, None, "after")]) + w.end()
    forwarded, source = _forwarded(data, step)
    assert len(forwarded) == len(data)
    for secret in (b"hunter2-argv", b"next-arg-secret", b"url-secret", b"env-secret-value"):
        assert secret in data and secret not in forwarded
    events = [e for e in read_events(forwarded) if isinstance(e, ev.Event)]
    assert [type(e) for e in events] == [ev.EventBlock, ev.ProgramArgs, ev.ProgramEnv, ev.UserMarker]
    assert events[1].args == ("prog", "--password=" + "*" * 12, "--token", "*" * 15, "--jobs", "4",  # type: ignore[attr-defined]
                              "postgres://app:" + "*" * 10 + "@db/x")
    assert events[2].env == ("HOME=/root", "API_TOKEN=" + "*" * 16, "ALREADY_SECRET=<redacted>",  # type: ignore[attr-defined]
                             "PWD=/work", "NOEQUALS")
    assert events[3].marker == "after"  # type: ignore[attr-defined]
    program = source.state.snapshot()["program"]
    assert program["args"][1] == "--password=<redacted>" and "API_TOKEN=<redacted>" in program["env"]
