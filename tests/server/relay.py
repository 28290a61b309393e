"""A lossy UDP relay on loopback: what a bad network does to datagrams, seeded.

The client talks to the relay, the relay to the server.  Each datagram, in
either direction, is dropped with probability ``loss``, sent twice with
``duplicate``, or held back with ``reorder`` and sent after the next one (or
after ``hold`` seconds), from one seeded generator, and counted.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from typing import List, Optional, Tuple

Address = Tuple[str, int]


class LossyRelay(threading.Thread):
    def __init__(self, server: Address, *, loss: float = 0.1, duplicate: float = 0.02, reorder: float = 0.05,
                 hold: float = 0.02, seed: int = 1) -> None:
        super().__init__(daemon=True, name="lossy-relay")
        self.server = server
        self.loss, self.duplicate, self.reorder, self.hold = loss, duplicate, reorder, hold
        self.random = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address: Address = self.sock.getsockname()
        self.client: Optional[Address] = None
        self.passed = self.dropped = self.duplicated = self.reordered = 0
        #: Every datagram the client sent, as it came (for replays).
        self.from_client: List[bytes] = []
        self._held: List[Tuple[float, bytes, Address]] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sock.close()

    def run(self) -> None:
        while not self._halt.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.005)
            now = time.monotonic()
            if ready:
                try:
                    data, source = self.sock.recvfrom(65536)
                except OSError:
                    continue
                if source == self.server:
                    target = self.client
                else:
                    self.client = source
                    target = self.server
                    self.from_client.append(data)
                if target is not None:
                    self._route(data, target, now)
            due = [h for h in self._held if h[0] <= now]
            for item in due:
                self._held.remove(item)
                self._send(item[1], item[2])

    def _route(self, data: bytes, target: Address, now: float) -> None:
        r = self.random.random()
        if r < self.loss:
            self.dropped += 1
            return
        if r < self.loss + self.reorder:
            self.reordered += 1
            self._held.append((now + self.hold, data, target))
            return
        self._send(data, target)
        if self.random.random() < self.duplicate:
            self.duplicated += 1
            self._send(data, target)
        for item in [h for h in self._held if h[2] == target]:  # what was held goes after this one
            self._held.remove(item)
            self._send(item[1], item[2])

    def _send(self, data: bytes, target: Address) -> None:
        try:
            self.sock.sendto(data, target)
            self.passed += 1
        except OSError:
            pass
