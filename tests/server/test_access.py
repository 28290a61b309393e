"""Access (issue 8): with a token, wrong, missing and replayed proofs are
refused over TCP and HTTP (UDP: tests/server/test_udp_e2e.py and
tests/udp/), the right one lets a client in, and a listener beyond loopback
never runs without one."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from lpm.client import Client
from lpm.protocol import service

from .wire import PATIENCE, WireClient, start_server, web_address

TOKEN = b"correct horse battery staple"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Tuple[Tuple[str, int], str, Path]]:
    """A server with a token, a TCP and an HTTP listener, and a program to watch."""
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--token-file", str(token_file),
                                   "--http", "127.0.0.1:0")
    host, port = web_address(tmp_path)
    try:
        yield address, f"http://{host}:{port}", token_file
    finally:
        server.terminate()
        server.wait(PATIENCE)


def _challenge(client: WireClient) -> str:
    client.read_until(lambda: any(n.get("notice") == "challenge" for n in client.got.notices))
    nonce = next(n for n in client.got.notices if n.get("notice") == "challenge")["nonce"]
    assert isinstance(nonce, str)
    return nonce


def _refused(client: WireClient) -> None:
    """The server has hung up on ``client`` and told it nothing but the challenge and an error."""
    while client.pump(0.2):
        pass
    assert [n.get("notice") for n in client.got.notices] == ["challenge"], "no other notice before authentication"
    assert not client.got.replies and not client.got.streams and not client.got.states


def test_tcp_refuses_missing_wrong_and_replayed_proofs(guarded: Tuple[Tuple[str, int], str, Path]) -> None:
    address, _, _ = guarded
    missing = WireClient(address)
    _challenge(missing)
    error = missing.call("sources")
    assert error["type"] == "error" and "authenticate first" in error["error"]
    _refused(missing)

    wrong = WireClient(address)
    error = wrong.call("auth", proof=service.proof(b"guess", _challenge(wrong)))
    assert error["type"] == "error" and error["error"] == "wrong token"
    _refused(wrong)

    first = WireClient(address)
    recorded = service.proof(TOKEN, _challenge(first))
    assert first.call("auth", proof=recorded)["type"] == "reply"
    assert first.call("sources")["type"] == "reply", "the right proof lets a client in"
    replay = WireClient(address)
    _challenge(replay)
    error = replay.call("auth", proof=recorded)  # another connection's answer, heard on the wire
    assert error["type"] == "error" and error["error"] == "wrong token"
    _refused(replay)
    first.close()


def test_the_client_library_and_cli_answer_the_challenge(guarded: Tuple[Tuple[str, int], str, Path]) -> None:
    address, _, token_file = guarded
    client = Client(address, token=TOKEN, connect_timeout=PATIENCE).start()
    try:
        assert client.call("sources", PATIENCE) == []
    finally:
        client.close()
    cli = [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "--timeout", "10"]
    done = subprocess.run([*cli, "--token-file", str(token_file), "sources"], capture_output=True, text=True,
                          timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    refused = subprocess.run([*cli, "sources"], capture_output=True, text=True, timeout=PATIENCE)
    assert refused.returncode != 0


def _http(url: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, Any], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=PATIENCE) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_http_asks_for_the_token_everywhere(guarded: Tuple[Tuple[str, int], str, Path]) -> None:
    _, base, _ = guarded
    for path in ("/", "/app.js", "/api/sources", "/api/stream", "/metrics"):
        status, _, body = _http(base + path)
        assert status == 401 and b"token" in body, f"{path} without a token: {status}"
        assert _http(base + path, {"Authorization": "Bearer guess"})[0] == 401
    assert _http(base + "/metrics", {"Authorization": "Bearer " + TOKEN.decode()})[0] == 200
    status, headers, _ = _http(base + "/?token=" + urllib.parse.quote(TOKEN.decode()))
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert _http(base + "/api/sources", {"Cookie": cookie})[0] == 200
    assert _http(base + "/api/sources", {"Cookie": "lpm_token=guess"})[0] == 401


def test_a_listener_beyond_loopback_gets_a_token_made_and_printed(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpm", "server", "--listen", "0.0.0.0:0", "--no-discover"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        port = int(line.split("listening on ", 1)[1].split(",")[0].rsplit(":", 1)[1])
        notice = ""
        while "this run's is" not in notice or notice.count("\n") < 4:
            notice += proc.stderr.readline()
        token = notice.split("this run's is", 1)[1].split()[0].encode()
        assert len(token) >= 24
        refused = WireClient(("127.0.0.1", port))
        _challenge(refused)
        assert refused.call("sources")["type"] == "error"
        refused.close()
        client = Client(("127.0.0.1", port), token=token, connect_timeout=PATIENCE).start()
        try:
            assert client.call("sources", PATIENCE) == []
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(PATIENCE)


def test_without_a_token_loopback_clients_need_none(tmp_path: Path) -> None:
    server, address = start_server(tmp_path, "--no-discover")
    try:
        client = WireClient(address)
        assert client.call("sources")["type"] == "reply"
        assert not any(n.get("notice") == "challenge" for n in client.got.notices)
        client.close()
    finally:
        server.terminate()
        server.wait(PATIENCE)
