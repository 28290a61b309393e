"""The handshake: proofs, tokens, stateless cookies, anti-amplification, restarts."""

from __future__ import annotations

import random
from typing import List, Optional, Tuple

import pytest

from lpm.udp import ClientConnection, Closed, CloseReason, Config, Connected, Server, ServerRestarted, State
from lpm.udp.core import Address, Event
from lpm.udp.packet import (
    MIN_HELLO_SIZE,
    RESET_SIZE,
    Hello,
    PacketType,
    Proof,
    data_header,
    decode_challenge,
    decode_header,
    encode_hello,
    encode_proof,
    encode_reset,
    seal,
)

from .link import CLIENT, SERVER, TOKEN, ClientEndpoint, Pair, ServerEndpoint, seeded


def closed(events: List[Tuple[float, Event]]) -> List[Closed]:
    return [e for _, e in events if isinstance(e, Closed)]


def test_both_ends_agree_on_the_session_and_the_server() -> None:
    pair = Pair(1)
    conn = pair.connect()
    client = pair.client.conn
    assert (client.session, client.server_id) == (conn.session, pair.server.server.server_id)
    assert [e for _, e in pair.client.events] == [Connected(client.server_id, client.session)]
    assert [e for _, _, e in pair.server.events] == [Connected(client.server_id, client.session)]
    assert pair.client.events[0][0] == pytest.approx(4 * 0.001, abs=1e-3)  # two round trips


def test_without_a_token_on_either_side() -> None:
    pair = Pair(2, server_config=Config(), client_config=Config())
    pair.connect()


def test_a_wrong_token_gets_nowhere() -> None:
    pair = Pair(3, client_config=Config(token=b"not the token", handshake_timeout=5.0))
    pair.net.run(10.0)
    [end] = closed(pair.client.events)
    assert end.reason is CloseReason.HANDSHAKE_TIMEOUT and "token" in end.detail
    assert not pair.server.server.connections
    assert pair.server.server.counters.get("bad_proof", 0) >= 1


@pytest.mark.parametrize(
    "server_token, client_token, detail",
    [(TOKEN, None, "requires a token"), (None, TOKEN, "has no token")],
)
def test_token_on_one_side_only_is_refused(
    server_token: Optional[bytes], client_token: Optional[bytes], detail: str
) -> None:
    pair = Pair(4, server_config=Config(token=server_token), client_config=Config(token=client_token))
    pair.net.run(5.0)
    [end] = closed(pair.client.events)
    assert end.reason is CloseReason.AUTH and detail in end.detail
    assert not pair.server.server.connections


def hello(rng: random.Random, size: int = MIN_HELLO_SIZE) -> bytes:
    return encode_hello(Hello(rng.randbytes(16), Config().params, 1), size)


def test_spoofed_hellos_cost_the_server_no_state_and_get_no_larger_replies() -> None:
    # RFC 9000 §8: before an address is validated, answer with at most what came.
    server = Server(Config(token=TOKEN), random_bytes=seeded(5))
    rng = random.Random(5)
    for i in range(2000):
        addr = (f"10.9.{i % 250}.{i // 250}", 1000 + i)
        request = hello(rng)
        server.receive_datagram(request, addr, i * 0.001)
        [(reply, to)] = server.datagrams_to_send(i * 0.001)
        assert to == addr and len(reply) < len(request)
        assert decode_header(reply).type is PacketType.CHALLENGE
    assert not server.connections and not server._used_nonces and not server._nonce_expiry
    # A short hello gets nothing: any answer would amplify.
    server.receive_datagram(hello(rng)[: MIN_HELLO_SIZE - 1], ("10.0.0.9", 1), 3.0)
    assert server.datagrams_to_send(3.0) == []
    assert server.counters == {"short_hello": 1}


def challenge_for(server: Server, addr: Address, now: float, rng: random.Random) -> Tuple[Hello, bytes]:
    h = Hello(rng.randbytes(16), Config().params, 1)
    server.receive_datagram(encode_hello(h), addr, now)
    [(reply, _)] = server.datagrams_to_send(now)
    return h, reply


