"""The leech's buffers and writer in C (``leech.c``), behind the Sink interface.

:class:`NativeSink` behaves as :class:`lpm.leech.pure.PureSink` does, byte for
byte, and takes its limits (text length, reconnection backoff) from that
module.  What differs is who does the work:

- the event methods (``emit``, ``message``, ``marker``, ``counter``,
  ``span_begin``, ``span_end``, ``gc_callback``) are builtin functions made by
  the C library and stored on the instance, so a call costs what calling a
  builtin costs; the methods of the same names below only serve callers that
  go through the class;
- the writer is a pthread, not a Python thread: it never appears in
  ``threading.enumerate()`` or ``sys._current_frames()``, so ``writer_ident``
  is None;
- the writer cannot call Python, so ``on_connect`` is called from whichever
  thread next calls ``take_commands()`` or ``take_new()`` (the monitor, every
  tick) once the C side has counted a new reader (a connection or an
  "attach");
- ``backlog()`` (not part of :class:`~lpm.leech.sink.Sink`) says how much the
  writer has yet to put in the stream, for tests that wait for it.
"""

from __future__ import annotations

import ctypes
import os

from .. import _native
from ..errors import LeechError
from .config import BACKOFF, MAX_TEXT, TRACE_MODES as _TRACE_MODES, LeechConfig
from .footprint import lpm_objects
from .sink import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any, Callable, cast

    from .sink import Sampler
else:

    def cast(_type: object, value: object) -> object:
        return value


#: PureSink's writer wakes this often when ``flush_interval`` is 0 (seconds).
IDLE_TICK = 0.010

#: Started sinks, kept alive until stopped like PureSink's, whose writer
#: thread holds a reference.
_running: set[NativeSink] = set()

