"""Every event type lpm knows, in one registry.

Each type is a small dataclass whose fields, after ``ts`` and ``cap``, are the
payload fields in wire order.  Its class attributes say the rest:

- ``ID``, ``LAYOUT``, ``VARIABLE`` and ``DESCRIPTION``: from the class's entry
  in :mod:`lpm.eventlog.catalog`: the event type id (standard GHC ids where the
  meaning fits exactly, lpm's own Python events in ``LPM_ID_FIRST`` ..
  ``LPM_ID_LAST``), the payload layout (see :mod:`lpm.eventlog.layout`),
  whether the header declares it variable-size, and the header's description
  (GHC's own text for GHC types).
- ``TEXT``: how ``lpm show`` prints it, a ``str.format`` template over the
  fields; types that need more override :meth:`Event.describe`.
- ``OLD_SIZES``: shorter layouts older runtimes wrote, keyed by payload size.

Class names of GHC types are the ghc-events constructor names, so counts per
type can be compared with that library's directly (ghc-events 0.17 has no
constructor for id 59, which it reports as an unknown event).

``ts`` is nanoseconds since the program started; ``cap`` is the capability of
the block the event arrived in (``None`` outside a block or in the global
buffer).  For lpm's streams a block holds one Python thread's buffer and
``cap`` is that thread's slot.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, ClassVar, Dict, Tuple, Type, TypeVar

from . import catalog
from .format import BLOCK_MARKER_ID, LPM_ID_FIRST, LPM_ID_LAST, VARIABLE as _VARIABLE_SIZE
from .layout import Layout, Value


@dataclass
class Event:
    """Base of every decoded event."""

    __slots__ = ("ts", "cap")
    ID: ClassVar[int] = -1
    LAYOUT: ClassVar[Layout] = Layout("")
    VARIABLE: ClassVar[bool] = False
    DESCRIPTION: ClassVar[str] = ""
    TEXT: ClassVar[str] = ""
    OLD_SIZES: ClassVar[Dict[int, Layout]] = {}
    FIELDS: ClassVar[Tuple[str, ...]] = ()

    ts: int
    cap: int | None

    def payload(self) -> tuple[Value, ...]:
        """The payload fields in wire order."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    def describe(self) -> str:
        """One line of text, like ``ghc-events show`` prints after the cap."""
        return self.TEXT.format(**{name: getattr(self, name) for name in self.FIELDS})


E = TypeVar("E", bound=Type[Event])

#: Every registered event type by id.
EVENT_TYPES: dict[int, type[Event]] = {}


def event(text: str, *, old: dict[int, str] | None = None) -> Callable[[E], E]:
    """Register an event class under the catalog entry of its name.

    ``text`` is how ``lpm show`` prints it; ``old`` maps payload sizes older
    runtimes wrote to their shorter layouts.
    """

    def register(cls: E) -> E:
        entry = catalog.BY_NAME.get(cls.__name__)
        if entry is None:
            raise TypeError(f"{cls.__name__} is not in lpm.eventlog.catalog.TYPES")
        type_id, _, layout, description = entry
        compiled = Layout(layout)
        names = [f.name for f in fields(cls)][2:]
        if len(names) != len(compiled):
            raise TypeError(f"{cls.__name__}: layout {layout!r} has {len(compiled)} fields, class has {names}")
        cls.ID = type_id
        cls.LAYOUT = compiled
        cls.VARIABLE = catalog.declared_size(layout) == _VARIABLE_SIZE
        cls.DESCRIPTION = description
        cls.TEXT = text
        cls.OLD_SIZES = {size: Layout(codes) for size, codes in (old or {}).items()}
        cls.FIELDS = tuple(names)
        EVENT_TYPES[type_id] = cls
        return cls

    return register


def declared_size(cls: type[Event]) -> int:
    """The size a header declares for ``cls``: its payload size, or 0xffff."""
    if cls.VARIABLE or cls.LAYOUT.size is None:
        return _VARIABLE_SIZE
    return cls.LAYOUT.size


@dataclass
class UnknownEvent(Event):
    """An event whose id the header declared but lpm has no layout for."""

    __slots__ = ("type_id", "data")
    type_id: int
    data: bytes

    def describe(self) -> str:
        return f"Unknown event type {self.type_id} ({len(self.data)} bytes)"


