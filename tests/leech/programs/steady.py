"""Sample program: emits a marker every millisecond until UNTIL_FILE exists,
then prints how many it emitted."""

import sys
import os
import time

import lpm

until = sys.argv[1]
n = 0
while not os.path.exists(until):
    lpm.marker(f"tick {n}")
    n += 1
    time.sleep(0.001)
print(n, flush=True)
