"""The event types the leech writes, from the catalog, without the decoder.

A :class:`Kind` has the three attributes an encoder needs (``ID``, ``LAYOUT``,
``VARIABLE``), named as on the decoded classes of :mod:`lpm.eventlog.events`,
so either can be passed where one event type is expected.  Built from
:mod:`lpm.eventlog.catalog` so a profiled program does not import the
decoder's registry (the reason is in catalog.py).
"""

from __future__ import annotations

from ..eventlog import catalog
from ..eventlog.format import VARIABLE as _VARIABLE_SIZE
from ..eventlog.layout import Layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..eventlog.layout import Value

#: STOP_THREAD's status for a thread that ended.
THREAD_FINISHED = 5


class Kind:
    """One event type: id, compiled layout, variable-size or not.

    The layout is compiled when first used: most kinds are never encoded in
    Python by the native leech, and a compiled layout is half a dozen objects
    (structs, steps) that would stay in the program's heap."""

    __slots__ = ("ID", "VARIABLE", "NAME", "_layout")

    def __init__(self, name: str) -> None:
        type_id, _, layout, _ = catalog.BY_NAME[name]
        self.ID = type_id
        self.VARIABLE = catalog.declared_size(layout) == _VARIABLE_SIZE
        self.NAME = name
        self._layout: Layout | None = None

    @property
    def LAYOUT(self) -> Layout:  # noqa: N802 - named as on the decoded event classes
        if self._layout is None:
            self._layout = Layout(catalog.BY_NAME[self.NAME][2])
        return self._layout

    def encode(self, *values: Value) -> bytes:
        return self.LAYOUT.encode(values)

    def __repr__(self) -> str:
        return f"Kind({self.NAME!r})"


CAPSET_CREATE = Kind("CapsetCreate")
CREATE_THREAD = Kind("CreateThread")
END_GC = Kind("EndGC")
OS_PROCESS_PARENT_PID = Kind("OsProcessParentPid")
OS_PROCESS_PID = Kind("OsProcessPid")
PROGRAM_ARGS = Kind("ProgramArgs")
PROGRAM_ENV = Kind("ProgramEnv")
PY_BLOCK_INFO = Kind("PyBlockInfo")
PY_ALLOC_SAMPLE = Kind("PyAllocSample")
PY_ALLOC_STATS = Kind("PyAllocStats")
PY_CALL = Kind("PyCall")
PY_RETURN = Kind("PyReturn")
PY_CODE = Kind("PyCode")
PY_COUNTER = Kind("PyCounter")
PY_DATA_LOSS = Kind("PyDataLoss")
PY_GC_COLLECTION = Kind("PyGcCollection")
PY_GENERATION = Kind("PyGeneration")
PY_HEAP = Kind("PyHeap")
PY_SAMPLE = Kind("PySample")
PY_SEQ_POINT = Kind("PySeqPoint")
PY_SETTING = Kind("PySetting")
PY_SPAN_BEGIN = Kind("PySpanBegin")
PY_TASK_AWAIT = Kind("PyTaskAwait")
PY_TASK_CREATE = Kind("PyTaskCreate")
PY_TASK_END = Kind("PyTaskEnd")
PY_TASK_START = Kind("PyTaskStart")
PY_SPAN_END = Kind("PySpanEnd")
PY_THREAD_CPU = Kind("PyThreadCpu")
PY_THREAD_INFO = Kind("PyThreadInfo")
RTS_IDENTIFIER = Kind("RtsIdentifier")
START_GC = Kind("StartGC")
STOP_THREAD = Kind("StopThread")
THREAD_LABEL = Kind("ThreadLabel")
USER_MARKER = Kind("UserMarker")
USER_MESSAGE = Kind("UserMessage")
WALL_CLOCK_TIME = Kind("WallClockTime")
BLOCK_MARKER = Kind("EventBlock")
