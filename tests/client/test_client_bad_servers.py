"""A client facing servers that misbehave: garbage, a cut frame, silence,
nobody listening.  A clear error or a reconnection; never a hang or a traceback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest

from lpm.client import Client
from lpm.protocol import service
from lpm.protocol.frames import Frame, Kind, encode_frame

from ..server.wire import steady_under_server, wait_for

PATIENCE = 30.0


class FakeServer(threading.Thread):
    """Accepts connections and answers each with ``behave(connection)``."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.behave = behave
        self.connections = 0

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.behave, args=(conn,), daemon=True).start()


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nnot an lpm server")
    conn.close()


def cut_frame(conn: socket.socket) -> None:
    conn.sendall(encode_frame(Frame(Kind.SERVICE, 0, service.notice("hello")))[:-4])
    conn.close()


def silent(conn: socket.socket) -> None:
    threading.Event().wait(PATIENCE)
    conn.close()


@pytest.mark.parametrize("behave", [garbage, cut_frame])
def test_a_bad_server_gives_an_error_and_the_client_reconnects(behave: Callable[[socket.socket], None]) -> None:
    fake = FakeServer(behave)
    fake.start()
    exits: List[Optional[BaseException]] = []
    once = Client(fake.address, reconnect=False, on_exit=exits.append)
    once.run()  # returns: no hang
    assert len(exits) == 1 and exits[0] is not None
    again = Client(fake.address, backoff=(0.01, 1.0, 0.05)).start()
    wait_for(lambda: fake.connections >= 4, "the client to keep reconnecting")
    again.close()
    fake.listener.close()


def test_a_silent_server_times_a_request_out() -> None:
    fake = FakeServer(silent)
    fake.start()
    client = Client(fake.address).start()
    try:
        with pytest.raises(TimeoutError):
            client.call("sources", timeout=0.5)
    finally:
        client.close()
        fake.listener.close()


def test_the_cli_says_what_went_wrong() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody listens there now
    done = subprocess.run([sys.executable, "-m", "lpm", "client", "--server", f"127.0.0.1:{port}", "--timeout", "1", "sources"],
                          capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 1
    assert "cannot reach the server" in done.stderr and "Traceback" not in done.stderr
    fake = FakeServer(garbage)
    fake.start()
    done = subprocess.run([sys.executable, "-m", "lpm", "client", "--server", f"{fake.address[0]}:{fake.address[1]}",
                           "--timeout", "2", "sources"], capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    fake.listener.close()


def test_asyncio_callbacks_and_calls(tmp_path: Path) -> None:
    server, address, program, until = steady_under_server(tmp_path)

    async def main() -> tuple[Any, List[str], bool]:
        loop = asyncio.get_running_loop()
        markers: List[str] = []
        got = asyncio.Event()
        on_loop: List[bool] = []

        def on_event(source: int, e: Any) -> None:
            on_loop.append(asyncio.get_running_loop() is loop)  # raises if not on a loop
            if type(e).__name__ == "UserMarker":
                markers.append(e.marker)
                if len(markers) >= 10:
                    got.set()

        client = Client(address, subscribe={"sources": "all"}, on_event=on_event, loop=loop).start()
        try:
            await asyncio.wait_for(got.wait(), PATIENCE)
            sources = await client.acall("sources")
        finally:
            client.close()
        return sources, markers, all(on_loop)

    try:
        sources, markers, on_loop = asyncio.run(main())
        assert any(s["pid"] == program.pid for s in sources)
        assert markers[:3] and all(m.startswith("tick ") for m in markers)
        assert on_loop
    finally:
        until.write_text("")
        program.wait(PATIENCE)
        server.terminate()
        server.wait(PATIENCE)


class _DropFirst:
    """A send lock that, before letting a send through, has the server drop
    the connection and waits until the client's own thread has closed its
    socket: the moment a request races the server's close."""

    def __init__(self, drop: threading.Event, closed: threading.Event) -> None:
        self.drop = drop
        self.closed = closed

    def __enter__(self) -> None:
        self.drop.set()
        assert self.closed.wait(PATIENCE), "the client saw the server's close"

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_request_that_races_the_servers_close_is_a_lost_connection() -> None:
    drop = threading.Event()

    def close_when_told(conn: socket.socket) -> None:
        drop.wait(PATIENCE)
        conn.close()

    fake = FakeServer(close_when_told)
    fake.start()
    closed = threading.Event()  # on_exit comes once the socket is closed
    client = Client(fake.address, reconnect=False, on_exit=lambda _: closed.set()).start()
    try:
        assert client.connected.wait(PATIENCE)
        client._send_lock = _DropFirst(drop, closed)  # type: ignore[assignment]
        with pytest.raises(ConnectionError, match="connection lost"):
            client.call("sources", timeout=PATIENCE)
        assert not client._pending, "the failed request is not left waiting"
    finally:
        client.close()
        fake.listener.close()
