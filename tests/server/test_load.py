"""Load (issue 8): 200 TCP and 200 UDP clients at once on one server while a
program streams; every client's counts are exact."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

from lpm.client import Client
from lpm.eventlog import events as ev
from lpm.eventlog.events import Event

from .wire import PATIENCE, PROGRAMS, WireClient, start_udp_server, wait_for
from ..leech.helpers import decode

CLIENTS = 200


def _pump(clients: List[WireClient], rounds: int = 1) -> None:
    """Read every TCP client once (what is there)."""
    for _ in range(rounds):
        socks = {c.sock: c for c in clients if not c.closed}
        if not socks:
            return
        ready, _, _ = select.select(list(socks), [], [], 0.05)
        for sock in ready:
            socks[sock].pump(0)


def test_two_hundred_tcp_and_two_hundred_udp_clients_with_exact_counts(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address, udp_address = start_udp_server(tmp_path, "--dir", str(lpm_dir), "--max-clients", "512")
    until = tmp_path / "stop"
    # A block every 100 ms: 400 clients' worth of datagrams stay within what
    # one Python server pushes on a 2-core machine alongside 200 UDP peers.
    env = dict(os.environ, LPM_DIR=str(lpm_dir), LPM_FLUSH_INTERVAL="0.1", LPM_SAMPLE_RATE="0")
    program = subprocess.Popen([sys.executable, "-m", "lpm", "run", str(PROGRAMS / "steady.py"), str(until)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tcp: List[WireClient] = []
    udp: List[Client] = []
    udp_markers: Dict[int, List[int]] = {}
    gone = threading.Event()
    try:
        probe = WireClient(address)
        wait_for(lambda: bool(probe.call("sources")["result"]), "the program's source")
        probe.close()
        for _ in range(CLIENTS):
            wire = WireClient(address)
            wire.request("subscribe", sources="all")
            tcp.append(wire)
        for i in range(CLIENTS):
            marks: List[int] = udp_markers.setdefault(i, [])

            def on_event(source: int, e: Event, marks: List[int] = marks) -> None:
                if isinstance(e, ev.UserMarker):
                    marks.append(int(e.marker.split()[1]))

            def on_service(message: Dict[str, object]) -> None:
                if message.get("notice") == "source-gone":
                    gone.set()

            udp.append(Client(udp_address, transport="udp", subscribe={"sources": "all"}, on_event=on_event,
                              on_service=on_service, reconnect=False, connect_timeout=PATIENCE).start())
            _pump(tcp)
        while not all(len(m) > 20 for m in udp_markers.values()) or not all(
                b"tick" in bytes(c.got.streams.get(1, b"")) for c in tcp):
            _pump(tcp)
            if program.poll() is not None:
                raise AssertionError("the program stopped")
        until.touch()
        while program.poll() is None:
            _pump(tcp)
        assert program.returncode == 0
        assert program.stdout is not None
        emitted = int(program.stdout.read())
        while not all(c.closed or any(n.get("notice") == "source-gone" for n in c.got.notices) for c in tcp):
            _pump(tcp)
        assert gone.wait(PATIENCE)
        threading.Event().wait(1.5)  # the events channel's reorder window, then its loss report
        counts = [c.call("client", PATIENCE) for c in udp]
    finally:
        for c in udp:
            c.close()
        for w in tcp:
            w.close()
        until.touch()
        if program.poll() is None:
            program.kill()
        server.terminate()
        server.wait(PATIENCE)
    for wire in tcp:  # every marker from the one it joined at to the last, once, in order
        stream = decode(bytes(wire.got.streams[1]))
        ticks = [int(e.marker.split()[1]) for e in stream.of_type(ev.UserMarker)]  # type: ignore[attr-defined]
        assert ticks == list(range(ticks[0], emitted)), "a TCP client's markers, exactly"
        assert not any(n.get("notice") == "dropped" for n in wire.got.notices)
    for peer, count, marks in zip(udp, counts, udp_markers.values()):
        assert peer.connections == 1
        assert peer.events_received + peer.events_lost == count["events_sent"], "a UDP client's counts add up"
        assert marks == sorted(marks) and len(set(marks)) == len(marks)
