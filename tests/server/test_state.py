"""The live state of one source (lpm/server/state.py), as a profiler's user sees it.

1. Python-leech-like streams built from event objects: threads, GC, heap,
   counters, markers and messages, spans, the hottest functions, redaction.
2. Memory bounds: small :class:`Limits`, many more items, every table capped
   and what it let go counted.
3. Loss accounting from blocks, block infos, sequence points and data loss.
4. Real GHC eventlogs (the golden one, and the ones the GHC peers write
   here), checked against the ghc-events checker's counts.
5. Bad input: malformed and unknown events are counted, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import pytest

from lpm.eventlog import EVENT_TYPES, Event, EventLogWriter, EventType, Header, read_events
from lpm.eventlog import events as ev
from lpm.eventlog import format as fmt
from lpm.eventlog.reader import Item
from lpm.eventlog.sample import sample_eventlog
from lpm.leech.redact import REDACTED, redact_argv
from lpm.server.source import FILE, Source
from lpm.server.state import Limits, SourceState

from ..ghc import peers

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FINISHED = ev.THREAD_FINISHED

Snapshot = Dict[str, Any]


def fed(events: Iterable[Event], limits: Optional[Limits] = None) -> SourceState:
    """A state after one header and ``events``."""
    state = SourceState(limits)
    state.new_header()
    for e in events:
        state.add(e)
    return state


def fed_items(items: Iterable[Union[Item, Event]], limits: Optional[Limits] = None) -> SourceState:
    """A state fed a decoded stream as the server feeds it: a header starts a stream."""
    state = SourceState(limits)
    for item in items:
        if isinstance(item, Header):
            state.new_header()
        elif isinstance(item, Event):
            state.add(item)
    return state


def decoded(items: Iterable[Union[Item, Event]]) -> List[Event]:
    return [item for item in items if isinstance(item, Event)]


def json_roundtrip(snap: Snapshot) -> Snapshot:
    out = json.loads(json.dumps(snap))
    assert isinstance(out, dict)
    return out


def threads_by_id(snap: Snapshot) -> Dict[int, Dict[str, Any]]:
    return {t["id"]: t for t in snap["threads"]}


def functions_by_name(snap: Snapshot) -> Dict[str, Tuple[int, int]]:
    return {f["name"]: (f["own"], f["total"]) for f in snap["functions"]}


# == 1. Python-leech-like streams ================================================


def test_thread_created_labelled_and_finished() -> None:
    state = fed([
        ev.CreateThread(10, 0, 1),
        ev.ThreadLabel(11, 0, 1, "MainThread"),
        ev.PyThreadInfo(12, 0, 1, 4243),
        ev.CreateThread(20, 1, 2),
        ev.ThreadLabel(21, 1, 2, "worker-1"),
        ev.ThreadLabel(22, 1, 2, "worker-1 renamed ✓"),
        ev.PyThreadInfo(23, 1, 2, 4244),
        ev.PyThreadCpu(50, 0, 1, 123_456),
        ev.PyThreadCpu(51, 1, 2, 7),
        ev.PyThreadCpu(52, 1, 2, 9_000),
        ev.StopThread(60, 1, 2, FINISHED, 0),
    ])
    threads = threads_by_id(state.snapshot())
    assert sorted(threads) == [1, 2]
    main, worker = threads[1], threads[2]
    assert main["label"] == "MainThread"
    assert main["native_id"] == 4243
    assert main["cpu_ns"] == 123_456
    assert main["created_ns"] == 10
    assert main["last_ns"] == 50
    assert main["status"] == "alive", "a Python thread that reported CPU time"
    assert worker["label"] == "worker-1 renamed ✓", "the latest label wins"
    assert worker["native_id"] == 4244
    assert worker["cpu_ns"] == 9_000, "CPU time is the latest figure, not a sum"
    assert worker["status"] == "finished"
    assert worker["created_ns"] == 20
    assert worker["last_ns"] == 60
    assert state.snapshot()["threads_evicted"] == 0


def test_stop_statuses_are_named() -> None:
    state = fed([
        ev.CreateThread(1, 0, 1),
        ev.StopThread(2, 0, 1, 7, 0),
        ev.CreateThread(3, 0, 2),
        ev.StopThread(4, 0, 2, 99, 0),
        ev.CreateThread(5, 0, 3),
        ev.StopThread(6, 0, 3, 3, 0),
    ])
    threads = threads_by_id(state.snapshot())
    assert threads[1]["status"] == "blocked on an MVar"
    assert threads[2]["status"] == "stopped (99)"
    assert threads[3]["status"] == "thread yielding"


def test_a_thread_seen_only_in_samples_is_listed() -> None:
    state = fed([ev.PySample(5, 0, 7, ()), ev.PySample(9, 0, 7, ())])
    threads = threads_by_id(state.snapshot())
    assert list(threads) == [7]
    assert threads[7]["created_ns"] is None
    assert threads[7]["last_ns"] == 9
    assert state.snapshot()["samples"] == 2


def test_ghc_thread_states_caps_capsets_and_tasks() -> None:
    state = fed([
        ev.CapsetCreate(1, None, 0, 2),
        ev.CapsetAssignCap(2, None, 0, 0),
        ev.CapsetAssignCap(3, None, 0, 1),
        ev.CapsetAssignCap(4, None, 0, 1),
        ev.CapCreate(5, None, 0),
        ev.CapCreate(6, None, 1),
        ev.CapCreate(7, None, 2),
        ev.CreateThread(10, 0, 1),
        ev.RunThread(11, 0, 1),
        ev.CreateThread(12, 1, 2),
        ev.ThreadRunnable(13, 1, 2),
        ev.MigrateThread(14, 1, 2, 0),
        ev.CreateThread(15, 0, 3),
        ev.WakeupThread(16, 0, 3, 1),
        ev.CapDisable(20, None, 1),
        ev.CapDelete(21, None, 2),
        ev.CapsetRemoveCap(22, None, 0, 0),
        ev.TaskCreate(30, None, 0xAA, 0, 501),
        ev.TaskCreate(31, None, 0xBB, 1, 502),
        ev.TaskMigrate(32, None, 0xAA, 0, 1),
        ev.TaskDelete(33, None, 0xBB),
    ])
    snap = json_roundtrip(state.snapshot())
    threads = threads_by_id(snap)
    assert (threads[1]["status"], threads[1]["cap"]) == ("running", 0)
    assert (threads[2]["status"], threads[2]["cap"]) == ("migrated", 0)
    assert threads[3]["status"] == "runnable"
    assert snap["caps"] == [
        {"id": 0, "disabled": False, "running": 1},
        {"id": 1, "disabled": True, "running": None},
    ]
    assert snap["capsets"] == [{"id": 0, "type": 2, "caps": [1]}]
    assert snap["tasks"] == [{"id": 0xAA, "cap": 1, "tid": 501, "created_ns": 30}]
    state.add(ev.CapEnable(40, None, 1))
    state.add(ev.CapsetDelete(41, None, 0))
    snap = state.snapshot()
    assert [c["disabled"] for c in snap["caps"]] == [False, False]
    assert snap["capsets"] == []


def test_gc_pauses_are_paired_per_cap() -> None:
    state = fed([
        ev.StartGC(100, 0),
        ev.StartGC(150, 1),
        ev.EndGC(200, 1),  # cap 1: 50
        ev.EndGC(400, 0),  # cap 0: 300
        ev.StartGC(1_000, 0),
        ev.EndGC(1_010, 0),  # 10
    ])
    gc = state.snapshot()["gc"]
    assert gc["collections"] == 3
    assert gc["pause_ns"] == {"last": 10, "max": 300, "total": 360}
    assert gc["in_gc"] is False
    state.add(ev.StartGC(2_000, 0))
    assert state.snapshot()["gc"]["in_gc"] is True
    state.add(ev.EndGC(2_500, 0))
    gc = state.snapshot()["gc"]
    assert gc["in_gc"] is False
    assert gc["pause_ns"] == {"last": 500, "max": 500, "total": 860}


def test_gc_end_without_its_start_counts_but_has_no_pause() -> None:
    # A reader that joined during a collection, or a restart between the two.
    state = fed([ev.EndGC(50, 0)])
    assert state.snapshot()["gc"]["collections"] == 1
    assert state.snapshot()["gc"]["pause_ns"] == {"last": None, "max": 0, "total": 0}
    state.add(ev.StartGC(100, 0))
    state.new_header()
    state.add(ev.EndGC(5_000_000, 0))
    gc = state.snapshot()["gc"]
    assert gc["collections"] == 2
    assert gc["pause_ns"]["total"] == 0, "a start from before the restart paired with an end after it"


def test_python_gc_per_generation() -> None:
    state = fed([
        ev.PyGcCollection(1, 0, 0, 10, 0),
        ev.PyGcCollection(2, 0, 0, 20, 0),
        ev.PyGcCollection(3, 0, 2, 5, 2),
        ev.PyGcCollection(4, 0, 0, 30, 0),
        ev.PyGcCollection(5, 0, 1, 0, 1),
    ])
    gc = json_roundtrip(state.snapshot())["gc"]
    assert gc["by_generation"] == {"0": 3, "1": 1, "2": 1}
    assert gc["collected"] == 65
    assert gc["uncollectable"] == 3


def test_heap_figures_are_the_latest() -> None:
    state = fed([
        ev.PyHeap(1, 0, 30_000_000, 200_000, 0, 0),
        ev.PyHeap(2, 0, 31_000_000, 210_000, 4_096, 8_192),
        ev.HeapAllocated(3, 0, 0, 1_000),
        ev.HeapSize(4, 0, 0, 2_000),
        ev.HeapLive(5, 0, 0, 3_000),
        ev.GCStatsGHC(6, 0, 0, 1, 777, 0, 0, 1, 0, 0, 0),
    ])
    heap = state.snapshot()["heap"]
    assert heap == {
        "rss": 31_000_000,
        "allocated_blocks": 210_000,
        "traced_current": 4_096,
        "traced_peak": 8_192,
        "ghc_allocated": 1_000,
        "ghc_size": 2_000,
        "ghc_live": 3_000,
        "ghc_copied": 777,
    }
    assert state.snapshot()["gc"]["by_generation"] == {"1": 1}


def test_counters_value_count_min_max() -> None:
    state = fed([
        ev.PyCounter(1, 0, 3.0, "jobs"),
        ev.PyCounter(2, 0, -1.5, "jobs"),
        ev.PyCounter(3, 0, 10.0, "jobs"),
        ev.PyCounter(4, 0, 2.0, "jobs"),
        ev.PyCounter(5, 0, 0.25, "queue ✓"),
    ])
    counters = json_roundtrip(state.snapshot())["counters"]
    assert counters == {
        "jobs": {"value": 2.0, "count": 4, "min": -1.5, "max": 10.0},
        "queue ✓": {"value": 0.25, "count": 1, "min": 0.25, "max": 0.25},
    }
    assert state.snapshot()["counters_dropped"] == 0


def test_markers_and_messages_keep_the_newest() -> None:
    events: List[Event] = []
    for i in range(10):
        events.append(ev.UserMarker(10 * i, 0, f"marker {i}"))
        events.append(ev.UserMessage(10 * i + 1, 0, f"user {i}") if i % 2 else ev.Message(10 * i + 1, 0, f"rts {i}"))
    snap = fed(events, Limits(recent=3)).snapshot()
    assert snap["markers"] == [{"ts": 70, "name": "marker 7"}, {"ts": 80, "name": "marker 8"}, {"ts": 90, "name": "marker 9"}]
    assert snap["messages"] == [{"ts": 71, "text": "user 7"}, {"ts": 81, "text": "rts 8"}, {"ts": 91, "text": "user 9"}]
    few = fed(events[:4]).snapshot()
    assert [m["name"] for m in few["markers"]] == ["marker 0", "marker 1"]


def test_spans_open_and_closed() -> None:
    state = fed([
        ev.PySpanBegin(1, 0, 1, "request"),
        ev.PySpanBegin(2, 0, 2, "db"),
        ev.PySpanBegin(3, 1, 3, "other"),
        ev.PySpanEnd(4, 0, 2),
    ])
    assert state.snapshot()["spans"] == {
        "open": 2,
        "closed": 1,
        "recent": [{"name": "db", "begin": 2, "end": 4}],
        "current": [{"name": "request", "begin": 1}, {"name": "other", "begin": 3}],
    }
    state.add(ev.PySpanEnd(5, 0, 1))
    state.add(ev.PySpanEnd(6, 1, 3))
    spans = state.snapshot()["spans"]
    assert (spans["open"], spans["closed"], spans["current"]) == (0, 3, [])
    assert [(s["name"], s["begin"], s["end"]) for s in spans["recent"]] == [("db", 2, 4), ("request", 1, 5), ("other", 3, 6)]


CODES = [
    ev.PyCode(1, 0, 1, 1, "main", "app.py"),
    ev.PyCode(2, 0, 2, 10, "parse", "app.py"),
    ev.PyCode(3, 0, 3, 5, "crunch", "lib.py"),
    ev.PyCode(4, 0, 4, 20, "fib", "lib.py"),
]


def test_hottest_functions_own_and_total() -> None:
    stacks: List[Tuple[int, ...]] = [
        (3, 2, 1),  # crunch <- parse <- main
        (3, 2, 1),
        (2, 1),
        (4, 4, 4, 4, 1),  # recursion: fib counted once per sample
        (4, 4, 1),
        (1,),
    ]
    state = fed([*CODES, *(ev.PySample(100 + i, 0, 1, s) for i, s in enumerate(stacks))])
    snap = json_roundtrip(state.snapshot())
    assert snap["samples"] == 6
    assert functions_by_name(snap) == {
        "main": (1, 6),
        "parse": (1, 3),
        "crunch": (2, 2),
        "fib": (2, 2),
    }
    top = snap["functions"]
    assert [f["name"] for f in top[:2]] == ["main", "parse"], "hottest first, by total"
    fib = next(f for f in top if f["name"] == "fib")
    assert (fib["file"], fib["line"]) == ("lib.py", 20)
    for f in top:
        assert 1 <= f["total"] <= snap["samples"]
        assert f["own"] <= f["total"]
    assert sum(f["own"] for f in top) == snap["samples"], "every sample has one innermost frame"


def test_snapshot_lists_only_the_hottest() -> None:
    codes = [ev.PyCode(0, 0, n, n, f"f{n}", "many.py") for n in range(1, 31)]
    # f{n} is innermost in n samples: f30 is the hottest.
    samples = [ev.PySample(n, 0, 1, (n,)) for n in range(1, 31) for _ in range(n)]
    snap = fed([*codes, *samples], Limits(snapshot_functions=5)).snapshot()
    assert [f["name"] for f in snap["functions"]] == ["f30", "f29", "f28", "f27", "f26"]
    assert [f["own"] for f in snap["functions"]] == [30, 29, 28, 27, 26]


def test_a_sample_skips_frames_it_cannot_name() -> None:
    state = fed([*CODES, ev.PySample(10, 0, 1, (99, 3, 77, 1))])
    snap = state.snapshot()
    assert functions_by_name(snap) == {"crunch": (0, 1), "main": (0, 1)}
    assert snap["samples"] == 1


def test_new_generation_resets_the_code_table() -> None:
    state = fed([
        ev.PyGeneration(1, None, 1),
        ev.PyCode(2, 0, 1, 1, "main", "app.py"),
        ev.PySample(3, 0, 1, (1,)),
        ev.PyGeneration(4, None, 2),
        ev.PySample(5, 0, 1, (1,)),  # code 1 is not declared in generation 2: ignored
        ev.PyCode(6, 0, 7, 1, "main", "app.py"),  # the same function under a new number
        ev.PyCode(7, 0, 1, 3, "other", "app.py"),  # and number 1 is now something else
        ev.PySample(8, 0, 1, (7,)),
        ev.PySample(9, 0, 1, (1, 7)),
    ])
    snap = state.snapshot()
    assert snap["generation"] == 2
    assert snap["samples"] == 4
    assert functions_by_name(snap) == {"main": (2, 3), "other": (1, 1)}


def test_new_header_resets_the_code_table() -> None:
    state = fed([ev.PyCode(1, 0, 1, 1, "main", "app.py"), ev.PySample(2, 0, 1, (1,))])
    state.new_header()
    state.add(ev.PySample(3, 0, 1, (1,)))
    snap = state.snapshot()
    assert snap["headers"] == 2
    assert snap["samples"] == 2
    assert functions_by_name(snap) == {"main": (1, 1)}


def test_program_args_and_env_are_redacted() -> None:
    state = fed([
        ev.ProgramArgs(1, None, 0, ("python", "app.py", "--password=hunter2-arg", "--token", "tok-s3cr3t",
                                    "--db", "postgres://app:pg-s3cr3t@db/x", "--jobs", "4")),
        ev.ProgramEnv(2, None, 0, ("HOME=/home/app", "AWS_SECRET_ACCESS_KEY=aws-s3cr3t", "PWD=/srv/app",
                                   "MY_API_KEY=key-s3cr3t", "UPSTREAM=https://bob:url-s3cr3t@example.com/")),
        ev.OsProcessPid(3, None, 0, 4242),
        ev.OsProcessParentPid(4, None, 0, 1),
        ev.RtsIdentifier(5, None, 0, "CPython-3.11.7 lpm"),
        ev.WallClockTime(6, None, 0, 1_790_000_000, 5),
    ])
    snap = json_roundtrip(state.snapshot())
    program = snap["program"]
    assert program["args"] == ["python", "app.py", f"--password={REDACTED}", "--token", REDACTED,
                               "--db", f"postgres://app:{REDACTED}@db/x", "--jobs", "4"]
    assert program["env"] == [
        f"AWS_SECRET_ACCESS_KEY={REDACTED}",
        "HOME=/home/app",
        f"MY_API_KEY={REDACTED}",
        "PWD=/srv/app",
        f"UPSTREAM=https://bob:{REDACTED}@example.com/",
    ]
    assert (program["pid"], program["ppid"]) == (4242, 1)
    assert program["rts"] == "CPython-3.11.7 lpm"
    assert program["wall_clock"] == [1_790_000_000, 5]
    assert "s3cr3t" not in json.dumps(snap) and "hunter2" not in json.dumps(snap)


def test_settings_latest_value() -> None:
    state = fed([ev.PySetting(1, None, "gc.thresholds", "700,10,10"), ev.PySetting(2, None, "gc.thresholds", "1,2,3"),
                 ev.PySetting(3, None, "lpm.rate", "100")])
    assert state.snapshot()["settings"] == {"gc.thresholds": "1,2,3", "lpm.rate": "100"}


def pairs(events: Sequence[Event]) -> List[int]:
    """GC pauses, pairing each EndGC with the last StartGC on its cap."""
    start: Dict[Optional[int], int] = {}
    pauses: List[int] = []
    for e in events:
        if isinstance(e, ev.StartGC):
            start[e.cap] = e.ts
        elif isinstance(e, ev.EndGC) and e.cap in start:
            pauses.append(e.ts - start.pop(e.cap))
    return pauses


@pytest.mark.parametrize("seed", [1, 7])
def test_the_sample_python_eventlog(seed: int) -> None:
    """lpm's synthetic Python stream, decoded, against figures counted here."""
    items = read_events(sample_eventlog(seed=seed, seconds=2))
    events = decoded(items)
    snap = json_roundtrip(fed_items(items).snapshot())

    assert snap["headers"] == 1
    assert snap["events"] == len(events)
    assert snap["by_type"] == dict(Counter(type(e).__name__ for e in events))
    assert snap["time_ns"] == max(e.ts for e in events)

    threads = threads_by_id(snap)
    assert sorted(threads) == [1, 2]
    assert [(t["label"], t["native_id"], t["status"]) for _, t in sorted(threads.items())] == [
        ("MainThread", 4243, "finished"),
        ("worker-1", 4244, "finished"),
    ]

    program = snap["program"]
    assert program["args"] == ["python", "worker.py", "--jobs", "4"]
    assert program["env"] == ["API_TOKEN=<redacted>", "HOME=/home/app"]
    assert (program["pid"], program["ppid"], program["wall_clock"]) == (4242, 1, [1_790_000_000, 0])
    assert program["rts"] == "CPython-3.11.7 lpm-sample"
    assert snap["settings"] == {"gc.thresholds": "700,10,10"}

    pauses = pairs(events)
    gc = snap["gc"]
    assert gc["collections"] == sum(isinstance(e, ev.EndGC) for e in events) == 8
    assert gc["pause_ns"] == {"last": pauses[-1], "max": max(pauses), "total": sum(pauses)}
    pygc = [e for e in events if isinstance(e, ev.PyGcCollection)]
    assert gc["by_generation"] == {str(g): n for g, n in sorted(Counter(e.generation for e in pygc).items())}
    assert gc["collected"] == sum(e.collected for e in pygc)

    heap = [e for e in events if isinstance(e, ev.PyHeap)][-1]
    assert snap["heap"] == {"rss": heap.rss, "allocated_blocks": heap.allocated_blocks,
                            "traced_current": heap.traced_current, "traced_peak": heap.traced_peak}

    jobs = [e.value for e in events if isinstance(e, ev.PyCounter)]
    assert snap["counters"] == {"jobs_done": {"value": jobs[-1], "count": len(jobs), "min": min(jobs), "max": max(jobs)}}
    assert [m["name"] for m in snap["markers"]] == ["batch 0", "batch 1", "batch 2", "batch 3"]

    names = {e.code: e.name for e in events if isinstance(e, ev.PyCode)}
    samples = [e for e in events if isinstance(e, ev.PySample)]
    own = Counter(names[s.frames[0]] for s in samples)
    total = Counter(name for s in samples for name in {names[f] for f in s.frames})
    assert snap["samples"] == len(samples) == 400
    assert functions_by_name(snap) == {name: (own[name], total[name]) for name in total}
    ranks = [(f["total"], f["own"]) for f in snap["functions"]]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0][0] == max(total.values())


