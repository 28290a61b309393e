"""Sample program: two threads allocate known amounts.

"keeper" allocates 2,000 bytearrays of 10,000 bytes and keeps them (20 MB,
none freed); "churner" makes 1,000 bytes objects of 100,000 bytes, each freed
at once (100 MB allocated and freed).  Each runs between markers
"<name> start" and "<name> end".
"""

from __future__ import annotations

import threading

import lpm

kept: list[list[bytearray]] = []


def keep(n: int, size: int) -> list[bytearray]:
    return [bytearray(size) for _ in range(n)]


def churn(n: int, size: int) -> None:
    for _ in range(n):
        bytes(size)


def keeper() -> None:
    lpm.marker("keeper start")
    kept.append(keep(2000, 10_000))
    lpm.marker("keeper end")


def churner() -> None:
    lpm.marker("churner start")
    churn(1000, 100_000)
    lpm.marker("churner end")


for target in (keeper, churner):
    t = threading.Thread(target=target, name=target.__name__)
    t.start()
    t.join()
