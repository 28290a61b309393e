"""What every bench workload shares: its scale, its timing, its report.

A workload calls :func:`run` with its hot function; this prints
``BENCH_RESULT``, ``BENCH_ELAPSED <seconds>`` (the hot section only),
``BENCH_CPU <seconds>`` (the CPU time the calling thread used in it: the
program's own work, without the time it waited for the GIL or a core) and
``BENCH_MAXRSS <KiB>``, the lines bench/overhead.py reads.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable


def scale() -> float:
    """argv[1], else $LPM_BENCH_SCALE, else 1.0."""
    raw = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LPM_BENCH_SCALE", "1")
    return float(raw)


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM, which starts afresh at exec.  (ru_maxrss
    of RUSAGE_SELF does not: it keeps the high-water mark of the process that forked it.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(work: Callable[[float], object]) -> None:
    """Time ``work(scale())`` and print the three BENCH_ lines."""
    factor = scale()
    start, cpu = time.perf_counter(), time.thread_time()
    result = work(factor)
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    print(f"BENCH_RESULT {result}")
    print(f"BENCH_ELAPSED {elapsed:.6f}")
    print(f"BENCH_CPU {cpu:.6f}")
    print(f"BENCH_MAXRSS {peak_rss_kib()}", flush=True)