@dataclass
class MalformedEvent(Event):
    """A known event type whose payload does not fit its layout.

    Only a lenient reader yields these; a strict one raises ``FormatError``.
    """

    __slots__ = ("type_id", "data", "reason")
    type_id: int
    data: bytes
    reason: str

    def describe(self) -> str:
        return f"malformed event type {self.type_id} ({len(self.data)} bytes): {self.reason}"


# -- threads ----------------------------------------------------------------

#: STOP_THREAD status codes as the GHC runtime writes them (not as its header
#: comment says: BlockedOnMsgThrowTo is 18, not 16).
STOP_STATUS: dict[int, str] = {
    0: "no status",
    1: "heap overflow",
    2: "stack overflow",
    3: "thread yielding",
    4: "thread blocked",
    5: "thread finished",
    6: "making a foreign call",
    7: "blocked on an MVar",
    8: "blocked on black hole",
    9: "blocked on I/O read",
    10: "blocked on I/O write",
    11: "blocked on threadDelay",
    12: "blocked in STM retry",
    13: "blocked on asyncDoProc",
    16: "blocked in an unsafe foreign call",
    17: "blocked in an interruptible foreign call",
    18: "blocked in throwTo",
    19: "thread migrating",
    20: "blocked reading an MVar",
}
THREAD_FINISHED = 5  # lpm.leech.wire has the same constant for the leech


@event("creating thread {thread}")
@dataclass
class CreateThread(Event):
    __slots__ = ("thread",)
    thread: int


@event("running thread {thread}")
@dataclass
class RunThread(Event):
    __slots__ = ("thread",)
    thread: int


@event("stopping thread {thread}")
@dataclass
class StopThread(Event):
    __slots__ = ("thread", "status", "blocked_on")
    thread: int
    status: int
    blocked_on: int

    def describe(self) -> str:
        why = STOP_STATUS.get(self.status, f"unknown status {self.status}")
        if self.status == 8 and self.blocked_on:
            why += f" owned by thread {self.blocked_on}"
        return f"stopping thread {self.thread} ({why})"


@event("thread {thread} is runnable")
@dataclass
class ThreadRunnable(Event):
    __slots__ = ("thread",)
    thread: int


@event("migrating thread {thread} to cap {new_cap}")
@dataclass
class MigrateThread(Event):
    __slots__ = ("thread", "new_cap")
    thread: int
    new_cap: int


@event("waking up thread {thread} on cap {other_cap}")
@dataclass
class WakeupThread(Event):
    __slots__ = ("thread", "other_cap")
    thread: int
    other_cap: int


@event("creating spark thread {spark_thread}")
@dataclass
class CreateSparkThread(Event):
    __slots__ = ("spark_thread",)
    spark_thread: int


@event('thread {thread} has label "{label}"')
@dataclass
class ThreadLabel(Event):
    __slots__ = ("thread", "label")
    thread: int
    label: str


# -- messages and markers ---------------------------------------------------


@event("{message}")
@dataclass
class Message(Event):
    __slots__ = ("message",)
    message: str


@event("block of {size} bytes for cap {block_cap}, ending at {end_ts}")
@dataclass
class EventBlock(Event):
    """A block marker; ``size`` counts the block's bytes from the marker's first."""

    __slots__ = ("size", "end_ts", "block_cap")
    size: int
    end_ts: int
    block_cap: int


@event("{message}")
@dataclass
class UserMessage(Event):
    __slots__ = ("message",)
    message: str


@event("marker: {marker}")
@dataclass
class UserMarker(Event):
    __slots__ = ("marker",)
    marker: str


@event("binary message")
@dataclass
class UserBinaryMessage(Event):
    __slots__ = ("data",)
    data: bytes

    def describe(self) -> str:
        return f"binary message of {len(self.data)} bytes: {self.data[:32].hex()}"


# -- garbage collection -----------------------------------------------------


@event("starting GC")
@dataclass
class StartGC(Event):
    __slots__ = ()


@event("finished GC")
@dataclass
class EndGC(Event):
    __slots__ = ()


@event("requesting sequential GC")
@dataclass
class RequestSeqGC(Event):
    __slots__ = ()


@event("requesting parallel GC")
@dataclass
class RequestParGC(Event):
    __slots__ = ()


