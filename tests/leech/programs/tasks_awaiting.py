"""Sample program: a task suspended three coroutines deep for argv[1] seconds.

"deep" runs outer(), which awaits middle(), which awaits inner(), which
sleeps; the main coroutine waits for it.
"""

import asyncio
import sys


async def inner(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def middle(seconds: float) -> None:
    await inner(seconds)


async def outer(seconds: float) -> None:
    await middle(seconds)


async def main() -> None:
    await asyncio.create_task(outer(float(sys.argv[1])), name="deep")


asyncio.run(main())
