"""Sample program: three phases of calls, tracing switched between them.

Phase a calls phase_a() 100 times and marks "a done", then waits for the file
argv[1]; phase b marks "b start" (the pure leech before 3.12 turns tracing on
in a running thread at its next event), calls phase_b() 100 times, marks
"b done" and waits for argv[2]; phase c calls phase_c() 100 times and marks
"c done".  The test
turns tracing on before b and off before c, through the control FIFO.
"""

import os
import sys
import time

import lpm


def phase_a() -> None:
    pass


def phase_b() -> None:
    pass


def phase_c() -> None:
    pass


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.005)


for _ in range(100):
    phase_a()
lpm.marker("a done")
wait_for(sys.argv[1])
lpm.marker("b start")
for _ in range(100):
    phase_b()
lpm.marker("b done")
wait_for(sys.argv[2])
for _ in range(100):
    phase_c()
lpm.marker("c done")
