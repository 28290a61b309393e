"""Sample program: known call chains in three threads, for the stack sampler.

The main thread spins in main_outer -> main_spin, a worker in
worker_outer -> Spinner.spin, and a third thread sleeps in sleeper(), all for
argv[1] seconds.  Prints the first line of each function as JSON.
"""

import json
import sys
import threading
import time

SECONDS = float(sys.argv[1])


class Spinner:
    def spin(self, until: float) -> int:
        n = 0
        while time.monotonic() < until:
            n += 1
        return n


def worker_outer(until: float) -> None:
    Spinner().spin(until)


def sleeper(until: float) -> None:
    while time.monotonic() < until:
        time.sleep(0.005)


def main_spin(until: float) -> int:
    n = 0
    while time.monotonic() < until:
        n += 1
    return n


def main_outer(until: float) -> None:
    main_spin(until)


until = time.monotonic() + SECONDS
threads = [
    threading.Thread(target=worker_outer, args=(until,), name="spinner"),
    threading.Thread(target=sleeper, args=(until,), name="sleeper"),
]
for t in threads:
    t.start()
main_outer(until)
for t in threads:
    t.join()
lines = {f.__qualname__: f.__code__.co_firstlineno for f in (Spinner.spin, worker_outer, sleeper, main_spin, main_outer)}
print(json.dumps(lines), flush=True)
