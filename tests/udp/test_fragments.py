"""Fragmentation and reassembly: order, duplicates, and every limit."""

from __future__ import annotations

import random
from typing import List

import pytest

from lpm.udp.fragments import (
    K_FRAGMENT_OVERHEAD,
    K_MAX_MESSAGES_AHEAD,
    K_MIN_FRAGMENT,
    MemoryBudget,
    OutMessage,
    ReliableReceiver,
    ReliableSender,
    SendWindow,
    message_cost,
)
from lpm.udp.packet import BadPacket, Channel, MessageFrame

FRAG = 1000


def fragments(msg_id: int, data: bytes, frag: int = FRAG) -> List[MessageFrame]:
    out = OutMessage(Channel.STATE, msg_id, data, frag)
    return [MessageFrame(Channel.STATE, msg_id, len(data), *out.fragment(k)) for k in range(out.nfrags)]


def receiver(limit: int = 1 << 20, max_message: int = 1 << 19) -> ReliableReceiver:
    return ReliableReceiver(Channel.STATE, MemoryBudget(limit), max_message, timeout=30.0)


def test_messages_come_out_once_and_in_order_from_any_arrival_order() -> None:
    rng = random.Random(3)
    messages = [rng.randbytes(rng.choice([0, 1, 999, 1000, 1001, 25_000])) for _ in range(30)]
    frames = [f for i, m in enumerate(messages) for f in fragments(i, m)]
    frames += rng.sample(frames, 40)  # duplicates
    rng.shuffle(frames)
    r = receiver()
    out: List[bytes] = []
    for f in frames:
        out += r.on_fragment(f, 0.0)
    assert out == messages
    assert r.duplicates == 40
    assert r.budget.used == 0 and not r.partial and not r.ready
    assert r.on_fragment(frames[0], 1.0) == []  # long delivered: still a duplicate


def test_a_fragment_over_the_budget_is_refused_and_the_budget_holds() -> None:
    r = receiver(limit=10_000)
    big = fragments(1, bytes(30_000))  # message 0 missing: 1 must wait
    accepted = 0
    with pytest.raises(BadPacket) as err:
        for f in big:
            r.on_fragment(f, 0.0)
            accepted += 1
    assert err.value.counter == "reassembly_memory"
    assert accepted == 10_000 // (FRAG + K_FRAGMENT_OVERHEAD)
    assert r.budget.used <= r.budget.limit


@pytest.mark.parametrize(
    "frame, counter",
    [
        (MessageFrame(Channel.STATE, 0, 1 << 30, 0, bytes(FRAG)), "message_too_large"),
        (MessageFrame(Channel.STATE, K_MAX_MESSAGES_AHEAD, 10, 0, bytes(10)), "message_window"),
        (MessageFrame(Channel.STATE, 0, 100_000, 0, bytes(K_MIN_FRAGMENT - 1)), "fragment_too_small"),
    ],
)
def test_bombs_are_refused_before_anything_is_stored(frame: MessageFrame, counter: str) -> None:
    r = receiver()
    with pytest.raises(BadPacket) as err:
        r.on_fragment(frame, 0.0)
    assert err.value.counter == counter
    assert r.budget.used == 0 and not r.partial


def test_overlaps_and_changing_lengths_are_refused() -> None:
    r = receiver()
    r.on_fragment(MessageFrame(Channel.STATE, 0, 10_000, 1000, bytes(1000)), 0.0)
    for offset, length, total, counter in [
        (1500, 1000, 10_000, "fragment_overlap"),  # starts inside
        (500, 1000, 10_000, "fragment_overlap"),  # ends inside
        (1000, 900, 10_000, "fragment_overlap"),  # same start, other length
        (2000, 1000, 20_000, "fragment_mismatch"),  # the message grew
    ]:
        with pytest.raises(BadPacket) as err:
            r.on_fragment(MessageFrame(Channel.STATE, 0, total, offset, bytes(length)), 0.0)
        assert err.value.counter == counter
    assert r.on_fragment(MessageFrame(Channel.STATE, 0, 10_000, 1000, bytes(1000)), 0.0) == []
    assert r.duplicates == 1
    assert r.budget.used == 1000 + K_FRAGMENT_OVERHEAD


def test_a_stalled_message_has_a_deadline_that_moves_with_progress() -> None:
    r = receiver()
    assert r.deadline() is None
    frames = fragments(0, bytes(5000))
    r.on_fragment(frames[0], 1.0)
    assert r.deadline() == 31.0
    r.on_fragment(frames[2], 5.0)
    assert r.deadline() == 35.0
    for f in frames[1:]:
        r.on_fragment(f, 6.0)
    assert r.deadline() is None


def test_sender_keeps_within_the_peer_budget_and_releases_in_order() -> None:
    window = SendWindow(limit=message_cost(5000, FRAG) * 2)
    s = ReliableSender(Channel.STATE, FRAG, window)
    ids = [s.push(bytes(5000)) for _ in range(3)]
    assert ids == [0, 1, 2] and s.queued_bytes == 15_000
    first = s.peek()
    assert first is not None and first.msg_id == 0
    first.next_frag = first.nfrags
    second = s.peek()
    assert second is not None and second.msg_id == 1
    second.next_frag = second.nfrags
    assert s.peek() is None  # the third would overflow the peer's buffer
    for k in range(second.nfrags):
        s.on_acked(second, k)
    assert s.peek() is None  # 1 is acked, but the peer holds it until 0 is through
    for k in range(first.nfrags):
        s.on_acked(first, k)
    assert window.used == 0 and not s.open
    third = s.peek()
    assert third is not None and third.msg_id == 2


def test_sender_keeps_within_the_message_window() -> None:
    s = ReliableSender(Channel.CONTROL, FRAG, SendWindow(1 << 30))
    for _ in range(K_MAX_MESSAGES_AHEAD + 5):
        s.push(b"x")
    started = 0
    while (msg := s.peek()) is not None:
        msg.next_frag = 1
        started += 1
    assert started == K_MAX_MESSAGES_AHEAD