def test_the_snapshot_is_plain_json() -> None:
    snap = fed_items(read_events(sample_eventlog(seconds=1))).snapshot()
    text = json.dumps(snap)
    assert json.loads(text) == snap, "the snapshot holds only JSON types (no tuples, no int keys)"


# == 2. Memory bounds ============================================================


def test_thread_table_keeps_live_threads_over_finished_ones() -> None:
    limits = Limits(threads=10)
    events: List[Event] = []
    ts = 0
    for t in range(1, 6):  # five long-lived threads, created first
        ts += 1
        events += [ev.CreateThread(ts, 0, t), ev.ThreadLabel(ts, 0, t, f"live-{t}")]
    for t in range(100, 1_095):  # then 995 short-lived ones
        ts += 1
        events += [ev.CreateThread(ts, 0, t), ev.StopThread(ts + 1, 0, t, FINISHED, 0)]
    state = fed(events, limits)
    snap = state.snapshot()
    threads = threads_by_id(snap)
    assert len(threads) == 10
    assert {1, 2, 3, 4, 5} <= set(threads), "a live thread was evicted while finished ones were kept"
    assert all(threads[t]["label"] == f"live-{t}" for t in range(1, 6))
    assert snap["threads_evicted"] == 1_000 - 10
    kept_finished = sorted(t for t in threads if t >= 100)
    assert kept_finished == list(range(1_090, 1_095)), "the newest finished threads are kept"


