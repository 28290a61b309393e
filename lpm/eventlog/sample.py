"""A small, deterministic eventlog of an imaginary Python program.

It uses the same events the leech writes (threads, GC, heap, code objects and
stack samples, markers, counters, process info), so the demo and the tests have
a Python-shaped stream without running anything.
"""

from __future__ import annotations

import random

from . import events as ev
from .writer import EventLogWriter

MS = 1_000_000


def sample_eventlog(seed: int = 1, seconds: int = 2) -> bytes:
    """The eventlog of a two-thread program that runs for ``seconds``."""
    rnd = random.Random(seed)
    w = EventLogWriter()
    out = [w.header()]
    setup: list[ev.Event] = [
        ev.CapsetCreate(0, None, 0, 2),
        ev.RtsIdentifier(1, None, 0, "CPython-3.11.7 lpm-sample"),
        ev.ProgramArgs(2, None, 0, ("python", "worker.py", "--jobs", "4")),
        ev.ProgramEnv(3, None, 0, ("HOME=/home/app", "API_TOKEN=<redacted>")),
        ev.OsProcessPid(4, None, 0, 4242),
        ev.OsProcessParentPid(5, None, 0, 1),
        ev.WallClockTime(6, None, 0, 1_790_000_000, 0),
        ev.PySetting(7, None, "gc.thresholds", "700,10,10"),
        ev.PyCode(8, None, 1, 1, "<module>", "worker.py"),
        ev.PyCode(9, None, 2, 10, "main", "worker.py"),
        ev.PyCode(10, None, 3, 20, "parse", "worker.py"),
        ev.PyCode(11, None, 4, 30, "crunch", "worker.py"),
        ev.PyCode(12, None, 5, 40, "serve", "worker.py"),
    ]
    out.append(w.block(0xFFFF, setup))
    threads = {1: "MainThread", 2: "worker-1"}
    stacks = {1: [(3, 2, 1), (4, 2, 1), (2, 1)], 2: [(5,), (4, 5)]}
    per_thread: dict[int, list[ev.Event]] = {t: [] for t in threads}
    for t, name in threads.items():
        per_thread[t] += [ev.CreateThread(20 + t, t, t), ev.ThreadLabel(21 + t, t, t, name), ev.PyThreadInfo(22 + t, t, t, 4242 + t)]
    now = 100
    for tick in range(seconds * 100):
        now += 10 * MS
        for t in threads:
            per_thread[t].append(ev.PySample(now + t, t, t, rnd.choice(stacks[t])))
        if tick % 25 == 0:
            per_thread[1] += [ev.StartGC(now + 3, 1), ev.EndGC(now + 3 + rnd.randrange(50_000, 900_000), 1)]
            per_thread[1].append(ev.PyGcCollection(per_thread[1][-1].ts, 1, rnd.randrange(3), rnd.randrange(500), 0))
        if tick % 10 == 0:
            per_thread[1].append(ev.PyHeap(now + 5, 1, 30_000_000 + tick * 40_000, 200_000 + tick * 300, 0, 0))
            per_thread[2].append(ev.PyCounter(now + 6, 2, float(tick * 3), "jobs_done"))
        if tick % 50 == 0:
            per_thread[2].append(ev.UserMarker(now + 7, 2, f"batch {tick // 50}"))
        if tick % 20 == 19:
            for t in threads:
                out.append(w.block(t, per_thread[t]))
                per_thread[t] = []
    now += MS
    per_thread[2].append(ev.StopThread(now, 2, 2, ev.THREAD_FINISHED, 0))
    per_thread[1].append(ev.StopThread(now + 1, 1, 1, ev.THREAD_FINISHED, 0))
    for t in threads:
        if per_thread[t]:
            out.append(w.block(t, per_thread[t]))
    out.append(w.end())
    return b"".join(out)
