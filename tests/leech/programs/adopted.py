"""Sample program: short threads that spin before their first event.

Each of argv[1] threads runs Python code for 20 ms (long enough for a fast
background sampler to number it), then emits one marker and ends, mostly
before the monitor's next scan could learn its name.
"""

import sys
import threading
import time

import lpm


def spin_then_mark(i: int) -> None:
    until = time.monotonic() + 0.02
    while time.monotonic() < until:
        pass
    lpm.marker(f"late {i}")


for i in range(int(sys.argv[1])):
    t = threading.Thread(target=spin_then_mark, args=(i,), name=f"late-{i}")
    t.start()
    t.join()