def proof_for(h: Hello, challenge_bytes: bytes, token: bytes = TOKEN) -> bytes:
    from lpm.udp.packet import derive_keys

    c = decode_challenge(challenge_bytes)
    return encode_proof(Proof(h, c, derive_keys(token, h, c).client_proof))


def test_the_cookie_binds_the_address_and_expires() -> None:
    server = Server(Config(token=TOKEN, cookie_lifetime=10.0), random_bytes=seeded(6))
    rng = random.Random(6)
    a, b = ("10.0.0.5", 1), ("10.0.0.6", 1)
    h, c = challenge_for(server, a, 0.0, rng)
    server.receive_datagram(proof_for(h, c), b, 0.01)
    assert server.counters == {"bad_cookie": 1}
    server.receive_datagram(proof_for(h, c), a, 10.5)
    assert server.counters == {"bad_cookie": 1, "expired_cookie": 1}
    assert not server.connections
    server.receive_datagram(proof_for(h, c), a, 9.0)
    assert len(server.connections) == 1


def test_a_replayed_proof_makes_no_second_connection() -> None:
    server = Server(Config(token=TOKEN), random_bytes=seeded(7))
    rng = random.Random(7)
    addr = ("10.0.0.5", 1)
    h, c = challenge_for(server, addr, 0.0, rng)
    proof = proof_for(h, c)
    server.receive_datagram(proof, addr, 0.01)
    [conn] = server.connections.values()
    first = server.datagrams_to_send(0.01)
    assert len(first) == 1 and len(first[0][0]) <= len(proof)  # the WELCOME
    server.receive_datagram(proof, addr, 0.02)  # as if our WELCOME was lost
    again = server.datagrams_to_send(0.02)
    assert len(again) == 1 and len(server.connections) == 1
    conn.close(0.03)
    server.datagrams_to_send(0.03)
    server.on_timer(10.0)
    assert not server.connections
    server.receive_datagram(proof, addr, 5.0)  # replayed within the cookie's life
    assert not server.connections and server.counters == {"replayed_proof": 1}


def test_a_wrong_proof_is_refused() -> None:
    server = Server(Config(token=TOKEN), random_bytes=seeded(8))
    rng = random.Random(8)
    h, c = challenge_for(server, CLIENT, 0.0, rng)
    server.receive_datagram(proof_for(h, c, token=b"guess"), CLIENT, 0.01)
    assert not server.connections and server.counters == {"bad_proof": 1}
    assert server.datagrams_to_send(0.01) == []


def restart(pair: Pair, seed: int) -> ServerEndpoint:
    pair.net.remove(SERVER)
    endpoint = ServerEndpoint(Server(Config(token=TOKEN), random_bytes=seeded(seed)))
    pair.net.add(SERVER, endpoint)
    return endpoint


def test_a_client_notices_a_server_restart() -> None:
    pair = Pair(9)
    pair.connect()
    old_id = pair.client.conn.server_id
    new = restart(pair, 99)
    # The client's next keepalive reaches a server that never heard of it.
    assert pair.net.run(5.0, stop=lambda: pair.client.conn.is_closed)
    [end] = closed(pair.client.events)
    assert end.reason is CloseReason.RESET
    assert pair.net.now < 2.5  # at the first keepalive, not after the idle timeout
    assert new.server.counters == {"unknown_session": 1}

    again = ClientEndpoint(
        ClientConnection(Config(token=TOKEN), random_bytes=seeded(10), last_server_id=old_id), SERVER
    )
    pair.net.remove(CLIENT)
    pair.net.add(CLIENT, again)
    again.conn.connect(pair.net.now)
    assert pair.net.run(10.0, stop=lambda: again.conn.state is State.ESTABLISHED)
    new_id = new.server.server_id
    assert [e for _, e in again.events] == [
        Connected(new_id, again.conn.session),
        ServerRestarted(old_id, new_id),
    ]


