"""Exports to the formats people already open: speedscope, Chrome trace /
Perfetto, collapsed stacks (flamegraph.pl), and the eventlog itself.

Each export is a function from a source's events, in stream order (a
recording read with :func:`lpm.eventlog.read_events`, or events a client
received), to text.  Stack samples name code objects through the ``PyCode``
table of their generation, so the exporters replay that table as they go.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ..eventlog import events as ev
from ..eventlog.events import Event
from ..eventlog.reader import Header, Item
from ..server.calls import CallTree

Frame = Tuple[str, str, int]  # name, file, first line


@dataclass
class _Stacks:
    """Samples as root-first frame tuples, by thread, with thread labels."""

    samples: List[Tuple[int, int, Tuple[Frame, ...]]]  # (thread, ts, stack root first)
    labels: Dict[int, str]
    unnamed: int = 0  #: samples left out: a code they name was declared before the stream began


def _stacks(items: Iterable[Union[Item, Event]]) -> _Stacks:
    codes: Dict[int, Frame] = {}
    labels: Dict[int, str] = {}
    samples: List[Tuple[int, int, Tuple[Frame, ...]]] = []
    unnamed = 0
    for e in items:
        if isinstance(e, (Header, ev.PyGeneration)):
            codes = {}
        elif isinstance(e, ev.PyCode):
            codes[e.code] = (e.name, e.filename, e.first_line)
        elif isinstance(e, ev.ThreadLabel):
            labels[e.thread] = e.label
        elif isinstance(e, ev.PySample):
            if all(n in codes for n in e.frames):
                samples.append((e.thread, e.ts, tuple(codes[n] for n in reversed(e.frames))))
            else:
                unnamed += 1  # joined mid-generation: the next generation names them again
    return _Stacks(samples, labels, unnamed)


def collapsed(items: Iterable[Union[Item, Event]]) -> str:
    """``root;caller;callee count`` per distinct stack (flamegraph.pl's input),
    the thread's label as the root frame."""
    data = _stacks(items)
    counts: Counter[str] = Counter()
    for thread, _, stack in data.samples:
        names = [_clean(data.labels.get(thread, f"thread {thread}"))] + [_clean(name) for name, _, _ in stack]
        counts[";".join(names)] += 1
    return "".join(f"{stack} {n}\n" for stack, n in sorted(counts.items()))


def _clean(name: str) -> str:
    """A frame name flamegraph.pl reads back: no separators, no line breaks."""
    return name.replace(";", ":").replace("\n", " ").replace(" ", "_") or "?"


def speedscope(items: Iterable[Union[Item, Event]], name: str = "lpm") -> str:
    """A speedscope file: one sampled profile per thread, weighted by the time
    to the thread's next sample (the last sample weighs the median interval)."""
    data = _stacks(items)
    frames: List[Frame] = []
    index: Dict[Frame, int] = {}
    by_thread: Dict[int, List[Tuple[int, List[int]]]] = {}
    for thread, ts, stack in data.samples:
        ids = []
        for frame in stack:
            i = index.get(frame)
            if i is None:
                i = index[frame] = len(frames)
                frames.append(frame)
            ids.append(i)
        by_thread.setdefault(thread, []).append((ts, ids))
    profiles = []
    for thread, samples in sorted(by_thread.items()):
        samples.sort(key=lambda s: s[0])
        gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
        typical = sorted(gaps)[len(gaps) // 2] if gaps else 1
        weights = gaps + [typical]
        start = samples[0][0]
        profiles.append(
            {
                "type": "sampled",
                "name": data.labels.get(thread, f"thread {thread}"),
                "unit": "nanoseconds",
                "startValue": start,
                "endValue": start + sum(weights),
                "samples": [ids for _, ids in samples],
                "weights": weights,
            }
        )
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": n, "file": f, "line": line} for n, f, line in frames]},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "lpm",
    }
    return json.dumps(document)


class CallSlices:
    """Traced calls (PyCall, PyReturn) as (thread, name, start, end) slices:
    the server's call matching (:class:`lpm.server.calls.CallTree`: a
    return closes the innermost open call of its function and the calls
    above it; one with no call open is left out), with the calls still open
    at a stream's end ending at their thread's last event.  Names are the
    tracer's PyCode declarations, kept for the whole run (one may come after
    its first use in another thread's block).
    """

    def __init__(self) -> None:
        self.names: Dict[int, str] = {}
        self._last: Dict[int, int] = {}  # thread -> last timestamp
        self._done: List[Tuple[int, int, int, int]] = []  # (thread, code, start, end)
        # Only the matching is wanted: no call tree (one node), every function.
        self._calls = CallTree(functions=1 << 62, nodes=1, on_close=self._closed)

    def _closed(self, thread: int, code: int, start: int, end: int) -> None:
        self._done.append((thread, code, start, end))

    def add(self, thread: int, e: Event) -> None:
        if isinstance(e, ev.PyCall):
            self._last[thread] = e.ts
            self._calls.call(thread, e.code, e.ts)
        elif isinstance(e, ev.PyReturn):
            self._last[thread] = e.ts
            self._calls.ret(thread, e.code, e.ts)
        elif isinstance(e, ev.PyCode):
            self.names[e.code] = e.name

    def restart(self) -> None:
        """A new stream: calls open in the old one end where it did."""
        for thread in self._calls.open_threads():
            self._calls.end_thread(thread, self._last.get(thread, 0))

    def finish(self) -> List[Tuple[int, str, int, int]]:
        self.restart()
        done = [(t, self.names.get(code, f"code {code}"), start, end) for t, code, start, end in self._done]
        self._done = []
        return done


def chrome_trace(items: Iterable[Union[Item, Event]], pid: Optional[int] = None) -> str:
    """Chrome's Trace Event Format (which Perfetto opens): thread names, GC
    collections and spans as complete events, markers as instant events,
    counters as counter events; traced calls (``lpm run --trace``) as
    complete events nested per thread, one per call; asyncio tasks
    (``--asyncio``) as async slices from their first step to their end;
    timestamps in microseconds."""
    out: List[Dict[str, object]] = []
    labels: Dict[int, str] = {}
    gc_open: Dict[Optional[int], int] = {}
    spans: Dict[int, Tuple[int, str]] = {}
    owner: Optional[int] = None  # the thread whose block this is
    process = pid or 1
    calls = CallSlices()
    tasks: Dict[int, Tuple[str, str, int]] = {}  # asyncio task -> (name, coroutine, thread)
    for e in items:
        if isinstance(e, Header):
            gc_open.clear()
            calls.restart()
            owner = None
            continue
        if not isinstance(e, Event):
            continue
        if isinstance(e, ev.OsProcessPid) and pid is None:
            process = e.pid
        if isinstance(e, ev.EventBlock):
            owner = None
            continue
        if isinstance(e, ev.PyBlockInfo):
            owner = e.thread
            continue
        tid = owner if owner is not None else (e.cap if e.cap is not None else 0)
        us = e.ts / 1000.0
        if isinstance(e, ev.ThreadLabel):
            labels[e.thread] = e.label
        elif isinstance(e, ev.StartGC):
            gc_open[tid] = e.ts
        elif isinstance(e, ev.EndGC):
            start = gc_open.pop(tid, None)
            if start is not None:
                out.append({"name": "GC", "cat": "gc", "ph": "X", "ts": start / 1000.0, "dur": (e.ts - start) / 1000.0,
                            "pid": process, "tid": tid})
        elif isinstance(e, ev.PySpanBegin):
            spans[e.span] = (e.ts, e.name)
        elif isinstance(e, ev.PySpanEnd):
            begun = spans.pop(e.span, None)
            if begun is not None:
                out.append({"name": begun[1], "cat": "span", "ph": "X", "ts": begun[0] / 1000.0,
                            "dur": (e.ts - begun[0]) / 1000.0, "pid": process, "tid": e.span >> 32})
        elif isinstance(e, ev.UserMarker):
            out.append({"name": e.marker, "cat": "marker", "ph": "i", "s": "t", "ts": us, "pid": process, "tid": tid})
        elif isinstance(e, (ev.UserMessage, ev.Message)):
            out.append({"name": e.message[:200], "cat": "message", "ph": "i", "s": "t", "ts": us, "pid": process, "tid": tid})
        elif isinstance(e, ev.PyCounter) and math.isfinite(e.value):  # JSON has no NaN
            out.append({"name": e.name, "cat": "counter", "ph": "C", "ts": us, "pid": process, "tid": tid,
                        "args": {"value": e.value}})
        elif isinstance(e, ev.PyTaskCreate):
            tasks[e.task] = (e.name, e.coroutine, tid)
        elif isinstance(e, ev.PyTaskStart):
            name, coroutine, _ = tasks.get(e.task, (e.name, "", tid))
            tasks[e.task] = (e.name or name, coroutine, tid)
            out.append({"name": e.name or name, "cat": "asyncio", "ph": "b", "id": e.task, "ts": us, "pid": process,
                        "tid": tid, "args": {"coroutine": coroutine}})
        elif isinstance(e, ev.PyTaskEnd):
            name, _, _ = tasks.pop(e.task, ("task", "", tid))
            out.append({"name": name, "cat": "asyncio", "ph": "e", "id": e.task, "ts": us, "pid": process, "tid": tid,
                        "args": {"status": ev.TASK_STATUS.get(e.status, "?")}})
        else:
            calls.add(tid, e)
    for tid, name, start, end in calls.finish():
        out.append({"name": name, "cat": "call", "ph": "X", "ts": start / 1000.0, "dur": (end - start) / 1000.0,
                    "pid": process, "tid": tid})
    meta = [{"name": "thread_name", "ph": "M", "pid": process, "tid": t, "args": {"name": label}}
            for t, label in sorted(labels.items())]
    out.sort(key=lambda x: float(x["ts"]))  # type: ignore[arg-type]
    return json.dumps({"traceEvents": meta + out, "displayTimeUnit": "ms"})
