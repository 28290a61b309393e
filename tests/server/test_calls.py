"""Traced calls and tracked allocations in the server's state (issue 9):
exact call counts, times and call trees, from hand-made streams and from a
real traced program; a real program's allocations per thread and site."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from lpm.client.model import Snapshot
from lpm.eventlog import events as ev
from lpm.eventlog import read_events
from lpm.eventlog.writer import EventLogWriter
from lpm.server.calls import CallTree
from lpm.server.source import Source
from lpm.views.export import chrome_trace
from lpm.views.top import TopView

from ..leech.conftest import native_available
from ..leech.helpers import recorded
from .wire import PATIENCE, python_program, start_server, wait_for

T = 1 << 31  # the tracer's first number


def functions(snapshot: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {f["name"]: f for f in snapshot["calls"]["functions"]}


def test_calls_times_and_the_tree_are_exact() -> None:
    w = EventLogWriter()
    declare = [ev.PyCode(0, None, T + 1, 10, "outer", "app.py"), ev.PyCode(0, None, T + 2, 20, "inner", "app.py"),
               ev.PyCode(0, None, T + 3, 0, "builtins.len", "<built-in>")]
    # Thread 1: outer [100, 1000) calls inner twice ([200, 300), [400, 700)) and len [800, 850).
    one = [ev.PyBlockInfo(0, None, 1, 0), *declare,
           ev.PyCall(100, None, T + 1), ev.PyCall(200, None, T + 2), ev.PyReturn(300, None, T + 2),
           ev.PyCall(400, None, T + 2), ev.PyReturn(700, None, T + 2), ev.PyCall(800, None, T + 3),
           ev.PyReturn(850, None, T + 3), ev.PyReturn(1000, None, T + 1)]
    # Thread 2: a return without its call (tracing began inside), then inner recursing in itself.
    two = [ev.PyBlockInfo(0, None, 2, 0), ev.PyReturn(50, None, T + 1),
           ev.PyCall(100, None, T + 2), ev.PyCall(150, None, T + 2), ev.PyReturn(250, None, T + 2),
           ev.PyReturn(400, None, T + 2)]
    data = w.header() + w.block(0, one) + w.block(1, two) + w.end()
    for step in (1, 5, len(data)):  # fed whole and in small pieces: the same state
        source = Source(1, "app", "leech")
        for i in range(0, len(data), step):
            source.feed(data[i:i + step])
        source.close()
        snap = source.state.snapshot()
        calls = snap["calls"]
        assert calls["calls"] == 6 and calls["unmatched_returns"] == 1 and calls["open"] == 0
        f = functions(snap)
        assert f["outer"] == {"name": "outer", "file": "app.py", "line": 10, "calls": 1, "total_ns": 900,
                              "own_ns": 900 - 100 - 300 - 50}
        # inner: thread 1's two calls (100 + 300), thread 2's outer call (300; its inner 100 not again).
        assert (f["inner"]["calls"], f["inner"]["total_ns"], f["inner"]["own_ns"]) == (4, 700, 100 + 300 + 200 + 100)
        assert (f["builtins.len"]["calls"], f["builtins.len"]["total_ns"]) == (1, 50)
        tree = source.state.call_tree()
        assert tree["calls"] == 2 and tree["total_ns"] == 900 + 300
        by_name = {c["name"]: c for c in tree["children"]}
        assert sorted(c["name"] for c in by_name["outer"]["children"]) == ["builtins.len", "inner"]
        inner_of_outer = next(c for c in by_name["outer"]["children"] if c["name"] == "inner")
        assert (inner_of_outer["calls"], inner_of_outer["total_ns"]) == (2, 400)
        assert [c["name"] for c in by_name["inner"]["children"]] == ["inner"]
        assert by_name["inner"]["children"][0]["calls"] == 1


def test_lost_returns_close_the_calls_above_and_limits_hold() -> None:
    hits: List[str] = []
    tree = CallTree(functions=2, nodes=3, on_limit=lambda name, text: hits.append(name))
    tree.call(1, T + 1, 0)
    tree.call(1, T + 2, 10)
    tree.call(1, T + 3, 20)  # a third function: over the function limit when it closes
    tree.ret(1, T + 1, 100)  # the returns of 2 and 3 were lost: both close at 100
    assert tree.calls == 3 and tree.calls_over_limit >= 1 and "traced-functions" in hits
    tree.call(2, T + 1, 0)
    tree.call(2, T + 4, 5)  # a new path past the node limit: counted on its caller's node
    tree.ret(2, T + 4, 6)
    tree.ret(2, T + 1, 9)
    assert "call-nodes" in hits
    assert len(tree.node_key) <= 3


def test_a_real_traced_program_in_the_server_state(tmp_path: Path) -> None:
    data = recorded("call_graph.py", [], tmp_path, "native", run_options=["--trace", "--sample-rate", "0"])
    source = Source(1, "call_graph", "leech")
    source.feed(data)
    source.close()
    f = {x["name"]: x for x in source.state.traced_functions(100_000)}
    # main: top(2); workers: top(3), top(4).
    assert f["top"]["calls"] == 3 and f["middle"]["calls"] == 3
    assert f["leaf"]["calls"] == 2 + 3 + 4 and f["builtins.len"]["calls"] >= 3
    assert f["top"]["total_ns"] >= f["middle"]["total_ns"] >= f["leaf"]["total_ns"] > 0
    leaves = _descend(source.state.call_tree(100_000), ["top", "middle", "leaf"])
    assert sum(n["calls"] for n in leaves) == 9


def _descend(node: Dict[str, Any], path: List[str]) -> List[Dict[str, Any]]:
    """Nodes reached by ``path`` from ``node`` or any node below it."""
    found: List[Dict[str, Any]] = []
    if path and node["name"] == path[0]:
        here = [node]
        for name in path[1:]:
            here = [c for n in here for c in n["children"] if c["name"] == name]
        found += here
        return found
    for child in node["children"]:
        found += _descend(child, path)
    return found


def test_tracing_switched_from_the_client_and_the_tree_read_back(tmp_path: Path) -> None:
    """lpm client trace N on, calls N, state N, trace N off, against a real
    server watching a real program."""
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address = start_server(tmp_path, "--dir", str(lpm_dir))
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    cli = [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "--timeout", "20"]

    def run(*args: str) -> str:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=PATIENCE)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        wait_for(lambda: " leech " in run("sources"), "the program's source")
        assert "no traced calls" in run("calls", "1")
        assert "call tracing on sent" in run("trace", "1", "on")

        def sleeps() -> int:
            tree = json.loads(run("calls", "1", "--json", "--most", "100000"))
            return sum(n["calls"] for n in _descend(tree, ["time.sleep"]))

        wait_for(lambda: sleeps() >= 20, "time.sleep() calls in the traced tree")
        assert "traced calls" in run("state", "1")
        run("trace", "1", "off")
        wait_for(lambda: _settled(lambda: sleeps()), "tracing off: the count stops growing")
    finally:
        until.touch()
        program.wait(PATIENCE)
        server.terminate()
        server.wait(PATIENCE)


def _settled(count: Callable[[], int]) -> bool:
    first = count()
    time.sleep(0.3)
    return count() == first


def test_allocations_in_the_server_state(tmp_path: Path) -> None:
    """A real program tracked: per-thread totals and the allocating functions."""
    if not native_available():
        pytest.skip("the native leech is not built")
    data = recorded("alloc_known.py", [], tmp_path, "native", run_options=["--alloc", "--sample-rate", "0"])
    source = Source(1, "alloc_known", "leech")
    source.feed(data)
    source.close()
    snap = source.state.snapshot()
    labels = {t["id"]: t["label"] for t in snap["threads"]}
    totals = {labels[t["thread"]]: t for t in snap["allocations"]["threads"]}
    assert 100e6 <= totals["churner"]["allocated"] <= 101e6 and totals["churner"]["freed"] >= 100e6
    assert 20e6 <= totals["keeper"]["allocated"] <= 21e6 and totals["keeper"]["freed"] < 1e6
    sites = {s["name"]: s["bytes"] for s in snap["allocations"]["sites"]}
    assert 90e6 <= sites["churn"] <= 110e6
    assert snap["allocations"]["sampled_bytes"] >= sites["churn"]


def test_asyncio_tasks_in_the_server_state(tmp_path: Path) -> None:
    """A real asyncio program tracked: counts by fate, the finished tasks with
    their names, the loop's lag."""
    data = recorded("tasks_known.py", [], tmp_path, "native" if native_available() else "python",
                    run_options=["--asyncio", "--sample-rate", "0"])
    source = Source(1, "tasks_known", "leech")
    source.feed(data)
    source.close()
    aio = source.state.snapshot()["asyncio"]
    assert aio["failed"] == 1 and aio["cancelled"] == 1 and aio["done"] >= 6
    assert aio["created"] == aio["done"] + aio["failed"] + aio["cancelled"] + aio["open"]
    fates = {t["name"]: t["status"] for t in aio["recent"]}
    assert fates["boom"] == "failed" and fates["sleeper"] == "cancelled" and fates["worker-3"] == "done"
    assert aio["lag_ms_max"] >= 150
    # What top and the Chrome trace show of it.
    view = TopView()
    view.update(Snapshot.from_json({"source": 1, "name": "tasks_known", "info": {}, "state": source.state.snapshot()}))
    line = next(x for x in view.lines(200, 60) if x.startswith("asyncio"))
    assert "1 failed" in line and "1 cancelled" in line
    trace = json.loads(chrome_trace(read_events(data)))["traceEvents"]
    begun = {e["id"]: e["name"] for e in trace if e.get("cat") == "asyncio" and e["ph"] == "b"}
    ended = {e["id"]: e["args"]["status"] for e in trace if e.get("cat") == "asyncio" and e["ph"] == "e"}
    assert {begun[i]: ended[i] for i in begun if begun[i] in ("boom", "sleeper", "worker-0")} == {
        "boom": "failed", "sleeper": "cancelled", "worker-0": "done"}


def test_the_newest_allocation_totals_win_whatever_their_order() -> None:
    """A thread's last totals (its own block) may reach the server before the
    monitor's older periodic ones (another block)."""
    w = EventLogWriter()
    last = ev.PyAllocStats(200, None, 3, 20_000_000, 2000, 100, 1)
    older = ev.PyAllocStats(100, None, 3, 9_000_000, 900, 50, 1)
    data = (w.header() + w.block(0, [ev.PyBlockInfo(0, None, 3, 0), last])
            + w.block(1, [ev.PyBlockInfo(0, None, 1, 0), older]) + w.end())
    source = Source(1, "app", "leech")
    source.feed(data)
    source.close()
    [totals] = source.state.snapshot()["allocations"]["threads"]
    assert (totals["thread"], totals["allocated"], totals["allocations"]) == (3, 20_000_000, 2000)
