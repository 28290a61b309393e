"""Whole connections over a bad network: what goes in comes out, once, in order.

Deterministic: every case is a seed, and the network, the endpoints' random
bytes and the workload all follow from it.
"""

from __future__ import annotations

import random
from typing import Dict, List, Set, Tuple

import pytest

from lpm.udp import Channel, Config, Connected, EventsLost, Message, ServerConnection
from lpm.udp.core import Event
from lpm.udp.packet import PacketType, decode_header

from .link import SERVER, TOKEN, LinkSpec, Pair, events_frames

LOSSES = [0.0, 0.05, 0.10, 0.30, 0.50]
SEEDS = [1, 2, 3]


def payload(rng: random.Random, tag: str, size: int) -> bytes:
    head = tag.encode() + b":"
    return head + rng.randbytes(max(0, size - len(head)))


class Workload:
    """Messages both ways on every channel, and a stream of events from the server."""

    def __init__(self, pair: Pair, rng: random.Random) -> None:
        self.pair = pair
        self.rng = rng
        self.to_server: Dict[Channel, List[bytes]] = {Channel.CONTROL: [], Channel.STATE: []}
        self.to_client: Dict[Channel, List[bytes]] = {Channel.CONTROL: [], Channel.STATE: []}
        self.items_offered = 0
        self.events_sent: List[bytes] = []  # in the order offered
        self.server_conn: List[ServerConnection] = []

    def start(self) -> None:
        pair, rng = self.pair, self.rng
        for i in range(40):
            self.to_server[Channel.CONTROL].append(payload(rng, f"c{i}", rng.choice([0, 10, 300, 2500])))
            self.to_client[Channel.CONTROL].append(payload(rng, f"s{i}", rng.choice([0, 10, 300, 2500])))
        for i in range(4):
            self.to_server[Channel.STATE].append(payload(rng, f"C{i}", rng.randrange(20_000)))
            self.to_client[Channel.STATE].append(payload(rng, f"S{i}", rng.randrange(60_000)))
        for channel, messages in self.to_server.items():
            for m in messages:
                pair.client.conn.send_message(channel, m)
        pair.server.on_event = self._on_server_event

    def _on_server_event(self, conn: ServerConnection, event: Event, now: float) -> None:
        if not isinstance(event, Connected):
            return
        self.server_conn.append(conn)
        for channel, messages in self.to_client.items():
            for m in messages:
                conn.send_message(channel, m)
        # Events: a burst every 2 ms for half a second.
        for k in range(250):
            self.pair.net.at(now + 0.002 * k, self._events_burst)

    def _events_burst(self, now: float) -> None:
        conn = self.server_conn[0]
        if conn.state.value != "established":
            return
        for _ in range(3):
            items = self.rng.randint(1, 10)
            self.items_offered += items
            data = payload(self.rng, "e", self.rng.randrange(50, 600))
            self.events_sent.append(data)
            conn.send_events(data, items, now)


def received(events: List[Event], channel: Channel) -> List[bytes]:
    return [e.data for e in events if isinstance(e, Message) and e.channel == channel]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("seed", SEEDS)
