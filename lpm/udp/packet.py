"""Datagrams of the lpm UDP transport: layout, encoding, decoding and tags.

Every datagram starts with the same 20-byte header, big-endian like the rest
of lpm's wire formats::

    header := magic:"LU" version:u8 type:u8 session:u64 number:u64

``type`` says what follows:

- ``HELLO`` (client, session 0): nonce and the client's limits, zero-padded to
  at least :data:`MIN_HELLO_SIZE` bytes so the server's answer is never larger
  than what caused it (anti-amplification, as QUIC's 1200-byte Initial,
  RFC 9000 §8.1);
- ``CHALLENGE`` (server, session 0): the server's nonce, its id, the session id
  it offers and a cookie, a MAC of all that and the client's address under a
  secret only the server knows, so the server keeps nothing until the client
  echoes it (as QUIC Retry, RFC 9000 §8.1.2);
- ``PROOF`` (client): the hello and challenge fields again, and an HMAC of
  them keyed by the shared token;
- ``DATA``: frames, then a 16-byte tag;
- ``RESET`` (server): only a tag, sent for a session it does not know, e.g.
  after a restart (as QUIC's stateless reset, RFC 9000 §10.3).

A DATA packet's frames, each led by its type byte::

    PADDING  0x00                                    the rest is padding
    PING     0x01                                    ack-eliciting, no body
    ACK      0x02 largest:u64 delay_us:u32 extra:u8 first:u32 (gap:u32 len:u32)*extra
    MESSAGE  0x03 channel:u8 msg_id:u32 total:u32 offset:u32 length:u16 data
    EVENTS   0x04 seq:u64 cum:u64 items:u32 length:u16 data
    MARK     0x05 next_seq:u64 cum:u64               events sent so far
    CLOSE    0x06 code:u8 length:u16 reason
    WELCOME  0x07 proof:32                           the server's proof
    ACK_NOW  0x08                                    ack this packet at once

ACK ranges follow RFC 9000 §19.3.1: ``first`` packets below ``largest`` are
acknowledged, then each pair skips ``gap + 1`` unacknowledged packets and
acknowledges ``len + 1`` more.  Every packet number is used once and never
again, so an acknowledgment names one transmission (RFC 9002 §2).

Decoders take bytes from the network, so each one either returns a value or
raises :class:`BadPacket` (a :class:`~lpm.errors.ProtocolError`) whose
``counter`` names the reason in a word, for per-reason drop counts; no other
exception escapes them.

Authentication (HMAC-SHA256, :mod:`hmac`): both ends derive everything from
the token (or the empty key without one) and a transcript of the handshake,
so a valid tag proves the sender knows the token and took part in this very
handshake.  Each direction has its own key, so a packet reflected back to its
sender does not verify.
"""

from __future__ import annotations

import enum
import hmac
import struct
from typing import List, NamedTuple, Optional, Tuple, Union

from ..errors import ProtocolError

MAGIC = b"LU"
VERSION = 1
# - 2 bytes magic, 1 version, 1 packet type, 8 session id, 8 packet number
HEADER = struct.Struct(">2sBBQQ")
#: Bytes of the truncated HMAC-SHA256 that ends every DATA and RESET packet.
TAG_SIZE = 16
#: A HELLO is padded to this, the smallest datagram every IPv6 path carries
#: with room for headers (RFC 9000 §14.1), so a CHALLENGE is never larger.
MIN_HELLO_SIZE = 1200
NONCE_SIZE = 16
PROOF_SIZE = 32
#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507


class PacketType(enum.IntEnum):
    HELLO = 1  #: client: nonce and limits, padded
    CHALLENGE = 2  #: server: nonce, ids and a stateless cookie
    PROOF = 3  #: client: hello and challenge echoed, with the client's proof
    DATA = 4  #: frames and a tag
    RESET = 5  #: server: a tag for a session it does not know


class FrameType(enum.IntEnum):
    PADDING = 0
    PING = 1
    ACK = 2
    MESSAGE = 3
    EVENTS = 4
    MARK = 5
    CLOSE = 6
    WELCOME = 7
    ACK_NOW = 8


class Channel(enum.IntEnum):
    CONTROL = 0  #: reliable, ordered messages
    STATE = 1  #: reliable, ordered, fragmented (large snapshots)
    EVENTS = 2  #: best effort, never retransmitted, loss reported


