"""A source's figures over its whole run, bounded: what the web view's charts
were missing for a page opened late or for a recording.

The page builds its charts from the updates it receives, one point a second
from when it opened.  A recording served with ``lpm server --file`` is read
whole before any page asks, and a page opened an hour into a run knows only
what came since; so the server keeps each figure's history on the program's
own clock, as its events say it (heap figures, each collection's pause, each
thread's CPU time, counters, open spans, events dropped in the program), and
``/api/history`` hands it to the page, which puts it in front of its own
points.

Every series has room for :data:`POINTS` points, the page's ring.  When one
is full, neighbours merge in pairs and from then on each new point stands for
twice as many events as before (a gauge keeps its later value, a pause its
longer one), so the points stay spread evenly over the run however long it
is, and the memory stays fixed, as every table the server keeps is bounded.
"""

from __future__ import annotations

from array import array
from typing import Any, Callable, Dict, List, Optional

#: Points per series: the page's ring (``RING`` in ``app.js``).
POINTS = 300
#: Threads and counters with a series, per source.  A new thread past the
#: cap takes the place of an ended one (no figure for :data:`STALE_NS`) or of
#: the one with the least CPU time; a new counter is left out.
THREAD_SERIES = 40
COUNTER_SERIES = 12
STALE_NS = 10_000_000_000
#: A thread's CPU rate is taken over at least this long: a program may send
#: two figures moments apart (a scan, then the thread's end).
RATE_NS = 50_000_000
#: An event this much older than the newest point means a new stream whose
#: clock started again (a restarted program): the history starts again too.
#: Blocks of different threads arrive out of order by a flush interval or so.
RESTART_NS = 1_000_000_000

Merge = Callable[[float, float], float]


def later(_a: float, b: float) -> float:
    return b


class Series:
    """At most ``capacity`` points ``(t_ns, y)``, evenly spread over the events added."""

    __slots__ = ("capacity", "merge", "ts", "ys", "stride", "_held", "_held_t", "_held_y")

    def __init__(self, merge: Merge = later, capacity: int = POINTS) -> None:
        if capacity < 2:
            raise ValueError("a series needs room for two points")
        self.capacity = capacity
        self.merge = merge
        self.ts = array("q")
        self.ys = array("d")
        self.stride = 1  #: events a point stands for
        self._held = 0  # events folded into the point being made
        self._held_t = 0
        self._held_y = 0.0

    def add(self, t: int, y: float) -> None:
        if self._held:
            self._held_y = self.merge(self._held_y, y)
        else:
            self._held_y = y
        self._held_t = t
        self._held += 1
        if self._held < self.stride:
            return
        self._held = 0
        self.ts.append(self._held_t)
        self.ys.append(self._held_y)
        if len(self.ts) >= self.capacity:
            self._halve()

    def _halve(self) -> None:
        ts, ys = self.ts, self.ys
        n = len(ts) - len(ts) % 2
        merged_t = array("q", ts[1:n:2])
        merged_y = array("d", (self.merge(ys[i], ys[i + 1]) for i in range(0, n, 2)))
        if n < len(ts):  # an odd one out stays as it is, the newest
            merged_t.append(ts[-1])
            merged_y.append(ys[-1])
        self.ts, self.ys = merged_t, merged_y
        self.stride *= 2

    def last_y(self) -> float:
        if self._held:
            return self._held_y
        return self.ys[-1] if self.ys else 0.0

    def last_t(self) -> Optional[int]:
        if self._held:
            return self._held_t
        return self.ts[-1] if self.ts else None

    def points(self) -> List[List[float]]:
        """``[t_ns, y]`` in time order, with the point being made as the newest."""
        out: List[List[float]] = [[t, y] for t, y in zip(self.ts, self.ys)]
        if self._held:
            out.append([self._held_t, self._held_y])
        return out


class History:
    """Figures over time for one source, fed by :class:`~lpm.server.state.SourceState`."""

    def __init__(self) -> None:
        self.restarts = 0
        self._clear()

    def _clear(self) -> None:
        self.newest = 0
        self.heap: Dict[str, Series] = {}
        self.gc = Series(max)
        self.threads: Dict[int, Series] = {}  # thread -> cumulative CPU ns
        self.counters: Dict[str, Series] = {}
        self.spans = Series()
        self.lost = Series()

    def _at(self, t: int) -> None:
        if t + RESTART_NS < self.newest:
            self.restarts += 1
            self._clear()
        if t > self.newest:
            self.newest = t

    def heap_figures(self, t: int, figures: Dict[str, int]) -> None:
        self._at(t)
        for key, value in figures.items():
            series = self.heap.get(key)
            if series is None:
                if value == 0:
                    continue  # tracemalloc off: no line of zeros
                series = self.heap[key] = Series()
            series.add(t, value)

    def pause(self, t: int, pause_ns: int) -> None:
        self._at(t)
        self.gc.add(t, pause_ns)

    def thread_cpu(self, t: int, thread: int, cpu_ns: int) -> None:
        self._at(t)
        series = self.threads.get(thread)
        if series is None:
            if len(self.threads) >= THREAD_SERIES and not self._room_for(t, cpu_ns):
                return
            series = self.threads[thread] = Series()
        series.add(t, cpu_ns)

    def _room_for(self, t: int, cpu_ns: int) -> bool:
        """Makes room for a new thread's series: a thread that stopped
        reporting (ended) goes first, else the one with the least CPU time,
        if the newcomer has more.  (Pushing out the stalest instead would let
        more threads than series, reporting in turn, push each other out
        before any had two figures.)"""
        stalest = min(self.threads, key=lambda k: self.threads[k].last_t() or 0)
        if (self.threads[stalest].last_t() or 0) + STALE_NS < t:
            del self.threads[stalest]
            return True
        idlest = min(self.threads, key=lambda k: self.threads[k].last_y())
        if self.threads[idlest].last_y() >= cpu_ns:
            return False
        del self.threads[idlest]
        return True

    def counter(self, t: int, name: str, value: float) -> None:
        self._at(t)
        series = self.counters.get(name)
        if series is None:
            if len(self.counters) >= COUNTER_SERIES:
                return
            series = self.counters[name] = Series()
        series.add(t, value)

    def open_spans(self, t: int, count: int) -> None:
        self._at(t)
        self.spans.add(t, count)

    def dropped(self, t: int, total: int) -> None:
        self._at(t)
        self.lost.add(t, total)

    def json(self, labels: Dict[int, str]) -> Dict[str, Any]:
        """What ``/api/history`` answers; ``labels`` names the threads.
        A thread's points are its CPU seconds per second between two of its
        figures (the first figure only starts the line)."""
        threads = []
        for number, series in sorted(self.threads.items()):
            rates: List[List[float]] = []
            points = series.points()
            t0, c0 = points[0]
            for t1, c1 in points[1:]:
                if c1 < c0:  # a new thread under a reused number
                    t0, c0 = t1, c1
                elif t1 - t0 >= RATE_NS:  # two figures close together would read as idle
                    rates.append([t1, (c1 - c0) / (t1 - t0)])
                    t0, c0 = t1, c1
            if rates:
                threads.append({"id": number, "label": labels.get(number, ""), "points": rates})
        return {
            "time_ns": self.newest,
            "heap": {k: s.points() for k, s in self.heap.items()},
            "gc": [[t, pause / 1e9] for t, pause in self.gc.points()],
            "threads": threads,
            "counters": {k: s.points() for k, s in self.counters.items()},
            "spans": self.spans.points(),
            "lost": self.lost.points(),
        }


__all__ = ["History", "Series", "POINTS"]