def test_thread_eviction_order() -> None:
    state = fed([
        ev.CreateThread(1, 0, 1),
        ev.CreateThread(2, 0, 2),
        ev.CreateThread(3, 0, 3),
        ev.StopThread(4, 0, 2, FINISHED, 0),
        ev.StopThread(5, 0, 1, FINISHED, 0),
    ], Limits(threads=3))
    state.add(ev.CreateThread(6, 0, 4))  # a finished one goes first: 1 (oldest in the table)
    assert sorted(threads_by_id(state.snapshot())) == [2, 3, 4]
    state.add(ev.CreateThread(7, 0, 5))  # then the other finished one
    assert sorted(threads_by_id(state.snapshot())) == [3, 4, 5]
    state.add(ev.PyThreadCpu(8, 0, 3, 1))  # 3 is active again; 4 is now the least recently seen
    state.add(ev.CreateThread(9, 0, 6))
    assert sorted(threads_by_id(state.snapshot())) == [3, 5, 6]
    assert state.snapshot()["threads_evicted"] == 3


def test_function_table_is_pruned_to_the_busiest() -> None:
    limits = Limits(functions=10, codes=1_000)
    events: List[Event] = [ev.PyCode(0, 0, n, n, f"f{n}", "cold.py") for n in range(1, 101)]
    events += [ev.PyCode(0, 0, 1_000, 1, "hot", "hot.py")]
    events += [ev.PySample(1, 0, 1, (1_000,)) for _ in range(50)]
    events += [ev.PySample(2, 0, 1, (n, 1_000)) for n in range(1, 100)]  # 99 cold functions, once each
    state = fed(events, limits)
    snap = state.snapshot()
    assert len(state.functions) <= 10
    assert len(snap["functions"]) <= 10
    assert snap["functions"][0] == {"name": "hot", "file": "hot.py", "line": 1, "own": 50, "total": 149}
    assert snap["functions_pruned"] > 0
    # Each function entered the table once: it is either still there or was pruned.
    assert snap["functions_pruned"] + len(state.functions) == 100
    assert snap["samples"] == 149


