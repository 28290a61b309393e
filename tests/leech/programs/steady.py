"""Sample program: emits a marker every millisecond until UNTIL_FILE exists,
then prints how many it emitted.  With a second argument "collect", also runs
a full collection every 100 markers."""

import gc
import sys
import os
import time

import lpm

until = sys.argv[1]
collect = sys.argv[2:] == ["collect"]
n = 0
while not os.path.exists(until):
    lpm.marker(f"tick {n}")
    n += 1
    if collect and n % 100 == 0:
        gc.collect()
    time.sleep(0.001)
print(n, flush=True)
