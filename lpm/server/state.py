"""The live state of one source, rebuilt from its events: what a late client
gets before the live stream, what ``top`` and the web view show.

Sans-IO: :meth:`SourceState.add` takes decoded events in stream order,
:meth:`SourceState.snapshot` returns a JSON-ready dict.  Nothing here reads a
clock; times are the stream's own timestamps (nanoseconds since the program
started).

Modelled on what eventlog-live's ``EventlogState`` keeps for GHC programs
(threads, capabilities, capsets, tasks, GC; ``shared/reference/
eventlog-format.md`` §1.6), with what a Python program adds: heap figures,
interpreter settings, counters, spans, the hottest functions from stack
samples, and the loss accounting of :mod:`lpm.eventlog.accounting`.

Memory stays bounded however long a source runs: every table has a cap
(:class:`Limits`), finished threads are evicted oldest first, the function
table is pruned to its busiest entries, and what was evicted is counted.
"""

from __future__ import annotations

import collections
import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..eventlog import events as ev
from ..eventlog.accounting import Accounting, ThreadAccount
from ..eventlog.events import EVENT_TYPES, STOP_STATUS, Event
from ..eventlog.reader import RawRun
from ..leech.redact import redact_argv, redact_env
from .calls import CallTree
from .flame import Stacks
from .history import History

log = logging.getLogger("lpm.server")


@dataclass(frozen=True)
class Limits:
    """Caps on each table of one source's state."""

    threads: int = 10_000  #: threads kept (finished ones are evicted first)
    functions: int = 10_000  #: distinct functions counted from samples
    codes: int = 100_000  #: code objects declared in one generation
    counters: int = 1_000  #: distinct counter names
    tasks: int = 10_000  #: GHC tasks
    recent: int = 100  #: markers and messages kept
    snapshot_functions: int = 200  #: hottest functions put in a snapshot
    traced_names: int = 200_000  #: names of traced functions (the tracer's numbers hold for the run)
    call_nodes: int = 20_000  #: distinct call paths in the traced call tree


#: Decodes one event of a run (EventLogReader.decode_in).
Decode = Callable[[RawRun, Tuple[int, int, int, int]], Event]
#: A marker or message add_run has framed but not decoded.
Pending = Tuple[RawRun, Tuple[int, int, int, int], Decode]

#: (name, file, first line): how a function is told apart across generations.
FunctionKey = Tuple[str, str, int]
#: A frame whose code object this reader never saw declared.
_UNKNOWN: FunctionKey = ("?", "", 0)


@dataclass
class ThreadState:
    id: int
    label: str = ""
    status: str = "created"
    created_ns: Optional[int] = None
    last_ns: int = 0
    cpu_ns: Optional[int] = None
    native_id: Optional[int] = None
    cap: Optional[int] = None
    finished: bool = False
    status_ns: int = -1  #: time of the event that set the status

    def json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "status": self.status,
            "created_ns": self.created_ns,
            "last_ns": self.last_ns,
            "cpu_ns": self.cpu_ns,
            "native_id": self.native_id,
            "cap": self.cap,
        }


@dataclass
class FunctionStats:
    own: int = 0  #: samples with this function innermost
    total: int = 0  #: samples with this function anywhere on the stack (once per sample)


@dataclass
class GcState:
    collections: int = 0
    by_generation: Dict[int, int] = field(default_factory=dict)
    collected: int = 0
    uncollectable: int = 0
    last_pause_ns: Optional[int] = None
    max_pause_ns: int = 0
    total_pause_ns: int = 0
    in_gc: bool = False

    def json(self) -> Dict[str, Any]:
        return {
            "collections": self.collections,
            "by_generation": {str(g): n for g, n in sorted(self.by_generation.items())},
            "collected": self.collected,
            "uncollectable": self.uncollectable,
            "pause_ns": {"last": self.last_pause_ns, "max": self.max_pause_ns, "total": self.total_pause_ns},
            "in_gc": self.in_gc,
        }


_GHC_STATUS = {
    ev.RunThread: "running",
    ev.ThreadRunnable: "runnable",
    ev.MigrateThread: "migrated",
    ev.WakeupThread: "runnable",
}


