"""Hostile input: dropped, counted by reason, never raised, and never felt by
another connection of the same server."""

from __future__ import annotations

import random
from typing import Dict, List, Optional

import pytest

from lpm.udp import Channel, ClientConnection, Config, Message, State
from lpm.udp.core import Connection, Event
from lpm.udp.fragments import K_MAX_MESSAGES_AHEAD
from lpm.udp.packet import (
    HEADER,
    Challenge,
    Proof,
    MAGIC,
    VERSION,
    Hello,
    PacketType,
    data_header,
    decode_header,
    encode_ack,
    encode_events,
    encode_hello,
    encode_mark,
    encode_message,
    encode_proof,
    encode_welcome,
    seal,
)

from .link import CLIENT, SERVER, TOKEN, LinkSpec, Pair

VICTIM = ("10.0.0.3", 6000)  # a well-behaved client sharing the server
ATTACKER = ("10.6.6.6", 6666)


def forge(conn: Connection, frames: bytes, session: Optional[int] = None, pn: Optional[int] = None) -> bytes:
    """A genuine-looking packet from ``conn``'s end (tests hold its keys)."""
    pn = conn._next_pn if pn is None else pn
    conn._next_pn = pn + 1
    conn.recovery.largest_sent = pn
    return seal(conn._send_key, data_header(conn.session if session is None else session, pn) + frames)


def messages(events: List[Event], channel: Channel) -> List[bytes]:
    return [e.data for e in events if isinstance(e, Message) and e.channel == channel]


