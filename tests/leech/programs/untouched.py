"""Sample program that knows nothing of lpm: it works, names a thread, exits."""

import sys
import threading
import time


def work() -> None:
    deadline = time.monotonic() + 0.3
    n = 0
    while time.monotonic() < deadline:
        n += sum(i * i for i in range(1000))


t = threading.Thread(target=work, name="cruncher")
t.start()
t.join()
print("untouched", *sys.argv[1:], flush=True)
