"""Sample program: asyncio tasks with known names and fates.

Under asyncio.run: "worker-0" .. "worker-3" each sleep 10 ms and return;
"boom" raises ValueError (awaited with return_exceptions); "sleeper" is
cancelled; then "blocker" holds the loop for 300 ms (lag), all between the
markers "tasks start" and "tasks end".
"""

import asyncio
import time

import lpm


async def work(i: int) -> int:
    await asyncio.sleep(0.01)
    return i


async def boom() -> None:
    await asyncio.sleep(0.01)
    raise ValueError("boom")


async def sleeper() -> None:
    await asyncio.sleep(10)


async def blocker() -> None:
    await asyncio.sleep(0.25)  # the lag probe has run by now
    time.sleep(0.3)


async def main() -> None:
    lpm.marker("tasks start")
    workers = [asyncio.create_task(work(i), name=f"worker-{i}") for i in range(4)]
    failing = asyncio.create_task(boom(), name="boom")
    cancelled = asyncio.create_task(sleeper(), name="sleeper")
    await asyncio.gather(*workers, failing, return_exceptions=True)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await asyncio.create_task(blocker(), name="blocker")
    await asyncio.sleep(0.15)  # one more probe, after the block
    lpm.marker("tasks end")


asyncio.run(main())