def test_code_table_is_capped() -> None:
    state = fed([
        ev.PyCode(1, 0, 1, 1, "a", "x.py"),
        ev.PyCode(2, 0, 2, 2, "b", "x.py"),
        ev.PyCode(3, 0, 3, 3, "c", "x.py"),  # past the cap: not kept
        ev.PyCode(4, 0, 1, 9, "a2", "x.py"),  # a number already known may be declared again
        ev.PySample(5, 0, 1, (3, 2, 1)),
    ], Limits(codes=2))
    assert len(state._codes) <= 2
    assert functions_by_name(state.snapshot()) == {"b": (0, 1), "a2": (0, 1)}


def test_counter_table_is_capped() -> None:
    events = [ev.PyCounter(i, 0, float(i), name) for i, name in enumerate("aabcccdd")]
    snap = fed(events, Limits(counters=2)).snapshot()
    assert sorted(snap["counters"]) == ["a", "b"]
    assert snap["counters"]["a"]["count"] == 2
    assert snap["counters_dropped"] == 5, "each update of a counter without a place is dropped"


def test_task_table_is_capped() -> None:
    state = fed([ev.TaskCreate(i, None, i, 0, 100 + i) for i in range(1, 6)], Limits(tasks=2))
    snap = state.snapshot()
    assert [t["id"] for t in snap["tasks"]] == [4, 5], "the oldest tasks are evicted"
    assert snap["tasks_evicted"] == 3
    state.add(ev.TaskDelete(10, None, 4))
    state.add(ev.TaskCreate(11, None, 6, 0, 106))
    snap = state.snapshot()
    assert [t["id"] for t in snap["tasks"]] == [5, 6]
    assert snap["tasks_evicted"] == 3, "a deleted task is not an eviction"


def test_open_spans_are_capped() -> None:
    state = fed([ev.PySpanBegin(i, 0, i, f"s{i}") for i in range(100)], Limits(threads=8))
    assert state.snapshot()["spans"]["open"] == 8