class BadPacket(ProtocolError):
    """A datagram, or a part of one, that is dropped.

    Attributes:
        counter: the reason in one word, the key of the drop counters.
    """

    def __init__(self, offset: int, counter: str, reason: str) -> None:
        super().__init__(offset, reason)
        self.counter = counter


class Header(NamedTuple):
    type: PacketType
    session: int
    number: int


class Params(NamedTuple):
    """What one end tells the other about itself in the handshake."""

    max_ack_delay_us: int  #: it acknowledges within this (RFC 9000 §18.2)
    max_message: int  #: the largest reliable message it accepts
    receive_buffer: int  #: bytes it buffers for reassembly and reordering


class Hello(NamedTuple):
    nonce: bytes
    params: Params
    flags: int  #: bit 0: the client has a token


class Challenge(NamedTuple):
    client_nonce: bytes
    server_nonce: bytes
    server_id: int
    session: int
    issued_us: int  #: the server's clock when it made the cookie
    flags: int  #: bit 0: the server requires a token
    params: Params
    cookie: bytes


class Proof(NamedTuple):
    hello: Hello
    challenge: Challenge
    proof: bytes


#: Flag bit of Hello.flags and Challenge.flags: a token is set on that end.
FLAG_TOKEN = 1

# - 16 nonce, then Params (3 x u32), 1 flags
HELLO_BODY = struct.Struct(">16sIIIB")
# - 16 client nonce, 16 server nonce, 8 server id, 8 session, 8 issued (us),
#   1 flags, Params (3 x u32), 16 cookie
CHALLENGE_BODY = struct.Struct(">16s16sQQQBIII16s")
# The challenge as a PROOF echoes it: without the client nonce, already there.
CHALLENGE_ECHO = struct.Struct(">16sQQQBIII16s")
# The hard limit on max_ack_delay (2^14 ms, RFC 9000 §18.2).
MAX_ACK_DELAY_US = (1 << 14) * 1000


# Frames, as the decoder returns them.


class Ping(NamedTuple):
    pass


class Ack(NamedTuple):
    largest: int
    delay_us: int
    #: inclusive (low, high) ranges, highest first
    ranges: Tuple[Tuple[int, int], ...]


class MessageFrame(NamedTuple):
    channel: Channel
    msg_id: int
    total: int
    offset: int
    data: bytes


class EventsFrame(NamedTuple):
    seq: int  #: this message's sequence number on the events channel
    cum: int  #: items sent or shed on the channel so far, this message's included
    items: int  #: items in this message
    data: bytes


class Mark(NamedTuple):
    next_seq: int  #: the next events message will carry this seq
    cum: int  #: items sent or shed so far


class Close(NamedTuple):
    code: int
    reason: str


class Welcome(NamedTuple):
    proof: bytes


class AckNow(NamedTuple):
    """The sender will wait for this packet's ACK (its window is full, or it
    has nothing more to send): skip the ACK delay, as the IMMEDIATE_ACK frame
    of QUIC's ack-frequency extension (draft-ietf-quic-ack-frequency §5)."""


Frame = Union[Ping, Ack, MessageFrame, EventsFrame, Mark, Close, Welcome, AckNow]

PING = Ping()
ACK_NOW = AckNow()

# - type, 8 largest, 4 ack delay (us), 1 extra ranges, 4 first range
ACK_HEAD = struct.Struct(">BQIBI")
# - 4 gap, 4 length
ACK_RANGE = struct.Struct(">II")
# - type, 1 channel, 4 message id, 4 total length, 4 offset, 2 length
MESSAGE_HEAD = struct.Struct(">BBIIIH")
# - type, 8 seq, 8 cumulative items, 4 items, 2 length
EVENTS_HEAD = struct.Struct(">BQQIH")
# - type, 8 next seq, 8 cumulative items
MARK_FRAME = struct.Struct(">BQQ")
# - type, 1 code, 2 reason length
CLOSE_HEAD = struct.Struct(">BBH")
# - type, 32 proof
WELCOME_FRAME = struct.Struct(">B32s")
#: ACK frames carry at most this many ranges; older ones are left out (the
#: sender then declares those packets lost and sends their data again).
MAX_ACK_RANGES = 32
MAX_U32 = 0xFFFFFFFF


