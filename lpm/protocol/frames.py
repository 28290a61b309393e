"""TCP framing between the server and its clients: bytes in, frames out.

Every message is one frame::

    frame  := magic:"LPMF" version:u8 kind:u8 flags:u16 source:u32 length:u32 payload
    (16 bytes of head, big-endian like the eventlog, then ``length`` bytes)

``kind`` says what the payload is:

- ``HEADER``: the eventlog header of ``source``, raw bytes, as its program wrote it;
- ``EVENTS``: raw eventlog bytes of ``source``, whole events only, never
  re-encoded (the server forwards what the program wrote);
- ``SERVICE``: a request, reply or notice, one JSON object in UTF-8, so that
  any language can speak it (see :mod:`lpm.protocol.service`);
- ``STATE``: a snapshot of ``source``'s live state, one JSON object.

Source 0 means "no particular source" (service messages about the server).
A peer that sees a frame of a higher version or unknown kind gets an error,
never a guess.  The payload length is capped (:data:`MAX_PAYLOAD` by default)
so a peer cannot make the other buffer without bound.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ..errors import ProtocolError

MAGIC = b"LPMF"
VERSION = 1
# - 4 bytes magic, 1 version, 1 kind, 2 flags, 4 source, 4 payload length
HEAD = struct.Struct(">4sBBHII")
#: Default cap on one frame's payload: a large state snapshot fits, a lying
#: length does not make the reader buffer gigabytes.
MAX_PAYLOAD = 64 << 20


class Kind(enum.IntEnum):
    HEADER = 1  #: raw eventlog header bytes
    EVENTS = 2  #: raw eventlog event bytes, whole events
    SERVICE = 3  #: a JSON service message
    STATE = 4  #: a JSON state snapshot


@dataclass(frozen=True)
class Frame:
    kind: Kind
    source: int
    payload: bytes
    flags: int = 0


def encode_frame(frame: Frame) -> bytes:
    """The bytes of one frame."""
    return HEAD.pack(MAGIC, VERSION, frame.kind, frame.flags, frame.source, len(frame.payload)) + frame.payload


class FrameDecoder:
    """Incremental frame decoder.

    Args:
        max_payload: the largest payload accepted; a longer one is a
            :class:`~lpm.errors.ProtocolError`, raised as soon as its head
            arrives.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises:
            ProtocolError: bad magic, a newer version, an unknown kind or a
                payload over the limit; the error names the stream offset.
        """
        buf = self._buf
        if len(buf) < HEAD.size:
            if buf and not MAGIC.startswith(bytes(buf[:4])):
                raise ProtocolError(self._offset, f"not an lpm frame: starts with {bytes(buf[:4])!r}")
            return None
        magic, version, kind, flags, source, length = HEAD.unpack_from(buf)
        if magic != MAGIC:
            raise ProtocolError(self._offset, f"not an lpm frame: starts with {magic!r}")
        if version != VERSION:
            raise ProtocolError(self._offset, f"frame version {version}, this side speaks {VERSION}")
        if kind not in Kind._value2member_map_:
            raise ProtocolError(self._offset, f"unknown frame kind {kind}")
        if length > self.max_payload:
            raise ProtocolError(self._offset, f"frame of {length} bytes exceeds the limit of {self.max_payload}")
        end = HEAD.size + length
        if len(buf) < end:
            return None
        frame = Frame(Kind(kind), source, bytes(buf[HEAD.size : end]), flags)
        del buf[:end]
        self._offset += end
        return frame
