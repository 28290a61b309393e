"""Sample program: a hard life for a sampler that reads without the GIL.

Until the file argv[1] appears, threads start and end all the time; each runs code made
with exec() a moment before (so code objects come and go, and their
addresses are reused), recurses deep enough to span several data-stack
chunks, and goes through generators.  Every dynamic function ``dyn_<i>``
calls a ``leaf`` defined on the next line, so a sample that shows the pair
with any other line numbers has named a code object wrongly.
"""

import os
import sys
import threading
import time
from typing import Any, Callable

UNTIL = sys.argv[1]
LIMIT = 120.0  # seconds, should the test that stops it be gone
DEPTH = 400


def deep(depth: int, until: float, leaf_call: Callable[[float], int]) -> int:
    if depth == 0:
        return leaf_call(until)
    return deep(depth - 1, until, leaf_call) + 1


def through_generators(until: float, leaf_call: Callable[[float], int]) -> int:
    def gen() -> Any:
        yield deep(DEPTH, until, leaf_call)

    return sum(gen())


def made(i: int) -> Callable[[float], int]:
    source = "\n" * i + f"def dyn_{i}(until):\n    return leaf(until)\ndef leaf(until):\n"
    source += "    n = 0\n    while n < 20000:\n        n += 1\n    return n\n"
    space: dict[str, Any] = {}
    exec(compile(source, "<churn>", "exec"), space)
    function: Callable[[float], int] = space[f"dyn_{i}"]
    return function


def worker(i: int, until: float) -> None:
    through_generators(until, made(i % 500))


end = time.monotonic() + LIMIT
i = 0
while not os.path.exists(UNTIL) and time.monotonic() < end:
    batch = [threading.Thread(target=worker, args=(i + k, end), name=f"churn-{i + k}") for k in range(4)]
    i += 4
    for t in batch:
        t.start()
    for t in batch:
        t.join()
print(i, flush=True)
