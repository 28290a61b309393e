"""Call tracing (issue 9): every call and return, exactly, in every thread;
switched on and off with the program running.  Both leeches, every Python
version CI runs (a profile function before 3.12, sys.monitoring after)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lpm.eventlog import Event
from lpm.eventlog import events as ev
from lpm.eventlog import read_events
from lpm.views.export import chrome_trace

from .helpers import Stream, decode, recorded
from .live import on_in_phase_b

Step = tuple[str, str]  # ("call" or "return", function name)


def by_block(stream: Stream) -> Iterator[tuple[int | None, Event]]:
    """Each event with the thread whose block holds it (None outside one)."""
    thread = None
    for e in stream.events:
        if isinstance(e, ev.PyBlockInfo):
            thread = e.thread
        elif isinstance(e, ev.EventBlock):
            thread = None
        yield thread, e


def threads_steps(stream: Stream) -> dict[str, list[Step]]:
    """Each thread's calls, returns and markers, by thread name, in order;
    names from the whole stream (a tracer's number may be used in one
    thread's block before the block that declares it)."""
    names = {e.code: e.name for e in stream.of_type(ev.PyCode)}  # type: ignore[attr-defined]
    labels = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]
    steps: dict[int, list[Step]] = {}
    for thread, e in by_block(stream):
        if isinstance(e, (ev.PyCall, ev.PyReturn)):
            assert thread is not None and e.code >= 1 << 31, e
            assert e.code in names, f"code {e.code} is never declared"
            steps.setdefault(thread, []).append(("call" if isinstance(e, ev.PyCall) else "return", names[e.code]))
        elif isinstance(e, ev.UserMarker) and thread is not None:
            steps.setdefault(thread, []).append(("marker", e.marker))
    return {labels.get(n, str(n)): s for n, s in steps.items()}


def between(steps: list[Step], start: str, end: str, names: set[str]) -> list[Step]:
    i, j = steps.index(("marker", start)), steps.index(("marker", end))
    return [s for s in steps[i + 1 : j] if s[1] in names]


def expected(n: int) -> list[Step]:
    leaves = [s for _ in range(n) for s in (("call", "leaf"), ("return", "leaf"))]
    return [("call", "top"), ("call", "middle"), *leaves, ("return", "middle"),
            ("call", "builtins.len"), ("return", "builtins.len"), ("return", "top")]


def test_a_known_call_graph_is_traced_exactly_in_every_thread(tmp_path: Path, implementation: str) -> None:
    stream = decode(recorded("call_graph.py", [], tmp_path, implementation,
                             run_options=["--trace", "--sample-rate", "0"]))
    assert stream.complete
    stream.assert_balanced()
    by_thread = threads_steps(stream)
    names = {"top", "middle", "leaf", "builtins.len"}
    assert between(by_thread["MainThread"], "main start", "main end", names) == expected(2)
    for k in range(2):
        steps = by_thread[f"worker-{k}"]
        assert between(steps, f"worker-{k} start", f"worker-{k} end", names) == expected(k + 3)
    assert ("lpm.trace", "on") in {(e.key, e.value) for e in stream.of_type(ev.PySetting)}  # type: ignore[attr-defined]


def test_tracing_switched_on_and_off_while_the_program_runs(tmp_path: Path, implementation: str) -> None:
    stream = on_in_phase_b("trace_toggle.py", tmp_path, implementation, "trace")
    calls = [s for steps in threads_steps(stream).values() for s in steps if s[1].startswith("phase_")]
    assert calls == [("call", "phase_b"), ("return", "phase_b")] * 100


def test_the_chrome_trace_nests_each_call_in_its_caller(tmp_path: Path) -> None:
    """Perfetto's view of a traced run: one complete event per call, each
    inside its caller's on the same thread, between the thread's markers."""
    data = recorded("call_graph.py", [], tmp_path, "native", run_options=["--trace", "--sample-rate", "0"])
    trace = json.loads(chrome_trace(read_events(data)))["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    main = next(tid for tid, name in names.items() if name == "MainThread")
    marks = {e["name"]: e["ts"] for e in trace if e["ph"] == "i" and e["tid"] == main}
    slices = [e for e in trace if e.get("cat") == "call" and e["tid"] == main
              and marks["main start"] <= e["ts"] <= marks["main end"]]

    def inside(outer: dict[str, float], name: str) -> list[dict[str, float]]:
        return [e for e in slices if e["name"] == name and outer["ts"] <= e["ts"]
                and e["ts"] + e["dur"] <= outer["ts"] + outer["dur"]]

    [top] = [e for e in slices if e["name"] == "top"]
    [middle] = inside(top, "middle")
    assert len(inside(middle, "leaf")) == 2 and len(inside(top, "leaf")) == 2
    [length] = inside(top, "builtins.len")
    assert length["ts"] >= middle["ts"] + middle["dur"], "len() is called after middle() returns"
    graph = {"top", "middle", "leaf", "builtins.len"}
    assert sorted(e["name"] for e in slices if e["name"] in graph) == ["builtins.len", "leaf", "leaf", "middle", "top"]


def test_markers_and_traced_calls_keep_their_order_in_time(tmp_path: Path, implementation: str) -> None:
    """A thread's events come out with their timestamps in the order they
    happened, calls and returns among markers a few hundred nanoseconds
    apart, for as long as the program runs: the native tracer reads its own
    clock (a line over the TSC), and every other event must then read it too."""
    data = recorded("marker_calls.py", [], tmp_path, implementation, run_options=["--trace", "--sample-rate", "0"])
    stream = decode(data)
    names = {e.code: e.name for e in stream.of_type(ev.PyCode)}  # type: ignore[attr-defined]
    main = next(e.thread for e in stream.of_type(ev.ThreadLabel) if e.label == "MainThread")  # type: ignore[attr-defined]
    times: list[tuple[int, str]] = []
    for thread, e in by_block(stream):
        if thread == main and isinstance(e, (ev.PyCall, ev.PyReturn, ev.UserMarker)):
            what = e.marker if isinstance(e, ev.UserMarker) else names[e.code]
            times.append((e.ts, what))
    steps = [what for _, what in times if what == "step"]
    assert len(steps) >= 2000 and len(steps) % 2 == 0, len(steps)  # a call and a return each
    backwards = [(a, b) for a, b in zip(times, times[1:]) if b[0] < a[0]]
    assert not backwards, f"{len(backwards)} of {len(times)} events are timed before the one before them: {backwards[:3]}"
