"""The GHC eventlog format: event registry, writer and incremental reader."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .events import EVENT_TYPES, Event, EventBlock, MalformedEvent, UnknownEvent
    from .reader import (
        NEED_DATA,
        DataEnd,
        EndOfStream,
        EventLogReader,
        Header,
        RawEvent,
        Skipped,
        read_events,
    )
    from .writer import EventLogWriter, EventType, encode_header

#: Where each public name lives.  Loaded on first use, so that the leech can
#: import ``lpm.eventlog.catalog`` without the decoder (see catalog.py).
_HOMES = {
    **dict.fromkeys(("EVENT_TYPES", "Event", "EventBlock", "MalformedEvent", "UnknownEvent"), "events"),
    **dict.fromkeys(
        ("NEED_DATA", "DataEnd", "EndOfStream", "EventLogReader", "Header", "RawEvent", "Skipped", "read_events"),
        "reader",
    ),
    **dict.fromkeys(("EventLogWriter", "EventType", "encode_header"), "writer"),
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

__all__ = [
    "EVENT_TYPES",
    "NEED_DATA",
    "DataEnd",
    "EndOfStream",
    "Event",
    "EventBlock",
    "EventLogReader",
    "EventLogWriter",
    "EventType",
    "Header",
    "MalformedEvent",
    "RawEvent",
    "Skipped",
    "UnknownEvent",
    "encode_header",
    "read_events",
]