@event("GC idle")
@dataclass
class GCIdle(Event):
    __slots__ = ()


@event("GC working")
@dataclass
class GCWork(Event):
    __slots__ = ()


@event("GC done")
@dataclass
class GCDone(Event):
    __slots__ = ()


@event("all caps stopped for GC")
@dataclass
class GlobalSyncGC(Event):
    __slots__ = ()


@event(
    "GC stats for heap capset {heap_capset}: generation {generation}, {copied} bytes copied, "
    "{slop} bytes slop, {frag} bytes fragmentation, {par_n_threads} par threads, "
    "{par_max_copied} bytes max par copied, {par_tot_copied} bytes total par copied, "
    "{par_balanced_copied} bytes balanced par copied",
    old={50: "IHQQQIQQ"},
)
@dataclass
class GCStatsGHC(Event):
    """``par_balanced_copied`` is ``None`` in logs older than GHC 8.6 (50-byte payload)."""

    __slots__ = (
        "heap_capset",
        "generation",
        "copied",
        "slop",
        "frag",
        "par_n_threads",
        "par_max_copied",
        "par_tot_copied",
        "par_balanced_copied",
    )
    heap_capset: int
    generation: int
    copied: int
    slop: int
    frag: int
    par_n_threads: int
    par_max_copied: int
    par_tot_copied: int
    par_balanced_copied: int | None


# -- heap -------------------------------------------------------------------


