"""Sample program for the web view's deep instrumentation panels: an asyncio
service whose tasks parse, allocate and finish, for argv[1] seconds."""

import asyncio
import sys
import time


def parse(n: int) -> int:
    return sum(len(str(i)) for i in range(n))


async def handle(i: int) -> int:
    buffer = bytearray(200_000)
    await asyncio.sleep(0.001)
    return parse(200) + len(buffer) + i


async def main(seconds: float) -> None:
    until = time.monotonic() + seconds
    i = 0
    while time.monotonic() < until:
        await asyncio.gather(*(asyncio.create_task(handle(i + k), name=f"request-{i + k}") for k in range(5)))
        i += 5
        await asyncio.sleep(0.01)


asyncio.run(main(float(sys.argv[1])))
