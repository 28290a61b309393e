"""The client's end of lpm's UDP transport: a socket around :class:`lpm.udp.ClientConnection`.

What comes out is the same frames a TCP connection carries, for the same
:class:`~lpm.client.protocol.ClientProtocol`: the server puts service frames
on the CONTROL channel, headers and snapshots on STATE, and events on the
events channel, each datagram a frame that decodes alone
(:mod:`lpm.server.datagrams`).  Events travel apart from the header they
need, so those of a source whose header has not come yet wait here (at most
:data:`EARLY_FRAMES`; more are dropped and counted as lost).

Loss is counted, never hidden: :attr:`UdpLink.events_lost` is what the
transport reported lost or shed, :attr:`UdpLink.events_received` what
arrived, both in the server's counting of events (``client`` service op).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

from .. import udp
from ..protocol.frames import HEAD, Kind

#: Event frames held per connection until their source's header arrives.
EARLY_FRAMES = 4096


class UdpLink:
    """One connection to a server's UDP listener; thread-safe to :meth:`send` on.

    Args:
        address: (host, port) of the server's ``--udp`` listener.
        config: the transport's settings (a token must match the server's).
        last_server_id: the server id of a previous connection, so that a
            restarted server is noticed.
    """

    def __init__(self, address: Tuple[str, int], config: Optional[udp.Config] = None,
                 last_server_id: Optional[int] = None) -> None:
        self.address = address
        infos = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.connect(sockaddr)
        self.sock.setblocking(False)
        self.core = udp.ClientConnection(config, random_bytes=os.urandom, last_server_id=last_server_id)
        self.server_id: Optional[int] = None
        self.restarted = False
        self.events_received = 0
        self.events_lost = 0
        self._lock = threading.Lock()
        self._headers: set[int] = set()
        self._early: Dict[int, List[bytes]] = {}
        self._early_count = 0
        self._closed: Optional[str] = None

    # -- life ----------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Complete the handshake.

        Raises:
            ConnectionError: refused, no answer within ``timeout``, or a wrong token.
        """
        with self._lock:
            self.core.connect(time.monotonic())
            self._flush()
        deadline = time.monotonic() + timeout
        while not self.core.is_established:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise ConnectionError(f"no UDP answer from {self.address[0]}:{self.address[1]} within {timeout:g} s")
            self.poll(min(left, 0.2))

    def close(self) -> None:
        with self._lock:
            if not self.core.is_closed:
                self.core.close(time.monotonic(), "client closing")
                self._flush()
        self.sock.close()

    # -- traffic -------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """A frame (a service request) to the server, reliably."""
        with self._lock:
            if self._closed is not None or self.core.is_closed:
                raise ConnectionError(f"UDP connection closed: {self._closed or 'closed'}")
            self.core.send_message(udp.Channel.CONTROL, frame)
            self._flush()

    def poll(self, timeout: float) -> Tuple[List[bytes], int]:
        """Wait at most ``timeout`` s; the frames that arrived, in order, and
        how many events were reported lost meanwhile.

        Raises:
            ConnectionError: the connection is over (closed by the server,
                the server restarted, or no word from it for the idle timeout).
        """
        with self._lock:
            deadline = self.core.next_deadline()
        wait = timeout if deadline is None else max(0.0, min(timeout, deadline - time.monotonic()))
        try:
            select.select([self.sock], [], [], wait)
        except (OSError, ValueError) as err:  # closed under us by close()
            raise ConnectionError(f"UDP socket closed: {err}") from None
        frames: List[bytes] = []
        lost = 0
        with self._lock:
            now = time.monotonic()
            for _ in range(1024):
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP: nobody listens there (yet); the transport retries
                    break
                self.core.receive_datagram(data, now)
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self.core.on_timer(now)
            while True:
                event = self.core.next_event()
                if event is None:
                    break
                lost += self._handle(event, frames)
            self._flush()
        self.events_lost += lost
        if self._closed is not None and not frames:
            raise ConnectionError(self._closed)
        return frames, lost

    def stats(self) -> Dict[str, float]:
        with self._lock:
            return dict(self.core.stats())

    # -- inside ----------------------------------------------------------------------

    def _handle(self, event: udp.Event, frames: List[bytes]) -> int:
        """Frames to pass on into ``frames``; returns events lost."""
        if isinstance(event, udp.Connected):
            self.server_id = event.server_id
        elif isinstance(event, udp.ServerRestarted):
            self.restarted = True
        elif isinstance(event, udp.Message):
            if len(event.data) < HEAD.size:
                return 0
            _, _, kind, flags, source, _ = HEAD.unpack_from(event.data)
            if kind == Kind.HEADER:
                self._headers.add(source)
                frames.append(event.data)
                for early in self._early.pop(source, []):
                    frames.append(early)
                    self._early_count -= 1
            elif kind == Kind.EVENTS:
                items = event.items if event.channel == udp.Channel.EVENTS else flags
                self.events_received += items
                if source in self._headers:
                    frames.append(event.data)
                elif self._early_count < EARLY_FRAMES:
                    self._early.setdefault(source, []).append(event.data)
                    self._early_count += 1
                else:
                    self.events_received -= items
                    return items
            else:
                frames.append(event.data)
        elif isinstance(event, udp.EventsLost):
            return event.count
        elif isinstance(event, udp.Closed):
            self._closed = f"UDP connection closed: {event.reason.value}" + (f": {event.detail}" if event.detail else "")
        return 0

    def _flush(self) -> None:
        for datagram in self.core.datagrams_to_send(time.monotonic()):
            try:
                self.sock.send(datagram)
            except (BlockingIOError, InterruptedError):
                pass  # as a loss: the transport repairs it
            except OSError:
                pass  # ICMP refusal of an earlier datagram: the handshake retries
