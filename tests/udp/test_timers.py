"""Timers: retransmission after the RTT with backoff, delayed ACKs, keepalive,
dead peers, closing, and the reassembly time limit."""

from __future__ import annotations

from typing import List, Optional

import pytest

from lpm.udp import Channel, Closed, CloseReason, Message, ServerConnection, State
from lpm.udp.packet import (
    ACK_NOW_FRAME,
    PING_FRAME,
    Ack,
    data_header,
    encode_message,
    seal,
)
from lpm.udp.recovery import K_GRANULARITY

from .link import CLIENT, SERVER, LinkSpec, Pair, frames_of, message_frames


def forge(conn: ServerConnection, frames: bytes, pn: Optional[int] = None) -> bytes:
    """A packet as ``conn`` would send it (tests hold its keys)."""
    pn = conn._next_pn if pn is None else pn
    conn._next_pn = max(conn._next_pn, pn + 1)
    conn.recovery.largest_sent = max(conn.recovery.largest_sent, pn)
    return seal(conn._send_key, data_header(conn.session, pn) + frames)


def acks(datagrams: List[bytes]) -> List[Ack]:
    return [f for d in datagrams for f in frames_of(d) if isinstance(f, Ack)]


@pytest.mark.parametrize("delay", [0.005, 0.05])
def test_retransmission_waits_a_pto_after_the_rtt_and_backs_off(delay: float) -> None:
    pair = Pair(20, LinkSpec(delay=delay))
    conn = pair.connect()
    pair.net.run(pair.net.now + 5.0)  # keepalives: RTT samples both ways
    assert conn.rtt.smoothed == pytest.approx(2 * delay, rel=0.01)
    sends: List[float] = []

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent" and src == SERVER and message_frames(data):
            sends.append(now)

    pair.net.taps.append(tap)
    pair.net.link(SERVER, CLIENT).loss = 1.0
    conn.send_message(Channel.CONTROL, b"are you there")
    # RFC 9002 §6.2.1 (the message asked for an immediate ACK, so no ack delay).
    pto = conn.rtt.smoothed + max(4 * conn.rtt.var, K_GRANULARITY)
    pair.net.run(pair.net.now + 16 * pto)
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert gaps[:3] == pytest.approx([pto, 2 * pto, 4 * pto], rel=1e-6)


def test_the_pto_is_proportional_to_the_rtt() -> None:
    firsts = []
    for delay in (0.005, 0.05):
        pair = Pair(21, LinkSpec(delay=delay))
        conn = pair.connect()
        pair.net.run(pair.net.now + 5.0)
        pair.net.link(SERVER, CLIENT).loss = 1.0
        conn.send_message(Channel.CONTROL, b"x")
        pair.net.run(pair.net.now + 1e-9)  # sent
        start = pair.net.now
        assert pair.net.run(start + 10.0, stop=lambda: conn.recovery.pto_count > 0)
        firsts.append(pair.net.now - start)
    assert 9.0 < firsts[1] / firsts[0] < 11.0


def test_acks_are_delayed_unless_two_packets_a_gap_or_ack_now() -> None:
    pair = Pair(22)
    conn = pair.connect()
    pair.net.remove(CLIENT)  # the test drives the client by hand
    client = pair.client.conn
    now = pair.net.now
    client.receive_datagram(forge(conn, PING_FRAME), now)
    assert acks(client.datagrams_to_send(now)) == []
    assert client.next_deadline() == pytest.approx(now + 0.025)  # max_ack_delay
    assert len(acks(client.datagrams_to_send(now + 0.025))) == 1
    client.receive_datagram(forge(conn, PING_FRAME), now + 0.03)
    client.receive_datagram(forge(conn, PING_FRAME), now + 0.03)
    assert len(acks(client.datagrams_to_send(now + 0.03))) == 1  # every second one
    client.receive_datagram(forge(conn, PING_FRAME, pn=conn._next_pn + 5), now + 0.04)
    [ack] = acks(client.datagrams_to_send(now + 0.04))  # a gap: at once
    assert len(ack.ranges) == 2
    client.receive_datagram(forge(conn, PING_FRAME + ACK_NOW_FRAME), now + 0.05)
    assert len(acks(client.datagrams_to_send(now + 0.05))) == 1