def decode_header(data: bytes) -> Header:
    """The header of any lpm UDP datagram.

    Raises:
        BadPacket: too short, not ours, another version or an unknown type.
    """
    if len(data) < HEADER.size:
        raise BadPacket(0, "truncated", f"datagram of {len(data)} bytes is shorter than a header")
    magic, version, ptype, session, number = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadPacket(0, "bad_magic", f"not an lpm datagram: starts with {magic!r}")
    if version != VERSION:
        raise BadPacket(2, "bad_version", f"version {version}, this side speaks {VERSION}")
    if ptype not in PacketType._value2member_map_:
        raise BadPacket(3, "bad_type", f"unknown packet type {ptype}")
    return Header(PacketType(ptype), session, number)


def _check_params(params: Params, offset: int) -> Params:
    if params.max_ack_delay_us > MAX_ACK_DELAY_US:
        raise BadPacket(offset, "bad_params", f"max ack delay {params.max_ack_delay_us} us over 2^14 ms")
    if params.max_message > params.receive_buffer:
        raise BadPacket(offset, "bad_params", "largest message exceeds the receive buffer")
    return params


def encode_hello(hello: Hello, size: int = MIN_HELLO_SIZE) -> bytes:
    """A HELLO, zero-padded to ``size`` bytes."""
    head = HEADER.pack(MAGIC, VERSION, PacketType.HELLO, 0, 0)
    body = HELLO_BODY.pack(hello.nonce, *hello.params, hello.flags)
    return (head + body).ljust(size, b"\0")


def decode_hello(data: bytes) -> Hello:
    if len(data) < HEADER.size + HELLO_BODY.size:
        raise BadPacket(0, "truncated", "hello cut short")
    nonce, delay, max_message, buffer, flags = HELLO_BODY.unpack_from(data, HEADER.size)
    return Hello(nonce, _check_params(Params(delay, max_message, buffer), HEADER.size), flags)


def encode_challenge(challenge: Challenge) -> bytes:
    return HEADER.pack(MAGIC, VERSION, PacketType.CHALLENGE, 0, 0) + challenge_bytes(challenge)


def challenge_bytes(c: Challenge) -> bytes:
    """The challenge fields as they are MACed and echoed."""
    return CHALLENGE_BODY.pack(
        c.client_nonce, c.server_nonce, c.server_id, c.session, c.issued_us, c.flags, *c.params, c.cookie
    )


def decode_challenge(data: bytes) -> Challenge:
    if len(data) < HEADER.size + CHALLENGE_BODY.size:
        raise BadPacket(0, "truncated", "challenge cut short")
    f = CHALLENGE_BODY.unpack_from(data, HEADER.size)
    params = _check_params(Params(f[6], f[7], f[8]), HEADER.size)
    return Challenge(f[0], f[1], f[2], f[3], f[4], f[5], params, f[9])


def encode_proof(proof: Proof) -> bytes:
    h, c = proof.hello, proof.challenge
    return b"".join(
        (
            HEADER.pack(MAGIC, VERSION, PacketType.PROOF, c.session, 0),
            HELLO_BODY.pack(h.nonce, *h.params, h.flags),
            CHALLENGE_ECHO.pack(c.server_nonce, c.server_id, c.session, c.issued_us, c.flags, *c.params, c.cookie),
            proof.proof,
        )
    )


PROOF_PACKET_SIZE = HEADER.size + HELLO_BODY.size + CHALLENGE_ECHO.size + PROOF_SIZE


def decode_proof(data: bytes) -> Proof:
    if len(data) < PROOF_PACKET_SIZE:
        raise BadPacket(0, "truncated", "proof cut short")
    pos = HEADER.size
    nonce, delay, max_message, buffer, flags = HELLO_BODY.unpack_from(data, pos)
    hello = Hello(nonce, _check_params(Params(delay, max_message, buffer), pos), flags)
    pos += HELLO_BODY.size
    f = CHALLENGE_ECHO.unpack_from(data, pos)
    params = _check_params(Params(f[5], f[6], f[7]), pos)
    challenge = Challenge(nonce, f[0], f[1], f[2], f[3], f[4], params, f[8])
    pos += CHALLENGE_ECHO.size
    return Proof(hello, challenge, bytes(data[pos : pos + PROOF_SIZE]))


# Frames.


