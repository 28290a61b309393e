"""TLS (issue 8): with --tls-cert the TCP clients and the web view speak TLS;
a client checks the server's certificate and host name, streams arrive
exactly as over plain TCP, and peers that do not speak TLS (or stall in the
handshake) are dropped without disturbing anyone else.  The certificates are
made by the openssl command in the test run."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest

from lpm import tls
from lpm.client import Client, ServiceError
from lpm.eventlog import EventLogReader
from lpm.eventlog.events import Event
from lpm.eventlog.sample import sample_eventlog

from .wire import PATIENCE, WireClient, make_certificate, start_server, wait_for, web_address

TOKEN = b"tls test token"


class Secured(NamedTuple):
    address: Tuple[str, int]
    base: str  # the web view's https:// URL
    cert: Path
    token_file: Path
    fifo: Path  # source 1: what is written here is served live
    log: Path


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    """A server with a token and TLS on TCP and HTTP, watching one FIFO."""
    cert, key = make_certificate(tmp_path, "server")
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo, 0o600)
    server, address = start_server(tmp_path, "--no-discover", "--fifo", str(fifo), "--token-file", str(token_file),
                                   "--tls-cert", str(cert), "--tls-key", str(key), "--http", "127.0.0.1:0")
    host, port = web_address(tmp_path)
    try:
        yield Secured(address, f"https://{host}:{port}", cert, token_file, fifo, tmp_path / "server.log")
    finally:
        server.terminate()
        server.wait(PATIENCE)


def _events_in(data: bytes) -> int:
    reader = EventLogReader()
    reader.feed(data)
    reader.close()
    return sum(1 for item in reader.events() if isinstance(item, Event))


def _stream(secured: Secured, context: ssl.SSLContext, data: bytes) -> Tuple[int, List[Any]]:
    """Subscribe to source 1 over TLS, then write ``data`` into its FIFO:
    (events received once all came and a request after them was answered,
    the ``sources`` reply)."""
    counted: List[int] = []
    client = Client(secured.address, token=TOKEN, tls=context, connect_timeout=PATIENCE,
                    subscribe={"sources": [1]}, on_event=lambda source, e: counted.append(source)).start()
    try:
        assert client.connected.wait(PATIENCE), f"no TLS connection: {client.last_error}"
        client.call("sources", PATIENCE)  # the subscription came before it
        with open(secured.fifo, "wb") as f:
            f.write(data)
        events = _events_in(data)
        wait_for(lambda: len(counted) >= events, f"{events} events over TLS")
        sources = client.call("sources", PATIENCE)  # answered after anything queued before it
        return len(counted), sources
    finally:
        client.close()


def test_a_tls_client_gets_every_event_exactly(secured: Secured) -> None:
    data = sample_eventlog(seconds=20)
    count, sources = _stream(secured, tls.client_context(str(secured.cert)), data)
    assert [s["name"] for s in sources] == ["source.fifo"]
    assert count == _events_in(data) > 4000, "every event of the stream, over TLS"
    log = secured.log.read_text()
    assert "(TLS)" in log and "WITHOUT TLS" not in log


def test_the_cli_speaks_tls_and_explains_a_certificate_it_cannot_trust(secured: Secured, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "lpm", "client", "--server", f"{secured.address[0]}:{secured.address[1]}",
           "--timeout", "5", "--token-file", str(secured.token_file)]
    done = subprocess.run([*cli, "--tls-ca", str(secured.cert), "sources"], capture_output=True, text=True,
                          timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    assert "source.fifo" in done.stdout
    other, _ = make_certificate(tmp_path, "stranger")
    refused = subprocess.run([*cli, "--tls-ca", str(other), "sources"], capture_output=True, text=True,
                             timeout=PATIENCE)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stderr or "self-signed" in refused.stderr, refused.stderr
    assert "--tls-ca" in refused.stderr, "the message says what to do"
    plain = subprocess.run([*cli, "sources"], capture_output=True, text=True, timeout=PATIENCE)
    assert plain.returncode != 0, "a plain TCP client gets nowhere"


def test_wrong_token_plain_peers_and_stalled_handshakes_are_dropped(secured: Secured) -> None:
    context = tls.client_context(str(secured.cert))
    stalled = socket.create_connection(secured.address, timeout=PATIENCE)  # says nothing, ever
    plain = WireClient(secured.address)  # speaks frames, not TLS
    plain.request("sources")
    while plain.pump(0.2):
        pass
    assert not plain.got.replies and not plain.got.notices, "nothing is answered outside TLS"
    wrong = Client(secured.address, token=b"guess", tls=context, connect_timeout=PATIENCE, reconnect=False).start()
    try:
        with pytest.raises((ServiceError, ConnectionError)):
            wrong.call("sources", PATIENCE)
    finally:
        wrong.close()
    # Meanwhile, and with the stalled peer still there, a good client is served whole.
    data = sample_eventlog(seconds=2)
    count, _ = _stream(secured, context, data)
    assert count == _events_in(data)
    stalled.close()
    plain.close()
    wait_for(lambda: "TLS handshake failed" in secured.log.read_text(), "the plain peer's drop in the log")


def _https(url: str, context: ssl.SSLContext, headers: Optional[Dict[str, str]] = None,
           data: Optional[bytes] = None) -> Tuple[int, Dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with opener.open(request, timeout=PATIENCE) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_the_web_view_and_metrics_over_https(secured: Secured) -> None:
    context = tls.client_context(str(secured.cert))
    bearer = {"Authorization": "Bearer " + TOKEN.decode()}
    assert _https(secured.base + "/metrics", context)[0] == 401
    status, _, body = _https(secured.base + "/metrics", context, bearer)
    assert status == 200 and b"lpm_" in body
    status, headers, _ = _https(secured.base + "/?token=" + TOKEN.decode().replace(" ", "%20"), context)
    assert status == 303 and "Secure" in headers["Set-Cookie"].split("; "), "the token's cookie is for HTTPS only"
    status, _, body = _https(secured.base + "/api/sources", context, bearer)
    assert status == 200 and b"source.fifo" in body
    # A request several TLS records long is read whole.
    status, _, _ = _https(secured.base + "/api/pause?source=1", context, bearer, data=b"x" * 60_000)
    assert status in (200, 400, 404, 409), status
    # Plain HTTP to the HTTPS port: dropped, and the server goes on.
    host, port = secured.base.rsplit("//", 1)[1].rsplit(":", 1)
    plain = http.client.HTTPConnection(host, int(port), timeout=PATIENCE)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/metrics")
        plain.getresponse().read()
    plain.close()
    assert _https(secured.base + "/metrics", context, bearer)[0] == 200


def test_a_token_without_tls_is_warned_about(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    server, _ = start_server(tmp_path, "--no-discover", "--token-file", str(token_file))
    server.terminate()
    server.wait(PATIENCE)
    assert "WITHOUT TLS" in (tmp_path / "server.log").read_text()
