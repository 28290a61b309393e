"""Encoding eventlogs: bytes out, no I/O.

>>> w = EventLogWriter()
>>> data = w.header() + w.block(0, [UserMarker(ts=5, cap=0, marker="go")]) + w.end()

The writer declares every type it may write in the header; by default that is
every type in the registry, so any lpm event can follow.  Types lpm does not
know can be declared with :class:`EventType` and written as ``UnknownEvent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from . import format as fmt
from .events import EVENT_TYPES, Event, EventBlock, UnknownEvent, declared_size


@dataclass(frozen=True)
class EventType:
    """One declaration of a header: id, payload size (or 0xffff), description."""

    id: int
    size: int
    description: str
    extra: bytes = b""

    @property
    def variable(self) -> bool:
        return self.size == fmt.VARIABLE

    @classmethod
    def of(cls, event_class: type[Event]) -> EventType:
        """The declaration lpm writes for a registered event class."""
        return cls(event_class.ID, declared_size(event_class), event_class.DESCRIPTION)


def encode_header(types: Iterable[EventType]) -> bytes:
    """``hdrb hetb (etb ...)* hete hdre datb``: everything before the first event."""
    return fmt.encode_header((t.id, t.size, t.description, t.extra) for t in types)


class EventLogWriter:
    """Encodes a header, events, blocks and the end marker.

    Args:
        types: the declarations to put in the header; default: every
            registered event type.
    """

    def __init__(self, types: Iterable[EventType] | None = None) -> None:
        if types is None:
            types = (EventType.of(cls) for cls in EVENT_TYPES.values())
        self.types: Mapping[int, EventType] = {t.id: t for t in types}

    def header(self) -> bytes:
        return encode_header(self.types.values())

    def event(self, ev: Event) -> bytes:
        """One event: id, timestamp, length if the type is variable, payload.

        Raises:
            ValueError: the type is not declared, the payload does not fit its
                layout, or it is longer than a declared size or 65,535 bytes.
        """
        if isinstance(ev, UnknownEvent):
            type_id, payload = ev.type_id, ev.data
        else:
            type_id, payload = ev.ID, ev.LAYOUT.encode(ev.payload())
        decl = self.types.get(type_id)
        if decl is None:
            raise ValueError(f"event type {type_id} is not declared in this writer's header")
        head = fmt.EVENT_HEAD.pack(type_id, ev.ts)
        if decl.variable:
            if len(payload) > fmt.MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes exceeds the eventlog limit of {fmt.MAX_PAYLOAD}")
            return head + fmt.PAYLOAD_LEN.pack(len(payload)) + payload
        if len(payload) != decl.size:
            raise ValueError(f"event type {type_id} declared {decl.size} bytes, payload has {len(payload)}")
        return head + payload

    def block(self, cap: int, events: Sequence[Event], start_ts: int | None = None, end_ts: int | None = None) -> bytes:
        """A block marker for ``cap`` followed by ``events``.

        The marker's timestamps default to the first and last event's.
        """
        body = b"".join(self.event(ev) for ev in events)
        if start_ts is None:
            start_ts = events[0].ts if events else 0
        if end_ts is None:
            end_ts = events[-1].ts if events else start_ts
        size = fmt.EVENT_HEAD.size + fmt.BLOCK_MARKER.size + len(body)
        marker = EventBlock(ts=start_ts, cap=cap, size=size, end_ts=end_ts, block_cap=cap)
        return self.event(marker) + body

    def end(self) -> bytes:
        return fmt.DATA_END

    def eventlog(self, events: Sequence[Event], cap: int | None = None) -> bytes:
        """A complete eventlog: header, the events (in one block when ``cap`` is
        given), end marker."""
        if cap is None:
            body = b"".join(self.event(ev) for ev in events)
        else:
            body = self.block(cap, events)
        return self.header() + body + self.end()
