"""What a program calls to put its own events in the stream.

All of these are no-ops costing one global lookup while no leech runs, so
instrumented code can stay in production.
"""

from __future__ import annotations

import functools
from types import TracebackType
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any, Callable, TypeVar

    from .leech.sink import Sink

    F = TypeVar("F", bound=Callable[..., Any])

_sink: Sink | None = None


def message(text: str) -> None:
    """A user message (GHC's USER_MSG, like ``traceEvent``)."""
    sink = _sink
    if sink is not None:
        sink.message(text)


def marker(name: str) -> None:
    """A user marker (GHC's USER_MARKER, like ``traceMarker``): a point in time."""
    sink = _sink
    if sink is not None:
        sink.marker(name)


def counter(name: str, value: float) -> None:
    """The current value of a named counter or gauge."""
    sink = _sink
    if sink is not None:
        sink.counter(name, float(value))


class span:
    """A named stretch of time on the current thread.

    As a context manager (``with lpm.span("load"): ...``) or a decorator
    (``@lpm.span("load")``).  Spans nest; each has an id unique in the process.
    """

    __slots__ = ("name", "_ids")

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids: list[int] = []

    def __enter__(self) -> span:
        sink = _sink
        self._ids.append(sink.span_begin(self.name) if sink is not None else -1)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        span_id = self._ids.pop()
        sink = _sink
        if sink is not None and span_id >= 0:
            sink.span_end(span_id)

    def __call__(self, fn: F) -> F:
        name = self.name

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sink = _sink
            if sink is None:
                return fn(*args, **kwargs)
            span_id = sink.span_begin(name)
            try:
                return fn(*args, **kwargs)
            finally:
                sink.span_end(span_id)

        return wrapper  # type: ignore[return-value]
