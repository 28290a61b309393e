"""Datagram codecs: round trips, and any bytes at all either decode or raise
ProtocolError, never anything else (the invariant h11's fuzzer states)."""

from __future__ import annotations

import random
from typing import Callable, List

import pytest

from lpm.errors import ProtocolError
from lpm.udp.packet import (
    ACK_NOW,
    ACK_HEAD,
    ACK_NOW_FRAME,
    ACK_RANGE,
    HEADER,
    MAGIC,
    MIN_HELLO_SIZE,
    PING,
    PING_FRAME,
    TAG_SIZE,
    VERSION,
    Ack,
    BadPacket,
    Challenge,
    Channel,
    Close,
    EventsFrame,
    FrameType,
    Hello,
    Mark,
    MessageFrame,
    PacketType,
    Params,
    Proof,
    Welcome,
    cookie,
    data_header,
    decode_challenge,
    decode_frames,
    decode_header,
    decode_hello,
    decode_proof,
    derive_keys,
    encode_ack,
    encode_challenge,
    encode_close,
    encode_events,
    encode_hello,
    encode_mark,
    encode_message,
    encode_proof,
    encode_welcome,
    reset_tag,
    seal,
    verify,
)

PARAMS = Params(25_000, 1 << 20, 2 << 20)
HELLO = Hello(bytes(range(16)), PARAMS, 1)
CHALLENGE = Challenge(bytes(range(16)), bytes(range(16, 32)), 77, 1234, 5_000_000, 1, PARAMS, bytes(range(32, 48)))

FRAMES = [
    encode_ack([(90, 100), (50, 80), (0, 10)], 1234),
    encode_message(Channel.STATE, 7, 5000, 1000, b"x" * 300),
    encode_events(3, 40, 5, b"events"),
    encode_mark(4, 40),
    encode_close(0, "bye \u2603"),
    encode_welcome(bytes(32)),
    PING_FRAME,
    ACK_NOW_FRAME,
]
DECODED = [
    Ack(100, 1234, ((90, 100), (50, 80), (0, 10))),
    MessageFrame(Channel.STATE, 7, 5000, 1000, b"x" * 300),
    EventsFrame(3, 40, 5, b"events"),
    Mark(4, 40),
    Close(0, "bye \u2603"),
    Welcome(bytes(32)),
    PING,
    ACK_NOW,
]


def data_packet(frames: List[bytes], key: bytes = b"k", pn: int = 9) -> bytes:
    return seal(key, data_header(1234, pn) + b"".join(frames))


def test_frames_round_trip() -> None:
    packet = data_packet(FRAMES)
    assert decode_header(packet) == (PacketType.DATA, 1234, 9)
    assert decode_frames(packet, HEADER.size, len(packet) - TAG_SIZE) == DECODED
    assert verify(b"k", packet)
    assert not verify(b"other key", packet)


def test_padding_ends_the_frames() -> None:
    packet = data_packet([PING_FRAME, bytes(50)])
    assert decode_frames(packet, HEADER.size, len(packet) - TAG_SIZE) == [PING]
    packet = data_packet([PING_FRAME, bytes(5) + b"\x01"])
    with pytest.raises(BadPacket, match="padding"):
        decode_frames(packet, HEADER.size, len(packet) - TAG_SIZE)


def test_ack_ranges_follow_rfc_9000_gaps() -> None:
    # Adjacent ranges cannot exist (they would be one); the smallest gap is 0.
    frame = encode_ack([(10, 12), (0, 8)], 0)
    assert decode_frames(frame, 0, len(frame)) == [Ack(12, 0, ((10, 12), (0, 8)))]


def test_ack_ranges_beyond_a_u32_are_left_out() -> None:
    # A peer may jump its packet numbers; the ACK still encodes.
    frame = encode_ack([(1 << 40, 1 << 40), (5, 9), (0, 3)], 1 << 40)
    assert decode_frames(frame, 0, len(frame)) == [Ack(1 << 40, 0xFFFFFFFF, ((1 << 40, 1 << 40),))]
    frame = encode_ack([(0, 1 << 33)], 0)
    assert decode_frames(frame, 0, len(frame)) == [Ack(1 << 33, 0, (((1 << 33) - 0xFFFFFFFF, 1 << 33),))]


def test_handshake_packets_round_trip() -> None:
    hello = encode_hello(HELLO)
    assert len(hello) == MIN_HELLO_SIZE
    assert decode_header(hello).type is PacketType.HELLO
    assert decode_hello(hello) == HELLO
    challenge = encode_challenge(CHALLENGE)
    assert len(challenge) < len(hello)
    assert decode_challenge(challenge) == CHALLENGE
    proof = Proof(HELLO, CHALLENGE, bytes(range(100, 132)))
    data = encode_proof(proof)
    assert decode_header(data) == (PacketType.PROOF, CHALLENGE.session, 0)
    assert decode_proof(data) == proof


