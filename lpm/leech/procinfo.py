"""Process information a leech sends once per generation, secrets redacted.

GHC's own events carry what they mean exactly for a process: its capability
set (an OS process, capset 0), runtime identifier, argv, environment, pid,
parent pid and wall clock.  Everything else about the interpreter travels as
``PySetting`` key/value pairs.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from .. import __version__
from . import wire
from .redact import redact_argv, redact_env
from .sink import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from ..eventlog.layout import Value
    from .wire import Kind

CAPSET = 0
CAPSET_OS_PROCESS = 2

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK_NS = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
#: The low bits of a Linux thread CPU-time clock id: per thread (4), scheduler time (2).
_THREAD_SCHED_CLOCK = 6


# From sys rather than the platform module, which would import subprocess and
# more into every profiled program.
_IMPLEMENTATION = {"cpython": "CPython", "pypy": "PyPy"}.get(sys.implementation.name, sys.implementation.name)
_VERSION = ".".join(str(n) for n in sys.version_info[:3])


def rts_identifier(implementation: str) -> str:
    """Like GHC's "GHC-9.0.2 rts_thr_l": interpreter, version, and lpm's part."""
    return f"{_IMPLEMENTATION}-{_VERSION} lpm-{__version__} {implementation}"


def settings(sink: Sink, rate: float, heap_interval: float) -> list[tuple[str, str]]:
    """Interpreter and leech settings as (key, value) text pairs."""
    flags = sys.flags
    pairs = [
        ("python.version", sys.version.replace("\n", " ")),
        ("python.implementation", _IMPLEMENTATION),
        ("python.cache_tag", str(sys.implementation.cache_tag)),
        ("python.executable", sys.executable),
        ("sys.flags", " ".join(f"{name}={getattr(flags, name)}" for name in dir(flags) if not name.startswith("_") and not callable(getattr(flags, name)))),
        ("gc.thresholds", ",".join(str(t) for t in gc.get_threshold())),
        ("gc.enabled", str(gc.isenabled())),
        ("sys.switch_interval", repr(sys.getswitchinterval())),
        ("sys.recursion_limit", str(sys.getrecursionlimit())),
        ("lpm.implementation", sink.IMPLEMENTATION),
        ("lpm.sample_rate", repr(rate)),
        ("lpm.heap_interval", repr(heap_interval)),
        ("lpm.flush_interval", repr(sink.config.flush_interval)),
        ("lpm.generation_interval", repr(sink.config.generation_interval)),
        ("lpm.budget", str(sink.config.budget)),
        ("lpm.buffer_size", str(sink.config.buffer_size)),
    ]
    return pairs


def process_events(sink: Sink, rate: float, heap_interval: float) -> list[tuple[Kind, tuple[Value, ...]]]:
    """The events that describe this process, in the order a generation sends them."""
    wall = time.time_ns()
    out: list[tuple[Kind, tuple[Value, ...]]] = [
        (wire.CAPSET_CREATE, (CAPSET, CAPSET_OS_PROCESS)),
        (wire.RTS_IDENTIFIER, (CAPSET, rts_identifier(sink.IMPLEMENTATION))),
        (wire.PROGRAM_ARGS, (CAPSET, tuple(redact_argv(_argv())))),
        (wire.PROGRAM_ENV, (CAPSET, tuple(redact_env(os.environ)))),
        (wire.OS_PROCESS_PID, (CAPSET, os.getpid())),
        (wire.OS_PROCESS_PARENT_PID, (CAPSET, os.getppid())),
        (wire.WALL_CLOCK_TIME, (CAPSET, wall // 1_000_000_000, wall % 1_000_000_000)),
    ]
    out += [(wire.PY_SETTING, pair) for pair in settings(sink, rate, heap_interval)]
    return out


def _argv() -> list[str]:
    orig = getattr(sys, "orig_argv", None)  # 3.10+: the interpreter's own argv
    return list(orig) if orig else [sys.executable, *sys.argv]


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def thread_cpu_ns(native_id: int) -> int | None:
    """User plus system CPU time of thread ``native_id`` of this process, or
    None (no such thread, or no way to tell).

    Read from the thread's CPU-time clock, whose id Linux makes from the
    thread id (what glibc's pthread_getcpuclockid returns, made here from
    ``native_id`` so a thread that has ended gives an error, or its last
    figure while it is still leaving the kernel, never a read through a
    stale pthread handle).  clock_gettime keeps the GIL, where
    reading /proc/self/task/<id>/stat released it twice per thread: with the
    program's threads busy in Python, each release cost the monitor a wait of
    a switch interval or more, and 0.1 s heap figures came every 0.18 s.  The
    clock also counts nanoseconds, not 10 ms ticks."""
    if not native_id:
        return None
    try:
        return time.clock_gettime_ns((~native_id << 3) | _THREAD_SCHED_CLOCK)
    except (OSError, AttributeError, OverflowError):
        pass
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) * _TICK_NS
    except (IndexError, ValueError):
        return None
