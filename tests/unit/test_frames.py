"""TCP frames: round trips in any chunking, and hostile input."""

from __future__ import annotations

import random

import pytest

from lpm.errors import ProtocolError
from lpm.protocol.frames import HEAD, MAGIC, Frame, FrameDecoder, Kind, encode_frame


def frames_of(data: bytes, chunk: int, rnd: random.Random) -> list[Frame]:
    dec = FrameDecoder()
    out: list[Frame] = []
    pos = 0
    while pos < len(data):
        n = rnd.randint(1, chunk)
        dec.feed(data[pos : pos + n])
        pos += n
        while (frame := dec.next_frame()) is not None:
            out.append(frame)
    assert dec.buffered == 0
    return out


def test_round_trip_in_any_chunking() -> None:
    rnd = random.Random(4)
    frames = [
        Frame(rnd.choice(list(Kind)), rnd.getrandbits(32), bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 100, 5000]))), rnd.getrandbits(16))
        for _ in range(60)
    ]
    data = b"".join(encode_frame(f) for f in frames)
    for chunk in (1, 7, 16, 4096):
        assert frames_of(data, chunk, rnd) == frames


@pytest.mark.parametrize(
    "head, message",
    [
        (b"HTTP/1.1 200 OK\r\n", "not an lpm frame"),
        (HEAD.pack(MAGIC, 2, 1, 0, 0, 0), "frame version 2"),
        (HEAD.pack(MAGIC, 1, 9, 0, 0, 0), "unknown frame kind 9"),
        (HEAD.pack(MAGIC, 1, 2, 0, 0, 0xFFFFFFFF), "exceeds the limit"),
    ],
)
def test_bad_heads_fail_at_once(head: bytes, message: str) -> None:
    dec = FrameDecoder()
    dec.feed(head)
    with pytest.raises(ProtocolError, match=message) as err:
        dec.next_frame()
    assert err.value.offset == 0


def test_garbage_fails_before_a_whole_head_arrives() -> None:
    dec = FrameDecoder()
    dec.feed(b"GE")
    with pytest.raises(ProtocolError, match="not an lpm frame"):
        dec.next_frame()


def test_error_names_the_offset_of_the_bad_frame() -> None:
    dec = FrameDecoder()
    good = encode_frame(Frame(Kind.SERVICE, 0, b"{}"))
    dec.feed(good + b"XXXX" + bytes(12))
    assert dec.next_frame() == Frame(Kind.SERVICE, 0, b"{}")
    with pytest.raises(ProtocolError) as err:
        dec.next_frame()
    assert err.value.offset == len(good)


def test_random_bytes_give_frames_or_protocol_errors() -> None:
    rnd = random.Random(8)
    for _ in range(3000):
        dec = FrameDecoder(max_payload=1 << 16)
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
        if rnd.random() < 0.5:
            data = MAGIC + bytes([1]) + data
        dec.feed(data)
        try:
            while dec.next_frame() is not None:
                pass
        except ProtocolError:
            pass
