"""Sample program: THREADS threads flood markers as fast as they can.

argv: THREADS MARKERS [UNTIL_FILE].  Each thread emits MARKERS markers, then,
if UNTIL_FILE is given, keeps emitting until that file exists.  Prints
"flood done" and one JSON line of the sink's counters, then exits 0.  The GC
is off, so a flood thread's events are exactly its markers.
"""

import gc
import json
import os
import sys
import threading

import lpm
from lpm.leech import active

gc.disable()
threads, markers = int(sys.argv[1]), int(sys.argv[2])
until = sys.argv[3] if len(sys.argv) > 3 else None
emitted = [0] * threads


def flood(i: int) -> None:
    n = 0
    while n < markers or (until is not None and not os.path.exists(until)):
        lpm.marker(f"t{i} {n}")
        n += 1
    emitted[i] = n


pool = [threading.Thread(target=flood, args=(i,), name=f"flood-{i}") for i in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
leech = active()
stats = leech.sink.stats() if leech else {}
print("flood done", flush=True)
print(json.dumps({"emitted": emitted, "stats": stats}), flush=True)
