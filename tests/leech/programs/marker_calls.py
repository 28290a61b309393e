"""Sample program: markers and traced calls interleaved, a few hundred
nanoseconds apart, for about 0.3 s (several refits of the tracer's
clock line), in the main thread."""

import time

import lpm


def step(i: int) -> int:
    return i + 1


deadline = time.monotonic() + 0.3
i = 0
while time.monotonic() < deadline:
    lpm.marker("tick")
    i = step(i)
    time.sleep(0.00005)  # fewer events to decode; the gap that matters is the one above
lpm.marker("done")
print(i)
