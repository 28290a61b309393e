"""lpm.client and `lpm client` against a real server and real programs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

from lpm.client import Client, ServiceError
from lpm.client.model import Snapshot
from lpm.eventlog import read_events
from lpm.eventlog import events as ev
from lpm.eventlog.events import Event

from ..ghc import peers
from ..server.wire import start_server, steady_under_server, wait_for

PATIENCE = 60.0


def lpm_client(address: tuple[str, int], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", *args],
        capture_output=True, text=True, timeout=PATIENCE,
    )


def test_the_library_and_every_subcommand(tmp_path: Path, checker: Callable[[Path], peers.Counts]) -> None:
    server, address, program, until = steady_under_server(tmp_path)
    events: List[tuple[int, Event]] = []
    states: List[Snapshot] = []
    exits: List[Optional[BaseException]] = []
    client = Client(address, subscribe={"sources": "all"}, on_event=lambda s, e: events.append((s, e)),
                    on_state=states.append, on_exit=exits.append).start()
    try:
        wait_for(lambda: any(isinstance(e, ev.UserMarker) for _, e in list(events)), "markers through the library")
        sources = client.call("sources")
        (source,) = [s["id"] for s in sources if s["pid"] == program.pid]
        assert states and states[0].source == source and states[0].name == f"python-{program.pid}"
        try:
            client.call("state", source=999)
            raise AssertionError("an unknown source is an error")
        except ServiceError as error:
            assert "no source 999" in str(error)

        listed = lpm_client(address, "sources")
        assert listed.returncode == 0 and f"python-{program.pid}" in listed.stdout
        state = lpm_client(address, "state", str(source))
        assert state.returncode == 0 and "MainThread" in state.stdout and "gc:" in state.stdout
        shown = lpm_client(address, "show", "--source", str(source), "--classes", "user", "--count", "20")
        assert shown.returncode == 0
        assert len([line for line in shown.stdout.splitlines() if "tick" in line]) >= 20
        assert lpm_client(address, "pause", str(source)).returncode == 0
        assert lpm_client(address, "resume", str(source)).returncode == 0
        bad = lpm_client(address, "pause", "999")
        assert bad.returncode == 1 and "no source 999" in bad.stderr

        exported = lpm_client(address, "export", "collapsed", "--source", str(source), "--seconds", "1", "-o", "-")
        assert exported.returncode == 0, exported.stderr
        lines = exported.stdout.splitlines()
        assert lines and all(line.startswith("MainThread;") or " " in line for line in lines)
        assert any("<module>" in line for line in lines), lines[:5]

        recording = tmp_path / "rec.eventlog"
        recorder = subprocess.Popen(
            [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "record", str(recording),
             "--source", str(source), "--until-gone"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for(lambda: recording.exists() and recording.stat().st_size > 20_000, "the recording to grow")
        until.write_text("")
        program.wait(PATIENCE)
        _, said = recorder.communicate(timeout=PATIENCE)
        assert recorder.returncode == 0, said
        items = read_events(recording.read_bytes())
        ticks = [e.marker for e in items if isinstance(e, ev.UserMarker)]
        assert ticks and ticks == [f"tick {int(ticks[0].split()[1]) + i}" for i in range(len(ticks))]
        assert "wrote" in said
        theirs = checker(recording)  # ghc-events reads what `lpm client record` wrote
        assert theirs.by_name.get("UserMarker") == len(ticks)
    finally:
        until.write_text("")
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert exits == [None]


def test_a_client_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    server, address, program, until = steady_under_server(tmp_path)
    headers: List[int] = []
    states: List[Snapshot] = []
    client = Client(address, subscribe={"sources": "all"}, on_header=lambda s, h: headers.append(s),
                    on_state=states.append, backoff=(0.05, 2.0, 0.5)).start()
    try:
        wait_for(lambda: client.connections == 1 and bool(headers), "the first header")
        server.terminate()
        server.wait(PATIENCE)
        wait_for(lambda: not client.connected.is_set(), "the client to notice")
        server, _ = start_server(tmp_path, "--dir", str(tmp_path / "lpm"), "--listen", f"{address[0]}:{address[1]}")
        wait_for(lambda: client.connections == 2 and len(headers) >= 2, "a reconnection with a fresh header")
        wait_for(lambda: any(s.events > 0 for s in states[1:]) or len(states) > 1, "a fresh snapshot")
        assert client.call("sources")
    finally:
        until.write_text("")
        program.wait(PATIENCE)
        client.close()
        server.terminate()
        server.wait(PATIENCE)