def test_a_restart_during_the_handshake_resets_the_client() -> None:
    pair = Pair(11)
    # Let the challenge arrive, then swap the server before the proof lands.
    assert pair.net.run(1.0, stop=lambda: bool(pair.client.conn._proof_bytes))
    new = restart(pair, 12)
    assert pair.net.run(1.0, stop=lambda: pair.client.conn.is_closed)
    assert closed(pair.client.events)[0].reason is CloseReason.RESET
    assert new.server.counters == {"stale_proof": 1}


def test_forged_resets_are_ignored_and_resets_are_rate_limited() -> None:
    pair = Pair(13)
    conn = pair.connect()
    client = pair.client.conn
    client.receive_datagram(encode_reset(client.session, bytes(16)), pair.net.now)
    client.receive_datagram(encode_reset(client.session + 1, bytes(16)), pair.net.now)
    assert client.state is State.ESTABLISHED and client.counters == {"bad_reset": 2}
    assert conn.state is State.ESTABLISHED

    server = Server(Config(token=TOKEN, reset_rate=20.0), random_bytes=seeded(14))
    packet = seal(b"k", data_header(12345, 7) + b"\x01")
    resets = 0
    for i in range(1000):  # one second of a flood from a spoofed source
        server.receive_datagram(packet, ("10.1.1.1", 9), i / 1000)
        for reply, _ in server.datagrams_to_send(i / 1000):
            assert len(reply) == RESET_SIZE <= len(packet)
            resets += 1
    assert 20 <= resets <= 41  # a burst of 20, then 20 a second
    server.receive_datagram(packet[: RESET_SIZE - 1], ("10.1.1.1", 9), 5.0)
    assert server.datagrams_to_send(5.0) == []  # too small to answer


def test_a_client_retries_with_a_fresh_hello_when_its_proof_goes_unanswered() -> None:
    pair = Pair(15)
    spec = pair.net.link(CLIENT, SERVER)
    proofs: List[int] = []

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent" and src == CLIENT and decode_header(data).type is PacketType.PROOF:
            proofs.append(decode_header(data).session)
            if len(proofs) == 1:
                spec.loss = 1.0  # every proof is lost ...
                pair.net.at(now + 2.0, lambda now: setattr(spec, "loss", 0.0))  # ... for a while

    pair.net.taps.append(tap)
    pair.connect()
    assert len(set(proofs)) == 2  # a second challenge, for a new session
    assert pair.client.conn.session == proofs[-1]


def test_a_client_whose_address_changed_is_told_to_reconnect() -> None:
    # A NAT rebinding: the connection does not follow an unvalidated address.
    pair = Pair(16)
    conn = pair.connect()
    pair.net.remove(CLIENT)
    moved = ("10.0.0.2", 5999)
    pair.net.add(moved, pair.client)
    assert pair.net.run(5.0, stop=lambda: pair.client.conn.is_closed)
    assert closed(pair.client.events)[0].reason is CloseReason.RESET
    assert pair.net.now < 2.5  # at its first keepalive
    assert pair.server.server.counters == {"wrong_address": 1}
    assert conn.addr == CLIENT


def test_hellos_back_off_to_one_a_second_until_the_handshake_timeout() -> None:
    pair = Pair(17, client_config=Config(token=TOKEN, initial_rtt=0.1))
    pair.net.remove(SERVER)
    hellos: List[float] = []

    def tap(what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent":
            assert decode_header(data).type is PacketType.HELLO
            hellos.append(now)

    pair.net.taps.append(tap)
    assert pair.net.run(60.0, stop=lambda: pair.client.conn.is_closed)
    gaps = [round(b - a, 6) for a, b in zip(hellos, hellos[1:])]
    assert gaps[:3] == [0.3, 0.6, 1.0] and set(gaps[3:]) == {1.0}  # 3 x initial RTT, doubled, capped
    assert pair.net.now == pytest.approx(10.0)
    assert closed(pair.client.events)[0] == Closed(CloseReason.HANDSHAKE_TIMEOUT, "no answer from the server")