@event("allocated on heap capset {heap_capset}: {bytes} total bytes till now")
@dataclass
class HeapAllocated(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event("size of heap capset {heap_capset}: {bytes} bytes")
@dataclass
class HeapSize(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event("live data in heap capset {heap_capset}: {bytes} bytes")
@dataclass
class HeapLive(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event(
    "heap stats for heap capset {heap_capset}: generations {generations}, {max_heap_size} bytes max heap size, "
    "{alloc_area_size} bytes alloc area size, {mblock_size} bytes mblock size, {block_size} bytes block size",
)
@dataclass
class HeapInfoGHC(Event):
    __slots__ = ("heap_capset", "generations", "max_heap_size", "alloc_area_size", "mblock_size", "block_size")
    heap_capset: int
    generations: int
    max_heap_size: int
    alloc_area_size: int
    mblock_size: int
    block_size: int


@event("memory returned in capset {heap_capset}: current {current} mblocks, needed {needed}, returned {returned}")
@dataclass
class MemReturn(Event):
    __slots__ = ("heap_capset", "current", "needed", "returned")
    heap_capset: int
    current: int
    needed: int
    returned: int


@event("blocks size of heap capset {heap_capset}: {bytes} bytes")
@dataclass
class BlocksSize(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


def _haskell_list(items: Tuple[str, ...]) -> str:
    """A list of strings as ghc-events prints one: ["a","b"] (non-ASCII kept)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "[" + ",".join(quoted) + "]"


# -- capabilities and capability sets --------------------------------------

CAPSET_TYPES = {0: "CapsetUnknown", 1: "CapsetCustom", 2: "CapsetOsProcess", 3: "CapsetClockDomain"}


@event("created cap {new_cap}")
@dataclass
class CapCreate(Event):
    __slots__ = ("new_cap",)
    new_cap: int


@event("deleted cap {old_cap}")
@dataclass
class CapDelete(Event):
    __slots__ = ("old_cap",)
    old_cap: int


@event("disabled cap {target_cap}")
@dataclass
class CapDisable(Event):
    __slots__ = ("target_cap",)
    target_cap: int


@event("enabled cap {target_cap}")
@dataclass
class CapEnable(Event):
    __slots__ = ("target_cap",)
    target_cap: int


@event("created capset {capset}")
@dataclass
class CapsetCreate(Event):
    __slots__ = ("capset", "capset_type")
    capset: int
    capset_type: int

    def describe(self) -> str:
        kind = CAPSET_TYPES.get(self.capset_type, f"type {self.capset_type}")
        return f"created capset {self.capset} of type {kind}"


@event("deleted capset {capset}")
@dataclass
class CapsetDelete(Event):
    __slots__ = ("capset",)
    capset: int


@event("assigned cap {cap_no} to capset {capset}")
@dataclass
class CapsetAssignCap(Event):
    __slots__ = ("capset", "cap_no")
    capset: int
    cap_no: int


@event("removed cap {cap_no} from capset {capset}")
@dataclass
class CapsetRemoveCap(Event):
    __slots__ = ("capset", "cap_no")
    capset: int
    cap_no: int


# -- process and runtime information ----------------------------------------


@event('capset {capset}: RTS version "{rts_ident}"')
@dataclass
class RtsIdentifier(Event):
    __slots__ = ("capset", "rts_ident")
    capset: int
    rts_ident: str


@event("capset {capset}: args: {args}")
@dataclass
class ProgramArgs(Event):
    __slots__ = ("capset", "args")
    capset: int
    args: Tuple[str, ...]

    def describe(self) -> str:
        return f"capset {self.capset}: args: {_haskell_list(self.args)}"


@event("capset {capset}: env: {env}")
@dataclass
class ProgramEnv(Event):
    __slots__ = ("capset", "env")
    capset: int
    env: Tuple[str, ...]

    def describe(self) -> str:
        return f"capset {self.capset}: env: {_haskell_list(self.env)}"


@event("capset {capset}: pid {pid}")
@dataclass
class OsProcessPid(Event):
    __slots__ = ("capset", "pid")
    capset: int
    pid: int


@event("capset {capset}: parent pid {ppid}")
@dataclass
class OsProcessParentPid(Event):
    __slots__ = ("capset", "ppid")
    capset: int
    ppid: int


@event("capset {capset}: wall clock time {sec}s {nsec}ns (unix epoch)")
@dataclass
class WallClockTime(Event):
    __slots__ = ("capset", "sec", "nsec")
    capset: int
    sec: int
    nsec: int


# -- tasks (OS threads of the GHC runtime) ----------------------------------


@event("task 0x{task_id:x} created on cap {cap_no} with OS kernel thread {tid}")
@dataclass
class TaskCreate(Event):
    __slots__ = ("task_id", "cap_no", "tid")
    task_id: int
    cap_no: int
    tid: int


@event("task 0x{task_id:x} migrated from cap {cap_no} to cap {new_cap}")
@dataclass
class TaskMigrate(Event):
    __slots__ = ("task_id", "cap_no", "new_cap")
    task_id: int
    cap_no: int
    new_cap: int


@event("task 0x{task_id:x} deleted")
@dataclass
class TaskDelete(Event):
    __slots__ = ("task_id",)
    task_id: int


# -- sparks -----------------------------------------------------------------


@event(
    "spark stats: {created} created, {converted} converted, {remaining} remaining "
    "({overflowed} overflowed, {dud} dud, {gcd} GC'd, {fizzled} fizzled)",
)
@dataclass
class SparkCounters(Event):
    __slots__ = ("created", "dud", "overflowed", "converted", "gcd", "fizzled", "remaining")
    created: int
    dud: int
    overflowed: int
    converted: int
    gcd: int
    fizzled: int
    remaining: int


@event("spark created")
@dataclass
class SparkCreate(Event):
    __slots__ = ()


@event("dud spark discarded")
@dataclass
class SparkDud(Event):
    __slots__ = ()


@event("overflowed spark discarded")
@dataclass
class SparkOverflow(Event):
    __slots__ = ()


@event("running a local spark")
@dataclass
class SparkRun(Event):
    __slots__ = ()


@event("stealing a spark from cap {victim_cap}")
@dataclass
class SparkSteal(Event):
    __slots__ = ("victim_cap",)
    victim_cap: int


@event("spark fizzled")
@dataclass
class SparkFizzle(Event):
    __slots__ = ()


@event("spark GCed")
@dataclass
class SparkGC(Event):
    __slots__ = ()


@event("empty event for bug #9003")
@dataclass
class HackBugT9003(Event):
    __slots__ = ()


# -- heap and time profiling ------------------------------------------------


@event("start heap profiling {heap_prof_id} at sampling period {sampling_period} broken down by {breakdown}")
@dataclass
class HeapProfBegin(Event):
    BREAKDOWNS: ClassVar[Dict[int, str]] = {
        1: "cost centre stack",
        2: "module",
        3: "closure description",
        4: "type description",
        5: "retainer",
        6: "biography",
        7: "closure type",
        8: "info table",
    }

    __slots__ = (
        "heap_prof_id",
        "sampling_period",
        "breakdown",
        "module_filter",
        "closure_descr_filter",
        "type_descr_filter",
        "cost_centre_filter",
        "cost_centre_stack_filter",
        "retainer_filter",
        "biography_filter",
    )
    heap_prof_id: int
    sampling_period: int
    breakdown: int
    module_filter: str
    closure_descr_filter: str
    type_descr_filter: str
    cost_centre_filter: str
    cost_centre_stack_filter: str
    retainer_filter: str
    biography_filter: str

    def describe(self) -> str:
        by = self.BREAKDOWNS.get(self.breakdown, f"breakdown {self.breakdown}")
        return f"start heap profiling {self.heap_prof_id} at sampling period {self.sampling_period} broken down by {by}"


@event("cost centre {cost_centre_id} {label} in {module} at {srcloc}")
@dataclass
class HeapProfCostCentre(Event):
    __slots__ = ("cost_centre_id", "label", "module", "srcloc", "flags")
    cost_centre_id: int
    label: str
    module: str
    srcloc: str
    flags: int


@event("start heap prof sample {era}")
@dataclass
class HeapProfSampleBegin(Event):
    __slots__ = ("era",)
    era: int


@event("heap prof sample {heap_prof_id}, residency {residency}, cost centre stack {stack}")
@dataclass
class HeapProfSampleCostCentre(Event):
    __slots__ = ("heap_prof_id", "residency", "stack")
    heap_prof_id: int
    residency: int
    stack: Tuple[int, ...]

    def describe(self) -> str:
        stack = ", ".join(map(str, self.stack))
        return f"heap prof sample {self.heap_prof_id}, residency {self.residency}, cost centre stack {stack}"


@event("heap prof sample {heap_prof_id}, residency {residency}, label {label}")
@dataclass
class HeapProfSampleString(Event):
    __slots__ = ("heap_prof_id", "residency", "label")
    heap_prof_id: int
    residency: int
    label: str


@event("end prof sample {era}")
@dataclass
class HeapProfSampleEnd(Event):
    __slots__ = ("era",)
    era: int


@event("start heap prof (biographical) sample {era} at {sample_ts}")
@dataclass
class HeapBioProfSampleBegin(Event):
    __slots__ = ("era", "sample_ts")
    era: int
    sample_ts: int


@event("cap {capability} tick {ticks}: cost centre stack {stack}")
@dataclass
class ProfSampleCostCentre(Event):
    __slots__ = ("capability", "ticks", "stack")
    capability: int
    ticks: int
    stack: Tuple[int, ...]

    def describe(self) -> str:
        return f"cap {self.capability} tick {self.ticks}: cost centre stack {', '.join(map(str, self.stack))}"


@event("start time profiling, tick interval {tick_interval} ns")
@dataclass
class ProfBegin(Event):
    __slots__ = ("tick_interval",)
    tick_interval: int


@event("info table 0x{info_ptr:x} {table_name} ({closure_desc}, {ty_desc}, {label}) in {module} at {srcloc}")
@dataclass
class InfoTableProv(Event):
    __slots__ = ("info_ptr", "table_name", "closure_desc", "ty_desc", "label", "module", "srcloc")
    info_ptr: int
    table_name: str
    closure_desc: str
    ty_desc: str
    label: str
    module: str
    srcloc: str


# -- non-moving collector ---------------------------------------------------


@event("concurrent mark began")
@dataclass
class ConcMarkBegin(Event):
    __slots__ = ()


@event("concurrent mark ended: {marked_objects} objects marked")
@dataclass
class ConcMarkEnd(Event):
    __slots__ = ("marked_objects",)
    marked_objects: int


@event("post-mark synchronization began")
@dataclass
class ConcSyncBegin(Event):
    __slots__ = ()


@event("post-mark synchronization ended")
@dataclass
class ConcSyncEnd(Event):
    __slots__ = ()


@event("concurrent sweep began")
@dataclass
class ConcSweepBegin(Event):
    __slots__ = ()


@event("concurrent sweep ended")
@dataclass
class ConcSweepEnd(Event):
    __slots__ = ()


@event("update remembered set flushed by cap {flushed_cap}")
@dataclass
class ConcUpdRemSetFlush(Event):
    __slots__ = ("flushed_cap",)
    flushed_cap: int


@event(
    "nonmoving heap census {log_block_size}: {active_segs} active segments, "
    "{filled_segs} filled segments, {live_blocks} live blocks",
)
@dataclass
class NonmovingHeapCensus(Event):
    """GHC 9.0.2's 13-byte layout (log2 of the block size first; the last
    field is the census's live blocks, as the runtime posts n_live_blocks).

    Later runtimes write a u16 block size there; that 14-byte payload decodes
    as this layout's prefix plus one byte, so the first field is then wrong:
    a known limit, as no GHC on these machines writes the newer form.
    """

    __slots__ = ("log_block_size", "active_segs", "filled_segs", "live_blocks")
    log_block_size: int
    active_segs: int
    filled_segs: int
    live_blocks: int

    def describe(self) -> str:
        return (
            f"nonmoving heap census {1 << self.log_block_size}: {self.active_segs} active segments, "
            f"{self.filled_segs} filled segments, {self.live_blocks} live blocks"
        )


# -- ticky counters ---------------------------------------------------------


@event("ticky counter {ctr_id}: {entries} entries, {allocs} allocs, {allocd} allocd")
@dataclass
class TickyCounterSample(Event):
    __slots__ = ("ctr_id", "entries", "allocs", "allocd")
    ctr_id: int
    entries: int
    allocs: int
    allocd: int


@event("ticky begin counter sample")
@dataclass
class TickyBeginSample(Event):
    __slots__ = ()


# -- lpm's own Python events (ids LPM_ID_FIRST ..) ----------------------------
#
# A Python thread is named by its lpm thread number (u32, first seen = 1), which
# is also the GHC thread id used in CreateThread/StopThread/ThreadLabel.


@event("thread {thread} is native thread {native_id}")
@dataclass
class PyThreadInfo(Event):
    __slots__ = ("thread", "native_id")
    thread: int
    native_id: int


@event("thread {thread} has used {cpu_ns} ns of CPU")
@dataclass
class PyThreadCpu(Event):
    __slots__ = ("thread", "cpu_ns")
    thread: int
    cpu_ns: int


@event("python GC of generation {generation}: {collected} collected, {uncollectable} uncollectable")
@dataclass
class PyGcCollection(Event):
    __slots__ = ("generation", "collected", "uncollectable")
    generation: int
    collected: int
    uncollectable: int


@event("python heap: rss {rss} bytes, {allocated_blocks} blocks, traced {traced_current} bytes (peak {traced_peak})")
@dataclass
class PyHeap(Event):
    __slots__ = ("rss", "allocated_blocks", "traced_current", "traced_peak")
    rss: int
    allocated_blocks: int
    traced_current: int
    traced_peak: int


@event("code {code} is {name} at {filename}:{first_line}")
@dataclass
class PyCode(Event):
    __slots__ = ("code", "first_line", "name", "filename")
    code: int
    first_line: int
    name: str
    filename: str


@event("sample of thread {thread}: {frames}")
@dataclass
class PySample(Event):
    """``frames`` are code numbers from PyCode events, innermost first."""

    __slots__ = ("thread", "frames")
    thread: int
    frames: Tuple[int, ...]


@event("span {span} begins: {name}")
@dataclass
class PySpanBegin(Event):
    __slots__ = ("span", "name")
    span: int
    name: str


@event("span {span} ends")
@dataclass
class PySpanEnd(Event):
    __slots__ = ("span",)
    span: int


@event("counter {name} = {value}")
@dataclass
class PyCounter(Event):
    __slots__ = ("value", "name")
    value: float
    name: str


@event("thread {thread} lost {count} events ({bytes} bytes) from sequence number {first_seq}")
@dataclass
class PyDataLoss(Event):
    __slots__ = ("thread", "first_seq", "count", "bytes")
    thread: int
    first_seq: int
    count: int
    bytes: int


@event("thread {thread} has produced {seq} events")
@dataclass
class PySeqPoint(Event):
    __slots__ = ("thread", "seq")
    thread: int
    seq: int


@event("generation {generation} begins")
@dataclass
class PyGeneration(Event):
    __slots__ = ("generation",)
    generation: int


@event("setting {key} = {value}")
@dataclass
class PySetting(Event):
    __slots__ = ("key", "value")
    key: str
    value: str


@event("block of thread {thread} from sequence number {first_seq}")
@dataclass
class PyBlockInfo(Event):
    """Second event of every block a leech writes: whose buffer it is, and the
    sequence number of its first counted event (every event of the thread but
    PyDataLoss counts, dropped ones included)."""

    __slots__ = ("thread", "first_seq")
    thread: int
    first_seq: int


@event("call of {code}")
@dataclass
class PyCall(Event):
    """Call tracing: the thread of the block enters function ``code``, a
    PyCode number from 2**31 up (C functions declared with file
    ``<built-in>`` and line 0).  A tracer's number stands for one function
    for the whole run (declared again each generation), and its declaration
    may come after a use in another thread's block: keep these names for the
    whole run, across generations."""

    __slots__ = ("code",)
    code: int


@event("return from {code}")
@dataclass
class PyReturn(Event):
    """Call tracing: the thread of the block leaves ``code`` (by return,
    exception or yield), the innermost function it entered."""

    __slots__ = ("code",)
    code: int


@event("thread {thread} allocated {allocated} bytes in {allocations} blocks, freed {freed} in {frees}")
@dataclass
class PyAllocStats(Event):
    """Allocation tracking: a thread's totals since tracking began, through
    the PyMem allocators (the "mem" and "object" domains): what it allocated,
    and what it freed of the blocks allocated while tracking was on."""

    __slots__ = ("thread", "allocated", "allocations", "freed", "frees")
    thread: int
    allocated: int
    allocations: int
    freed: int
    frees: int


@event("allocation of {size} bytes at {frames}")
@dataclass
class PyAllocSample(Event):
    """Allocation tracking: one allocation in every so many bytes, with the
    stack that made it (code numbers as in PyCall, innermost first); ``size``
    is the bytes it stands for (the sampling interval), not the block's."""

    __slots__ = ("size", "frames")
    size: int
    frames: Tuple[int, ...]


#: PyTaskEnd's status.
TASK_DONE, TASK_FAILED, TASK_CANCELLED = 0, 1, 2
TASK_STATUS = {TASK_DONE: "done", TASK_FAILED: "failed", TASK_CANCELLED: "cancelled"}


@event("task {task} created: {name} running {coroutine}")
@dataclass
class PyTaskCreate(Event):
    """asyncio: a task was created, in the thread of the block (its loop's):
    ``task`` numbers it for this run, ``coroutine`` is its coroutine's
    qualified name."""

    __slots__ = ("task", "name", "coroutine")
    task: int
    name: str
    coroutine: str


@event("task {task} starts as {name}")
@dataclass
class PyTaskStart(Event):
    """asyncio: the loop runs the task for the first time (just before);
    ``name`` is its name then (``asyncio.create_task(name=...)`` names a
    task only after creating it, so PyTaskCreate may have the default)."""

    __slots__ = ("task", "name")
    task: int
    name: str


@event("task {task} ends ({status})")
@dataclass
class PyTaskEnd(Event):
    """asyncio: the task is done: returned (0), raised (1) or was cancelled (2)."""

    __slots__ = ("task", "status")
    task: int
    status: int


@event("task {task} awaits {chain}")
@dataclass
class PyTaskAwait(Event):
    """asyncio: where a task that is not running is suspended, at the heap
    interval: its coroutines from the outermost in, each as
    ``name (file:line)``, joined by `` > ``."""

    __slots__ = ("task", "chain")
    task: int
    chain: str


def _check_ranges() -> None:
    for id, cls in EVENT_TYPES.items():
        own = cls.DESCRIPTION.startswith("lpm:")
        if own != (LPM_ID_FIRST <= id <= LPM_ID_LAST):
            raise TypeError(f"{cls.__name__}: id {id:#x} is on the wrong side of the lpm id range")
    if EVENT_TYPES[BLOCK_MARKER_ID] is not EventBlock:
        raise TypeError("id 18 must be the block marker")
    missing = [name for _, name, _, _ in catalog.TYPES if catalog.BY_NAME[name][0] not in EVENT_TYPES]
    if missing or len(catalog.BY_NAME) != len(catalog.TYPES):
        raise TypeError(f"catalog entries without a class, or names used twice: {missing}")


_check_ranges()
