"""Sample program: forks; parent and child each emit markers naming their pid,
and each waits for its own go-file (GO_DIR/<pid>) before exiting, so a test can
attach a reader to both streams first."""

import os
import sys
import time

import lpm

go_dir = sys.argv[1]


def finish(role: str) -> None:
    for i in range(100):
        lpm.marker(f"{role} {os.getpid()} {i}")
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(go_dir, str(os.getpid()))) and time.monotonic() < deadline:
        time.sleep(0.01)


pid = os.fork()
if pid == 0:
    finish("child")
    sys.exit(0)  # a normal exit: atexit stops the child's leech
finish("parent")
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), pid, flush=True)
