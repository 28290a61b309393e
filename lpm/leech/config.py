"""Settings of a leech, with the defaults a profiler user expects.

Each can be given to ``lpm.start(...)``, as an option of ``lpm run``, or as an
``LPM_<NAME>`` environment variable (``LPM_SAMPLE_RATE=200``), in that order of
precedence.
"""

from __future__ import annotations

import os

from ..errors import LeechError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any, Mapping

#: Call tracing: off, on, or "floor" (the same hooks with empty callbacks:
#: what the interpreter costs any tracer, for benchmarks).
TRACE_MODES = ("off", "on", "floor")
#: The budget when tracing and none is given (bytes).
TRACE_BUDGET = 64 << 20
#: The most bytes of text a message, marker, span or counter name carries;
#: longer text is cut at a character boundary (by either leech).
MAX_TEXT = 4096
#: Reconnection backoff: first delay, factor, last delay (seconds).
BACKOFF = (0.010, 1.5, 0.5)

#: Every setting, in the order __init__ takes them.
FIELDS = (
    "sample_rate",
    "heap_interval",
    "flush_interval",
    "generation_interval",
    "budget",
    "buffer_size",
    "stop_timeout",
    "directory",
    "fixed_clock",
    "implementation",
    "sampler",
    "trace",
    "alloc",
    "alloc_sample",
    "asyncio",
    "keep_out",
)


