"""Sample program with a known call graph, in the main thread and two more.

Between its markers "<who> start" and "<who> end", each thread calls top(n):
top calls middle(n), which calls leaf once per i < n, then top calls
len(); the main thread with n=2, worker k with n=k+3.
"""

import threading

import lpm


def leaf(x: int) -> int:
    return x + 1


def middle(n: int) -> int:
    total = 0
    for i in range(n):
        total += leaf(i)
    return total


def top(n: int) -> int:
    return middle(n) + len([1, 2, 3])


def worker(k: int) -> None:
    lpm.marker(f"worker-{k} start")
    top(k + 3)
    lpm.marker(f"worker-{k} end")


lpm.marker("main start")
top(2)
lpm.marker("main end")
threads = [threading.Thread(target=worker, args=(k,), name=f"worker-{k}") for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
