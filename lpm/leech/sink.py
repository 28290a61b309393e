"""What the event sources need from a leech's buffers and writer.

Two implementations: :class:`lpm.leech.pure.PureSink` (the specification, in
Python) and :class:`lpm.leech.native.NativeSink` (``leech.c``).
"""

from __future__ import annotations

import abc

from ..errors import LeechError
from . import wire
from .config import LeechConfig

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from ..eventlog.layout import Value
    from types import CodeType
    from typing import Callable, Dict, List, Optional

    from .wire import Kind

    Sampler = Callable[[Dict[int, int], Dict[int, int], List[CodeType]], Optional[List[int]]]


class Sink(abc.ABC):
    """Per-thread buffers under a budget, and a writer thread."""

    IMPLEMENTATION = "?"
    config: LeechConfig

    # -- events from the calling thread --------------------------------------

    @abc.abstractmethod
    def emit(self, type_id: int, payload: bytes, variable: bool) -> None:
        """An encoded payload of event type ``type_id``, timestamped now."""

    def emit_event(self, kind: Kind, *values: Value) -> None:
        """An event of type ``kind`` with these payload values."""
        self.emit(kind.ID, kind.LAYOUT.encode(values), kind.VARIABLE)

    @abc.abstractmethod
    def message(self, text: str) -> None: ...

    @abc.abstractmethod
    def marker(self, name: str) -> None: ...

    @abc.abstractmethod
    def counter(self, name: str, value: float) -> None: ...

    @abc.abstractmethod
    def span_begin(self, name: str) -> int: ...

    @abc.abstractmethod
    def span_end(self, span: int) -> None: ...

    @abc.abstractmethod
    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` entry that records collections."""

    def sampler(self) -> Sampler | None:
        """A stack walk in C, or None for the monitor's own walk in Python.

        ``sampler(numbers, codes, refs)`` writes a PySample of every thread
        whose ident ``numbers`` maps to a thread number (not to -1), numbering
        new code objects in ``codes`` (by ``id()``, the object appended to
        ``refs``) and declaring them with PyCode as the Python walk does, and
        returns the idents it found that ``numbers`` lacks (None when there
        are none)."""
        return None

    def background_sampler(self, rate: float) -> bool:
        """Sample every thread at ``rate`` Hz from a thread of the sink's own
        that never takes the GIL; False when this sink cannot (the monitor
        then samples, holding the GIL).  Called from the monitor's thread,
        whose buffer the samples then share (see leech.c)."""
        return False

    def background_rate(self, rate: float) -> None:
        """The background sampler's new rate (0: off)."""

    def background_stats(self) -> tuple[int, int, int] | None:
        """The background sampler's (ticks, code objects numbered in this
        generation, failed reads), or None when none runs."""
        return None

    def background_stop(self) -> None:
        """Stop the background sampler, if one runs."""

    def alloc(self, on: bool, sample_bytes: int, floor: bool = False) -> None:
        """Allocation tracking on or off (see LeechConfig.alloc)."""
        raise LeechError("allocation tracking needs the native leech (the pure-Python one cannot wrap "
                         "the interpreter's allocators)")

    def alloc_stats(self) -> tuple[int, int, int] | None:
        """Every thread's PyAllocStats into the caller's buffer; (bytes of
        threads lpm has not numbered, blocks not tracked, 512-byte leaves of
        the size map), or None when tracking never started."""
        return None

    def trace(self, mode: str, skip: int) -> None:
        """Call tracing "on", "off" or "floor" (see LeechConfig.trace), in
        every thread but the one of ident ``skip`` (lpm's monitor)."""
        raise NotImplementedError

    def trace_stats(self) -> tuple[str, int, int]:
        """(mode, functions numbered, threads left to another profiler)."""
        raise NotImplementedError

    def keep_out(self, with_ctypes: bool) -> int:
        """Keep lpm's objects (lpm.leech.footprint; ctypes' too when ``with_ctypes``)
        out of the program's collections until :meth:`let_in`; how many.  The
        pure leech has no way to: none."""
        return 0

    def let_in(self) -> int:
        """Hand the objects :meth:`keep_out` took back to the collector; how many."""
        return 0

    def new_generation(self, generation: int) -> None:
        """``PyGeneration``; with a background sampler, its code table starts
        empty again with no sample between the two."""
        self.emit_event(wire.PY_GENERATION, generation)

    # -- threads -------------------------------------------------------------

    @abc.abstractmethod
    def thread_number(self, ident: int, native_id: int = 0, name: str = "") -> int: ...

    @abc.abstractmethod
    def thread_renamed(self, ident: int, name: str) -> None: ...

    @abc.abstractmethod
    def take_commands(self) -> list[str]:
        """Control FIFO lines the writer read since the last call ("attach" excepted)."""

    @abc.abstractmethod
    def thread_gone(self, ident: int) -> None: ...

    @abc.abstractmethod
    def take_new(self) -> list[tuple[int, int, int, str]]: ...

    @abc.abstractmethod
    def sequence_points(self) -> list[tuple[int, int]]: ...

    # -- control -------------------------------------------------------------

    @abc.abstractmethod
    def now(self) -> int: ...

    @property
    @abc.abstractmethod
    def start_ns(self) -> int: ...

    @abc.abstractmethod
    def pause(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @property
    @abc.abstractmethod
    def paused(self) -> bool: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def writer_ident(self) -> int | None: ...

    def forget_after_fork(self) -> None:
        """In a forked child, let go of what belongs to the parent's stream."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters: events written and dropped, bytes written, connections."""