def test_messages_once_in_order_and_event_loss_adds_up(seed: int, loss: float) -> None:
    spec = LinkSpec(loss=loss, duplicate=0.02, reorder=0.05, delay=0.002, jitter=0.001, bandwidth=4e6)
    # At 50 % loss each way a handshake round trip succeeds one time in four.
    config = Config(token=TOKEN, initial_rtt=0.05, handshake_timeout=120.0)
    pair = Pair(seed, spec, server_config=config, client_config=config)
    work = Workload(pair, random.Random(seed))
    work.start()

    # What the network did to the events: seq -> items, and the seqs that got through.
    sent_items: Dict[int, int] = {}
    arrived: Set[int] = set()
    sent_again: List[int] = []  # events sent a second time (never: they are best effort)
    numbers: Dict[Tuple[object, int], List[int]] = {}  # (sender, session) -> packet numbers as sent

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent":
            header = decode_header(data)
            if header.type == PacketType.DATA:
                numbers.setdefault((src, header.session), []).append(header.number)
        if src != SERVER:
            return
        for f in events_frames(data):
            if what == "sent" and f.seq in sent_items:
                sent_again.append(f.seq)
            sent_items[f.seq] = f.items
            if what == "delivered":
                arrived.add(f.seq)

    pair.net.taps.append(tap)
    client_events: List[Event] = []

    def done() -> bool:
        client_events[:] = [e for _, e in pair.client.events]
        server_events = [e for _, _, e in pair.server.events]
        if not work.server_conn or work.server_conn[0].unacked_messages or pair.client.conn.unacked_messages:
            return False
        if any(received(server_events, ch) != msgs for ch, msgs in work.to_server.items()):
            return False
        if any(received(client_events, ch) != msgs for ch, msgs in work.to_client.items()):
            return False
        got = sum(e.items for e in client_events if isinstance(e, Message) and e.channel == Channel.EVENTS)
        lost = sum(e.count for e in client_events if isinstance(e, EventsLost))
        return work.items_offered > 0 and got + lost == work.items_offered and pair.net.now > 0.6

    assert pair.net.run(600.0, stop=done), "not everything arrived"
    server_events = [e for _, _, e in pair.server.events]
    for channel, messages in work.to_client.items():
        assert received(client_events, channel) == messages
    for channel, messages in work.to_server.items():
        assert received(server_events, channel) == messages

    conn = work.server_conn[0]
    shed = conn.events_out.items_shed
    dropped_by_link = sum(items for seq, items in sent_items.items() if seq not in arrived)
    reported = sum(e.count for e in client_events if isinstance(e, EventsLost))
    assert reported == shed + dropped_by_link
    assert pair.client.conn.events_in.items_lost == reported
    assert "events_late" not in pair.client.conn.counters
    for counters in (pair.client.conn.counters, pair.server.server.all_counters()):
        assert "internal_error" not in counters
    assert pair.net.stats["mtu_drops"] == 0
    if loss == 0:
        assert reported == shed
    # Retransmissions go in new packets: numbers only grow, none used twice,
    # each way; and no events frame is ever sent again.
    assert len(numbers) == 2
    for sender, sent in numbers.items():
        assert all(a < b for a, b in zip(sent, sent[1:])), f"{sender}: a packet number reused or going back"
    assert sent_again == []
    # What arrives of the events arrives in the order sent (each once).
    arrived_events = received(client_events, Channel.EVENTS)
    order = {data: i for i, data in enumerate(work.events_sent)}
    positions = [order[data] for data in arrived_events]
    assert positions == sorted(set(positions)), "events out of order or twice"
    print(f"seed {seed} loss {loss:.0%}: t={pair.net.now:.2f}s shed={shed} link={dropped_by_link}")


def test_no_datagram_exceeds_the_mtu() -> None:
    # Largest events, fragments of every length near the fragment size, and
    # ACKs with many ranges (loss both ways) competing for the same packets.
    pair = Pair(5, LinkSpec(loss=0.2, delay=0.002, bandwidth=2e6))
    conn = pair.connect()
    client = pair.client.conn
    rng = random.Random(5)
    for size in range(conn.frag_size - 40, conn.frag_size + 40):
        conn.send_message(Channel.CONTROL, rng.randbytes(size))
        client.send_message(Channel.STATE, rng.randbytes(size * 3 + 1))
    for k in range(400):
        pair.net.at(pair.net.now + k * 0.001, lambda now: conn.send_events(bytes(conn.max_events_payload), 1, now))
        pair.net.at(pair.net.now + k * 0.001, lambda now: client.send_events(bytes(client.max_events_payload), 1, now))
    largest = [0]

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        largest[0] = max(largest[0], len(data))

    pair.net.taps.append(tap)
    assert pair.net.run(60.0, stop=lambda: not conn.unacked_messages and not client.unacked_messages)
    assert 1150 <= largest[0] <= 1200
    assert pair.net.stats["mtu_drops"] == 0
