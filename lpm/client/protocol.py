"""The client's side of the TCP protocol, without sockets: bytes in, messages out.

:class:`ClientProtocol` turns the server's frames into what a program wants:
per source the eventlog header, decoded events (each source has its own
incremental reader, so events arrive typed, exactly as the program wrote
them), service replies, errors and notices, and state snapshots (typed by
:mod:`lpm.client.model`).  Requests are numbered here; the shell sends the
bytes :meth:`ClientProtocol.request` returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Union

from ..errors import FormatError, ProtocolError
from ..eventlog.events import Event
from ..eventlog.reader import NEED_DATA, EventLogReader, Header
from ..protocol import service
from ..protocol.frames import Frame, FrameDecoder, Kind, encode_frame
from .model import Snapshot


@dataclass(frozen=True)
class HeaderMessage:
    source: int
    header: Header


@dataclass(frozen=True)
class EventMessage:
    source: int
    event: Event


@dataclass(frozen=True)
class StateMessage:
    source: int
    snapshot: Snapshot


@dataclass(frozen=True)
class ServiceMessage:
    """A reply, an error or a notice: the service message as the server sent it."""

    message: Dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.message.get("type"))


@dataclass(frozen=True)
class RawMessage:
    """A HEADER or EVENTS frame's bytes, undecoded (a client that records)."""

    source: int
    kind: Kind
    payload: bytes


Message = Union[HeaderMessage, EventMessage, StateMessage, ServiceMessage, RawMessage]


class ClientProtocol:
    """One connection's worth of protocol state."""

    def __init__(self, max_payload: int = 64 << 20, raw: bool = False) -> None:
        self.raw = raw  #: hand HEADER and EVENTS frames over undecoded
        self.decoder = FrameDecoder(max_payload)
        self.readers: Dict[int, EventLogReader] = {}
        self._next_id = 1
        self.format_errors = 0

    def request(self, op: str, **args: Any) -> tuple[int, bytes]:
        """A request's id and the bytes to send."""
        id_ = self._next_id
        self._next_id += 1
        return id_, encode_frame(Frame(Kind.SERVICE, 0, service.request(id_, op, **args)))

    def feed(self, data: bytes) -> List[Message]:
        """Bytes from the server; the messages they complete, in order.

        Raises:
            ProtocolError: the server broke the framing or sent a bad service
                message (the connection cannot go on).
        """
        self.decoder.feed(data)
        out: List[Message] = []
        while True:
            frame = self.decoder.next_frame()
            if frame is None:
                return out
            self._frame(frame, out)

    def _frame(self, frame: Frame, out: List[Message]) -> None:
        if frame.kind is Kind.SERVICE:
            out.append(ServiceMessage(service.decode(frame.payload)))
        elif frame.kind is Kind.STATE:
            try:
                body = json.loads(frame.payload.decode("utf-8"))
                out.append(StateMessage(frame.source, Snapshot.from_json(body)))
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
                raise ProtocolError(0, f"bad state snapshot of source {frame.source}: {err}") from None
        elif self.raw:
            out.append(RawMessage(frame.source, frame.kind, frame.payload))
        else:
            if frame.kind is Kind.HEADER:
                # A new stream of this source starts: a fresh reader.
                self.readers[frame.source] = EventLogReader(strict=False)
            reader = self.readers.get(frame.source)
            if reader is None:
                raise ProtocolError(0, f"events of source {frame.source} before its header")
            reader.feed(frame.payload)
            while True:
                try:
                    item = reader.next_event()
                except FormatError:  # lenient readers count, never raise; kept for safety
                    self.format_errors += 1
                    continue
                if item is NEED_DATA:
                    break
                if isinstance(item, Header):
                    out.append(HeaderMessage(frame.source, item))
                elif isinstance(item, Event):
                    out.append(EventMessage(frame.source, item))
            self.format_errors = sum(r.errors for r in self.readers.values())
