"""Every event type lpm knows, in one registry.

Each type is a small dataclass whose fields, after ``ts`` and ``cap``, are the
payload fields in wire order.  Its class attributes say the rest:

- ``ID``: the event type id; standard GHC ids where the meaning fits exactly,
  lpm's own Python events in ``LPM_ID_FIRST`` .. ``LPM_ID_LAST``.
- ``LAYOUT``: the payload layout (see :mod:`lpm.eventlog.layout`).
- ``VARIABLE``: whether the header declares the type variable-size.
- ``DESCRIPTION``: the header's description (GHC's own text for GHC types).
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


def event(
    id: int, layout: str, description: str, text: str, *, variable: bool | None = None, old: dict[int, str] | None = None
) -> Callable[[E], E]:
    """Register an event class.  ``variable`` defaults to "the layout is not fixed-size"."""

    def register(cls: E) -> E:
        compiled = Layout(layout)
        names = [f.name for f in fields(cls)][2:]
        if len(names) != len(compiled):
            raise TypeError(f"{cls.__name__}: layout {layout!r} has {len(compiled)} fields, class has {names}")
        if id in EVENT_TYPES:
            raise TypeError(f"{cls.__name__}: id {id} already belongs to {EVENT_TYPES[id].__name__}")
        cls.ID = id
        cls.LAYOUT = compiled
        cls.VARIABLE = compiled.size is None if variable is None else variable
        cls.DESCRIPTION = description
        cls.TEXT = text
        cls.OLD_SIZES = {size: Layout(codes) for size, codes in (old or {}).items()}
        cls.FIELDS = tuple(names)
        EVENT_TYPES[id] = cls
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
THREAD_FINISHED = 5


@event(0, "I", "Create thread", "creating thread {thread}")
@dataclass
class CreateThread(Event):
    __slots__ = ("thread",)
    thread: int


@event(1, "I", "Run thread", "running thread {thread}")
@dataclass
class RunThread(Event):
    __slots__ = ("thread",)
    thread: int


@event(2, "IHI", "Stop thread", "stopping thread {thread}")
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


@event(3, "I", "Thread runnable", "thread {thread} is runnable")
@dataclass
class ThreadRunnable(Event):
    __slots__ = ("thread",)
    thread: int


@event(4, "IH", "Migrate thread", "migrating thread {thread} to cap {new_cap}")
@dataclass
class MigrateThread(Event):
    __slots__ = ("thread", "new_cap")
    thread: int
    new_cap: int


@event(8, "IH", "Wakeup thread", "waking up thread {thread} on cap {other_cap}")
@dataclass
class WakeupThread(Event):
    __slots__ = ("thread", "other_cap")
    thread: int
    other_cap: int


@event(15, "I", "Create spark thread", "creating spark thread {spark_thread}")
@dataclass
class CreateSparkThread(Event):
    __slots__ = ("spark_thread",)
    spark_thread: int


@event(44, "It", "Thread label", 'thread {thread} has label "{label}"')
@dataclass
class ThreadLabel(Event):
    __slots__ = ("thread", "label")
    thread: int
    label: str


# -- messages and markers ---------------------------------------------------


@event(16, "t", "Log message", "{message}")
@dataclass
class Message(Event):
    __slots__ = ("message",)
    message: str


@event(18, "IQH", "Block marker", "block of {size} bytes for cap {block_cap}, ending at {end_ts}")
@dataclass
class EventBlock(Event):
    """A block marker; ``size`` counts the block's bytes from the marker's first."""

    __slots__ = ("size", "end_ts", "block_cap")
    size: int
    end_ts: int
    block_cap: int


@event(19, "t", "User message", "{message}")
@dataclass
class UserMessage(Event):
    __slots__ = ("message",)
    message: str


@event(58, "t", "User marker", "marker: {marker}")
@dataclass
class UserMarker(Event):
    __slots__ = ("marker",)
    marker: str


@event(181, "y", "User binary message", "binary message")
@dataclass
class UserBinaryMessage(Event):
    __slots__ = ("data",)
    data: bytes

    def describe(self) -> str:
        return f"binary message of {len(self.data)} bytes: {self.data[:32].hex()}"


# -- garbage collection -----------------------------------------------------


@event(9, "", "Starting GC", "starting GC")
@dataclass
class StartGC(Event):
    __slots__ = ()


@event(10, "", "Finished GC", "finished GC")
@dataclass
class EndGC(Event):
    __slots__ = ()


@event(11, "", "Request sequential GC", "requesting sequential GC")
@dataclass
class RequestSeqGC(Event):
    __slots__ = ()


@event(12, "", "Request parallel GC", "requesting parallel GC")
@dataclass
class RequestParGC(Event):
    __slots__ = ()


@event(20, "", "GC idle", "GC idle")
@dataclass
class GCIdle(Event):
    __slots__ = ()


@event(21, "", "GC working", "GC working")
@dataclass
class GCWork(Event):
    __slots__ = ()


@event(22, "", "GC done", "GC done")
@dataclass
class GCDone(Event):
    __slots__ = ()


@event(54, "", "Synchronise stop-the-world GC", "all caps stopped for GC")
@dataclass
class GlobalSyncGC(Event):
    __slots__ = ()


@event(
    53,
    "IHQQQIQQQ",
    "GC statistics",
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


@event(49, "IQ", "Total heap mem ever allocated", "allocated on heap capset {heap_capset}: {bytes} total bytes till now")
@dataclass
class HeapAllocated(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event(50, "IQ", "Current heap size", "size of heap capset {heap_capset}: {bytes} bytes")
@dataclass
class HeapSize(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event(51, "IQ", "Current heap live data", "live data in heap capset {heap_capset}: {bytes} bytes")
@dataclass
class HeapLive(Event):
    __slots__ = ("heap_capset", "bytes")
    heap_capset: int
    bytes: int


@event(
    52,
    "IHQQQQ",
    "Heap static parameters",
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


@event(90, "IIII", "Memory return statistics", "memory returned in capset {heap_capset}: current {current} mblocks, needed {needed}, returned {returned}")
@dataclass
class MemReturn(Event):
    __slots__ = ("heap_capset", "current", "needed", "returned")
    heap_capset: int
    current: int
    needed: int
    returned: int


@event(91, "IQ", "Size of the heap in blocks", "blocks size of heap capset {heap_capset}: {bytes} bytes")
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


@event(45, "H", "Create capability", "created cap {new_cap}")
@dataclass
class CapCreate(Event):
    __slots__ = ("new_cap",)
    new_cap: int


@event(46, "H", "Delete capability", "deleted cap {old_cap}")
@dataclass
class CapDelete(Event):
    __slots__ = ("old_cap",)
    old_cap: int


@event(47, "H", "Disable capability", "disabled cap {target_cap}")
@dataclass
class CapDisable(Event):
    __slots__ = ("target_cap",)
    target_cap: int


@event(48, "H", "Enable capability", "enabled cap {target_cap}")
@dataclass
class CapEnable(Event):
    __slots__ = ("target_cap",)
    target_cap: int


@event(25, "IH", "Create capability set", "created capset {capset}")
@dataclass
class CapsetCreate(Event):
    __slots__ = ("capset", "capset_type")
    capset: int
    capset_type: int

    def describe(self) -> str:
        kind = CAPSET_TYPES.get(self.capset_type, f"type {self.capset_type}")
        return f"created capset {self.capset} of type {kind}"


@event(26, "I", "Delete capability set", "deleted capset {capset}")
@dataclass
class CapsetDelete(Event):
    __slots__ = ("capset",)
    capset: int


@event(27, "IH", "Add capability to capability set", "assigned cap {cap_no} to capset {capset}")
@dataclass
class CapsetAssignCap(Event):
    __slots__ = ("capset", "cap_no")
    capset: int
    cap_no: int


@event(28, "IH", "Remove capability from capability set", "removed cap {cap_no} from capset {capset}")
@dataclass
class CapsetRemoveCap(Event):
    __slots__ = ("capset", "cap_no")
    capset: int
    cap_no: int


# -- process and runtime information ----------------------------------------


@event(29, "It", "RTS name and version", 'capset {capset}: RTS version "{rts_ident}"')
@dataclass
class RtsIdentifier(Event):
    __slots__ = ("capset", "rts_ident")
    capset: int
    rts_ident: str


@event(30, "IS", "Program arguments", "capset {capset}: args: {args}")
@dataclass
class ProgramArgs(Event):
    __slots__ = ("capset", "args")
    capset: int
    args: Tuple[str, ...]

    def describe(self) -> str:
        return f"capset {self.capset}: args: {_haskell_list(self.args)}"


@event(31, "IS", "Program environment variables", "capset {capset}: env: {env}")
@dataclass
class ProgramEnv(Event):
    __slots__ = ("capset", "env")
    capset: int
    env: Tuple[str, ...]

    def describe(self) -> str:
        return f"capset {self.capset}: env: {_haskell_list(self.env)}"


@event(32, "II", "Process ID", "capset {capset}: pid {pid}")
@dataclass
class OsProcessPid(Event):
    __slots__ = ("capset", "pid")
    capset: int
    pid: int


@event(33, "II", "Parent process ID", "capset {capset}: parent pid {ppid}")
@dataclass
class OsProcessParentPid(Event):
    __slots__ = ("capset", "ppid")
    capset: int
    ppid: int


@event(43, "IQI", "Wall clock time", "capset {capset}: wall clock time {sec}s {nsec}ns (unix epoch)")
@dataclass
class WallClockTime(Event):
    __slots__ = ("capset", "sec", "nsec")
    capset: int
    sec: int
    nsec: int


# -- tasks (OS threads of the GHC runtime) ----------------------------------


@event(55, "QHQ", "Task create", "task 0x{task_id:x} created on cap {cap_no} with OS kernel thread {tid}")
@dataclass
class TaskCreate(Event):
    __slots__ = ("task_id", "cap_no", "tid")
    task_id: int
    cap_no: int
    tid: int


@event(56, "QHH", "Task migrate", "task 0x{task_id:x} migrated from cap {cap_no} to cap {new_cap}")
@dataclass
class TaskMigrate(Event):
    __slots__ = ("task_id", "cap_no", "new_cap")
    task_id: int
    cap_no: int
    new_cap: int


@event(57, "Q", "Task delete", "task 0x{task_id:x} deleted")
@dataclass
class TaskDelete(Event):
    __slots__ = ("task_id",)
    task_id: int


# -- sparks -----------------------------------------------------------------


@event(
    34,
    "QQQQQQQ",
    "Spark counters",
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


@event(35, "", "Spark create", "spark created")
@dataclass
class SparkCreate(Event):
    __slots__ = ()


@event(36, "", "Spark dud", "dud spark discarded")
@dataclass
class SparkDud(Event):
    __slots__ = ()


@event(37, "", "Spark overflow", "overflowed spark discarded")
@dataclass
class SparkOverflow(Event):
    __slots__ = ()


@event(38, "", "Spark run", "running a local spark")
@dataclass
class SparkRun(Event):
    __slots__ = ()


@event(39, "H", "Spark steal", "stealing a spark from cap {victim_cap}")
@dataclass
class SparkSteal(Event):
    __slots__ = ("victim_cap",)
    victim_cap: int


@event(40, "", "Spark fizzle", "spark fizzled")
@dataclass
class SparkFizzle(Event):
    __slots__ = ()


@event(41, "", "Spark GC", "spark GCed")
@dataclass
class SparkGC(Event):
    __slots__ = ()


@event(59, "", "Empty event for bug #9003", "empty event for bug #9003")
@dataclass
class HackBugT9003(Event):
    __slots__ = ()


# -- heap and time profiling ------------------------------------------------


@event(
    160,
    "BQIsssssss",
    "Start of heap profile",
    "start heap profiling {heap_prof_id} at sampling period {sampling_period} broken down by {breakdown}",
)
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


@event(161, "IsssB", "Cost center definition", "cost centre {cost_centre_id} {label} in {module} at {srcloc}")
@dataclass
class HeapProfCostCentre(Event):
    __slots__ = ("cost_centre_id", "label", "module", "srcloc", "flags")
    cost_centre_id: int
    label: str
    module: str
    srcloc: str
    flags: int


@event(162, "Q", "Start of heap profile sample", "start heap prof sample {era}")
@dataclass
class HeapProfSampleBegin(Event):
    __slots__ = ("era",)
    era: int


@event(163, "BQa", "Heap profile cost-centre sample", "heap prof sample {heap_prof_id}, residency {residency}, cost centre stack {stack}")
@dataclass
class HeapProfSampleCostCentre(Event):
    __slots__ = ("heap_prof_id", "residency", "stack")
    heap_prof_id: int
    residency: int
    stack: Tuple[int, ...]

    def describe(self) -> str:
        stack = ", ".join(map(str, self.stack))
        return f"heap prof sample {self.heap_prof_id}, residency {self.residency}, cost centre stack {stack}"


@event(164, "BQs", "Heap profile string sample", "heap prof sample {heap_prof_id}, residency {residency}, label {label}")
@dataclass
class HeapProfSampleString(Event):
    __slots__ = ("heap_prof_id", "residency", "label")
    heap_prof_id: int
    residency: int
    label: str


@event(165, "Q", "End of heap profile sample", "end prof sample {era}")
@dataclass
class HeapProfSampleEnd(Event):
    __slots__ = ("era",)
    era: int


@event(166, "QQ", "Start of heap profile (biographical) sample", "start heap prof (biographical) sample {era} at {sample_ts}")
@dataclass
class HeapBioProfSampleBegin(Event):
    __slots__ = ("era", "sample_ts")
    era: int
    sample_ts: int


@event(167, "IQa", "Time profile cost-centre stack", "cap {capability} tick {ticks}: cost centre stack {stack}")
@dataclass
class ProfSampleCostCentre(Event):
    __slots__ = ("capability", "ticks", "stack")
    capability: int
    ticks: int
    stack: Tuple[int, ...]

    def describe(self) -> str:
        return f"cap {self.capability} tick {self.ticks}: cost centre stack {', '.join(map(str, self.stack))}"


@event(168, "Q", "Start of a time profile", "start time profiling, tick interval {tick_interval} ns")
@dataclass
class ProfBegin(Event):
    __slots__ = ("tick_interval",)
    tick_interval: int


@event(
    169,
    "Qssssss",
    "An IPE entry",
    "info table 0x{info_ptr:x} {table_name} ({closure_desc}, {ty_desc}, {label}) in {module} at {srcloc}",
)
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


@event(200, "", "Begin concurrent mark phase", "concurrent mark began")
@dataclass
class ConcMarkBegin(Event):
    __slots__ = ()


@event(201, "I", "End concurrent mark phase", "concurrent mark ended: {marked_objects} objects marked")
@dataclass
class ConcMarkEnd(Event):
    __slots__ = ("marked_objects",)
    marked_objects: int


@event(202, "", "Begin concurrent GC synchronisation", "post-mark synchronization began")
@dataclass
class ConcSyncBegin(Event):
    __slots__ = ()


@event(203, "", "End concurrent GC synchronisation", "post-mark synchronization ended")
@dataclass
class ConcSyncEnd(Event):
    __slots__ = ()


@event(204, "", "Begin concurrent sweep", "concurrent sweep began")
@dataclass
class ConcSweepBegin(Event):
    __slots__ = ()


@event(205, "", "End concurrent sweep", "concurrent sweep ended")
@dataclass
class ConcSweepEnd(Event):
    __slots__ = ()


@event(206, "H", "Update remembered set flushed", "update remembered set flushed by cap {flushed_cap}")
@dataclass
class ConcUpdRemSetFlush(Event):
    __slots__ = ("flushed_cap",)
    flushed_cap: int


@event(
    207,
    "BIII",
    "Nonmoving heap census",
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


@event(211, "QQQQ", "Ticky-ticky entry counter sample", "ticky counter {ctr_id}: {entries} entries, {allocs} allocs, {allocd} allocd")
@dataclass
class TickyCounterSample(Event):
    __slots__ = ("ctr_id", "entries", "allocs", "allocd")
    ctr_id: int
    entries: int
    allocs: int
    allocd: int


@event(212, "", "Ticky-ticky entry counter begin sample", "ticky begin counter sample")
@dataclass
class TickyBeginSample(Event):
    __slots__ = ()


# -- lpm's own Python events (ids LPM_ID_FIRST ..) ----------------------------
#
# A Python thread is named by its lpm thread number (u32, first seen = 1), which
# is also the GHC thread id used in CreateThread/StopThread/ThreadLabel.


@event(0x1000, "IQ", "lpm: Python thread info", "thread {thread} is native thread {native_id}")
@dataclass
class PyThreadInfo(Event):
    __slots__ = ("thread", "native_id")
    thread: int
    native_id: int


@event(0x1001, "IQ", "lpm: Python thread CPU time", "thread {thread} has used {cpu_ns} ns of CPU")
@dataclass
class PyThreadCpu(Event):
    __slots__ = ("thread", "cpu_ns")
    thread: int
    cpu_ns: int


@event(0x1002, "HQQ", "lpm: Python GC collection", "python GC of generation {generation}: {collected} collected, {uncollectable} uncollectable")
@dataclass
class PyGcCollection(Event):
    __slots__ = ("generation", "collected", "uncollectable")
    generation: int
    collected: int
    uncollectable: int


@event(
    0x1003,
    "QQQQ",
    "lpm: Python heap figures",
    "python heap: rss {rss} bytes, {allocated_blocks} blocks, traced {traced_current} bytes (peak {traced_peak})",
)
@dataclass
class PyHeap(Event):
    __slots__ = ("rss", "allocated_blocks", "traced_current", "traced_peak")
    rss: int
    allocated_blocks: int
    traced_current: int
    traced_peak: int


@event(0x1004, "IIss", "lpm: Python code object", "code {code} is {name} at {filename}:{first_line}")
@dataclass
class PyCode(Event):
    __slots__ = ("code", "first_line", "name", "filename")
    code: int
    first_line: int
    name: str
    filename: str


@event(0x1005, "Ii", "lpm: Python stack sample", "sample of thread {thread}: {frames}")
@dataclass
class PySample(Event):
    """``frames`` are code numbers from PyCode events, innermost first."""

    __slots__ = ("thread", "frames")
    thread: int
    frames: Tuple[int, ...]


@event(0x1006, "Qt", "lpm: span begin", "span {span} begins: {name}")
@dataclass
class PySpanBegin(Event):
    __slots__ = ("span", "name")
    span: int
    name: str


@event(0x1007, "Q", "lpm: span end", "span {span} ends")
@dataclass
class PySpanEnd(Event):
    __slots__ = ("span",)
    span: int


@event(0x1008, "dt", "lpm: counter", "counter {name} = {value}")
@dataclass
class PyCounter(Event):
    __slots__ = ("value", "name")
    value: float
    name: str


@event(
    0x1009,
    "IQQQ",
    "lpm: data loss",
    "thread {thread} lost {count} events ({bytes} bytes) from sequence number {first_seq}",
)
@dataclass
class PyDataLoss(Event):
    __slots__ = ("thread", "first_seq", "count", "bytes")
    thread: int
    first_seq: int
    count: int
    bytes: int


@event(0x100A, "IQ", "lpm: sequence point", "thread {thread} has produced {seq} events")
@dataclass
class PySeqPoint(Event):
    __slots__ = ("thread", "seq")
    thread: int
    seq: int


@event(0x100B, "I", "lpm: generation", "generation {generation} begins")
@dataclass
class PyGeneration(Event):
    __slots__ = ("generation",)
    generation: int


@event(0x100C, "st", "lpm: interpreter setting", "setting {key} = {value}")
@dataclass
class PySetting(Event):
    __slots__ = ("key", "value")
    key: str
    value: str


@event(0x100D, "IQ", "lpm: block info", "block of thread {thread} from sequence number {first_seq}")
@dataclass
class PyBlockInfo(Event):
    """Second event of every block a leech writes: whose buffer it is, and the
    sequence number of its first counted event (every event of the thread but
    PyDataLoss counts, dropped ones included)."""

    __slots__ = ("thread", "first_seq")
    thread: int
    first_seq: int


def _check_ranges() -> None:
    for id, cls in EVENT_TYPES.items():
        own = cls.DESCRIPTION.startswith("lpm:")
        if own != (LPM_ID_FIRST <= id <= LPM_ID_LAST):
            raise TypeError(f"{cls.__name__}: id {id:#x} is on the wrong side of the lpm id range")
    if EVENT_TYPES[BLOCK_MARKER_ID] is not EventBlock:
        raise TypeError("id 18 must be the block marker")


_check_ranges()