class LeechConfig:
    """A leech's settings, checked when made.  (A plain class, not a dataclass,
    so a profiled program does not import ``dataclasses``: see
    lpm/eventlog/catalog.py.)

    Attributes:
        sample_rate: stack samples per second of every thread; 0 turns sampling off.
        heap_interval: seconds between heap figures (RSS, blocks, tracemalloc)
            and per-thread CPU times.
        flush_interval: seconds between flushes of partly filled buffers, so
            quiet threads stay live; 0: only full buffers.
        generation_interval: seconds between generations (thread status,
            settings and sequence points re-sent); 0: never.
        budget: bytes of event buffers in all; when they are all in use, new
            events are dropped and counted.  Default 4 MiB, and
            :data:`TRACE_BUDGET` (64 MiB) when tracing from the start.
        buffer_size: bytes of one thread buffer (the unit taken from and
            returned to the budget).
        stop_timeout: seconds stop() waits for a slow reader to take the last
            events before giving up on them.
        directory: where the FIFOs go; default: $LPM_DIR, $XDG_RUNTIME_DIR/lpm
            or <tmp>/lpm-<uid>.
        fixed_clock: every timestamp is this value (for tests that compare
            bytes); None: the real clock.
        implementation: "native", "python" or "auto" (native when it loads;
            LPM_PUREPYTHON=1 forces python).
        sampler: "auto" (the native leech samples from a thread of its own
            that never takes the GIL, where the kernel lets a process read its
            own memory with process_vm_readv; else as "gil") or "gil" (the
            monitor thread takes the GIL for every sample).
        trace: call tracing from the start: "on" (every call and return of
            Python and C functions, in every thread: PyCall and PyReturn),
            "off", or "floor" (the same hooks doing nothing, for benchmarks);
            the control FIFO's "trace" command changes it at run time.
        alloc: allocation tracking from the start, "on", "off" or "floor"
            (the wrappers installed and passing through, for benchmarks;
            native leech only): every thread's bytes allocated and freed through
            the PyMem allocators (PyAllocStats at the heap interval), and one
            allocation in every ``alloc_sample`` bytes with its stack
            (PyAllocSample; 0: none); the control FIFO's "alloc" command
            changes it at run time.
        asyncio: asyncio tracking from the start, "on" or "off": every
            task's creation, start and end (PyTaskCreate, PyTaskStart,
            PyTaskEnd) and each loop's lag (the counter asyncio.lag_ms); the
            control FIFO's "asyncio" command changes it at run time.
        keep_out: "on" (native leech): lpm's own objects are kept out of the
            program's garbage collections while the leech runs, so they cost
            its full collections nothing (lpm.leech.footprint; they do not
            show in ``gc.get_objects()`` then); "off": walked as any other.
    """

    __slots__ = FIELDS

    def __init__(
        self,
        *,
        sample_rate: float = 100.0,
        heap_interval: float = 1.0,
        flush_interval: float = 0.010,
        generation_interval: float = 5.0,
        budget: int | None = None,
        buffer_size: int = 16 << 10,
        stop_timeout: float = 2.0,
        directory: str | None = None,
        fixed_clock: int | None = None,
        implementation: str = "auto",
        sampler: str = "auto",
        trace: str = "off",
        alloc: str = "off",
        alloc_sample: int = 512 << 10,
        asyncio: str = "off",
        keep_out: str = "on",
    ) -> None:
        self.sample_rate = sample_rate
        self.heap_interval = heap_interval
        self.flush_interval = flush_interval
        self.generation_interval = generation_interval
        # Tracing writes 100+ MB/s from a call-heavy program: a budget that
        # rides out a reader's pauses for longer than 30 ms.
        self.budget = budget if budget is not None else (TRACE_BUDGET if trace != "off" else 4 << 20)
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self.directory = directory
        self.fixed_clock = fixed_clock
        self.implementation = implementation
        self.sampler = sampler
        self.trace = trace
        self.alloc = alloc
        self.alloc_sample = alloc_sample
        self.asyncio = asyncio
        self.keep_out = keep_out
        if self.sample_rate < 0 or self.sample_rate > 10_000:
            raise LeechError(f"sample_rate {self.sample_rate} is outside 0..10000 per second")
        for name in ("heap_interval", "flush_interval", "generation_interval", "stop_timeout"):
            if getattr(self, name) < 0:
                raise LeechError(f"{name} {getattr(self, name)} must not be negative")
        if self.buffer_size < 4096 or self.buffer_size > (1 << 20):
            raise LeechError(f"buffer_size {self.buffer_size} is outside 4 KiB..1 MiB")
        if self.budget < 2 * self.buffer_size:
            raise LeechError(f"budget {self.budget} must hold at least two buffers of {self.buffer_size} bytes")
        if self.implementation not in ("auto", "native", "python"):
            raise LeechError(f"implementation {self.implementation!r} is not auto, native or python")
        if self.sampler not in ("auto", "gil"):
            raise LeechError(f"sampler {self.sampler!r} is not auto or gil")
        if self.asyncio not in ("off", "on"):
            raise LeechError(f"asyncio {self.asyncio!r} is not on or off")
        if self.keep_out not in ("off", "on"):
            raise LeechError(f"keep_out {self.keep_out!r} is not on or off")
        if self.alloc not in ("off", "on", "floor"):
            raise LeechError(f"alloc {self.alloc!r} is not on, off or floor")
        if self.alloc_sample < 0:
            raise LeechError(f"alloc_sample {self.alloc_sample} must not be negative")
        if self.trace not in TRACE_MODES:
            raise LeechError(f"trace {self.trace!r} is not one of {', '.join(TRACE_MODES)}")

    def values(self) -> dict[str, Any]:
        """Every setting by name."""
        return {name: getattr(self, name) for name in FIELDS}

    def replace(self, **changes: Any) -> LeechConfig:
        """A copy with ``changes``, checked again."""
        return LeechConfig(**{**self.values(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LeechConfig) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash(tuple(self.values().items()))

    def __repr__(self) -> str:
        return "LeechConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.values().items()) + ")"

    @property
    def buffers(self) -> int:
        """How many buffers the budget holds."""
        return self.budget // self.buffer_size


_DEFAULTS = LeechConfig()


def from_environment(env: Mapping[str, str] | None = None, **overrides: Any) -> LeechConfig:
    """Defaults, then ``LPM_*`` variables, then ``overrides`` that are not None."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name in FIELDS:
        raw = env.get("LPM_" + name.upper())
        if raw is None or raw == "":
            continue
        kind = type(getattr(_DEFAULTS, name))
        try:
            if name in ("directory", "implementation", "sampler", "trace", "alloc", "asyncio", "keep_out"):
                values[name] = raw
            elif name == "fixed_clock" or kind is int:
                values[name] = int(raw, 0)
            else:
                values[name] = float(raw)
        except ValueError:
            raise LeechError(f"LPM_{name.upper()}={raw!r} is not a valid {name}") from None
    if env.get("LPM_PUREPYTHON"):
        values["implementation"] = "python"
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise LeechError(f"unknown leech settings: {', '.join(sorted(unknown))}")
    return LeechConfig(**values)


__all__ = ["LeechConfig", "from_environment"]