class Scene:
    """A server with an attacker's client (A, authenticated) and a victim."""

    def __init__(self, seed: int) -> None:
        config = Config(token=TOKEN, max_message=256 << 10, receive_buffer=1 << 20)
        self.pair = Pair(seed, LinkSpec(loss=0.02, delay=0.002), server_config=config, client_config=config)
        self.a = self.pair.client
        self.victim = self.pair.add_client(VICTIM)
        net = self.pair.net
        assert net.run(10.0, stop=lambda: self.a.conn.is_established and self.victim.conn.is_established)
        self.server = self.pair.server.server
        self.captured: Dict[object, List[bytes]] = {CLIENT: [], VICTIM: [], SERVER: []}
        net.taps.append(self._capture)
        rng = random.Random(seed)
        self.to_victim = [rng.randbytes(rng.randrange(3000)) for _ in range(150)] + [rng.randbytes(200_000)]
        self.from_victim = [rng.randbytes(rng.randrange(3000)) for _ in range(100)]
        victim_side = self.server.connections[self.victim.conn.session]
        for m in self.to_victim:
            victim_side.send_message(Channel.STATE if len(m) > 3000 else Channel.CONTROL, m)
        for m in self.from_victim:
            self.victim.conn.send_message(Channel.CONTROL, m)

    def _capture(self, what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent" and src in self.captured:
            self.captured[src].append(data)

    def finish(self) -> None:
        """Run to the end and check the victim saw nothing of it."""
        pair = self.pair
        victim_side = self.server.connections[self.victim.conn.session]
        assert pair.net.run(
            pair.net.now + 20.0, stop=lambda: not victim_side.unacked_messages and not self.victim.conn.unacked_messages
        )
        pair.net.run(pair.net.now + 0.5)
        got = [e for _, e in self.victim.events]
        expected_control = [m for m in self.to_victim if len(m) <= 3000]
        assert messages(got, Channel.CONTROL) == expected_control
        assert messages(got, Channel.STATE) == [self.to_victim[-1]]
        served = [e for _, c, e in pair.server.events if c is victim_side]
        assert messages(served, Channel.CONTROL) == self.from_victim
        assert victim_side.state is State.ESTABLISHED and self.victim.conn.state is State.ESTABLISHED
        assert "internal_error" not in self.server.all_counters()
        assert "internal_error" not in self.a.conn.counters


def test_random_truncated_replayed_and_forged_datagrams() -> None:
    scene = Scene(31)
    net, server = scene.pair.net, scene.server
    for i in range(10):
        scene.a.conn.send_message(Channel.CONTROL, b"from A %d" % i)
    net.run(net.now + 0.05)  # some traffic to capture
    assert len(scene.captured[CLIENT]) >= 1 and len(scene.captured[VICTIM]) >= 20
    rng = random.Random(31)
    a_side = server.connections[scene.a.conn.session]
    victim_side = server.connections[scene.victim.conn.session]

    def inject(data: bytes, addr: object) -> None:
        server.receive_datagram(data, addr, net.now)  # must not raise

    for i in range(3000):  # random bytes, some dressed as our header
        data = rng.randbytes(rng.randrange(0, 1300))
        if i % 2:
            data = MAGIC + bytes([VERSION, rng.randrange(0, 8)]) + data[4:]
        inject(data, rng.choice([ATTACKER, VICTIM, CLIENT]))
    for packet in scene.captured[VICTIM][:20] + scene.captured[CLIENT][:20]:
        for n in range(len(packet)):  # every truncation
            inject(packet[:n], VICTIM)
        inject(packet, VICTIM)  # replayed from where it came
        inject(packet, ATTACKER)  # replayed from elsewhere
        flipped = bytearray(packet)
        flipped[rng.randrange(HEADER.size, len(packet))] ^= 1 << rng.randrange(8)
        inject(bytes(flipped), VICTIM)  # a bad tag
    # A's keys, the victim's session: the tag cannot verify.
    inject(forge(scene.a.conn, b"\x01", session=scene.victim.conn.session), VICTIM)
    # Sessions nobody has.
    for _ in range(50):
        inject(forge(scene.a.conn, b"\x01", session=rng.getrandbits(64)), ATTACKER)
    # A proof under a wrong token, and a short hello.
    h = Hello(rng.randbytes(16), Config().params, 1)
    inject(encode_hello(h)[:600], ATTACKER)
    counters = server.all_counters()
    for key in ("bad_magic", "bad_type", "truncated", "duplicate_packet", "bad_tag", "unknown_session",
                "wrong_address", "short_hello"):
        assert counters.get(key, 0) > 0, key
    assert set(server.connections) == {a_side.session, victim_side.session}

    # The client end takes the same treatment.
    client = scene.a.conn
    for i in range(2000):
        client.receive_datagram(rng.randbytes(rng.randrange(0, 1300)), net.now)
    for packet in scene.captured[SERVER][:30]:
        for n in range(len(packet)):
            client.receive_datagram(packet[:n], net.now)
        client.receive_datagram(packet, net.now)
    assert client.state is State.ESTABLISHED
    assert client.counters.get("bad_magic", 0) > 0
    scene.finish()


def test_a_token_holder_cannot_bomb_the_reassembly() -> None:
    scene = Scene(32)
    net, server = scene.pair.net, scene.server
    a = scene.a.conn
    a_side = server.connections[a.session]

    def bomb(frames: bytes) -> None:
        server.receive_datagram(forge(a, frames), CLIENT, net.now)

    bomb(encode_message(Channel.STATE, 0, 1 << 31, 0, bytes(1000)))  # a huge declared size
    for offset in range(0, 50):  # tiny fragments
        bomb(encode_message(Channel.STATE, 1, 200_000, offset, b"x"))
    bomb(encode_message(Channel.STATE, 2, 200_000, 0, bytes(1000)))
    bomb(encode_message(Channel.STATE, 2, 200_000, 500, bytes(1000)))  # overlapping
    bomb(encode_message(Channel.STATE, 2, 250_000, 1000, bytes(1000)))  # the size changes
    bomb(encode_message(Channel.CONTROL, K_MAX_MESSAGES_AHEAD + 7, 10, 0, bytes(10)))  # far ahead
    for mid in range(3, K_MAX_MESSAGES_AHEAD):  # partial messages up to the memory limit
        bomb(encode_message(Channel.STATE, mid, 200_000, 0, bytes(1100)))
    counters = a_side.counters
    for key in ("message_too_large", "fragment_too_small", "fragment_overlap", "fragment_mismatch",
                "message_window", "reassembly_memory"):
        assert counters.get(key, 0) > 0, key
    budget = a_side._receivers[0].budget
    assert budget.used <= budget.limit == 1 << 20
    scene.finish()


@pytest.mark.parametrize("seed", [41, 42])
def test_proofs_and_hellos_from_strangers(seed: int) -> None:
    scene = Scene(seed)
    server, net = scene.server, scene.pair.net
    rng = random.Random(seed)
    for _ in range(200):
        # Well-formed PROOFs with made-up challenges: no cookie of ours.
        h = Hello(rng.randbytes(16), Config().params, 1)
        c = Challenge(h.nonce, rng.randbytes(16), server.server_id, rng.getrandbits(64), 0, 1, Config().params,
                      rng.randbytes(16))
        server.receive_datagram(encode_proof(Proof(h, c, rng.randbytes(32))), ATTACKER, net.now)
    assert server.counters.get("bad_cookie", 0) == 200
    assert len(server.connections) == 2
    a_client = ClientConnection(Config(token=b"wrong"), random_bytes=rng.randbytes)
    a_client.connect(net.now)
    for datagram in a_client.datagrams_to_send(net.now):
        assert decode_header(datagram).type is PacketType.HELLO
    scene.finish()


def random_frames(rng: random.Random, largest_sent: int) -> bytes:
    """Well-formed frames with fields a peer could lie about (no CLOSE)."""
    frames = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        if kind == 0:
            top = rng.choice([largest_sent, rng.randrange(max(1, largest_sent + 2)), rng.getrandbits(40)])
            ranges = []
            high = top
            for _ in range(rng.randint(1, 4)):
                low = max(0, high - rng.randrange(5))
                ranges.append((low, high))
                high = low - 2 - rng.randrange(3)
                if high < 0:
                    break
            frames.append(encode_ack(ranges, rng.getrandbits(32)))
        elif kind == 1:
            total = rng.choice([0, 10, 5000, rng.getrandbits(32)])
            offset = rng.randrange(total + 1) if total < 1 << 20 else 0
            length = min(rng.randrange(1100), total - offset) if total < 1 << 20 else rng.randrange(1100)
            frames.append(encode_message(rng.randrange(2), rng.randrange(2000), total, offset, bytes(length)))
        elif kind == 2:
            items = rng.randrange(50)
            frames.append(encode_events(rng.randrange(3000), items + rng.randrange(10**6), items, bytes(rng.randrange(200))))
        elif kind == 3:
            frames.append(encode_mark(rng.randrange(3000), rng.randrange(10**7)))
        elif kind == 4:
            frames.append(encode_welcome(rng.randbytes(32)))
        else:
            frames.append(bytes([rng.choice([1, 8])]))
    return b"".join(frames)


def test_authenticated_lies_in_every_frame_hurt_only_the_liar() -> None:
    scene = Scene(33)
    net, server = scene.pair.net, scene.server
    rng = random.Random(33)
    a = scene.a.conn
    a_side = server.connections[a.session]
    # Packet numbers that jump past what any field of an ACK can span.
    server.receive_datagram(forge(a, b"\x01", pn=a._next_pn + (1 << 40)), CLIENT, net.now)
    a.receive_datagram(forge(a_side, b"\x01", pn=a_side._next_pn + (1 << 40)), net.now)
    for _ in range(3000):
        server.receive_datagram(forge(a, random_frames(rng, a_side.recovery.largest_sent)), CLIENT, net.now)
        a.receive_datagram(forge(a_side, random_frames(rng, a.recovery.largest_sent)), net.now)
        server.datagrams_to_send(net.now)
        a.datagrams_to_send(net.now)
    for conn in (a, a_side):
        assert "internal_error" not in conn.counters
        assert conn.counters  # the lies were noticed
    scene.finish()


def test_a_client_drops_packets_of_another_session() -> None:
    """A packet for another session reaching a client (a stale or misrouted
    one, or a forger's) is dropped and counted; the client carries on."""
    scene = Scene(37)
    victim_side = scene.server.connections[scene.victim.conn.session]
    now = scene.pair.net.now
    for _ in range(5):
        scene.victim.conn.receive_datagram(forge(victim_side, b"\x01", session=scene.a.conn.session), now)
    assert scene.victim.conn.counters.get("wrong_session") == 5
    scene.finish()
