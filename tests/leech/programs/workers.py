"""Sample program: named worker threads emitting markers, spans and counters,
and an exact number of garbage collections between two markers.

argv: THREADS MARKERS GCS [GATE]: with GATE, it starts only once that file
exists (so a server can find it first).  Prints one JSON line with what it did.
"""

import gc
import json
import os
import sys
import threading
import time

import lpm

threads, markers, gcs = (int(a) for a in sys.argv[1:4])
if len(sys.argv) > 4:
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.005)


def work(i: int) -> None:
    with lpm.span(f"work {i}"):
        for j in range(markers):
            lpm.marker(f"worker {i} marker {j}")
        lpm.counter("done", i)


gc.disable()
lpm.marker("gc begin")
for _ in range(gcs):
    gc.collect()
lpm.marker("gc end")
pool = [threading.Thread(target=work, args=(i,), name=f"worker-{i}") for i in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
lpm.message("all done ✓")
print(json.dumps({"threads": threads, "markers": markers, "gcs": gcs}), flush=True)
sys.exit(7)
