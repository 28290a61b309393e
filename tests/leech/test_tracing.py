"""Call tracing (issue 9): every call and return, exactly, in every thread;
switched on and off with the program running.  Both leeches, every Python
version CI runs (a profile function before 3.12, sys.monitoring after)."""

from __future__ import annotations

import time
from pathlib import Path

from lpm.eventlog import events as ev

from .helpers import PATIENCE, FifoReader, Stream, decode, finish, recorded, spawn, wait_for_fifo
from .test_control import send, wait_until

Step = tuple[str, str]  # ("call" or "return", function name)


def threads_steps(stream: Stream) -> dict[str, list[Step]]:
    """Each thread's calls, returns and markers, by thread name, in order;
    names from the whole stream (a tracer's number may be used in one
    thread's block before the block that declares it)."""
    names = {e.code: e.name for e in stream.of_type(ev.PyCode)}  # type: ignore[attr-defined]
    labels = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]
    steps: dict[int, list[Step]] = {}
    thread = None
    for e in stream.events:
        if isinstance(e, ev.PyBlockInfo):
            thread = e.thread
        elif isinstance(e, ev.EventBlock):
            thread = None
        elif isinstance(e, (ev.PyCall, ev.PyReturn)):
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
    go_b, go_c = tmp_path / "go-b", tmp_path / "go-c"
    proc = spawn("trace_toggle.py", [str(go_b), str(go_c)], tmp_path, implementation,
                 run_options=["--sample-rate", "0"])
    fifo = wait_for_fifo(tmp_path, proc)
    reader = FifoReader(fifo)
    reader.start()

    def setting(value: str) -> bool:
        events = decode(bytes(reader.data)).of_type(ev.PySetting)
        return any((e.key, e.value) == ("lpm.trace", value) for e in events)  # type: ignore[attr-defined]

    def marked(name: str) -> bool:
        return any(e.marker == name for e in decode(bytes(reader.data)).of_type(ev.UserMarker))  # type: ignore[attr-defined]

    wait_until(reader, lambda _: marked("a done"), "phase a")
    send(fifo, "trace on")
    wait_until(reader, lambda _: setting("on"), "tracing on")
    go_b.touch()
    wait_until(reader, lambda _: marked("b done"), "phase b")
    send(fifo, "trace off")
    wait_until(reader, lambda _: setting("off"), "tracing off")
    go_c.touch()
    code, _, err = finish(proc)
    reader.join(PATIENCE)
    assert code == 0, err
    stream = decode(bytes(reader.data))
    assert stream.complete
    calls = [s for steps in threads_steps(stream).values() for s in steps if s[1].startswith("phase_")]
    assert calls == [("call", "phase_b"), ("return", "phase_b")] * 100