def test_a_long_run_stays_bounded() -> None:
    """Many threads, codes, functions, counters and tasks against small caps."""
    limits = Limits(threads=16, functions=32, codes=64, counters=8, tasks=4, recent=5, snapshot_functions=10)
    rnd = random.Random(5)
    state = SourceState(limits)
    state.new_header()
    ts = 0
    live: List[int] = []
    for round_no in range(200):
        state.add(ev.PyGeneration(ts, None, round_no))
        for code in range(1, 101):
            state.add(ev.PyCode(ts, 0, code, round_no, f"f{code}", f"m{round_no % 7}.py"))
        for k in range(20):
            ts += 1
            thread = round_no * 20 + k
            state.add(ev.CreateThread(ts, 0, thread))
            live.append(thread)
            depth = rnd.randrange(1, 12)
            state.add(ev.PySample(ts, 0, thread, tuple(rnd.randrange(1, 101) for _ in range(depth))))
            state.add(ev.PyCounter(ts, 0, 1.0, f"c{rnd.randrange(30)}"))
            state.add(ev.TaskCreate(ts, None, thread, 0, thread))
            state.add(ev.UserMarker(ts, 0, f"m{ts}"))
            if rnd.random() < 0.7:
                state.add(ev.StopThread(ts, 0, live.pop(rnd.randrange(len(live))), FINISHED, 0))
        assert len(state.threads) <= limits.threads
        assert len(state.functions) <= limits.functions
        assert len(state._codes) <= limits.codes
        assert len(state.counters) <= limits.counters
        assert len(state.tasks) <= limits.tasks
    snap = json_roundtrip(state.snapshot())
    assert len(snap["markers"]) == 5
    assert len(snap["functions"]) == 10
    # A stop of a thread already evicted brings it back (and evicts another).
    assert snap["threads_evicted"] >= 4_000 - len(snap["threads"])
    assert snap["tasks_evicted"] == 4_000 - len(snap["tasks"])
    assert snap["counters_dropped"] > 0 and snap["functions_pruned"] > 0
    assert snap["samples"] == 4_000
    for f in snap["functions"]:
        assert f["own"] <= f["total"] <= snap["samples"]


# == 3. Loss accounting ============================================================


def loss_stream() -> bytes:
    """Thread 1: 4 events arrive; 5 are reported lost; 2 arrive; 3 vanish without
    a report (a gap); 1 event and the thread's final sequence point arrive.
    Thread 2: 3 events arrive, then a report of 2 lost from the writer's
    closing block.  A global block carries the threads' starts and ends."""
    w = EventLogWriter()
    return b"".join([
        w.header(),
        w.block(fmt.GLOBAL_CAP, [ev.CreateThread(1, None, 1), ev.CreateThread(1, None, 2)]),
        w.block(0, [ev.PyBlockInfo(10, 0, 1, 0), ev.UserMarker(10, 0, "a"), ev.UserMarker(11, 0, "b"),
                    ev.UserMarker(12, 0, "c"), ev.UserMarker(13, 0, "d")]),
        w.block(1, [ev.PyBlockInfo(14, 1, 2, 0), ev.PyCounter(14, 1, 1.0, "x"), ev.PyCounter(15, 1, 2.0, "x"),
                    ev.PySeqPoint(16, 1, 2, 3)]),
        w.block(0, [ev.PyBlockInfo(20, 0, 1, 4), ev.PyDataLoss(20, 0, 1, 4, 5, 320), ev.UserMarker(21, 0, "e"),
                    ev.UserMarker(22, 0, "f")]),
        w.block(0, [ev.PyBlockInfo(30, 0, 1, 14), ev.UserMarker(31, 0, "g"), ev.PySeqPoint(32, 0, 1, 16)]),
        w.block(fmt.GLOBAL_CAP, [ev.PyDataLoss(40, None, 2, 3, 2, 64), ev.StopThread(40, None, 1, FINISHED, 0),
                                 ev.PySeqPoint(40, None, 1, 16), ev.StopThread(40, None, 2, FINISHED, 0),
                                 ev.PySeqPoint(40, None, 2, 5)]),
        w.end(),
    ])


def test_loss_accounting() -> None:
    items = read_events(loss_stream())
    snap = json_roundtrip(fed_items(items).snapshot())
    loss = snap["loss"]
    assert (loss["received"], loss["reported_lost"], loss["unreported"]) == (8 + 3, 5 + 2, 3)
    assert (loss["events_lost"], loss["bytes_lost"]) == (7, 384)
    assert loss["malformed"] == 0
    assert loss["threads"] == [
        {"thread": 1, "received": 8, "lost": 5, "produced": 16, "gaps": 3},
        {"thread": 2, "received": 3, "lost": 2, "produced": 5, "gaps": 0},
    ]
    # Thread 1: 8 arrived + 5 reported + 3 unreported == 16 produced.
    assert [t["status"] for t in snap["threads"]] == ["finished", "finished"]


def test_a_late_reader_counts_from_the_first_sequence_number_it_saw() -> None:
    w = EventLogWriter()
    data = w.header() + w.block(0, [ev.PyBlockInfo(5, 0, 1, 1_000), ev.UserMarker(5, 0, "a"),
                                    ev.PySeqPoint(6, 0, 1, 1_002)]) + w.end()
    loss = fed_items(read_events(data)).snapshot()["loss"]
    assert loss["threads"] == [{"thread": 1, "received": 2, "lost": 0, "produced": 2, "gaps": 0}]
    assert loss["unreported"] == 0


def test_a_restarted_writer_keeps_counting() -> None:
    """After a restart sequence numbers go on: the next block continues the count,
    and a jump is a gap."""
    w = EventLogWriter()
    data = b"".join([
        w.header(),
        w.block(0, [ev.PyBlockInfo(1, 0, 1, 0), ev.UserMarker(1, 0, "a"), ev.UserMarker(2, 0, "b")]),
        w.header(),
        w.block(0, [ev.PyBlockInfo(3, 0, 1, 2), ev.UserMarker(3, 0, "c")]),
        w.block(0, [ev.PyBlockInfo(4, 0, 1, 10), ev.UserMarker(4, 0, "d")]),
        w.end(),
    ])
    snap = fed_items(read_events(data)).snapshot()
    assert snap["headers"] == 2
    assert snap["loss"]["received"] == 4
    assert snap["loss"]["unreported"] == 7