def test_keys_depend_on_token_and_every_field() -> None:
    keys = derive_keys(b"token", HELLO, CHALLENGE)
    assert len(set(keys)) == 4  # proofs and both directions all differ
    assert derive_keys(b"token", HELLO, CHALLENGE) == keys
    assert derive_keys(b"other", HELLO, CHALLENGE) != keys
    assert derive_keys(None, HELLO, CHALLENGE) != keys
    assert derive_keys(b"token", HELLO, CHALLENGE._replace(server_id=78)) != keys
    assert derive_keys(b"token", HELLO._replace(flags=0), CHALLENGE) != keys
    assert reset_tag(b"token", 5) != reset_tag(b"token", 6) != reset_tag(b"other", 6)
    assert cookie(b"s", b"addr", CHALLENGE) == cookie(b"s", b"addr", CHALLENGE._replace(cookie=b"z" * 16))
    assert cookie(b"s", b"addr", CHALLENGE) != cookie(b"s", b"addr2", CHALLENGE)


@pytest.mark.parametrize(
    "data, counter",
    [
        (b"", "truncated"),
        (b"LU\x01", "truncated"),
        (b"XX" + bytes(18), "bad_magic"),
        (MAGIC + bytes([VERSION + 1, 4]) + bytes(16), "bad_version"),
        (MAGIC + bytes([VERSION, 99]) + bytes(16), "bad_type"),
    ],
)
def test_bad_headers(data: bytes, counter: str) -> None:
    with pytest.raises(BadPacket) as err:
        decode_header(data)
    assert err.value.counter == counter
    assert isinstance(err.value, ProtocolError)


@pytest.mark.parametrize(
    "frame, counter",
    [
        (b"\x63", "bad_frame"),
        (encode_message(2, 0, 10, 0, b"x"), "bad_frame"),  # channel 2 is EVENTS
        (encode_message(0, 0, 10, 8, b"xyz"), "fragment_bounds"),
        (encode_events(0, 3, 4, b""), "bad_frame"),  # more items than sent
        (ACK_HEAD.pack(FrameType.ACK, 10, 0, 0, 11), "bad_frame"),  # first range below 0
        (ACK_HEAD.pack(FrameType.ACK, 10, 0, 1, 2) + ACK_RANGE.pack(9, 0), "bad_frame"),  # a gap below 0
        (ACK_HEAD.pack(FrameType.ACK, 10, 0, 2, 2) + ACK_RANGE.pack(0, 0), "truncated"),
    ],
)
def test_frames_that_cannot_be_true(frame: bytes, counter: str) -> None:
    with pytest.raises(BadPacket) as err:
        decode_frames(frame, 0, len(frame))
    assert err.value.counter == counter


def valid_datagrams() -> List[bytes]:
    return [
        encode_hello(HELLO),
        encode_challenge(CHALLENGE),
        encode_proof(Proof(HELLO, CHALLENGE, bytes(32))),
        data_packet(FRAMES),
        *(data_packet([f]) for f in FRAMES),
    ]


def decode_any(data: bytes) -> None:
    header = decode_header(data)
    if header.type is PacketType.HELLO:
        decode_hello(data)
    elif header.type is PacketType.CHALLENGE:
        decode_challenge(data)
    elif header.type is PacketType.PROOF:
        decode_proof(data)
    elif header.type is PacketType.DATA:
        decode_frames(data, HEADER.size, max(HEADER.size, len(data) - TAG_SIZE))


def only_protocol_errors(decode: Callable[[bytes], None], data: bytes) -> bool:
    try:
        decode(data)
    except ProtocolError:
        return False
    return True


def test_every_truncation_decodes_or_raises_protocol_error() -> None:
    for datagram in valid_datagrams():
        for n in range(len(datagram)):
            only_protocol_errors(decode_any, datagram[:n])
    # Frames cut anywhere inside a frame (the tag end moved in) fail cleanly.
    packet = data_packet(FRAMES)
    failures = 0
    for end in range(HEADER.size, len(packet) - TAG_SIZE):
        try:
            decode_frames(packet, HEADER.size, end)
        except ProtocolError:
            failures += 1
    assert failures > 0


def test_seeded_fuzz_random_and_mutated_bytes() -> None:
    rng = random.Random(6)
    seeds = valid_datagrams()
    decoded = 0
    for i in range(6000):
        if i % 3 == 0:
            data = rng.randbytes(rng.randrange(0, 1400))
            if i % 2:
                data = MAGIC + bytes([VERSION, rng.randrange(1, 6)]) + data[4:]
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        decoded += only_protocol_errors(decode_any, data)
    assert decoded > 100  # mutations that leave a packet well-formed do decode
