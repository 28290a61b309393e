"""Sample program: three phases of allocations, tracking switched between them.

phase_a() allocates and frees 80 x 1 MB, then "a done" and a wait for argv[1];
phase_b() 50 x 1 MB, "b done", a wait for argv[2]; phase_c() 80 x 1 MB, "c done".
The test turns tracking on before b and off before c, through the control FIFO.
"""

import os
import sys
import time

import lpm


def phase_a() -> None:
    for _ in range(80):
        bytes(1_000_000)


def phase_b() -> None:
    for _ in range(50):
        bytes(1_000_000)


def phase_c() -> None:
    for _ in range(80):
        bytes(1_000_000)


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.005)


phase_a()
lpm.marker("a done")
wait_for(sys.argv[1])
phase_b()
lpm.marker("b done")
wait_for(sys.argv[2])
phase_c()
lpm.marker("c done")