def test_loss_of_evicted_threads_is_kept() -> None:
    w = EventLogWriter()
    blocks = [w.header()]
    for t in range(1, 6):
        blocks.append(w.block(t, [ev.PyBlockInfo(t, t, t, 0), ev.CreateThread(t, t, t), ev.UserMarker(t, t, "x"),
                                  ev.PyDataLoss(t, t, t, 2, 1, 10), ev.UserMarker(t, t, "y")]))
        blocks.append(w.block(fmt.GLOBAL_CAP, [ev.StopThread(t, None, t, FINISHED, 0), ev.PySeqPoint(t, None, t, 4)]))
    blocks.append(w.end())
    snap = fed_items(read_events(b"".join(blocks)), Limits(threads=2)).snapshot()
    assert snap["threads_evicted"] == 3
    loss = snap["loss"]
    assert (loss["received"], loss["reported_lost"], loss["unreported"]) == (5 * 3, 5, 0)
    assert [t["thread"] for t in loss["threads"]] == [4, 5], "evicted threads' accounts are folded in"


def test_loss_in_the_sample_eventlog_is_nil() -> None:
    # sample_eventlog writes no PyBlockInfo: nothing is attributed, nothing lost.
    loss = fed_items(read_events(sample_eventlog(seconds=1))).snapshot()["loss"]
    assert (loss["received"], loss["reported_lost"], loss["unreported"], loss["events_lost"]) == (0, 0, 0, 0)


# == 4. Real GHC eventlogs ============================================================


def golden_ghc() -> List[Union[Item, Event]]:
    return read_events((GOLDEN / "ghc-threads.eventlog").read_bytes(), strict=False)


def test_golden_ghc_log() -> None:
    """The GHC 9.0.2 log in tests/golden, checked by hand (see test_golden.py)."""
    items = golden_ghc()
    snap = json_roundtrip(fed_items(items).snapshot())
    stats = json.loads((GOLDEN / "ghc-threads.stats.json").read_text())
    assert snap["by_type"] == {EVENT_TYPES[int(i)].__name__: n for i, n in sorted(stats["by_id"].items())}
    assert snap["events"] == stats["total"] == 114
    assert snap["headers"] == 1
    program = dict(snap["program"])
    wall_clock = program.pop("wall_clock")
    assert program == {
        "pid": 2426,
        "ppid": 2402,
        "rts": "GHC-9.0.2 rts_thr_l",
        "args": ["./t", "+RTS", "-l", "-olt.eventlog", "-N2"],
        "rts_heap": {
            "generations": 2,
            "max_heap_size": 0,
            "alloc_area_size": 1 << 20,
            "mblock_size": 1 << 20,
            "block_size": 4096,
        },
    }, "no ProgramEnv in this log"
    assert len(wall_clock) == 2 and wall_clock[0] > 1_600_000_000
    threads = threads_by_id(snap)
    assert sorted(threads) == list(range(1, 8))
    assert {t: threads[t]["label"] for t in (2, 3, 4)} == {
        2: "IOManager on cap 0", 3: "IOManager on cap 1", 4: "TimerManager"}
    assert snap["gc"]["collections"] == stats["by_id"][str(ev.EndGC.ID)] == 1
    assert snap["gc"]["pause_ns"]["last"] is not None and snap["gc"]["pause_ns"]["last"] > 0
    assert snap["caps"] == [] and snap["capsets"] == [], "every cap and capset was deleted at exit"
    assert snap["messages"] == [{"ts": 2165056, "text": "hello"}, {"ts": 2174246, "text": "héllo"}]
    assert snap["markers"] == [{"ts": 2169319, "name": "mk"}]
    assert snap["time_ns"] == max(e.ts for e in decoded(items))
    assert (snap["unknown_events"], snap["loss"]["malformed"], snap["threads_evicted"]) == (0, 0, 0)


def finished_by_time(events: Sequence[Event]) -> Set[int]:
    """Threads whose latest state event, by timestamp, says they finished."""
    latest: Dict[int, Tuple[int, bool]] = {}
    for e in events:
        if isinstance(e, (ev.CreateThread, ev.RunThread, ev.StopThread, ev.ThreadRunnable, ev.MigrateThread,
                          ev.WakeupThread)):
            done = isinstance(e, ev.StopThread) and e.status == FINISHED
            if e.thread not in latest or e.ts >= latest[e.thread][0]:
                latest[e.thread] = (e.ts, done)
    return {t for t, (_, done) in latest.items() if done}


def test_golden_ghc_log_finished_threads_show_finished() -> None:
    items = golden_ghc()
    snap = fed_items(items).snapshot()
    finished = finished_by_time(decoded(items))
    assert finished == set(range(1, 8))
    assert {t["id"]: t["status"] for t in snap["threads"]} == {t: "finished" for t in finished}


def test_an_older_event_from_a_later_block_does_not_revive_a_finished_thread() -> None:
    state = fed([
        ev.RunThread(1_789_744, 0, 4),
        ev.StopThread(4_883_544, 0, 4, FINISHED, 0),  # cap 0's block
        ev.CreateThread(1_188_712, 1, 4),  # cap 1's block, written later, older events
        ev.MigrateThread(1_192_751, 1, 4, 0),
    ])
    assert threads_by_id(state.snapshot())[4]["status"] == "finished"


def test_a_stopped_thread_is_not_running_on_its_cap() -> None:
    state = fed([ev.CapCreate(0, None, 0), ev.CreateThread(1, 0, 1), ev.RunThread(2, 0, 1),
                 ev.StopThread(3, 0, 1, FINISHED, 0)])
    snap = state.snapshot()
    assert threads_by_id(snap)[1]["status"] == "finished"
    assert snap["caps"] == [{"id": 0, "disabled": False, "running": None}]


@pytest.fixture(scope="module")
def real_logs(binaries: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, peers.GhcLog]:
    """The GHC peers' eventlogs (tests/ghc/peers.py RUNS), written for this module."""
    return peers.run_programs(binaries, tmp_path_factory.mktemp("state-eventlogs"))


def replay_live(events: Iterable[Event], create: type, delete: type, key: Callable[[Any], int]) -> Set[int]:
    live: Set[int] = set()
    for e in events:
        if isinstance(e, create):
            live.add(key(e))
        elif isinstance(e, delete):
            live.discard(key(e))
    return live


