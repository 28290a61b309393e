"""asyncio tasks and event-loop lag, for both leeches.

Every task an asyncio event loop creates through ``loop.create_task`` (which
``asyncio.create_task``, ``asyncio.run``, ``TaskGroup`` and ``gather`` use)
gets a number for the run and three events in the loop's thread:
``PyTaskCreate`` (its name and its coroutine's qualified name), ``PyTaskStart``
(just before the loop first runs it: a callback queued ahead of the task's
first step; with its name then, since ``asyncio.create_task(name=...)``
names a task only after the loop created it) and ``PyTaskEnd`` (returned,
raised or cancelled: a done callback).  Each loop that creates a task also gets a lag probe: a callback
that asks to run every :data:`LAG_INTERVAL` seconds and reports, as the
counter ``asyncio.lag_ms``, how late it ran (what any callback on that loop
waits behind the one running).

The hook wraps ``asyncio.BaseEventLoop.create_task`` (the standard loops;
uvloop's are not seen) while tracking is on, and puts it back when it is
turned off, if no other tool wrapped it since.  The awaiting chain of a
suspended task is not in the stack samples: the sampler sees only the task
that runs.
"""

from __future__ import annotations

import itertools
import threading
import weakref

from . import wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any, Callable

    from .sink import Sink

#: Seconds between two runs of a loop's lag probe.
LAG_INTERVAL = 0.1
#: Suspended tasks whose awaiting chain is sent at each heap interval, and
#: the deepest chain.
AWAITING_TASKS = 100
AWAITING_DEPTH = 32
#: PyTaskEnd's status (lpm.eventlog.events.TASK_STATUS).
DONE, FAILED, CANCELLED = 0, 1, 2


class TaskWatch:
    """asyncio task tracking for one sink; :meth:`set` turns it on and off."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.on = False
        self._numbers = itertools.count(1)
        self._original: Callable[..., Any] | None = None
        self._mine: Callable[..., Any] | None = None
        self._probed: weakref.WeakSet[Any] = weakref.WeakSet()
        self._live: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def set(self, on: bool) -> None:
        import asyncio.base_events  # only now: most programs tracked never use it

        cls = asyncio.base_events.BaseEventLoop
        with self._lock:
            if on and not self.on:
                self._original = cls.create_task
                self._mine = self._wrap(self._original)
                cls.create_task = self._mine  # type: ignore[method-assign]
            elif not on and self.on:
                if cls.create_task is self._mine:  # not if another tool wrapped it since
                    cls.create_task = self._original  # type: ignore[method-assign,assignment]
                self._probed = weakref.WeakSet()
            self.on = on

    def _wrap(self, create_task: Callable[..., Any]) -> Callable[..., Any]:
        watch = self

        def lpm_create_task(loop: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
            if not watch.on:
                return create_task(loop, coro, *args, **kwargs)
            number = next(watch._numbers)
            # Queued ahead of the task's first step: it runs just before it.
            holder: list[Any] = []
            loop.call_soon(watch._started, number, holder)
            task = create_task(loop, coro, *args, **kwargs)
            holder.append(task)
            coroutine = getattr(coro, "__qualname__", None) or type(coro).__qualname__
            watch.sink.emit_event(wire.PY_TASK_CREATE, number, task.get_name(), coroutine)
            task.add_done_callback(lambda t: watch._ended(number, t))
            watch._live[number] = task
            if loop not in watch._probed:
                watch._probed.add(loop)
                loop.call_soon(watch._probe, loop, loop.time() + LAG_INTERVAL, True)
            return task

        lpm_create_task.__wrapped__ = create_task  # type: ignore[attr-defined]
        return lpm_create_task

    def _started(self, number: int, holder: list[Any]) -> None:
        self.sink.emit_event(wire.PY_TASK_START, number, holder[0].get_name() if holder else "")

    def _ended(self, number: int, task: Any) -> None:
        if task.cancelled():
            status = CANCELLED
        else:
            # Not task.exception(): that would mark the exception retrieved
            # and silence asyncio's "never retrieved" report to the program.
            status = FAILED if getattr(task, "_exception", None) is not None else DONE
        self.sink.emit_event(wire.PY_TASK_END, number, status)

    def awaiting(self) -> None:
        """``PyTaskAwait`` of every suspended task (at most
        :data:`AWAITING_TASKS`, the oldest first), from the monitor's thread:
        the chain of ``cr_await`` from each task's coroutine, read under the
        GIL while the loop's thread is elsewhere."""
        if not self.on:
            return
        sent = 0
        for number, task in sorted(self._live.items()):
            if sent >= AWAITING_TASKS:
                break
            if task.done():
                continue
            chain = _chain(task.get_coro())
            if chain:
                self.sink.emit_event(wire.PY_TASK_AWAIT, number, chain)
                sent += 1

    def _probe(self, loop: Any, due: float, first: bool = False) -> None:
        if not self.on or loop.is_closed():
            return
        now = loop.time()
        if not first:
            self.sink.counter("asyncio.lag_ms", max(0.0, now - due) * 1000.0)
        loop.call_at(now + LAG_INTERVAL, self._probe, loop, now + LAG_INTERVAL)


def _chain(coro: Any) -> str:
    """A suspended coroutine's awaiting chain, outermost first; "" when it is
    running (its frame is on a thread's stack, where samples see it)."""
    parts: list[str] = []
    while coro is not None and len(parts) < AWAITING_DEPTH:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if getattr(coro, "cr_running", False) or getattr(coro, "gi_running", False):
            return ""
        code = frame.f_code
        parts.append(f"{getattr(code, 'co_qualname', code.co_name)} ({code.co_filename}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(parts)
