#!/usr/bin/env python3
"""Bench workload "asyncio": 1000 producer tasks and 8 consumers over an asyncio.Queue.

Each producer puts a number of small work items on a bounded queue (yielding
to the loop now and then); consumers take them, do a little Python work per
item, and occasionally sleep 0 to switch tasks.  Repeated in a few waves.
Prints ``BENCH_ELAPSED <seconds>`` for the hot section only and
``BENCH_MAXRSS <KiB>`` (peak RSS).

Scale: argv[1], else $LPM_BENCH_SCALE, else 1.0 (about 1.2 s plain).
"""

from __future__ import annotations

import asyncio
from typing import List, Optional, Tuple

from harness import run

PRODUCERS = 1000
CONSUMERS = 8
ITEMS = 10

Item = Optional[Tuple[int, int]]


async def producer(index: int, queue: asyncio.Queue[Item]) -> None:
    for i in range(ITEMS):
        await queue.put((index, i))
        if i % 5 == 4:
            await asyncio.sleep(0)


def handle(index: int, i: int) -> int:
    acc = index ^ i
    for k in range(40):
        acc = (acc * 33 + k) & 0xFFFFF
    return acc


async def consumer(queue: asyncio.Queue[Item], totals: List[int], slot: int) -> None:
    n = 0
    while True:
        item = await queue.get()
        if item is None:
            return
        totals[slot] += handle(*item)
        n += 1
        if n % 16 == 0:
            await asyncio.sleep(0)


async def wave() -> int:
    queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=256)
    totals = [0] * CONSUMERS
    consumers = [asyncio.ensure_future(consumer(queue, totals, c)) for c in range(CONSUMERS)]
    await asyncio.gather(*(producer(p, queue) for p in range(PRODUCERS)))
    for _ in consumers:
        await queue.put(None)
    await asyncio.gather(*consumers)
    return sum(totals)


async def work(factor: float) -> int:
    total = 0
    for _ in range(max(1, round(8 * factor))):
        total += await wave()
    return total


if __name__ == "__main__":
    run(lambda factor: asyncio.run(work(factor)))
