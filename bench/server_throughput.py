#!/usr/bin/env python3
"""The server's throughput, CPU and latency: from a producer through
``python -m lpm server`` to TCP clients.

Three measurements in one run:

``baseline``
    The producer's bytes through the same FIFO into a reader that only counts
    bytes: what the pipe itself carries on this machine.
``server, 1 client`` and ``server, 20 clients``
    A synthetic producer writes a realistic leech stream (blocks of one
    thread's events: ``EventBlock``, ``PyBlockInfo``, user markers and
    counters, sequence points) as fast as the FIFO takes it; the server
    decodes every event into its live state and forwards the raw bytes;
    each client counts the bytes it receives.  A run counts only if every
    client received every byte of the stream (so nothing was dropped).
    Events per second are over the time from the first byte written to the
    last byte received by the last client; server CPU is its user + system
    time over the run, per million events.
``latency``
    A real program under ``lpm run`` (native leech, default 10 ms flush)
    emits markers carrying ``time.monotonic_ns()``; one client decodes them
    as they arrive; latency is arrival time minus the stamp (p50, p99).

Target (issue 4): at least 1,000,000 events/s ingested with state tracking
and 1 client; p99 latency under 50 ms.

Usage::

    python bench/server_throughput.py                 # about a minute
    python bench/server_throughput.py --events 500000 --clients 1,5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402

from lpm.eventlog import EventLogReader  # noqa: E402
from lpm.eventlog import catalog  # noqa: E402
from lpm.eventlog import events as ev  # noqa: E402
from lpm.protocol import service  # noqa: E402
from lpm.protocol.frames import Frame, FrameDecoder, Kind, encode_frame  # noqa: E402

HEAD = struct.Struct(">HQ")
MARKER = struct.Struct(">HQIQH")  # EventBlock: id, ts, size, end ts, cap
INFO = struct.Struct(">HQIQ")  # PyBlockInfo: id, ts, thread, first seq
SEQ = struct.Struct(">HQIQ")  # PySeqPoint
PER_BLOCK = 400


def synthetic_stream(events: int, threads: int = 4) -> Tuple[bytes, int]:
    """A leech-like stream of about ``events`` events; (bytes, exact event count)."""
    ids = {name: catalog.BY_NAME[name][0] for name in ("EventBlock", "PyBlockInfo", "UserMarker", "PyCounter", "PySeqPoint")}
    out = [catalog.header()]
    seq = [0] * (threads + 1)
    ts = 0
    count = 0
    while count < events:
        for thread in range(1, threads + 1):
            body = bytearray()
            first = seq[thread]
            for i in range(PER_BLOCK):
                ts += 50
                text = f"marker {seq[thread]}".encode()
                if i % 10 == 9:
                    payload = struct.pack(">d", float(i)) + b"queue"
                    body += HEAD.pack(ids["PyCounter"], ts) + struct.pack(">H", len(payload)) + payload
                else:
                    body += HEAD.pack(ids["UserMarker"], ts) + struct.pack(">H", len(text)) + text
                seq[thread] += 1
            info = INFO.pack(ids["PyBlockInfo"], ts, thread, first)
            size = MARKER.size + len(info) + len(body)
            out.append(MARKER.pack(ids["EventBlock"], ts, size, ts, thread) + info + bytes(body))
            count += PER_BLOCK + 2
        # the writer's own block: a sequence point per thread
        points = b"".join(SEQ.pack(ids["PySeqPoint"], ts, t, seq[t]) for t in range(1, threads + 1))
        out.append(MARKER.pack(ids["EventBlock"], ts, MARKER.size + len(points), ts, 0xFFFF) + points)
        count += 1 + threads
    out.append(b"\xff\xff")
    return b"".join(out), count


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(fifo: str, data: bytes, started: List[float]) -> None:
    """Write ``data`` into the FIFO from another process (``cat``), so the
    producer takes nothing from this process's GIL."""
    with tempfile.NamedTemporaryFile(prefix="lpm-stream-") as f:
        f.write(data)
        f.flush()
        started.append(time.perf_counter())
        subprocess.run(["cat", f.name], stdout=open(fifo, "wb"), check=True)


def baseline(data: bytes, events: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "f")
        os.mkfifo(fifo)
        started: List[float] = []
        t = threading.Thread(target=produce, args=(fifo, data, started))
        t.start()
        fd = os.open(fifo, os.O_RDONLY)
        total = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            total += len(chunk)
        end = time.perf_counter()
        os.close(fd)
        t.join()
        assert total == len(data)
        return events / (end - started[0])