@pytest.mark.parametrize("name", peers.LOG_NAMES)
def test_real_ghc_log_agrees_with_ghc_events(
    real_logs: Dict[str, peers.GhcLog], checker: Callable[[Path], peers.Counts], name: str
) -> None:
    log = real_logs[name]
    theirs = checker(log.path).by_name
    items = read_events(log.data(), strict=False)
    events = decoded(items)
    state = fed_items(items)
    snap = json_roundtrip(state.snapshot())

    ours = {k: n for k, n in snap["by_type"].items() if k != "EventBlock"}
    assert ours == theirs
    assert snap["events"] == len(events)
    assert snap["headers"] == 1
    assert snap["time_ns"] == max(e.ts for e in events)
    assert (snap["unknown_events"], snap["loss"]["malformed"]) == (0, 0)

    gc = snap["gc"]
    assert gc["collections"] == theirs.get("EndGC", 0) > 0
    assert sum(gc["by_generation"].values()) == theirs.get("GCStatsGHC", 0)
    assert gc["pause_ns"]["total"] >= gc["pause_ns"]["max"] > 0

    threads = threads_by_id(snap)
    created = {e.thread for e in events if isinstance(e, ev.CreateThread)}
    mentioned = {getattr(e, "thread") for e in events if isinstance(e, (ev.RunThread, ev.StopThread, ev.ThreadLabel))}
    assert len(created) == theirs["CreateThread"], "GHC never reuses a thread id"
    assert created | mentioned <= set(threads)
    assert snap["threads_evicted"] == 0
    labels: Dict[int, str] = {}
    for e in events:
        if isinstance(e, ev.ThreadLabel):
            labels[e.thread] = e.label
    assert {t: threads[t]["label"] for t in labels} == labels
    for t in created:
        assert threads[t]["created_ns"] == min(e.ts for e in events if isinstance(e, ev.CreateThread) and e.thread == t)

    assert len(snap["caps"]) == theirs.get("CapCreate", 0) - theirs.get("CapDelete", 0)
    assert len(snap["capsets"]) == theirs.get("CapsetCreate", 0) - theirs.get("CapsetDelete", 0)
    assert {t["id"] for t in snap["tasks"]} == replay_live(events, ev.TaskCreate, ev.TaskDelete, lambda e: e.task_id)

    program = snap["program"]
    if "ProgramArgs" in theirs:
        assert program["args"] == redact_argv(list(log.argv))
    if "OsProcessPid" in theirs:
        assert isinstance(program["pid"], int) and program["pid"] > 0
    if "OsProcessParentPid" in theirs:
        assert program["ppid"] == os.getpid(), "the peers are started by this process"
    assert program["rts"].startswith("GHC-")

    texts = [e.message for e in events if isinstance(e, (ev.UserMessage, ev.Message))]
    assert [m["text"] for m in snap["messages"]] == texts[-state.limits.recent:]
    assert [m["name"] for m in snap["markers"]] == [e.marker for e in events if isinstance(e, ev.UserMarker)][-state.limits.recent:]
    for cls, key in ((ev.HeapLive, "ghc_live"), (ev.HeapSize, "ghc_size"), (ev.HeapAllocated, "ghc_allocated")):
        figures = [e.bytes for e in events if isinstance(e, cls)]
        if figures:
            assert snap["heap"][key] == figures[-1]


def test_real_ghc_messages_and_labels(real_logs: Dict[str, peers.GhcLog]) -> None:
    for name in ("messages", "messages-printable"):
        snap = fed_items(read_events(real_logs[name].data())).snapshot()
        texts = [m["text"] for m in snap["messages"]]
        assert texts[:7] == [
            "lpmtest héllo wörld ✓",
            *(f"lpmtest step {i}" for i in range(1, 6)),
            "lpmtest tab\tand 日本語 \U0001f40d",
        ]
        assert [m["name"] for m in snap["markers"]] == ["lpmtest begin", "lpmtest end ✓"]
    snap = fed_items(read_events(real_logs["threads"].data())).snapshot()
    labels = {t["label"]: t for t in snap["threads"]}
    assert {"main-thread ✓", "worker-1", "worker-2", "worker-3", "worker-4", "masked", "helper"} <= set(labels)
    # Many more messages than the state keeps: the nonmoving collector's log.
    snap = fed_items(read_events(real_logs["nonmoving"].data()), Limits(recent=10)).snapshot()
    assert len(snap["messages"]) == 10


def source_snapshot(data: bytes, sizes: Iterable[int]) -> Snapshot:
    """The state the server's Source keeps when ``data`` arrives in pieces."""
    source = Source(1, "test", FILE)
    pos = 0
    for size in sizes:
        if pos >= len(data):
            break
        source.feed(data[pos : pos + size])
        pos += size
    source.feed(data[pos:])
    source.close()
    return source.state.snapshot()