def encode_ack(ranges: List[Tuple[int, int]], delay_us: int) -> bytes:
    """An ACK frame for inclusive ``(low, high)`` ranges, highest first.

    At most :data:`MAX_ACK_RANGES` of them are sent, and none past a gap or
    length that a u32 cannot hold (a peer may jump its packet numbers).
    """
    high = ranges[0][1]
    first_low = low = max(ranges[0][0], high - MAX_U32)
    tail = []
    for lo, hi in ranges[1:MAX_ACK_RANGES]:
        gap, length = low - hi - 2, hi - lo
        if gap > MAX_U32 or length > MAX_U32:
            break
        tail.append(ACK_RANGE.pack(gap, length))
        low = lo
    head = ACK_HEAD.pack(FrameType.ACK, high, min(max(delay_us, 0), MAX_U32), len(tail), high - first_low)
    return head + b"".join(tail)


def encode_message(channel: int, msg_id: int, total: int, offset: int, data: bytes) -> bytes:
    return MESSAGE_HEAD.pack(FrameType.MESSAGE, channel, msg_id, total, offset, len(data)) + data


def encode_events(seq: int, cum: int, items: int, data: bytes) -> bytes:
    return EVENTS_HEAD.pack(FrameType.EVENTS, seq, cum, items, len(data)) + data


def encode_mark(next_seq: int, cum: int) -> bytes:
    return MARK_FRAME.pack(FrameType.MARK, next_seq, cum)


def encode_close(code: int, reason: str) -> bytes:
    text = reason.encode("utf-8", "replace")[:512]
    return CLOSE_HEAD.pack(FrameType.CLOSE, code, len(text)) + text


def encode_welcome(proof: bytes) -> bytes:
    return WELCOME_FRAME.pack(FrameType.WELCOME, proof)


PING_FRAME = bytes([FrameType.PING])
ACK_NOW_FRAME = bytes([FrameType.ACK_NOW])


def decode_frames(data: bytes, start: int, end: int) -> List[Frame]:
    """The frames of a DATA packet between ``start`` and ``end``.

    Raises:
        BadPacket: a frame that is cut short, of an unknown type, or whose
            fields cannot be true (ranges below zero, a fragment beyond its
            message, a channel that does not exist).
    """
    frames: List[Frame] = []
    pos = start
    while pos < end:
        ftype = data[pos]
        if ftype == FrameType.PADDING:
            if data.count(0, pos, end) != end - pos:
                raise BadPacket(pos, "bad_frame", "padding that is not zeros")
            break
        if ftype == FrameType.PING:
            frames.append(PING)
            pos += 1
        elif ftype == FrameType.ACK_NOW:
            frames.append(ACK_NOW)
            pos += 1
        elif ftype == FrameType.ACK:
            ack, pos = _decode_ack(data, pos, end)
            frames.append(ack)
        elif ftype == FrameType.MESSAGE:
            if pos + MESSAGE_HEAD.size > end:
                raise BadPacket(pos, "truncated", "message frame cut short")
            _, channel, msg_id, total, offset, length = MESSAGE_HEAD.unpack_from(data, pos)
            pos += MESSAGE_HEAD.size
            if pos + length > end:
                raise BadPacket(pos, "truncated", "message data cut short")
            if channel > Channel.STATE:
                raise BadPacket(pos, "bad_frame", f"message on channel {channel}")
            if offset + length > total:
                raise BadPacket(pos, "fragment_bounds", f"fragment {offset}+{length} beyond its message of {total}")
            frames.append(MessageFrame(Channel(channel), msg_id, total, offset, bytes(data[pos : pos + length])))
            pos += length
        elif ftype == FrameType.EVENTS:
            if pos + EVENTS_HEAD.size > end:
                raise BadPacket(pos, "truncated", "events frame cut short")
            _, seq, cum, items, length = EVENTS_HEAD.unpack_from(data, pos)
            pos += EVENTS_HEAD.size
            if pos + length > end:
                raise BadPacket(pos, "truncated", "events data cut short")
            if items > cum:
                raise BadPacket(pos, "bad_frame", f"{items} items but {cum} sent in all")
            frames.append(EventsFrame(seq, cum, items, bytes(data[pos : pos + length])))
            pos += length
        elif ftype == FrameType.MARK:
            if pos + MARK_FRAME.size > end:
                raise BadPacket(pos, "truncated", "mark frame cut short")
            _, next_seq, cum = MARK_FRAME.unpack_from(data, pos)
            frames.append(Mark(next_seq, cum))
            pos += MARK_FRAME.size
        elif ftype == FrameType.CLOSE:
            if pos + CLOSE_HEAD.size > end:
                raise BadPacket(pos, "truncated", "close frame cut short")
            _, code, length = CLOSE_HEAD.unpack_from(data, pos)
            pos += CLOSE_HEAD.size
            if pos + length > end:
                raise BadPacket(pos, "truncated", "close reason cut short")
            frames.append(Close(code, bytes(data[pos : pos + length]).decode("utf-8", "replace")))
            pos += length
        elif ftype == FrameType.WELCOME:
            if pos + WELCOME_FRAME.size > end:
                raise BadPacket(pos, "truncated", "welcome frame cut short")
            frames.append(Welcome(WELCOME_FRAME.unpack_from(data, pos)[1]))
            pos += WELCOME_FRAME.size
        else:
            raise BadPacket(pos, "bad_frame", f"unknown frame type {ftype}")
    return frames


