"""The server's figures over a run (lpm.server.history): bounded, spread over
the whole run, and what a state fed a real stream answers."""

from __future__ import annotations

from typing import List

import pytest

from lpm.eventlog import events as ev
from lpm.server.history import COUNTER_SERIES, POINTS, THREAD_SERIES, History, Series
from lpm.server.state import SourceState


def test_a_series_keeps_every_point_until_full() -> None:
    s = Series(capacity=10)
    for i in range(9):
        s.add(i, float(i * 2))
    assert s.points() == [[i, float(i * 2)] for i in range(9)]
    assert s.stride == 1


@pytest.mark.parametrize("n", [10, 11, 99, 1000, 12345])
def test_a_long_run_stays_bounded_and_spread_over_all_of_it(n: int) -> None:
    s = Series(capacity=10)
    for i in range(n):
        s.add(i, float(i))
    points = s.points()
    assert len(points) <= 10
    ts = [p[0] for p in points]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert ts[-1] == n - 1, "the newest event is always there"
    # Evenly spread: no gap between neighbours is more than twice the stride.
    assert all(b - a <= 2 * s.stride for a, b in zip(ts, ts[1:]))
    assert ts[0] < 2 * s.stride, "the start of the run is still there"
    # A gauge keeps its later value: each point is the value at its time.
    assert all(y == t for t, y in points)


def test_a_pause_series_keeps_the_longest() -> None:
    s = Series(max, capacity=4)
    pauses = [5, 1, 1, 9, 2, 2, 1, 1, 3, 8, 1, 1]
    for i, p in enumerate(pauses):
        s.add(i, p)
    # Every event is in some point, and each point is the longest of its events.
    assert max(y for _, y in s.points()) == 9
    assert sum(1 for _, y in s.points() if y == 8) == 1


def test_threads_counters_and_restarts() -> None:
    h = History()
    for t in range(THREAD_SERIES + 5):
        h.thread_cpu(1_000 + t, t, 0)
    for t in range(THREAD_SERIES + 5):
        h.thread_cpu(2_000_000_000 + t, t, 500_000_000)  # a quarter of a CPU
    out = h.json({7: "seven"})
    assert len(out["threads"]) == THREAD_SERIES
    # Past the cap a thread gets a series only with more CPU time than one
    # that has one: reporting in turn, they do not push each other out.
    assert {th["id"] for th in out["threads"]} == set(range(THREAD_SERIES))
    seven = next(th for th in out["threads"] if th["id"] == 7)
    assert seven["label"] == "seven"
    (t, rate), = seven["points"]
    assert t == 2_000_000_007 and rate == pytest.approx(0.25, rel=1e-6)
    # A busier newcomer takes the idlest one's place, an ended one goes first.
    h.thread_cpu(2_100_000_000, 99, 10**9)
    assert 99 in h.threads and len(h.threads) == THREAD_SERIES
    for number in [n for n in h.threads if n != 99]:
        h.thread_cpu(12_500_000_000, number, 600_000_000)
    h.thread_cpu(13_000_000_000, 98, 0)
    h.thread_cpu(13_000_000_001, 97, 0)
    assert 98 in h.threads and 99 not in h.threads, "99 stopped reporting 10 s ago: ended"
    assert 97 not in h.threads, "no more CPU than any other"
    for i in range(COUNTER_SERIES + 3):
        h.counter(13_000_000_002, f"c{i}", i)
    assert len(h.json({})["counters"]) == COUNTER_SERIES
    # The clock starting again: a new stream, a new history.
    h.heap_figures(5, {"rss": 1 << 20, "traced_current": 0})
    out = h.json({})
    assert h.restarts == 1 and out["threads"] == [] and out["heap"] == {"rss": [[5, 1 << 20]]}, out


def _stream() -> List[ev.Event]:
    out: List[ev.Event] = []
    for i in range(2000):
        t = i * 10_000_000  # 20 s, a heap figure every 10 ms
        out.append(ev.PyHeap(ts=t, cap=0, rss=(100 + i) << 20, allocated_blocks=1000 + i, traced_current=0,
                             traced_peak=0))
        out.append(ev.StartGC(ts=t + 1, cap=0))
        out.append(ev.EndGC(ts=t + 1 + (i % 7) * 1000, cap=0))
        out.append(ev.PyThreadCpu(ts=t + 2, cap=0, thread=1, cpu_ns=i * 5_000_000))
        out.append(ev.PyCounter(ts=t + 3, cap=0, name="queue", value=float(i % 50)))
    return out


def test_the_state_keeps_the_whole_run_for_a_page_opened_at_its_end() -> None:
    state = SourceState()
    for e in _stream():
        state.add(e)
    out = state.history_json()
    rss = out["heap"]["rss"]
    assert POINTS // 2 <= len(rss) <= POINTS
    assert rss[0][0] < 200_000_000 and rss[-1] == [19_990_000_000, (100 + 1999) << 20]
    assert "traced_current" not in out["heap"], "tracemalloc off: no line of zeros"
    assert max(p for _, p in out["gc"]) == pytest.approx(6e-6)
    (thread,) = out["threads"]
    assert all(r == pytest.approx(0.5) for _, r in thread["points"]), "5 ms of CPU every 10 ms"
    assert len(out["counters"]["queue"]) <= POINTS and out["time_ns"] == state.time_ns