class Counter(threading.Thread):
    """A client that subscribes to everything and counts bytes until the source is gone."""

    def __init__(self, address: Tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.sendall(encode_frame(Frame(Kind.SERVICE, 0, service.request(1, "subscribe", sources="all"))))
        self.bytes = 0
        self.dropped = 0
        self.done_at: Optional[float] = None
        self.subscribed = threading.Event()

    def run(self) -> None:
        # Frame heads only, payloads counted not copied: the bench's clients
        # must not be what is measured.
        head = struct.Struct(">4sBBHII")
        buf = bytearray()
        pos = 0
        while self.done_at is None:
            data = self.sock.recv(1 << 20)
            if not data:
                break
            buf += data
            while len(buf) - pos >= head.size:
                _, _, kind, _, _, length = head.unpack_from(buf, pos)
                end = pos + head.size + length
                if end > len(buf):
                    break
                if kind in (Kind.HEADER, Kind.EVENTS):
                    self.bytes += length
                elif kind == Kind.SERVICE:
                    message = service.decode(bytes(buf[pos + head.size : end]))
                    if message.get("type") == "reply":
                        self.subscribed.set()
                    elif message.get("notice") == "dropped":
                        self.dropped += message["events"]
                    elif message.get("notice") == "source-gone":
                        self.done_at = time.perf_counter()
                pos = end
            if pos > (1 << 20):
                del buf[:pos]
                pos = 0
        self.sock.close()


def start_server(*args: str) -> Tuple[subprocess.Popen[str], Tuple[str, int]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpm", "server", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return proc, (host, int(port))


def through_server(data: bytes, events: int, clients: int) -> Tuple[float, float, int]:
    """(events/s, server CPU s per million events, dropped) for ``clients`` clients."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "f")
        os.mkfifo(fifo)
        server, address = start_server("--no-discover", "--fifo", fifo, "--queue", str(256 << 20))
        try:
            counters = [Counter(address) for _ in range(clients)]
            for c in counters:
                c.start()
                c.subscribed.wait(30)
            cpu0 = cpu_of(server.pid)
            started: List[float] = []
            producer = threading.Thread(target=produce, args=(fifo, data, started))
            producer.start()
            for c in counters:
                c.join(600)
            producer.join()
            cpu = cpu_of(server.pid) - cpu0
            end = max(c.done_at or time.perf_counter() for c in counters)
            for c in counters:
                if c.bytes != len(data):
                    raise SystemExit(f"server_throughput: a client got {c.bytes} of {len(data)} bytes (dropped {c.dropped})")
            return events / (end - started[0]), cpu / (events / 1e6), sum(c.dropped for c in counters)
        finally:
            server.terminate()
            server.wait(30)


LATENCY_PROGRAM = r"""
import sys, time, lpm
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    lpm.marker(f"at {time.monotonic_ns()}")
    n += 1
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
"""


def latency(rate: float, seconds: float) -> Tuple[float, float, int]:
    """(p50 ms, p99 ms, markers) from a program's marker to a client's decode."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        program = os.path.join(tmp, "stamps.py")
        with open(program, "w") as f:
            f.write(LATENCY_PROGRAM)
        server, address = start_server("--dir", tmp)
        sock = socket.create_connection(address)
        sock.sendall(encode_frame(Frame(Kind.SERVICE, 0, service.request(1, "subscribe", sources="all"))))
        env = dict(os.environ, PYTHONPATH=str(ROOT), LPM_DIR=tmp)
        proc = subprocess.Popen([sys.executable, "-m", "lpm", "run", program, str(rate), str(seconds)], env=env)
        decoder = FrameDecoder()
        readers: dict[int, EventLogReader] = {}
        delays: List[float] = []
        sock.settimeout(1.0)
        deadline = time.monotonic() + seconds + 30
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                if proc.poll() is not None:
                    break
                continue
            now = time.monotonic_ns()
            decoder.feed(data)
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    break
                if frame.kind in (Kind.HEADER, Kind.EVENTS):
                    reader = readers.setdefault(frame.source, EventLogReader(strict=False))
                    reader.feed(frame.payload)
                    for item in reader.events():
                        if isinstance(item, ev.UserMarker) and item.marker.startswith("at "):
                            delays.append((now - int(item.marker[3:])) / 1e6)
        proc.wait(30)
        server.terminate()
        server.wait(30)
        sock.close()
    if not delays:
        raise SystemExit("server_throughput: no marker reached the client")
    delays.sort()
    return statistics.median(delays), delays[int(0.99 * (len(delays) - 1))], len(delays)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2_000_000, help="events in the synthetic stream (default 2,000,000)")
    parser.add_argument("--clients", default="1,20", help="client counts to run (default 1,20)")
    parser.add_argument("--latency-rate", type=float, default=2000, help="markers per second for latency (default 2000)")
    parser.add_argument("--latency-seconds", type=float, default=5, help="seconds of latency measurement (default 5)")
    args = parser.parse_args(argv)
    data, events = synthetic_stream(args.events)
    print(f"# server throughput: {events:,} events, {len(data) / 1e6:.1f} MB; python {sys.version.split()[0]}; CPU {cpu_model()}")
    base = baseline(data, events)
    print("\n| path | events/s | vs FIFO alone | server CPU s per M events | dropped |")
    print("|---|---|---|---|---|")
    print(f"| FIFO alone (reader counts bytes) | {base:,.0f} | 1.00 | - | - |", flush=True)
    for n in [int(x) for x in args.clients.split(",") if x]:
        rate, cpu, dropped = through_server(data, events, n)
        print(f"| server, {n} client{'s' if n > 1 else ''} | {rate:,.0f} | {rate / base:.3f} | {cpu:.2f} | {dropped} |", flush=True)
    p50, p99, n = latency(args.latency_rate, args.latency_seconds)
    print(f"\nLatency, program marker to client decode, native leech, default flush: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {n:,} markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
