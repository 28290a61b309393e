"""Sample program: the main thread holds the GIL in one long C call.

hog() runs ``sum(range(n))``, which never lets another thread take the GIL,
for about argv[1] seconds, between the markers "hog-start" and "hog-end".
A sampler that needs the GIL sees nothing in between; one that does not
sees hog() innermost.
"""

import sys
import time

import lpm

SECONDS = float(sys.argv[1])


def hog(n: int) -> int:
    return sum(range(n))


t = time.perf_counter()
hog(1_000_000)
n = int(1_000_000 * SECONDS / max(time.perf_counter() - t, 1e-6))
lpm.marker("hog-start")
hog(n)
lpm.marker("hog-end")
