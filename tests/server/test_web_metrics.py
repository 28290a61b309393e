"""The server's HTTP side: its JSON API, bad requests, and /metrics scraped
by a real Prometheus (Debian's ``prometheus``, which .ci/run installs)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from ..ghc import peers
from .wire import (PATIENCE, WireClient, free_port, make_certificate, python_program, start_server, wait_for,
                   web_address)


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE) as reply:
            status: int = reply.status
            return status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(url: str, method: str = "GET") -> Any:
    status, body = _get(url, method)
    assert status == 200, f"{url}: {status} {body[:200]!r}"
    return json.loads(body)



@pytest.fixture
def live(tmp_path: Path) -> Any:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--http", "127.0.0.1:0")
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until), "collect")
    host, port = web_address(tmp_path)
    base = f"http://{host}:{port}"
    wait_for(lambda: bool(_json(base + "/api/sources")), "the program's source")
    yield base, program, until, address
    until.touch()
    program.wait(PATIENCE)
    server.terminate()
    server.wait(PATIENCE)


def test_api_state_flame_stream_and_pause(live: Any) -> None:
    base, program, until, _ = live
    source = _json(base + "/api/sources")[0]
    assert source["pid"] == program.pid and source["kind"] == "leech"
    def main_thread() -> bool:
        snapshot = _json(f"{base}/api/state?source={source['id']}")
        assert snapshot["source"] == source["id"]
        return any(t["label"] == "MainThread" for t in snapshot["state"]["threads"])

    wait_for(main_thread, "the main thread in the snapshot")
    wait_for(lambda: _json(f"{base}/api/flame?source={source['id']}&seconds=0")["value"] > 20, "samples")
    flame = _json(f"{base}/api/flame?source={source['id']}&seconds=10")
    names = json.dumps(flame)
    assert flame["name"] == "all" and "<module>" in names, "the program's own frames"
    assert sum(c["value"] for c in flame["children"]) <= flame["value"]
    # The figures over the run so far, on the program's clock.
    wait_for(lambda: len(_json(f"{base}/api/history?source={source['id']}")["heap"].get("rss", [])) >= 2,
             "two heap figures in the history")
    history = _json(f"{base}/api/history?source={source['id']}")
    rss = history["heap"]["rss"]
    assert rss[0][0] < rss[-1][0] <= history["time_ns"] and all(1 << 20 < v < 1 << 32 for _, v in rss)
    # The event stream: a first update at once, another a second later.
    with urllib.request.urlopen(base + "/api/stream", timeout=PATIENCE) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        updates: List[Dict[str, Any]] = []
        while len(updates) < 2:
            line = stream.readline().decode()
            if line.startswith("data: "):
                updates.append(json.loads(line[6:]))
    assert all(str(source["id"]) in u["states"] for u in updates) and updates[1]["time"] > updates[0]["time"]
    # Pause stops the program's events; resume brings them back.
    assert _json(f"{base}/api/pause?source={source['id']}", "POST")["ok"] is True

    def events() -> int:
        count: int = _json(f"{base}/api/state?source={source['id']}")["state"]["events"]
        return count

    assert _json(base + "/api/sources")[0]["paused"] is True, "every client sees the pause"
    time.sleep(0.5)  # what the leech had buffered before the pause arrives
    paused_at = events()
    time.sleep(0.5)
    assert events() == paused_at, "no events while paused"
    assert _json(f"{base}/api/resume?source={source['id']}", "POST")["ok"] is True
    assert _json(base + "/api/sources")[0]["paused"] is False
    wait_for(lambda: events() > paused_at, "events after resume")


def test_bad_requests_get_an_error_and_leave_the_server_serving(live: Any) -> None:
    base, _, _, _ = live
    host, port = base[len("http://"):].rsplit(":", 1)
    cases = [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n", b"431"),
        (b"POST /api/pause?source=1 HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", b"413"),
        (b"DELETE /api/sources HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /api/state?source=banana HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /api/state?source=999 HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /api/pause?source=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
    ]
    for request, status in cases:
        with socket.create_connection((host, int(port)), timeout=PATIENCE) as sock:
            sock.sendall(request)
            reply = b""
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                reply += chunk
        assert reply.split(b" ", 2)[1] == status, f"{request[:40]!r} got {reply[:80]!r}"
    with socket.create_connection((host, int(port)), timeout=PATIENCE):
        pass  # a connection that says nothing and goes
    assert _json(base + "/api/sources"), "still serving"


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        peers.missing_peer("prometheus is not installed (apt-get install prometheus)")
    assert found is not None
    return found


def _query(prom: str, expr: str) -> List[Dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = _json(url)
    except (OSError, AssertionError):
        return []
    result: List[Dict[str, Any]] = body["data"]["result"]
    return result


def _start_prometheus(binary: str, tmp_path: Path, target: str, job: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus scraping ``target`` every second (``job``: more of the job's
    settings, as YAML lines); its API's URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: lpm\n{job}    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),
    )
    return process, f"http://127.0.0.1:{port}"


def test_a_real_prometheus_scrapes_metrics(live: Any, tmp_path: Path) -> None:
    binary = _prometheus()
    base, program, _, address = live
    # One TCP client subscribed to the program, one page following the stream.
    client = WireClient(address)
    client.call("subscribe", sources="all")
    page = urllib.request.urlopen(base + "/api/stream", timeout=PATIENCE)
    process, prom = _start_prometheus(binary, tmp_path, base[len("http://"):])
    try:
        def series(expr: str) -> Optional[Dict[str, Any]]:
            result = _query(prom, expr)
            return result[0] if result else None

        wait_for(lambda: series('lpm_events_received_total > 100') is not None and series("lpm_heap_rss_bytes") is not None,
                 "Prometheus to scrape the server twice")
        up = series('up{job="lpm"}')
        assert up is not None and up["value"][1] == "1", "the target is up"
        events = series("lpm_events_received_total")
        assert events is not None
        labels = events["metric"]
        assert labels["pid"] == str(program.pid) and labels["name"] == f"python-{program.pid}"
        assert labels["program"] == "steady.py" and labels["kind"] == "leech"
        rss = series("lpm_heap_rss_bytes")
        assert rss is not None and 1 << 20 < float(rss["value"][1]) < 1 << 32, "a Python program's RSS"
        threads = series("sum(lpm_threads)")
        assert threads is not None and float(threads["value"][1]) >= 2, "the main thread and the leech's"
        assert series("lpm_source_live") is not None and series("lpm_sources")["value"][1] == "1"  # type: ignore[index]
        assert series("lpm_events_lost_total")["value"][1] == "0"  # type: ignore[index]
        wait_for(lambda: (s := series("increase(lpm_events_received_total[5s])")) is not None and float(s["value"][1]) > 0,
                 "events still arriving, as Prometheus sees them")
        # Every 100 markers a full collection: counted by generation, with pauses.
        wait_for(lambda: (s := series('lpm_gc_collections_total{generation="2"}')) is not None
                 and float(s["value"][1]) >= 2, "full collections")
        pause = series("lpm_gc_pause_seconds_total")
        longest = series("lpm_gc_pause_seconds_max")
        assert pause is not None and longest is not None
        assert 0 < float(longest["value"][1]) <= float(pause["value"][1]) < 10
        clients = {s["metric"]["transport"]: s["value"][1] for s in _query(prom, "lpm_clients")}
        assert clients == {"tcp": "1", "udp": "0", "web": "1"}, clients
        assert series("lpm_source_subscribers")["value"][1] == "1"  # type: ignore[index]
        targets = _json(prom + "/api/v1/targets")["data"]["activeTargets"]
        assert targets and targets[0]["lastError"] == "", f"scrape errors: {targets}"
    finally:
        page.close()
        client.close()
        process.terminate()
        process.wait(PATIENCE)


def test_a_real_prometheus_scrapes_over_https_with_the_token(tmp_path: Path) -> None:
    """--tls-cert and --token-file: Prometheus' own scheme, tls_config and
    authorization settings are all it takes."""
    binary = _prometheus()
    cert, key = make_certificate(tmp_path, "server")
    token = "prometheus-scrape-token"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    server, _ = start_server(tmp_path, "--no-discover", "--token-file", str(token_file), "--tls-cert", str(cert),
                             "--tls-key", str(key), "--http", "127.0.0.1:0")
    host, port = web_address(tmp_path)
    job = (f"    scheme: https\n    tls_config:\n      ca_file: {cert}\n"
           f"    authorization:\n      credentials: {token}\n")
    process, prom = _start_prometheus(binary, tmp_path, f"{host}:{port}", job)
    try:
        def up() -> Optional[str]:
            result = _query(prom, 'up{job="lpm"}')
            return str(result[0]["value"][1]) if result else None

        wait_for(lambda: up() == "1" and bool(_query(prom, "lpm_sources")), "Prometheus to scrape over HTTPS")
        targets = _json(prom + "/api/v1/targets")["data"]["activeTargets"]
        assert targets[0]["scrapeUrl"].startswith("https://") and targets[0]["lastError"] == ""
    finally:
        process.terminate()
        process.wait(PATIENCE)
        server.terminate()
        server.wait(PATIENCE)
