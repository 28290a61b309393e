"""The server's UDP listener: clients of the lpm UDP transport (:mod:`lpm.udp`).

A thin shell, driven by :class:`lpm.server.shell.Server`'s loop: one
non-blocking datagram socket, one :class:`lpm.udp.Server` core, and per
connection a client of the hub, which cannot tell it from a TCP client.  The
hub's output for it is cut into frames and each goes the way its kind needs:

- ``SERVICE`` frames on the CONTROL channel (reliable, ordered);
- ``HEADER`` and ``STATE`` frames on the STATE channel (reliable, ordered,
  fragmented: a snapshot of many megabytes goes through);
- ``EVENTS`` frames on the events channel, re-blocked into datagrams that
  each decode alone (:mod:`lpm.server.datagrams`), never sent twice; what is
  lost or shed reaches the client as a count.

The client sends service frames on CONTROL.  The hub's bounded queue stays
the one place where a slow client's events are dropped: this shell takes a
client's output only while the connection has less than
:data:`MAX_QUEUED` bytes waiting for the network.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Dict, Hashable, List, Optional, Tuple, cast

from .. import udp
from ..protocol.frames import HEAD, Kind
from .datagrams import EventPacker
from .hub import Client, Hub

log = logging.getLogger("lpm.server")

#: Bytes a connection may have queued before the hub's output for it waits.
MAX_QUEUED = 1 << 20
#: Datagrams read from the socket per turn of the loop, so sources get turns.
READ_BATCH = 256


class UdpListener:
    """UDP clients of one server.

    Args:
        hub: the server's hub.
        host, port: where to listen.
        config: the transport's settings (token, rates, limits).
    """

    def __init__(self, hub: Hub, host: str, port: int, config: Optional[udp.Config] = None) -> None:
        self.hub = hub
        self.core = udp.Server(config or udp.Config())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.address: Tuple[str, int] = self.sock.getsockname()[:2]
        self._clients: Dict[int, Tuple[udp.ServerConnection, Client]] = {}  # id(connection) ->
        self._packers: Dict[int, EventPacker] = {}  # hub client id -> its packer
        self._logged: set[str] = set()

    def fileno(self) -> int:
        return self.sock.fileno()

    def deadline(self) -> Optional[float]:
        return self.core.next_deadline()

    # -- the loop's calls ---------------------------------------------------------

    def read(self, now: float) -> None:
        """Datagrams waiting on the socket, into the core."""
        for _ in range(READ_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:  # an ICMP error of an earlier send: nothing to do with this peer
                if err.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.warning("udp: receive failed: %s", err)
                break
            self.core.receive_datagram(data, addr, now)
        self._handle(now)

    def pump(self, now: float) -> None:
        """Timers due, the hub's output into the connections, datagrams out."""
        deadline = self.core.next_deadline()
        if deadline is not None and deadline <= now:
            self.core.on_timer(now)
        self._handle(now)
        for connection, client in list(self._clients.values()):
            self._forward(connection, client, now)
        self._send(now)
        self._log_drops()

    def close(self, now: float) -> None:
        self.core.close(now)
        self._send(now)
        for _, client in self._clients.values():
            self.hub.remove_client(client)
        self._clients.clear()
        self.sock.close()

    # -- inside -------------------------------------------------------------------

    def _handle(self, now: float) -> None:
        while True:
            got = self.core.next_event()
            if got is None:
                return
            connection, event = got
            key = id(connection)
            if isinstance(event, udp.Connected):
                # The handshake proved the token, if the server has one.
                client = self.hub.add_client(f"udp {_peer(connection.addr)}", authenticated=True)
                if client is None:
                    connection.close(now, "the server has its maximum of clients")
                    continue
                self._clients[key] = (connection, client)
                self._packers[client.id] = EventPacker(connection.max_events_payload)
                client.transport.update(udp_items_sent=0, udp_items_shed=0, udp_items_reliable=0)
                log.info("client %d connected over UDP from %s", client.id, _peer(connection.addr))
            elif isinstance(event, udp.Message):
                pair = self._clients.get(key)
                if pair is not None and event.channel == udp.Channel.CONTROL:
                    try:
                        self.hub.client_data(pair[1], event.data)
                    except Exception:  # a bug its bytes found: that client goes, the server stays
                        log.exception("client %d: internal error on its input; disconnected", pair[1].id)
                        connection.close(now, "internal error")
            elif isinstance(event, udp.Closed):
                pair = self._clients.pop(key, None)
                if pair is not None:
                    self._forget(pair[1], f"{event.reason.value}{': ' + event.detail if event.detail else ''}")

    def _forward(self, connection: udp.ServerConnection, client: Client, now: float) -> None:
        if connection.is_closed:
            return
        packer = self._packers[client.id]
        while connection.queued_bytes < MAX_QUEUED and client.out:
            for frame in self.hub.take_frames(client, 256 << 10):
                self._send_frame(connection, client, packer, frame, now)
        if client.close_reason is not None and not client.out:
            connection.close(now, client.close_reason)

    def _send_frame(self, connection: udp.ServerConnection, client: Client, packer: EventPacker, frame: bytes,
                    now: float) -> None:
        """One of the hub's frames (whole, as it encoded it) the way its kind goes."""
        _, _, kind, _, source, _ = HEAD.unpack_from(frame)
        try:
            if kind == Kind.SERVICE:
                connection.send_message(udp.Channel.CONTROL, frame)
            elif kind == Kind.HEADER:
                packer.header(source, frame[HEAD.size:])
                connection.send_message(udp.Channel.STATE, frame)
            elif kind == Kind.STATE:
                connection.send_message(udp.Channel.STATE, frame)
            else:
                for piece in packer.pack(source, frame[HEAD.size:]):
                    if piece.reliable:
                        connection.send_message(udp.Channel.STATE, piece.frame)
                        client.transport["udp_items_reliable"] += piece.items
                    elif connection.send_events(piece.frame, piece.items, now):
                        client.transport["udp_items_sent"] += piece.items
                    else:
                        client.transport["udp_items_shed"] += piece.items
        except (ValueError, RuntimeError) as err:  # over the peer's message limit, or closing
            log.warning("udp: client %d: %s frame not sent: %s", client.id, Kind(kind).name, err)

    def _send(self, now: float) -> None:
        for data, addr in self.core.datagrams_to_send(now):
            try:
                self.sock.sendto(data, cast(Tuple[str, int], addr))
            except (BlockingIOError, InterruptedError):
                pass  # the kernel's buffer is full: as a loss, which the transport repairs
            except OSError as err:
                if "send" not in self._logged:
                    self._logged.add("send")
                    log.warning("udp: send to %s failed: %s", addr, err)

    def _forget(self, client: Client, reason: str) -> None:
        self._packers.pop(client.id, None)
        self.hub.remove_client(client)
        log.info("client %d (%s) gone: %s", client.id, client.peer, reason)

    def _log_drops(self) -> None:
        """Each reason a datagram was dropped, logged once (then only counted)."""
        for reason, count in self.core.all_counters().items():
            if count and reason not in self._logged:
                self._logged.add(reason)
                log.warning("udp: dropped a datagram: %s (counted from now on, not logged again)", reason)

    def stats(self) -> Dict[str, int]:
        return dict(self.core.all_counters())


def _peer(addr: Hashable) -> str:
    """host:port of a socket address (the core keeps addresses opaque)."""
    host, port = cast(Tuple[str, int], addr)[:2]
    return f"{host}:{port}"


__all__: List[str] = ["UdpListener", "MAX_QUEUED"]
