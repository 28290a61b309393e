"""A small blocking TCP client for the server tests (the real client library is
issue 5's): frames in, per-source streams and service messages kept."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from lpm.protocol import service
from lpm.protocol.frames import Frame, FrameDecoder, Kind, encode_frame

PATIENCE = 60.0
PROGRAMS = Path(__file__).resolve().parent.parent / "leech" / "programs"


def _launch(tmp: Path, extra: tuple[str, ...]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpm", "-v", "server", "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=open(tmp / "server.log", "w"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, f"server said {line!r}; log: {(tmp / 'server.log').read_text()}"
    return proc, line


def _address_in(line: str, before: str) -> tuple[str, int]:
    found = re.search(before + r" ([^\s,]+):(\d+)", line)
    assert found is not None, f"no address after {before!r} in {line!r}"
    return found.group(1), int(found.group(2))


def start_server(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc, line = _launch(tmp, extra)
    return proc, _address_in(line, "listening on")


def free_port() -> int:
    """A loopback TCP port nobody listens on (for a server that must come back on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=PATIENCE,
    )
    return cert, key


def web_address(tmp: Path) -> tuple[str, int]:
    """A server's web view address, from the log line that names it."""
    log = (tmp / "server.log").read_text()
    for line in log.splitlines():
        if "web view and /metrics on http" in line:
            host, port = line.rsplit("://", 1)[1].strip().strip("/").rsplit(":", 1)
            return host, int(port)
    raise AssertionError(f"no web view in the server log: {log}")


def start_udp_server(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, int], tuple[str, int]]:
    """A server with a UDP listener too: (process, TCP address, UDP address)."""
    proc, line = _launch(tmp, ("--udp", "127.0.0.1:0", *extra))
    return proc, _address_in(line, "listening on"), _address_in(line, "UDP")


def python_program(tmp: Path, lpm_dir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LPM_DIR=str(lpm_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "lpm", "run", str(PROGRAMS / name), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@dataclass
class Received:
    """Everything one client got, by source."""

    streams: Dict[int, bytearray] = field(default_factory=dict)  #: header + events bytes, as received
    states: Dict[int, List[Dict[str, Any]]] = field(default_factory=dict)
    replies: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    notices: List[Dict[str, Any]] = field(default_factory=list)
    errors: List[Dict[str, Any]] = field(default_factory=list)
    order: List[tuple[Kind, int]] = field(default_factory=list)


class WireClient:
    def __init__(self, address: tuple[str, int], rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(PATIENCE)
        self.sock.connect(address)
        self.decoder = FrameDecoder()
        self.got = Received()
        self.closed = False
        self._next_id = 1

    def request(self, op: str, **args: Any) -> int:
        id_ = self._next_id
        self._next_id += 1
        self.sock.sendall(encode_frame(Frame(Kind.SERVICE, 0, service.request(id_, op, **args))))
        return id_

    def call(self, op: str, **args: Any) -> Dict[str, Any]:
        """Send a request and read until its reply or error arrives."""
        id_ = self.request(op, **args)
        self.read_until(lambda: id_ in self.got.replies or any(e.get("id") == id_ for e in self.got.errors))
        if id_ in self.got.replies:
            return self.got.replies[id_]
        return next(e for e in self.got.errors if e.get("id") == id_)

    def pump(self, timeout: float = 0.05) -> bool:
        """Read what is there (waiting at most ``timeout``); False once closed."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.decoder.feed(data)
        while True:
            frame = self.decoder.next_frame()
            if frame is None:
                return True
            self._handle(frame)

    def read_until(self, condition: Callable[[], bool], patience: float = PATIENCE) -> None:
        deadline = time.monotonic() + patience
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the server")
            if not self.pump() and not condition():
                raise AssertionError("the server closed the connection")

    def _handle(self, frame: Frame) -> None:
        got = self.got
        got.order.append((frame.kind, frame.source))
        if frame.kind in (Kind.HEADER, Kind.EVENTS):
            got.streams.setdefault(frame.source, bytearray()).extend(frame.payload)
        elif frame.kind is Kind.STATE:
            got.states.setdefault(frame.source, []).append(json.loads(frame.payload))
        else:
            message = service.decode(frame.payload)
            if message["type"] == "reply":
                got.replies[message["id"]] = message
            elif message["type"] == "error":
                got.errors.append(message)
            else:
                got.notices.append(message)

    def close(self) -> None:
        self.sock.close()


def steady_under_server(tmp: Path, *server_args: str) -> tuple[subprocess.Popen[str], tuple[str, int], subprocess.Popen[bytes], Path]:
    """A server watching a private lpm directory, and steady.py running under
    the leech there until the returned path exists: (server, address, program, until)."""
    lpm_dir = tmp / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address = start_server(tmp, "--dir", str(lpm_dir), *server_args)
    until = tmp / "stop"
    return server, address, python_program(tmp, lpm_dir, "steady.py", str(until)), until


def pump_all(clients: List[WireClient], condition: Callable[[], bool], what: str, patience: float = PATIENCE) -> None:
    """Read every client without pause until ``condition`` holds."""
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        open_ = [c for c in clients if not c.closed]
        ready, _, _ = select.select([c.sock for c in open_], [], [], 0.01)
        for client in open_:
            if client.sock in ready:
                client.pump(0)


def sources_by_name(client: WireClient) -> Dict[str, Dict[str, Any]]:
    reply = client.call("sources")
    return {s["name"]: s for s in reply["result"]}


def wait_for(condition: Callable[[], bool], what: str, patience: float = PATIENCE) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def first(items: List[Any], predicate: Callable[[Any], bool]) -> Optional[Any]:
    return next((x for x in items if predicate(x)), None)