STREAMS: Dict[str, Callable[[], bytes]] = {
    "golden ghc": lambda: (GOLDEN / "ghc-threads.eventlog").read_bytes(),
    "golden restarted": lambda: (GOLDEN / "restarted.eventlog").read_bytes(),
    "python sample": lambda: sample_eventlog(seconds=1),
    "loss": loss_stream,
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_server_source_keeps_the_same_state_in_any_chunking(name: str) -> None:
    data = STREAMS[name]()
    want = fed_items(read_events(data, strict=False)).snapshot()
    rnd = random.Random(name)
    for sizes in ([len(data)], [1] * len(data), [rnd.choice([1, 2, 7, 64, 1000]) for _ in range(len(data))]):
        assert source_snapshot(data, sizes) == want


def test_the_server_source_on_a_real_log(real_logs: Dict[str, peers.GhcLog]) -> None:
    data = real_logs["threads"].data()
    want = fed_items(read_events(data, strict=False)).snapshot()
    rnd = random.Random(3)
    assert source_snapshot(data, [rnd.choice([1, 13, 500, 4096]) for _ in range(len(data) // 100)]) == want


# == 5. Bad input ==================================================================


def test_malformed_and_unknown_events_are_counted() -> None:
    # CreateThread declared variable-size, with a 2-byte payload; and a type lpm
    # does not know, declared by the header.
    types = [EventType(0, fmt.VARIABLE, "Create thread"), EventType.of(ev.UserMarker), EventType(4711, 3, "mystery")]
    w = EventLogWriter(types)
    bad = fmt.EVENT_HEAD.pack(0, 7) + fmt.PAYLOAD_LEN.pack(2) + b"\x00\x01"
    data = (w.header() + bad + w.event(ev.UnknownEvent(8, None, 4711, b"abc")) + bad
            + w.event(ev.UserMarker(9, None, "still here")) + w.end())
    items = read_events(data, strict=False)
    snap = json_roundtrip(fed_items(items).snapshot())
    assert snap["by_type"] == {"MalformedEvent": 2, "UnknownEvent": 1, "UserMarker": 1}
    assert snap["loss"]["malformed"] == 2
    assert snap["unknown_events"] == 1
    assert snap["threads"] == [], "a malformed CreateThread makes no thread"
    assert [m["name"] for m in snap["markers"]] == ["still here"]


def test_malformed_and_unknown_event_objects() -> None:
    state = fed([
        ev.MalformedEvent(1, 0, ev.PySample.ID, b"\x00", "payload of 1 byte"),
        ev.UnknownEvent(2, None, 60_000, b""),
        ev.MalformedEvent(3, None, ev.PyBlockInfo.ID, b"", "empty"),
    ])
    snap = state.snapshot()
    assert (snap["loss"]["malformed"], snap["unknown_events"], snap["samples"]) == (2, 1, 0)


def test_the_golden_restarted_stream() -> None:
    """Garbage, a stream cut short, then a restarted one with an unknown type."""
    snap = json_roundtrip(fed_items(read_events((GOLDEN / "restarted.eventlog").read_bytes(), strict=False)).snapshot())
    assert snap["headers"] == 2
    assert snap["unknown_events"] == 1
    assert snap["threads"] == [{"id": 1, "label": "main", "status": "finished", "created_ns": 10, "last_ns": 22,
                                "cpu_ns": None, "native_id": None, "cap": None}]
    assert [m["text"] for m in snap["messages"]] == ["naïve ✓ \udcff"]
    assert [m["name"] for m in snap["markers"]] == ["restarted"]


SMALL_INTS = (0, 1, 2, 3, 5, 0xFFFF)


def small_value(code: str, rnd: random.Random) -> Any:
    """A field value from a small domain, so that events collide on threads, codes, caps."""
    if code in "BHIQq":
        return rnd.choice(SMALL_INTS)
    if code == "d":
        return rnd.choice([0.0, -1.5, 1e300, 3.0])
    if code in "st":
        return rnd.choice(["", "a", "KEY=v", "--password=p", "é✓\udcff", "x=y=z"])
    if code == "y":
        return rnd.choice([b"", b"\x00\xff"])
    if code == "S":
        return tuple(rnd.choice(["", "a", "SECRET=s", "--token", "t"]) for _ in range(rnd.randrange(4)))
    if code in "ai":
        return tuple(rnd.choice(SMALL_INTS) for _ in range(rnd.randrange(6)))
    raise AssertionError(f"no value for field code {code!r}")


def fuzz_events(rnd: random.Random, n: int, exclude: Tuple[type, ...]) -> List[Event]:
    classes = [cls for _, cls in sorted(EVENT_TYPES.items()) if not issubclass(cls, exclude)]
    out: List[Event] = []
    ts = 0
    for _ in range(n):
        cls = rnd.choice(classes)
        ts += rnd.choice([0, 1, 1000])
        cap = rnd.choice([None, 0, 1])
        out.append(cls(rnd.choice([ts, ts // 2]), cap, *(small_value(c, rnd) for c in cls.LAYOUT.codes)))
    out.insert(rnd.randrange(len(out)), ev.MalformedEvent(1, 0, 0, b"", "x"))
    out.insert(rnd.randrange(len(out)), ev.UnknownEvent(1, 0, 9999, b"?"))
    return out


def check_bounded(state: SourceState) -> None:
    limits = state.limits
    assert len(state.threads) <= limits.threads
    assert len(state.functions) <= limits.functions
    assert len(state._codes) <= limits.codes
    assert len(state.counters) <= limits.counters
    assert len(state.tasks) <= limits.tasks
    snap = state.snapshot()
    assert len(snap["markers"]) <= limits.recent and len(snap["messages"]) <= limits.recent
    assert json.loads(json.dumps(snap)) == snap
    for f in snap["functions"]:
        assert 0 <= f["own"] <= f["total"] <= snap["samples"]


@pytest.mark.parametrize("seed", range(6))
def test_random_events_never_raise_and_stay_bounded(seed: int) -> None:
    """Every event type with colliding small values, against small caps.

    Blocks' owners (PyBlockInfo) are left out: with them a small thread cap
    hits the KeyError of test_evicting_the_block_owner_does_not_crash."""
    rnd = random.Random(seed)
    limits = Limits(threads=3, functions=3, codes=4, counters=2, tasks=2, recent=2, snapshot_functions=2)
    state = SourceState(limits)
    state.new_header()
    for i, e in enumerate(fuzz_events(rnd, 3_000, (ev.PyBlockInfo,))):
        if i % 500 == 0:
            state.new_header()
        state.add(e)
        if i % 100 == 0:
            check_bounded(state)
    check_bounded(state)
    assert state.malformed == 1 and state.unknown == 1


@pytest.mark.parametrize("seed", range(3))
def test_random_events_with_default_limits(seed: int) -> None:
    state = fed(fuzz_events(random.Random(100 + seed), 3_000, ()))
    check_bounded(state)


# Once a bug: evicting a thread dropped its account even while it owned the
# block being read, and the block's next event raised KeyError.  A block can
# name other threads (the leech's monitor writes every thread's samples in
# its own block), so this must never stop a source.


def test_evicting_the_block_owner_does_not_crash() -> None:
    state = fed([
        ev.EventBlock(0, 0, 100, 12, 0),
        ev.PyBlockInfo(0, 0, 1, 0),  # a block of thread 1 (the monitor)
        ev.CreateThread(1, 0, 1),
        ev.PySample(10, 0, 2, ()),  # samples of other threads, in thread 1's block
        ev.PySample(11, 0, 3, ()),  # the table (2) is full: thread 1, seen least recently, is evicted
        ev.PySample(12, 0, 4, ()),  # KeyError: 1
    ], Limits(threads=2))
    assert state.snapshot()["loss"]["received"] == 4


def test_a_stream_that_evicts_its_block_owner_does_not_stop_the_source() -> None:
    """The same through the server's Source (what ``lpm server --max-threads 3`` runs)."""
    w = EventLogWriter()
    data = b"".join([
        w.header(),
        w.block(fmt.GLOBAL_CAP, [ev.CreateThread(1, None, 1), ev.ThreadLabel(1, None, 1, "lpm-monitor"),
                                 ev.CreateThread(2, None, 2), ev.CreateThread(3, None, 3)]),
        w.block(0, [ev.PyBlockInfo(10, 0, 1, 0), ev.PySample(10, 0, 2, ()), ev.PySample(10, 0, 3, ()),
                    ev.PySample(10, 0, 4, ()), ev.PySample(10, 0, 2, ())]),
        w.end(),
    ])
    source = Source(1, "leech", FILE, limits=Limits(threads=3))
    source.feed(data)
    source.close()
    assert source.state.snapshot()["loss"]["received"] == 4


def test_pruning_inside_a_sample_keeps_its_counts() -> None:
    state = fed([
        ev.PyCode(1, 0, 1, 1, "a", "x.py"),
        ev.PyCode(2, 0, 2, 2, "b", "x.py"),
        ev.PyCode(3, 0, 3, 3, "c", "x.py"),
        *(ev.PySample(4, 0, 1, (1,)) for _ in range(5)),  # a is hot
        ev.PySample(5, 0, 1, (2, 3, 2)),  # b <- c <- b: recursion through c
    ], Limits(functions=2))
    for f in state.snapshot()["functions"]:
        assert f["total"] >= 1, f"{f['name']} is listed with no sample: {f}"


def test_each_limit_hit_is_said_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    state = SourceState(Limits(threads=3, counters=2, codes=2), label="source 7 (app)")
    with caplog.at_level(logging.WARNING, logger="lpm.server"):
        for n in range(10):
            state.add(ev.CreateThread(n, None, n))
            state.add(ev.PyCounter(n, None, 1.0, f"c{n}"))
            state.add(ev.PyCode(n, None, n + 1, 1, f"f{n}", "a.py"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert all(line.startswith("source 7 (app): more than ") for line in lines)
    for what in ("threads", "counter names", "code objects"):
        assert sum(what in line for line in lines) == 1, f"{what}: {lines}"
    assert state.threads_evicted == 7 and state.counters_dropped == 8, "counted past the one log line"