class SourceState:
    """What one source's events say about its program, kept up to date."""

    def __init__(self, limits: Limits | None = None, label: str = "a source") -> None:
        self.limits = limits or Limits()
        self.label = label  #: names the source in the log lines of limits hit
        self._limits_hit: set[str] = set()
        self.time_ns = 0
        self.headers = 0
        self.events = 0
        self.by_type: Dict[str, int] = {}
        self._by_id: Dict[int, int] = {}  # events counted by add_run without decoding them
        self._plain: frozenset[int] = frozenset()
        # The newest markers and messages add_run has not decoded yet, in
        # stream order: one deque each, as each keeps its own newest.
        self._pending_markers: Deque[Pending] = collections.deque(maxlen=self.limits.recent)
        self._pending_messages: Deque[Pending] = collections.deque(maxlen=self.limits.recent)
        self.program: Dict[str, Any] = {}
        self.settings: Dict[str, str] = {}
        self.threads: Dict[int, ThreadState] = {}
        self.threads_evicted = 0
        self.caps: Dict[int, Dict[str, Any]] = {}
        self.capsets: Dict[int, Dict[str, Any]] = {}
        self.tasks: Dict[int, Dict[str, Any]] = {}
        self.tasks_evicted = 0
        self.gc = GcState()
        self._gc_start: Dict[Optional[int], int] = {}  # cap (or block slot) -> StartGC ts
        self.heap: Dict[str, int] = {}
        self.counters: Dict[str, Dict[str, float]] = {}
        self.counters_dropped = 0
        self.markers: Deque[Tuple[int, str]] = collections.deque(maxlen=self.limits.recent)
        self.messages: Deque[Tuple[int, str]] = collections.deque(maxlen=self.limits.recent)
        self.spans_open: Dict[int, Tuple[int, str]] = {}
        self.spans_closed = 0
        self.spans_recent: Deque[Tuple[int, int, str]] = collections.deque(maxlen=self.limits.recent)
        self.samples = 0
        self.stacks = Stacks()  #: whole stacks, for flame graphs (not in snapshots: ask for them)
        self.history = History()  #: figures over the run, for charts (not in snapshots: ask for them)
        self.functions: Dict[FunctionKey, FunctionStats] = {}
        self.functions_pruned = 0
        self._codes: Dict[int, FunctionKey] = {}
        #: Traced calls (lpm run --trace), and the tracer's names, which hold
        #: for the whole run (its numbers never change meaning).
        self.calls = CallTree(self.limits.functions, self.limits.call_nodes, on_limit=self._limit)
        self._traced_names: Dict[int, FunctionKey] = {}
        #: asyncio tracking: tasks open (number -> name, created, started,
        #: coroutine, awaiting), counts by fate, and the newest finished
        #: (name, status, created, end).
        self.aio_open: Dict[int, List[Any]] = {}
        self.aio_counts: Dict[str, int] = {"created": 0, "done": 0, "failed": 0, "cancelled": 0}
        self.aio_recent: Deque[Tuple[str, str, int, int]] = collections.deque(maxlen=self.limits.recent)
        self.aio_dropped = 0
        #: Allocation tracking: each thread's latest totals, and sampled
        #: bytes by the function that allocated them (tracer's numbers).
        self.alloc_totals: Dict[int, Tuple[int, int, int, int, int]] = {}  # thread -> (ts, totals...)
        self.alloc_sites: Dict[int, int] = {}
        self.alloc_sampled = 0
        self.generation = 0
        self.accounting = Accounting()
        self.retired = ThreadAccount(0, received=0, lost=0)  # finished threads folded in
        self.lost_events = 0
        self.lost_bytes = 0
        self.malformed = 0
        self.unknown = 0

    # -- input ------------------------------------------------------------------

    def new_header(self, sizes: Dict[int, int] | None = None) -> None:
        """The source started a (new) stream: a restart or a new reader's header.

        ``sizes`` (type id -> declared payload size, -1 for variable) lets
        :meth:`add_run` count the types whose events change nothing here but
        counts, and decode only the newest markers and messages of a run.
        """
        self.headers += 1
        self._plain = frozenset(t for t, size in (sizes or {}).items() if _plain(t, size))
        self.accounting.reset()
        self._codes.clear()
        self._gc_start.clear()

    def add(self, e: Event) -> None:
        """One decoded event, in stream order."""
        kind = type(e)
        if kind in _TEXT_CLASSES and (self._pending_markers or self._pending_messages):
            self._flush_texts()  # the older ones first
        self.events += 1
        name = kind.__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1
        if e.ts > self.time_ns:
            self.time_ns = e.ts
        self.accounting.add(e)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, e)
        elif kind is ev.MalformedEvent:
            self.malformed += 1
        elif kind is ev.UnknownEvent:
            self.unknown += 1

    def add_run(self, run: RawRun, decode: Decode) -> None:
        """Events framed but not decoded (:meth:`~lpm.eventlog.reader.EventLogReader.raw_run`):
        the same state as :meth:`add` of each decoded, for a fraction of the work
        on the plain kinds (markers, messages, and types nothing here looks
        into).  Of the markers and messages only the newest are decoded, when
        the state is next read or another one is added one by one."""
        plain = self._plain
        counts = self._by_id
        marker_id = ev.UserMarker.ID
        call_id, return_id = ev.PyCall.ID, ev.PyReturn.ID
        calls = self.calls
        raw = run.raw
        pending_markers = self._pending_markers
        pending_messages = self._pending_messages
        pending = 0
        newest = self.time_ns
        for event in run.events:
            tid = event[0]
            if tid == call_id or tid == return_id:
                # Millions a second when tracing: read in place, counted as plain.
                owner = self.accounting.block_thread
                if owner is not None:
                    (code,) = _U32.unpack_from(raw, event[2])
                    if tid == call_id:
                        calls.call(owner, code, event[1])
                    else:
                        calls.ret(owner, code, event[1])
                counts[tid] = counts.get(tid, 0) + 1
                pending += 1
                if event[1] > newest:
                    newest = event[1]
            elif tid in plain:
                counts[tid] = counts.get(tid, 0) + 1
                pending += 1
                if event[1] > newest:
                    newest = event[1]
                if tid == marker_id:
                    pending_markers.append((run, event, decode))
                elif tid in _TEXT_IDS:
                    pending_messages.append((run, event, decode))
            else:
                if pending:
                    self.accounting.add_plain(pending)
                    self.events += pending
                    pending = 0
                self.time_ns = max(self.time_ns, newest)
                self.add(decode(run, event))  # never a marker or message (those are plain)
                newest = self.time_ns
        if pending:
            self.accounting.add_plain(pending)
            self.events += pending
        self.time_ns = max(self.time_ns, newest)

    def _flush_texts(self) -> None:
        for pending in (self._pending_markers, self._pending_messages):
            while pending:
                run, event, decode = pending.popleft()
                e = decode(run, event)
                if isinstance(e, ev.UserMarker):
                    self.markers.append((e.ts, e.marker))
                elif isinstance(e, (ev.UserMessage, ev.Message)):
                    self.messages.append((e.ts, e.message))

    # -- threads ----------------------------------------------------------------

    def thread(self, number: int, ts: int) -> ThreadState:
        st = self.threads.get(number)
        if st is None:
            if len(self.threads) >= self.limits.threads:
                self._evict_thread()
            st = self.threads[number] = ThreadState(number)
        st.last_ns = max(st.last_ns, ts)
        return st

    def _evict_thread(self) -> None:
        victim = next((t for t in self.threads.values() if t.finished), None)
        if victim is None:
            victim = min(self.threads.values(), key=lambda t: t.last_ns)
        del self.threads[victim.id]
        self.threads_evicted += 1
        self._limit("threads", f"more than {self.limits.threads} threads: the oldest finished (else the "
                               "longest quiet) are forgotten; threads_evicted counts them")
        acct = self.accounting.threads.pop(victim.id, None)
        if acct is not None:
            self.retired.received += acct.received
            self.retired.lost += acct.lost
            self.retired.gaps += acct.gaps

    @staticmethod
    def _newer(st: ThreadState, ts: int) -> bool:
        """Whether an event at ``ts`` may set the status: GHC writes each
        capability's buffer as a block, so a later block can carry older
        events, and the newest event says where a thread is."""
        if ts < st.status_ns:
            return False
        st.status_ns = ts
        return True

    def _create(self, e: Event) -> None:
        assert isinstance(e, ev.CreateThread)
        st = self.thread(e.thread, e.ts)
        if st.created_ns is None or e.ts < st.created_ns:
            st.created_ns = e.ts
        if self._newer(st, e.ts):
            st.status, st.finished = "created", False

    def _stop(self, e: Event) -> None:
        assert isinstance(e, ev.StopThread)
        self.calls.end_thread(e.thread, e.ts)
        st = self.thread(e.thread, e.ts)
        for cap in self.caps.values():
            if cap["running"] == e.thread:
                cap["running"] = None
        if not self._newer(st, e.ts):
            return
        st.finished = e.status == ev.THREAD_FINISHED
        st.status = "finished" if st.finished else STOP_STATUS.get(e.status, f"stopped ({e.status})")

    def _ghc_status(self, e: Event) -> None:
        number = getattr(e, "thread")
        st = self.thread(number, e.ts)
        if not self._newer(st, e.ts):
            return
        st.status, st.finished = _GHC_STATUS[type(e)], False
        if isinstance(e, ev.RunThread):
            st.cap = e.cap
            if e.cap is not None and e.cap in self.caps:
                self.caps[e.cap]["running"] = number
        elif isinstance(e, ev.MigrateThread):
            st.cap = e.new_cap

    def _label(self, e: Event) -> None:
        assert isinstance(e, ev.ThreadLabel)
        self.thread(e.thread, e.ts).label = e.label

    def _thread_info(self, e: Event) -> None:
        assert isinstance(e, ev.PyThreadInfo)
        self.thread(e.thread, e.ts).native_id = e.native_id

    def _thread_cpu(self, e: Event) -> None:
        assert isinstance(e, ev.PyThreadCpu)
        st = self.thread(e.thread, e.ts)
        st.cpu_ns = e.cpu_ns
        if st.status == "created" and self._newer(st, e.ts):
            # A Python leech says when a thread starts and ends, not when it
            # runs (the GIL decides that): one that reports CPU time is alive.
            st.status = "alive"
        self.history.thread_cpu(e.ts, e.thread, e.cpu_ns)

    # -- GHC capabilities, capsets, tasks -------------------------------------

    def _cap(self, e: Event) -> None:
        if isinstance(e, ev.CapCreate):
            self.caps[e.new_cap] = {"id": e.new_cap, "disabled": False, "running": None}
        elif isinstance(e, ev.CapDelete):
            self.caps.pop(e.old_cap, None)
        elif isinstance(e, (ev.CapDisable, ev.CapEnable)):
            cap = self.caps.setdefault(e.target_cap, {"id": e.target_cap, "disabled": False, "running": None})
            cap["disabled"] = isinstance(e, ev.CapDisable)

    def _capset(self, e: Event) -> None:
        if isinstance(e, ev.CapsetCreate):
            self.capsets[e.capset] = {"id": e.capset, "type": e.capset_type, "caps": []}
        elif isinstance(e, ev.CapsetDelete):
            self.capsets.pop(e.capset, None)
        elif isinstance(e, ev.CapsetAssignCap):
            caps = self.capsets.setdefault(e.capset, {"id": e.capset, "type": None, "caps": []})["caps"]
            if e.cap_no not in caps and len(caps) < 4096:
                caps.append(e.cap_no)
        elif isinstance(e, ev.CapsetRemoveCap):
            caps = self.capsets.get(e.capset, {}).get("caps", [])
            if e.cap_no in caps:
                caps.remove(e.cap_no)

    def _task(self, e: Event) -> None:
        if isinstance(e, ev.TaskCreate):
            if e.task_id not in self.tasks and len(self.tasks) >= self.limits.tasks:
                del self.tasks[next(iter(self.tasks))]
                self.tasks_evicted += 1
                self._limit("tasks", f"more than {self.limits.tasks} tasks: the oldest are forgotten")
            self.tasks[e.task_id] = {"id": e.task_id, "cap": e.cap_no, "tid": e.tid, "created_ns": e.ts}
        elif isinstance(e, ev.TaskMigrate):
            task = self.tasks.get(e.task_id)
            if task is not None:
                task["cap"] = e.new_cap
        elif isinstance(e, ev.TaskDelete):
            self.tasks.pop(e.task_id, None)

    # -- program ----------------------------------------------------------------

    def _program(self, e: Event) -> None:
        if isinstance(e, ev.RtsIdentifier):
            self.program["rts"] = e.rts_ident
        elif isinstance(e, ev.ProgramArgs):
            # Redacted here too: a GHC program's RTS does not redact.
            self.program["args"] = redact_argv(list(e.args))
        elif isinstance(e, ev.ProgramEnv):
            self.program["env"] = redact_env(dict(item.partition("=")[::2] for item in e.env))
        elif isinstance(e, ev.OsProcessPid):
            self.program["pid"] = e.pid
        elif isinstance(e, ev.OsProcessParentPid):
            self.program["ppid"] = e.ppid
        elif isinstance(e, ev.WallClockTime):
            self.program["wall_clock"] = [e.sec, e.nsec]

    def _setting(self, e: Event) -> None:
        assert isinstance(e, ev.PySetting)
        if e.key in self.settings or len(self.settings) < 1000:
            self.settings[e.key] = e.value

    # -- GC and heap --------------------------------------------------------------

    def _gc_begin(self, e: Event) -> None:
        self._gc_start[e.cap] = e.ts
        self.gc.in_gc = True

    def _gc_end(self, e: Event) -> None:
        self.gc.collections += 1
        self.gc.in_gc = False
        start = self._gc_start.pop(e.cap, None)
        if start is not None and e.ts >= start:
            pause = e.ts - start
            self.gc.last_pause_ns = pause
            self.gc.max_pause_ns = max(self.gc.max_pause_ns, pause)
            self.gc.total_pause_ns += pause
            self.history.pause(e.ts, pause)

    def _py_gc(self, e: Event) -> None:
        assert isinstance(e, ev.PyGcCollection)
        self.gc.by_generation[e.generation] = self.gc.by_generation.get(e.generation, 0) + 1
        self.gc.collected += e.collected
        self.gc.uncollectable += e.uncollectable

    def _ghc_gc_stats(self, e: Event) -> None:
        assert isinstance(e, ev.GCStatsGHC)
        self.gc.by_generation[e.generation] = self.gc.by_generation.get(e.generation, 0) + 1
        self.heap["ghc_copied"] = e.copied

    def _heap(self, e: Event) -> None:
        if isinstance(e, ev.PyHeap):
            self.heap.update(
                rss=e.rss, allocated_blocks=e.allocated_blocks, traced_current=e.traced_current, traced_peak=e.traced_peak
            )
            self.history.heap_figures(e.ts, {"rss": e.rss, "allocated_blocks": e.allocated_blocks,
                                             "traced_current": e.traced_current})
        elif isinstance(e, ev.HeapAllocated):
            self.heap["ghc_allocated"] = e.bytes
        elif isinstance(e, ev.HeapSize):
            self.heap["ghc_size"] = e.bytes
            self.history.heap_figures(e.ts, {"ghc_size": e.bytes})
        elif isinstance(e, ev.HeapLive):
            self.heap["ghc_live"] = e.bytes
            self.history.heap_figures(e.ts, {"ghc_live": e.bytes})
        elif isinstance(e, ev.HeapInfoGHC):  # the RTS's heap parameters (+RTS -A, -M ...)
            self.program["rts_heap"] = {
                "generations": e.generations,
                "max_heap_size": e.max_heap_size,
                "alloc_area_size": e.alloc_area_size,
                "mblock_size": e.mblock_size,
                "block_size": e.block_size,
            }

    # -- user API ---------------------------------------------------------------

    def _counter(self, e: Event) -> None:
        assert isinstance(e, ev.PyCounter)
        c = self.counters.get(e.name)
        if c is None:
            if len(self.counters) >= self.limits.counters:
                self.counters_dropped += 1
                self._limit("counters", f"more than {self.limits.counters} counter names: new ones are dropped "
                                        "(counters_dropped)")
                return
            c = self.counters[e.name] = {"value": e.value, "count": 0, "min": e.value, "max": e.value}
        c["value"] = e.value
        c["count"] += 1
        c["min"] = min(c["min"], e.value)
        c["max"] = max(c["max"], e.value)
        self.history.counter(e.ts, e.name, e.value)

    def _marker(self, e: Event) -> None:
        assert isinstance(e, ev.UserMarker)
        self.markers.append((e.ts, e.marker))

    def _message(self, e: Event) -> None:
        assert isinstance(e, (ev.UserMessage, ev.Message))
        self.messages.append((e.ts, e.message))

    def _span(self, e: Event) -> None:
        if isinstance(e, ev.PySpanBegin):
            if len(self.spans_open) < self.limits.threads:
                self.spans_open[e.span] = (e.ts, e.name)
        elif isinstance(e, ev.PySpanEnd):
            begun = self.spans_open.pop(e.span, None)
            self.spans_closed += 1
            if begun is not None:
                self.spans_recent.append((begun[0], e.ts, begun[1]))
        else:
            return
        self.history.open_spans(e.ts, len(self.spans_open))

    # -- samples ----------------------------------------------------------------

    def _generation(self, e: Event) -> None:
        assert isinstance(e, ev.PyGeneration)
        self.generation = e.generation
        self._codes.clear()

    def _code(self, e: Event) -> None:
        assert isinstance(e, ev.PyCode)
        if e.code >= _TRACED_FIRST:
            if e.code in self._traced_names or len(self._traced_names) < self.limits.traced_names:
                self._traced_names[e.code] = (e.name, e.filename, e.first_line)
            else:
                self._limit("traced-names", f"more than {self.limits.traced_names} traced functions: the "
                                            "others show as '?'")
            return
        if e.code in self._codes or len(self._codes) < self.limits.codes:
            self._codes[e.code] = (e.name, e.filename, e.first_line)
        else:
            self._limit("codes", f"more than {self.limits.codes} code objects in one generation: samples "
                                 "through the others show their frames as '?'")

    def _sample(self, e: Event) -> None:
        assert isinstance(e, ev.PySample)
        self.samples += 1
        self.thread(e.thread, e.ts)
        if len(self.functions) + len(e.frames) > self.limits.functions:
            self._prune_functions(len(e.frames))  # before the walk, so no function of this sample is cut
        seen: set[FunctionKey] = set()
        self.stacks.add(e.ts, tuple(self._codes.get(n, _UNKNOWN) for n in reversed(e.frames)))
        for depth, number in enumerate(e.frames):
            key = self._codes.get(number)
            if key is None:
                continue  # declared before this reader joined, or past the code cap
            stats = self.functions.get(key)
            if stats is None:
                stats = self.functions[key] = FunctionStats()
            if depth == 0:
                stats.own += 1
            if key not in seen:
                seen.add(key)
                stats.total += 1

    def _prune_functions(self, room: int) -> None:
        """Keep the busiest, leaving ``room`` for new entries (and a fifth of
        the table, so pruning is rare)."""
        keep = sorted(self.functions.items(), key=lambda kv: kv[1].total, reverse=True)
        cut = max(0, min(self.limits.functions * 4 // 5, self.limits.functions - room))
        self.functions_pruned += len(keep) - cut
        self.functions = dict(keep[:cut])
        self._limit("functions", f"more than {self.limits.functions} functions sampled: the least sampled "
                                 "are forgotten (functions_pruned)")

    def _limit(self, name: str, text: str) -> None:
        """A limit was hit: said once per source and limit; counted always."""
        if name not in self._limits_hit:
            self._limits_hit.add(name)
            log.warning("%s: %s", self.label, text)

    # -- traced calls ---------------------------------------------------------------

    def _call(self, e: Event) -> None:
        owner = self.accounting.block_thread  # add() gave it the event first
        if owner is not None:
            if isinstance(e, ev.PyCall):
                self.calls.call(owner, e.code, e.ts)
            elif isinstance(e, ev.PyReturn):
                self.calls.ret(owner, e.code, e.ts)

    def _aio_task(self, e: Event) -> None:
        if isinstance(e, ev.PyTaskCreate):
            self.aio_counts["created"] += 1
            if len(self.aio_open) >= self.limits.tasks:
                self.aio_dropped += 1
                self._limit("asyncio-tasks", f"more than {self.limits.tasks} asyncio tasks open: the newest are "
                                             "counted, not listed")
                return
            self.aio_open[e.task] = [e.name, e.ts, None, e.coroutine, ""]
        elif isinstance(e, ev.PyTaskStart):
            task = self.aio_open.get(e.task)
            if task is not None:
                task[0] = e.name or task[0]
                task[2] = e.ts
        elif isinstance(e, ev.PyTaskAwait):
            task = self.aio_open.get(e.task)
            if task is not None:
                task[4] = e.chain
        elif isinstance(e, ev.PyTaskEnd):
            status = ev.TASK_STATUS.get(e.status, "done")
            self.aio_counts[status] = self.aio_counts.get(status, 0) + 1
            task = self.aio_open.pop(e.task, None)
            if task is not None:
                self.aio_recent.append((task[0], status, task[1], e.ts))

    def asyncio_state(self) -> Dict[str, Any]:
        """asyncio tracking's view: counts, open tasks (the oldest 50), the newest finished."""
        lag = self.counters.get("asyncio.lag_ms")
        return {
            **self.aio_counts,
            "open": len(self.aio_open),
            "not_listed": self.aio_dropped,
            "open_tasks": [{"task": n, "name": t[0], "coroutine": t[3], "created": t[1], "started": t[2],
                            "awaiting": t[4]} for n, t in sorted(self.aio_open.items())[:50]],
            "recent": [{"name": name, "status": status, "created": c, "end": end}
                       for name, status, c, end in self.aio_recent],
            "lag_ms": None if lag is None else _finite(lag["value"]),
            "lag_ms_max": None if lag is None else _finite(lag["max"]),
        }

    def _alloc_stats(self, e: Event) -> None:
        assert isinstance(e, ev.PyAllocStats)
        self.thread(e.thread, e.ts)
        # The monitor's periodic totals and a thread's last ones come in
        # different blocks, in either order: the newest counts.
        known = self.alloc_totals.get(e.thread)
        if known is None or e.ts >= known[0]:
            self.alloc_totals[e.thread] = (e.ts, e.allocated, e.allocations, e.freed, e.frees)

    def _alloc_sample(self, e: Event) -> None:
        assert isinstance(e, ev.PyAllocSample)
        self.alloc_sampled += e.size
        if not e.frames:
            return
        code = e.frames[0]
        if code not in self.alloc_sites and len(self.alloc_sites) >= self.limits.functions:
            self._limit("alloc-sites", f"more than {self.limits.functions} allocating functions sampled: the "
                                       "others count only in the total")
            return
        self.alloc_sites[code] = self.alloc_sites.get(code, 0) + e.size

    def allocations(self, n: int) -> Dict[str, Any]:
        """Allocation tracking's view: every thread's totals, and the ``n``
        functions that allocated most (sampled bytes)."""
        merged: Dict[FunctionKey, int] = {}
        for code, size in self.alloc_sites.items():
            key = self._traced_names.get(code, _UNKNOWN)
            merged[key] = merged.get(key, 0) + size
        sites = sorted(merged.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return {
            "threads": [{"thread": t, "allocated": a, "allocations": na, "freed": f, "frees": nf}
                        for t, (_, a, na, f, nf) in sorted(self.alloc_totals.items())],
            "sampled_bytes": self.alloc_sampled,
            "sites": [{"name": name, "file": filename, "line": line, "bytes": size}
                      for (name, filename, line), size in sites],
        }

    def traced_functions(self, n: int) -> List[Dict[str, Any]]:
        """The ``n`` traced functions with the most total time."""
        return self.calls.by_function(self._traced_names, n)

    def call_tree(self, most: int = 2000) -> Dict[str, Any]:
        """The traced call tree (see :meth:`lpm.server.calls.CallTree.tree`)."""
        return self.calls.tree(self._traced_names, most)

    # -- loss ---------------------------------------------------------------------

    def _loss(self, e: Event) -> None:
        assert isinstance(e, ev.PyDataLoss)
        self.lost_events += e.count
        self.lost_bytes += e.bytes
        self.history.dropped(e.ts, self.lost_events)

    # -- output -------------------------------------------------------------------

    def hottest(self, n: int) -> List[Dict[str, Any]]:
        top = sorted(self.functions.items(), key=lambda kv: (kv[1].total, kv[1].own), reverse=True)[:n]
        return [
            {"name": name, "file": filename, "line": line, "own": s.own, "total": s.total}
            for (name, filename, line), s in top
        ]

    def loss(self) -> Dict[str, Any]:
        accounts = list(self.accounting.threads.values())
        return {
            "events_lost": self.lost_events,
            "bytes_lost": self.lost_bytes,
            "received": self.retired.received + sum(a.received for a in accounts),
            "reported_lost": self.retired.lost + sum(a.lost for a in accounts),
            "unreported": self.retired.gaps + sum(a.gaps for a in accounts),
            "malformed": self.malformed,
            "threads": [
                {
                    "thread": a.thread,
                    "received": a.received,
                    "lost": a.lost,
                    "produced": None if a.produced is None else a.produced - (a.first_seq or 0),
                    "gaps": a.gaps,
                }
                for a in sorted(accounts, key=lambda a: a.thread)
            ],
        }

    def history_json(self) -> Dict[str, Any]:
        """The figures over the run (:mod:`lpm.server.history`), threads named."""
        return self.history.json({n: t.label for n, t in self.threads.items()})

    def _type_counts(self) -> Dict[str, int]:
        counts = dict(self.by_type)
        for tid, n in self._by_id.items():
            name = EVENT_TYPES[tid].__name__
            counts[name] = counts.get(name, 0) + n
        return dict(sorted(counts.items()))

    def snapshot(self) -> Dict[str, Any]:
        """The whole state as a JSON-ready dict."""
        self._flush_texts()
        return {
            "time_ns": self.time_ns,
            "headers": self.headers,
            "events": self.events,
            "by_type": self._type_counts(),
            "program": dict(self.program),
            "settings": dict(self.settings),
            "threads": [t.json() for t in sorted(self.threads.values(), key=lambda t: t.id)],
            "threads_evicted": self.threads_evicted,
            "caps": [dict(c) for _, c in sorted(self.caps.items())],
            "capsets": [dict(c, caps=list(c["caps"])) for _, c in sorted(self.capsets.items())],
            "tasks": [dict(t) for _, t in sorted(self.tasks.items())],
            "tasks_evicted": self.tasks_evicted,
            "gc": self.gc.json(),
            "heap": dict(self.heap),
            "counters": {k: {f: _finite(x) for f, x in v.items()} for k, v in sorted(self.counters.items())},
            "counters_dropped": self.counters_dropped,
            "markers": [{"ts": ts, "name": name} for ts, name in self.markers],
            "messages": [{"ts": ts, "text": text} for ts, text in self.messages],
            "spans": {
                "open": len(self.spans_open),
                "closed": self.spans_closed,
                "recent": [{"name": name, "begin": b, "end": end} for b, end, name in self.spans_recent],
                "current": [{"name": name, "begin": b} for b, name in sorted(self.spans_open.values())[-20:]],
            },
            "samples": self.samples,
            "functions": self.hottest(self.limits.snapshot_functions),
            "functions_pruned": self.functions_pruned,
            "calls": self.calls.summary(self._traced_names, self.limits.snapshot_functions),
            "allocations": self.allocations(self.limits.snapshot_functions),
            "asyncio": self.asyncio_state(),
            "generation": self.generation,
            "loss": self.loss(),
            "unknown_events": self.unknown,
        }


#: Markers and messages: add_run decodes only the newest, which are all add would keep.
_TEXT_CLASSES = frozenset({ev.UserMarker, ev.UserMessage, ev.Message})
_TEXT_IDS = frozenset(cls.ID for cls in _TEXT_CLASSES)
#: What the loss accounting looks into.
_ACCOUNTED = frozenset({ev.EventBlock.ID, ev.PyBlockInfo.ID, ev.PySeqPoint.ID, ev.StopThread.ID, ev.PyDataLoss.ID})


def _plain(type_id: int, declared: int) -> bool:
    """Whether add_run may count events of this type without decoding them:
    known, changing nothing but counts (or a marker or message), and
    impossible to fail decoding (add would count a failure as MalformedEvent)."""
    cls = EVENT_TYPES.get(type_id)
    if cls is None or type_id in _ACCOUNTED or (cls in _HANDLERS and type_id not in _TEXT_IDS):
        return False
    layout = cls.LAYOUT
    if layout.fixed is not None:  # ``declared`` is the reader's: -1 for variable, quirks applied
        return declared >= layout.fixed.size and not cls.OLD_SIZES
    return set(layout.codes) <= {"t", "y"}


def _finite(x: float) -> float | str:
    """JSON has no NaN or infinity (browsers' JSON.parse rejects them)."""
    return x if math.isfinite(x) else repr(x)


_HANDLERS: Dict[type, Any] = {
    ev.CreateThread: SourceState._create,
    ev.StopThread: SourceState._stop,
    ev.RunThread: SourceState._ghc_status,
    ev.ThreadRunnable: SourceState._ghc_status,
    ev.MigrateThread: SourceState._ghc_status,
    ev.WakeupThread: SourceState._ghc_status,
    ev.ThreadLabel: SourceState._label,
    ev.PyThreadInfo: SourceState._thread_info,
    ev.PyThreadCpu: SourceState._thread_cpu,
    ev.CapCreate: SourceState._cap,
    ev.CapDelete: SourceState._cap,
    ev.CapDisable: SourceState._cap,
    ev.CapEnable: SourceState._cap,
    ev.CapsetCreate: SourceState._capset,
    ev.CapsetDelete: SourceState._capset,
    ev.CapsetAssignCap: SourceState._capset,
    ev.CapsetRemoveCap: SourceState._capset,
    ev.TaskCreate: SourceState._task,
    ev.TaskMigrate: SourceState._task,
    ev.TaskDelete: SourceState._task,
    ev.RtsIdentifier: SourceState._program,
    ev.ProgramArgs: SourceState._program,
    ev.ProgramEnv: SourceState._program,
    ev.OsProcessPid: SourceState._program,
    ev.OsProcessParentPid: SourceState._program,
    ev.WallClockTime: SourceState._program,
    ev.PySetting: SourceState._setting,
    ev.StartGC: SourceState._gc_begin,
    ev.EndGC: SourceState._gc_end,
    ev.PyGcCollection: SourceState._py_gc,
    ev.GCStatsGHC: SourceState._ghc_gc_stats,
    ev.PyHeap: SourceState._heap,
    ev.HeapAllocated: SourceState._heap,
    ev.HeapSize: SourceState._heap,
    ev.HeapLive: SourceState._heap,
    ev.HeapInfoGHC: SourceState._heap,
    ev.PyCounter: SourceState._counter,
    ev.UserMarker: SourceState._marker,
    ev.UserMessage: SourceState._message,
    ev.Message: SourceState._message,
    ev.PySpanBegin: SourceState._span,
    ev.PySpanEnd: SourceState._span,
    ev.PyGeneration: SourceState._generation,
    ev.PyCode: SourceState._code,
    ev.PySample: SourceState._sample,
    ev.PyDataLoss: SourceState._loss,
    ev.PyCall: SourceState._call,
    ev.PyReturn: SourceState._call,
    ev.PyAllocStats: SourceState._alloc_stats,
    ev.PyAllocSample: SourceState._alloc_sample,
    ev.PyTaskCreate: SourceState._aio_task,
    ev.PyTaskStart: SourceState._aio_task,
    ev.PyTaskEnd: SourceState._aio_task,
    ev.PyTaskAwait: SourceState._aio_task,
}

#: The tracer's code numbers start here (lpm/leech/tracing.py).
_TRACED_FIRST = 1 << 31
_U32 = struct.Struct(">I")
