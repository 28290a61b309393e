"""Sample program: allocation tracking on, then a fork; the child allocates
and frees 20 MB and exits 7 (it has no leech of its own), the parent waits
for it and marks "child 7"."""

import os

import lpm

pid = os.fork()
if pid == 0:
    for _ in range(20):
        bytes(1_000_000)
    os._exit(7)
_, status = os.waitpid(pid, 0)
lpm.marker(f"child {os.waitstatus_to_exitcode(status)}")