def _decode_ack(data: bytes, pos: int, end: int) -> Tuple[Ack, int]:
    if pos + ACK_HEAD.size > end:
        raise BadPacket(pos, "truncated", "ack frame cut short")
    _, largest, delay_us, extra, first = ACK_HEAD.unpack_from(data, pos)
    if pos + ACK_HEAD.size + extra * ACK_RANGE.size > end:
        raise BadPacket(pos, "truncated", "ack ranges cut short")
    if first > largest:
        raise BadPacket(pos, "bad_frame", "ack range below packet 0")
    low = largest - first
    ranges = [(low, largest)]
    rpos = pos + ACK_HEAD.size
    for _ in range(extra):
        gap, length = ACK_RANGE.unpack_from(data, rpos)
        rpos += ACK_RANGE.size
        high = low - gap - 2
        low = high - length
        if low < 0:
            raise BadPacket(rpos, "bad_frame", "ack range below packet 0")
        ranges.append((low, high))
    return Ack(largest, delay_us, tuple(ranges)), rpos


# Packets.


def seal(key: bytes, packet: bytes) -> bytes:
    """``packet`` with its tag appended."""
    return packet + hmac.digest(key, packet, "sha256")[:TAG_SIZE]


def verify(key: bytes, data: bytes) -> bool:
    """Whether the last :data:`TAG_SIZE` bytes of ``data`` are its tag."""
    if len(data) < HEADER.size + TAG_SIZE:
        return False
    return hmac.compare_digest(hmac.digest(key, data[:-TAG_SIZE], "sha256")[:TAG_SIZE], data[-TAG_SIZE:])


def data_header(session: int, number: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, PacketType.DATA, session, number)


def encode_reset(session: int, tag: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, PacketType.RESET, session, 0) + tag


RESET_SIZE = HEADER.size + TAG_SIZE


# Keys and proofs.

_LABEL = b"lpm-udp/1 "


def _mac(key: bytes, label: bytes, message: bytes) -> bytes:
    return hmac.digest(key, _LABEL + label + message, "sha256")


def transcript(hello: Hello, challenge: Challenge) -> bytes:
    """Everything both ends agreed on, as MACed into proofs and keys."""
    return HELLO_BODY.pack(hello.nonce, *hello.params, hello.flags) + challenge_bytes(challenge)


class Keys(NamedTuple):
    client_proof: bytes
    server_proof: bytes
    client_to_server: bytes
    server_to_client: bytes


def derive_keys(token: Optional[bytes], hello: Hello, challenge: Challenge) -> Keys:
    """Proofs and per-direction packet keys of one handshake.

    Without a token the key is empty: the tags then still stop anyone who did
    not see the handshake (an off-path injector), not an eavesdropper.
    """
    key = token or b""
    t = transcript(hello, challenge)
    return Keys(
        _mac(key, b"client proof", t),
        _mac(key, b"server proof", t),
        _mac(key, b"client to server", t),
        _mac(key, b"server to client", t),
    )


def reset_tag(token: Optional[bytes], session: int) -> bytes:
    """The tag of a RESET for ``session``: any server holding the token can
    make it, a server that restarted included, and nobody else."""
    return _mac(token or b"", b"reset", session.to_bytes(8, "big"))[:TAG_SIZE]


def cookie(secret: bytes, address: bytes, challenge: Challenge) -> bytes:
    """The MAC a server puts in its challenge and checks in the proof."""
    return _mac(secret, b"cookie", address + challenge_bytes(challenge._replace(cookie=bytes(16))))[:16]
