"""The GHC eventlog format: event registry, writer and incremental reader."""

from __future__ import annotations

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