class NativeSink(Sink):
    """Per-thread buffers under a budget, and a writer pthread, in C.

    Args:
        config: the leech settings.
        header: the eventlog header to send to every new reader.
        data_path: the data FIFO (or a regular file, which counts as a reader
            that is always there).
        control_path: the control FIFO, read by the writer, or None.
        on_connect: called when a reader has arrived, so the process state
            can be sent again (see the module docstring for from where).

    Raises:
        LeechError: the C library is not built or is out of date, or the
            configuration does not fit it.
    """

    IMPLEMENTATION = "native"

    def __init__(
        self,
        config: LeechConfig,
        header: bytes,
        data_path: str,
        control_path: str | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._lib = lib = _native.load()
        fixed = config.fixed_clock
        if fixed is not None and not 0 <= fixed < 1 << 64:
            raise LeechError(f"fixed_clock {fixed} is not a u64 timestamp")
        self.config = config
        self.header = header
        self.data_path = data_path
        self.control_path = control_path
        self.on_connect = on_connect
        settings = _native.Config(
            buffers=config.buffers,
            buffer_size=config.buffer_size,
            fixed_clock=fixed or 0,
            has_fixed_clock=fixed is not None,
            max_text=MAX_TEXT,
            flush_interval=config.flush_interval,
            idle_tick=IDLE_TICK,
            backoff_first=BACKOFF[0],
            backoff_factor=BACKOFF[1],
            backoff_last=BACKOFF[2],
            stop_timeout=config.stop_timeout,
        )
        try:
            self._ctx: object = lib.lpm_sink_new(
                ctypes.byref(settings),
                bytes(header),
                os.fsencode(data_path),
                None if control_path is None else os.fsencode(control_path),
            )
        except ValueError as err:
            raise LeechError(str(err)) from None
        self._functions: dict[str, Callable[..., Any]] = lib.lpm_sink_functions(self._ctx)
        # Instance attributes win over the methods below: `sink.marker` is the builtin.
        self.__dict__.update(self._functions)
        self._readers_seen = 0

    # -- events from the calling thread (normally bypassed, see above) ---------

    def emit(self, type_id: int, payload: bytes, variable: bool) -> None:
        self._functions["emit"](type_id, payload, variable)

    def message(self, text: str) -> None:
        self._functions["message"](text)

    def marker(self, name: str) -> None:
        self._functions["marker"](name)

    def counter(self, name: str, value: float) -> None:
        self._functions["counter"](name, value)

    def span_begin(self, name: str) -> int:
        return cast(int, self._functions["span_begin"](name))

    def span_end(self, span: int) -> None:
        self._functions["span_end"](span)

    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        self._functions["gc_callback"](phase, info)

    def sampler(self) -> Sampler:
        return cast("Sampler", self._functions["sample"])

    def background_sampler(self, rate: float) -> bool:
        return bool(self._lib.lpm_bg_start(self._ctx, rate))

    def background_rate(self, rate: float) -> None:
        self._lib.lpm_bg_rate(self._ctx, rate)

    def background_stats(self) -> tuple[int, int, int] | None:
        return cast("tuple[int, int, int] | None", self._lib.lpm_bg_stats(self._ctx))

    def background_stop(self) -> None:
        self._lib.lpm_bg_stop(self._ctx)

    def alloc(self, on: bool, sample_bytes: int, floor: bool = False) -> None:
        self._lib.lpm_alloc(self._ctx, 2 if on and floor else int(on), sample_bytes)

    def alloc_stats(self) -> tuple[int, int, int] | None:
        return cast("tuple[int, int, int] | None", self._lib.lpm_alloc_stats(self._ctx))

    def trace(self, mode: str, skip: int) -> None:
        self._lib.lpm_trace(self._ctx, _TRACE_MODES.index(mode), skip)

    def trace_stats(self) -> tuple[str, int, int]:
        mode, numbered, skipped = cast("tuple[int, int, int]", self._lib.lpm_trace_stats(self._ctx))
        return _TRACE_MODES[mode], numbered, skipped

    def new_generation(self, generation: int) -> None:
        self._lib.lpm_bg_generation(self._ctx, generation)

    # -- threads ---------------------------------------------------------------

    def thread_number(self, ident: int, native_id: int = 0, name: str = "") -> int:
        """The lpm number of the thread with ``threading`` ident ``ident``,
        registering it if it has emitted nothing yet (the sampler asks)."""
        return int(self._lib.lpm_thread_number(self._ctx, ident, native_id, name))

    def thread_renamed(self, ident: int, name: str) -> None:
        """Thread ``ident`` has a new name, for the status a new reader gets."""
        self._lib.lpm_thread_renamed(self._ctx, ident, name)

    def thread_gone(self, ident: int) -> None:
        """The sampler saw thread ``ident`` disappear."""
        self._lib.lpm_thread_gone(self._ctx, ident)

    def take_new(self) -> list[tuple[int, int, int, str]]:
        """(number, ident, native id, name) of threads registered since the last call."""
        self._poll_readers()
        return cast("list[tuple[int, int, int, str]]", self._lib.lpm_take_new(self._ctx))

    def take_commands(self) -> list[str]:
        """Control FIFO lines the writer read since the last call ("attach" excepted)."""
        self._poll_readers()
        lines = cast("list[bytes]", self._lib.lpm_take_commands(self._ctx))
        return [line.decode("ascii", "replace").strip() for line in lines]

    def sequence_points(self) -> list[tuple[int, int]]:
        """(number, next sequence number) of every live thread."""
        return cast("list[tuple[int, int]]", self._lib.lpm_sequence_points(self._ctx))

    def backlog(self) -> int:
        """What the writer has yet to put in the stream: queued buffers, new
        threads to announce, ended threads to close."""
        return int(self._lib.lpm_backlog(self._ctx))

    def _poll_readers(self) -> None:
        count = int(self._lib.lpm_reader_events(self._ctx))
        if count != self._readers_seen:
            self._readers_seen = count
            if self.on_connect is not None:
                self.on_connect()

    # -- control ---------------------------------------------------------------

    def now(self) -> int:
        """Nanoseconds since the leech started (or the fixed clock)."""
        return int(self._lib.lpm_now(self._ctx))

    @property
    def start_ns(self) -> int:
        """The monotonic clock reading that timestamps count from."""
        return int(self._lib.lpm_start_ns(self._ctx))

    def pause(self) -> None:
        self._lib.lpm_set_paused(self._ctx, 1)

    def resume(self) -> None:
        self._lib.lpm_set_paused(self._ctx, 0)

    @property
    def paused(self) -> bool:
        return bool(self._lib.lpm_paused(self._ctx))

    def stats(self) -> dict[str, int]:
        return cast("dict[str, int]", self._lib.lpm_stats(self._ctx))

    # -- the writer --------------------------------------------------------------

    def keep_out(self, with_ctypes: bool) -> int:
        return int(self._lib.lpm_gc_keep_out(lpm_objects(with_ctypes)))

    def let_in(self) -> int:
        return int(self._lib.lpm_gc_let_in())

    def start(self) -> None:
        self._lib.lpm_sink_start(self._ctx)
        _running.add(self)

    @property
    def writer_ident(self) -> int | None:
        return None

    def stop(self) -> None:
        """Write what is left and the end marker; stop the writer pthread."""
        self._lib.lpm_sink_stop(self._ctx)
        _running.discard(self)


# A child's copies of its parent's sinks have no writer: let them go.
os.register_at_fork(after_in_child=_running.clear)

__all__ = ["IDLE_TICK", "NativeSink"]
