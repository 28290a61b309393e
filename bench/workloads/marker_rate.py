#!/usr/bin/env python3
"""Bench program "marker rate": lpm.marker() from one thread at a fixed rate.

argv: RATE [SECONDS]: emit about RATE markers per second for SECONDS (default
1.0), paced with time.perf_counter: whenever the thread is ahead of schedule it
sleeps half a millisecond, and when it is behind it emits every marker that is
due at once.  A rate faster than the thread can call lpm.marker() is simply
not reached; the achieved rate is printed.  Meant to run under ``lpm run``;
prints ``MARKERS <emitted> <seconds>`` and one JSON line of the sink's counters.
"""

from __future__ import annotations

import json
import sys
import time

import lpm
from lpm.leech import active


def emit(rate: float, seconds: float) -> tuple[int, float]:
    marker = lpm.marker
    total = max(1, int(rate * seconds))
    emitted = 0
    start = time.perf_counter()
    while emitted < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        if due <= emitted:
            time.sleep(0.0005)
            continue
        for _ in range(due - emitted):
            marker("tick")
        emitted = due
    return emitted, time.perf_counter() - start


def main() -> None:
    rate = float(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    emitted, elapsed = emit(rate, seconds)
    leech = active()
    stats = leech.sink.stats() if leech is not None else {}
    print(f"MARKERS {emitted} {elapsed:.6f}")
    print(json.dumps({"stats": stats}), flush=True)


if __name__ == "__main__":
    main()
