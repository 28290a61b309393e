"""Every event type lpm knows, as plain data: id, class name, layout, description.

The one table of event types.  :mod:`lpm.eventlog.events` builds its decoded
classes from it (a class's name is its key here) and :mod:`lpm.eventlog.writer`
its header from it; the leech writes its header and encodes its events from it
directly, so a profiled program never imports the decoder's ~90 classes (nor
``dataclasses``, ``inspect`` and ``typing`` behind them): every object a
module creates stays alive and is traversed by each full collection of the
program's cyclic GC, which is measurable on allocation-heavy programs.

A type is variable-size exactly when its layout has a code that is not
fixed-size (see :mod:`lpm.eventlog.layout`).  ``leech.c`` has its own copy of
the ids and sizes it writes; ``tests/leech/test_event_table.py`` checks the
two agree.
"""

from __future__ import annotations

from . import format as fmt

#: (id, class name, layout, header description), in id order.
TYPES: tuple[tuple[int, str, str, str], ...] = (
    (0, 'CreateThread', 'I', 'Create thread'),
    (1, 'RunThread', 'I', 'Run thread'),
    (2, 'StopThread', 'IHI', 'Stop thread'),
    (3, 'ThreadRunnable', 'I', 'Thread runnable'),
    (4, 'MigrateThread', 'IH', 'Migrate thread'),
    (8, 'WakeupThread', 'IH', 'Wakeup thread'),
    (15, 'CreateSparkThread', 'I', 'Create spark thread'),
    (44, 'ThreadLabel', 'It', 'Thread label'),
    (16, 'Message', 't', 'Log message'),
    (18, 'EventBlock', 'IQH', 'Block marker'),
    (19, 'UserMessage', 't', 'User message'),
    (58, 'UserMarker', 't', 'User marker'),
    (181, 'UserBinaryMessage', 'y', 'User binary message'),
    (9, 'StartGC', '', 'Starting GC'),
    (10, 'EndGC', '', 'Finished GC'),
    (11, 'RequestSeqGC', '', 'Request sequential GC'),
    (12, 'RequestParGC', '', 'Request parallel GC'),
    (20, 'GCIdle', '', 'GC idle'),
    (21, 'GCWork', '', 'GC working'),
    (22, 'GCDone', '', 'GC done'),
    (54, 'GlobalSyncGC', '', 'Synchronise stop-the-world GC'),
    (53, 'GCStatsGHC', 'IHQQQIQQQ', 'GC statistics'),
    (49, 'HeapAllocated', 'IQ', 'Total heap mem ever allocated'),
    (50, 'HeapSize', 'IQ', 'Current heap size'),
    (51, 'HeapLive', 'IQ', 'Current heap live data'),
    (52, 'HeapInfoGHC', 'IHQQQQ', 'Heap static parameters'),
    (90, 'MemReturn', 'IIII', 'Memory return statistics'),
    (91, 'BlocksSize', 'IQ', 'Size of the heap in blocks'),
    (45, 'CapCreate', 'H', 'Create capability'),
    (46, 'CapDelete', 'H', 'Delete capability'),
    (47, 'CapDisable', 'H', 'Disable capability'),
    (48, 'CapEnable', 'H', 'Enable capability'),
    (25, 'CapsetCreate', 'IH', 'Create capability set'),
    (26, 'CapsetDelete', 'I', 'Delete capability set'),
    (27, 'CapsetAssignCap', 'IH', 'Add capability to capability set'),
    (28, 'CapsetRemoveCap', 'IH', 'Remove capability from capability set'),
    (29, 'RtsIdentifier', 'It', 'RTS name and version'),
    (30, 'ProgramArgs', 'IS', 'Program arguments'),
    (31, 'ProgramEnv', 'IS', 'Program environment variables'),
    (32, 'OsProcessPid', 'II', 'Process ID'),
    (33, 'OsProcessParentPid', 'II', 'Parent process ID'),
    (43, 'WallClockTime', 'IQI', 'Wall clock time'),
    (55, 'TaskCreate', 'QHQ', 'Task create'),
    (56, 'TaskMigrate', 'QHH', 'Task migrate'),
    (57, 'TaskDelete', 'Q', 'Task delete'),
    (34, 'SparkCounters', 'QQQQQQQ', 'Spark counters'),
    (35, 'SparkCreate', '', 'Spark create'),
    (36, 'SparkDud', '', 'Spark dud'),
    (37, 'SparkOverflow', '', 'Spark overflow'),
    (38, 'SparkRun', '', 'Spark run'),
    (39, 'SparkSteal', 'H', 'Spark steal'),
    (40, 'SparkFizzle', '', 'Spark fizzle'),
    (41, 'SparkGC', '', 'Spark GC'),
    (59, 'HackBugT9003', '', 'Empty event for bug #9003'),
    (160, 'HeapProfBegin', 'BQIsssssss', 'Start of heap profile'),
    (161, 'HeapProfCostCentre', 'IsssB', 'Cost center definition'),
    (162, 'HeapProfSampleBegin', 'Q', 'Start of heap profile sample'),
    (163, 'HeapProfSampleCostCentre', 'BQa', 'Heap profile cost-centre sample'),
    (164, 'HeapProfSampleString', 'BQs', 'Heap profile string sample'),
    (165, 'HeapProfSampleEnd', 'Q', 'End of heap profile sample'),
    (166, 'HeapBioProfSampleBegin', 'QQ', 'Start of heap profile (biographical) sample'),
    (167, 'ProfSampleCostCentre', 'IQa', 'Time profile cost-centre stack'),
    (168, 'ProfBegin', 'Q', 'Start of a time profile'),
    (169, 'InfoTableProv', 'Qssssss', 'An IPE entry'),
    (200, 'ConcMarkBegin', '', 'Begin concurrent mark phase'),
    (201, 'ConcMarkEnd', 'I', 'End concurrent mark phase'),
    (202, 'ConcSyncBegin', '', 'Begin concurrent GC synchronisation'),
    (203, 'ConcSyncEnd', '', 'End concurrent GC synchronisation'),
    (204, 'ConcSweepBegin', '', 'Begin concurrent sweep'),
    (205, 'ConcSweepEnd', '', 'End concurrent sweep'),
    (206, 'ConcUpdRemSetFlush', 'H', 'Update remembered set flushed'),
    (207, 'NonmovingHeapCensus', 'BIII', 'Nonmoving heap census'),
    (211, 'TickyCounterSample', 'QQQQ', 'Ticky-ticky entry counter sample'),
    (212, 'TickyBeginSample', '', 'Ticky-ticky entry counter begin sample'),
    (0x1000, 'PyThreadInfo', 'IQ', 'lpm: Python thread info'),
    (0x1001, 'PyThreadCpu', 'IQ', 'lpm: Python thread CPU time'),
    (0x1002, 'PyGcCollection', 'HQQ', 'lpm: Python GC collection'),
    (0x1003, 'PyHeap', 'QQQQ', 'lpm: Python heap figures'),
    (0x1004, 'PyCode', 'IIss', 'lpm: Python code object'),
    (0x1005, 'PySample', 'Ii', 'lpm: Python stack sample'),
    (0x1006, 'PySpanBegin', 'Qt', 'lpm: span begin'),
    (0x1007, 'PySpanEnd', 'Q', 'lpm: span end'),
    (0x1008, 'PyCounter', 'dt', 'lpm: counter'),
    (0x1009, 'PyDataLoss', 'IQQQ', 'lpm: data loss'),
    (0x100A, 'PySeqPoint', 'IQ', 'lpm: sequence point'),
    (0x100B, 'PyGeneration', 'I', 'lpm: generation'),
    (0x100C, 'PySetting', 'st', 'lpm: interpreter setting'),
    (0x100D, 'PyBlockInfo', 'IQ', 'lpm: block info'),
    (0x100E, 'PyCall', 'I', 'lpm: call'),
    (0x100F, 'PyReturn', 'I', 'lpm: return'),
    (0x1010, 'PyAllocStats', 'IQQQQ', 'lpm: allocation totals of a thread'),
    (0x1011, 'PyAllocSample', 'Qi', 'lpm: sampled allocation'),
    (0x1012, 'PyTaskCreate', 'Qss', 'lpm: asyncio task created'),
    (0x1013, 'PyTaskStart', 'Qs', 'lpm: asyncio task started'),
    (0x1014, 'PyTaskEnd', 'QB', 'lpm: asyncio task finished'),
    (0x1015, 'PyTaskAwait', 'Qt', 'lpm: what a suspended asyncio task awaits'),
)

#: Bytes of each fixed-size field code.
_FIXED_SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8, "q": 8, "d": 8}

BY_NAME: dict[str, tuple[int, str, str, str]] = {entry[1]: entry for entry in TYPES}


def declared_size(layout: str) -> int:
    """The size a header declares for a layout: its payload size, or 0xffff."""
    size = 0
    for code in layout.replace(" ", ""):
        width = _FIXED_SIZES.get(code)
        if width is None:
            return fmt.VARIABLE
        size += width
    return size


def header() -> bytes:
    """A header declaring every type in the table."""
    return fmt.encode_header((type_id, declared_size(layout), description, b"") for type_id, _, layout, description in TYPES)
