"""Sample program: asyncio tasks before and after tracking is switched on.

Three tasks "before-<i>", the marker "before done", a wait (in the loop) for
the file argv[1], then three tasks "after-<i>".
"""

import asyncio
import os
import sys

import lpm


async def nothing() -> None:
    await asyncio.sleep(0)


async def main() -> None:
    await asyncio.gather(*(asyncio.create_task(nothing(), name=f"before-{i}") for i in range(3)))
    lpm.marker("before done")
    while not os.path.exists(sys.argv[1]):
        await asyncio.sleep(0.005)
    await asyncio.gather(*(asyncio.create_task(nothing(), name=f"after-{i}") for i in range(3)))


asyncio.run(main())
