#!/usr/bin/env python3
"""Bench workload "threads": four threads mixing Python work, sleeps and I/O.

Each thread loops: some pure-Python work, ``time.sleep(0.001)``, a 4 KiB round
trip through its own pipe, and every 8th time a write, seek and read of a
temporary file.  Prints ``BENCH_ELAPSED <seconds>`` for the hot section (start
of the threads to the last join) and ``BENCH_MAXRSS <KiB>`` (peak RSS).

Scale: argv[1], else $LPM_BENCH_SCALE, else 1.0 (about 1.2 s plain).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import List

from harness import run

THREADS = 4
CHUNK = b"x" * 4096


def python_work(seed: int) -> int:
    acc = seed
    for i in range(1500):
        acc = (acc * 31 + i) % 1_000_003
    words = [str(acc + i) for i in range(20)]
    return acc + len("".join(words))


def worker(index: int, rounds: int, results: List[int]) -> None:
    rfd, wfd = os.pipe()
    total = 0
    try:
        with tempfile.TemporaryFile() as scratch:
            for i in range(rounds):
                total += python_work(i + index)
                time.sleep(0.001)
                os.write(wfd, CHUNK)
                got = 0
                while got < len(CHUNK):
                    got += len(os.read(rfd, len(CHUNK) - got))
                total += got
                if i % 8 == 0:
                    scratch.seek(0)
                    scratch.write(CHUNK * 4)
                    scratch.flush()
                    scratch.seek(0)
                    total += len(scratch.read())
    finally:
        os.close(rfd)
        os.close(wfd)
    results[index] = total


def work(factor: float) -> int:
    rounds = max(1, round(850 * factor))
    results = [0] * THREADS
    threads = [
        threading.Thread(target=worker, args=(i, rounds, results), name=f"bench-worker-{i}") for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results)


if __name__ == "__main__":
    run(work)