def test_keepalives_keep_an_idle_connection_alive() -> None:
    pair = Pair(23)
    conn = pair.connect()
    pings = []

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent" and any(type(f).__name__ == "Ping" for f in frames_of(data)):
            pings.append(now)

    pair.net.taps.append(tap)
    pair.net.run(120.0)
    assert pair.client.conn.state is State.ESTABLISHED and conn.state is State.ESTABLISHED
    assert 100 <= len(pings) <= 260  # about one a second from each end, never a flood


def test_a_dead_peer_is_detected_after_the_idle_timeout() -> None:
    pair = Pair(24)
    conn = pair.connect()
    pair.net.run(3.0)
    last_heard = pair.client.conn._last_received
    pair.net.remove(SERVER)
    assert pair.net.run(60.0, stop=lambda: pair.client.conn.is_closed)
    [(at, end)] = [(t, e) for t, e in pair.client.events if isinstance(e, Closed)]
    assert end.reason is CloseReason.IDLE_TIMEOUT
    assert at == pytest.approx(last_heard + 15.0)
    assert conn.state is State.ESTABLISHED  # the server was not running at all


def test_the_server_forgets_a_client_that_went_away() -> None:
    pair = Pair(24)
    conn = pair.connect()
    pair.net.remove(CLIENT)
    last_heard = conn._last_received
    assert pair.net.run(60.0, stop=lambda: not pair.server.server.connections)
    at, side, end = pair.server.events[-1]
    assert side is conn and end == Closed(CloseReason.IDLE_TIMEOUT, "nothing heard for 15 s")
    assert at == pytest.approx(last_heard + 15.0)


def test_a_clean_close_reaches_the_peer_and_both_ends_forget() -> None:
    pair = Pair(25)
    conn = pair.connect()
    pair.net.run(pair.net.now + 0.5)
    pair.client.conn.close(pair.net.now, "done here")
    assert pair.client.conn.next_event() == Closed(CloseReason.LOCAL, "done here")
    with pytest.raises(RuntimeError):
        pair.client.conn.send_message(Channel.CONTROL, b"late")
    assert pair.net.run(10.0, stop=lambda: pair.client.conn.is_closed and not pair.server.server.connections)
    assert [e for _, _, e in pair.server.events][-1] == Closed(CloseReason.PEER, "done here")
    assert conn.state is State.CLOSED
    assert pair.server.server.all_counters() == {}


def test_a_lost_close_is_repeated_to_stragglers() -> None:
    pair = Pair(26)
    conn = pair.connect()
    pair.net.link(CLIENT, SERVER).loss = 1.0
    pair.client.conn.close(pair.net.now, "bye")
    pair.net.run(pair.net.now + 0.001)
    pair.net.link(CLIENT, SERVER).loss = 0.0
    conn.send_message(Channel.CONTROL, b"still there?")  # the client answers it with CLOSE
    assert pair.net.run(10.0, stop=lambda: conn.state is not State.ESTABLISHED)
    assert [e for _, _, e in pair.server.events][-1] == Closed(CloseReason.PEER, "bye")


def test_a_message_that_stops_arriving_times_out() -> None:
    pair = Pair(27)
    conn = pair.connect()
    client = pair.client.conn
    part = encode_message(Channel.STATE, 0, 100_000, 0, bytes(1000))
    client.receive_datagram(forge(conn, part), pair.net.now)
    start = pair.net.now
    assert pair.net.run(100.0, stop=lambda: client.state is not State.ESTABLISHED)
    assert pair.net.now == pytest.approx(start + 30.0)
    assert client.counters == {"reassembly_timeout": 1}
    end = [e for _, e in pair.client.events][-1]
    assert isinstance(end, Closed) and end.reason is CloseReason.PROTOCOL
    assert not any(isinstance(e, Message) for _, e in pair.client.events)
