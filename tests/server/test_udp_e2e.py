"""The UDP transport end to end: real server, real program, real sockets,
through a relay that loses, duplicates and reorders datagrams."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from lpm import udp
from lpm.client import Client, Snapshot
from lpm.eventlog import events as ev
from lpm.eventlog.events import Event

from ..ghc import peers
from .relay import LossyRelay
from .wire import PATIENCE, python_program, start_udp_server, wait_for


def _stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    server.wait(PATIENCE)


def test_late_udp_client_through_a_lossy_relay_gets_the_snapshot_and_counts_add_up(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, tcp, udp_address = start_udp_server(tmp_path, "--dir", str(lpm_dir))
    relay = LossyRelay(udp_address, loss=0.10, duplicate=0.02, reorder=0.05, seed=7)
    relay.start()
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    states: List[Snapshot] = []
    markers: List[int] = []
    notices: List[Dict[str, Any]] = []
    gone = threading.Event()

    def on_event(source: int, e: Event) -> None:
        if isinstance(e, ev.UserMarker):
            markers.append(int(e.marker.split()[1]))

    def on_service(message: Dict[str, Any]) -> None:
        notices.append(message)
        if message.get("notice") == "source-gone":
            gone.set()

    probe = Client(tcp, connect_timeout=PATIENCE).start()
    client = None
    try:
        wait_for(lambda: bool(probe.call("sources")), "the program's source")
        time.sleep(0.5)  # the UDP client joins a stream under way
        client = Client(relay.address, transport="udp", subscribe={"sources": "all"}, on_state=states.append,
                        on_event=on_event, on_service=on_service, connect_timeout=PATIENCE).start()
        wait_for(lambda: bool(states) and len(markers) > 300, "the snapshot and live markers over UDP")
        # The CLI through the same relay tells its user what was lost.
        host, port = relay.address[:2]
        shown = subprocess.run([sys.executable, "-m", "lpm", "client", "--udp", f"{host}:{port}", "--timeout", "20",
                                "show", "--classes", "user", "--count", "1500"],
                               capture_output=True, text=True, timeout=PATIENCE)
        assert shown.returncode == 0, shown.stderr
        assert "events lost on the way (UDP)" in shown.stderr, shown.stderr[-500:]
        until.touch()
        assert program.wait(PATIENCE) == 0
        assert gone.wait(PATIENCE), "the server said the source is gone"
        time.sleep(1.0)  # gaps at the end: reported lost after the transport's reorder and delay limits
        counts = client.call("client", PATIENCE)
    finally:
        if client is not None:
            client.close()
        probe.close()
        relay.stop()
        _stop(server)
        if program.poll() is None:
            program.kill()

    snapshot = states[0]
    assert snapshot.events > 0 and any(t.label == "MainThread" for t in snapshot.threads), "a full snapshot"
    assert snapshot.markers, "the snapshot holds the markers before the client joined"
    assert markers[0] > 0, "the client joined late"
    # Whole: the server's whole state at the join, every marker before the
    # first one live counted in it, the newest of them listed.
    assert snapshot.program.get("pid") == program.pid and snapshot.program.get("args")
    assert snapshot.by_type.get("UserMarker", 0) >= markers[0] - 100
    assert int(snapshot.markers[-1][1].split()[1]) >= markers[0] - 100
    assert markers == sorted(markers) and len(set(markers)) == len(markers), "each marker once, in order"
    assert relay.dropped > 0 and relay.duplicated > 0 and relay.reordered > 0
    offered = counts["udp_items_sent"] + counts["udp_items_shed"] + counts["udp_items_reliable"]
    assert offered == counts["events_sent"], "every event the hub sent this client went to the transport"
    assert client.events_lost > 0, "10% of datagrams lost: some events with them"
    assert client.events_received + client.events_lost == counts["events_sent"], (
        f"received {client.events_received} + lost {client.events_lost} != sent {counts['events_sent']}"
    )
    lost_notices = sum(n["events"] for n in notices if n.get("notice") == "lost")
    assert lost_notices == client.events_lost, "every loss was reported to the user"
    missing = (markers[-1] - markers[0] + 1) - len(markers)
    assert 0 < missing <= client.events_lost, "markers missing only where events were reported lost"


def test_every_client_subcommand_works_over_udp(tmp_path: Path, checker: Callable[[Path], peers.Counts]) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    token = tmp_path / "token"
    token.write_text("udp-cli-token\n")
    server, _, (host, port) = start_udp_server(tmp_path, "--dir", str(lpm_dir), "--token-file", str(token))
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    udp = ["--udp", f"{host}:{port}", "--token-file", str(token)]

    def lpm_client(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "lpm", "client", *udp, "--timeout", "20", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=PATIENCE)

    try:
        wait_for(lambda: "leech" in lpm_client("sources").stdout, "the source over UDP")
        state = lpm_client("state", "1")
        assert state.returncode == 0 and "MainThread" in state.stdout, state.stderr
        shown = lpm_client("show", "--source", "1", "--classes", "user", "--count", "20")
        assert shown.returncode == 0 and shown.stdout.count("tick") >= 20, shown.stderr
        top = lpm_client("top", "--plain", "--rounds", "5", "--interval", "0.3")
        assert top.returncode == 0 and "MainThread" in top.stdout, top.stderr
        for action in (("pause", "1"), ("resume", "1"), ("rate", "1", "50"), ("trace", "1", "on")):
            done = lpm_client(*action)
            assert done.returncode == 0, f"{action}: {done.stderr}"

        def traced_sleeps() -> bool:
            calls = lpm_client("calls", "1", "--json", "--most", "1000")
            assert calls.returncode == 0, calls.stderr
            return "time.sleep" in calls.stdout

        wait_for(traced_sleeps, "the program's traced calls of time.sleep over UDP")
        assert lpm_client("trace", "1", "off").returncode == 0
        recording = tmp_path / "rec.eventlog"
        record = subprocess.Popen([sys.executable, "-m", "lpm", "client", *udp, "record", str(recording),
                                   "--source", "1", "--until-gone"], stderr=subprocess.PIPE, text=True)
        wait_for(lambda: recording.exists() and recording.stat().st_size > 20_000, "a recording over UDP")
        exported = lpm_client("export", "collapsed", "--source", "1", "--seconds", "1", "-o", str(tmp_path / "out.txt"))
        assert exported.returncode == 0, exported.stderr
        until.touch()
        assert program.wait(PATIENCE) == 0
        assert record.wait(PATIENCE) == 0
        _, err = record.communicate()
        assert "wrote" in err
        counts = checker(recording)  # ghc-events reads a recording made over UDP
        assert counts.by_name.get("UserMarker", 0) > 0
    finally:
        _stop(server)
        if program.poll() is None:
            program.kill()


def test_hostile_datagrams_and_a_wrong_token_leave_a_good_udp_client_alone(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server, _, udp_address = start_udp_server(tmp_path, "--dir", str(lpm_dir), "--token-file", str(token))
    relay = LossyRelay(udp_address, loss=0.0, duplicate=0.0, reorder=0.0)
    relay.start()
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    markers: List[int] = []
    gone = threading.Event()

    def on_event(source: int, e: Event) -> None:
        if isinstance(e, ev.UserMarker):
            markers.append(int(e.marker.split()[1]))

    def on_service(message: Dict[str, Any]) -> None:
        if message.get("notice") == "source-gone":
            gone.set()

    good = Client(relay.address, transport="udp", udp_config=udp.Config(token=b"s3cret"), subscribe={"sources": "all"},
                  on_event=on_event, on_service=on_service, connect_timeout=PATIENCE).start()
    wrong = Client(udp_address, transport="udp", udp_config=udp.Config(token=b"guess"), reconnect=False,
                   connect_timeout=3.0).start()
    hostile = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        wait_for(lambda: len(markers) > 100, "markers for the good client")
        rng = random.Random(5)
        sent = 0
        for _ in range(2000):  # noise
            hostile.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1400))), udp_address)
            sent += 1
        for data in list(relay.from_client):
            forged = bytearray(data)
            forged[rng.randrange(len(forged))] ^= 0xFF  # one byte changed: session id, number, frames or tag
            for sock in (hostile, relay.sock):  # from elsewhere, and from the good client's own address
                sock.sendto(data, udp_address)  # a replay
                sock.sendto(bytes(forged), udp_address)
                sent += 2
        before = len(markers)
        wait_for(lambda: len(markers) > before + 200, "markers after the attack")
        assert not wrong.connected.is_set(), "a client with the wrong token is never connected"
        until.touch()
        assert program.wait(PATIENCE) == 0
        assert gone.wait(PATIENCE)
        time.sleep(1.0)
        counts = good.call("client", PATIENCE)
    finally:
        hostile.close()
        good.close()
        wrong.close()
        relay.stop()
        _stop(server)
        if program.poll() is None:
            program.kill()
    assert good.connections == 1, "the good client never lost its connection"
    assert good.events_received + good.events_lost == counts["events_sent"]
    assert markers == sorted(markers) and len(set(markers)) == len(markers)
    log = (tmp_path / "server.log").read_text()
    reasons = [line.split("dropped a datagram: ", 1)[1] for line in log.splitlines() if "dropped a datagram: " in line]
    assert reasons, f"the server logged none of {sent} bad datagrams"
    assert len(reasons) == len(set(reasons)), f"each reason logged once: {reasons}"
