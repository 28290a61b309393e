"""Sources that misbehave, stop, crash, are paused, or are replayed, with real
processes on loopback: none of it stops the server or the other sources."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

from lpm.eventlog import Header, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.reader import EndOfStream
from lpm.eventlog.sample import sample_eventlog
from lpm.protocol import service
from lpm.protocol.frames import Frame, Kind, encode_frame
from lpm.server.state import SourceState

from ..ghc import peers
from .wire import WireClient, pump_all, python_program, sources_by_name, start_server, steady_under_server, wait_for

PATIENCE = 60.0


def markers(stream: bytes | bytearray) -> List[str]:
    return [e.marker for e in read_events(bytes(stream)) if isinstance(e, ev.UserMarker)]


def gone(client: WireClient) -> set[int]:
    return {n["source"] for n in client.got.notices if n["notice"] == "source-gone"}


def test_pause_and_resume_reach_the_program(tmp_path: Path) -> None:
    server, address, program, until = steady_under_server(tmp_path)
    client = WireClient(address)
    try:
        wait_for(lambda: any(s["pid"] == program.pid for s in sources_by_name(client).values()), "the program")
        source = next(s["id"] for s in sources_by_name(client).values() if s["pid"] == program.pid)
        client.call("subscribe", sources=[source])
        pump_all([client], lambda: len(markers(client.got.streams.get(source, b""))) > 50, "markers")

        reply = client.call("pause", source=source)
        assert reply["result"] == {"source": source, "sent": "pause"}

        def settled() -> bool:
            """No new marker for 0.3 s (the leech reads commands every 0.1 s)."""
            before = len(markers(client.got.streams[source]))
            _pump_for(client, 0.3)
            return len(markers(client.got.streams[source])) == before

        wait_for(settled, "the program to pause")
        paused_at = len(markers(client.got.streams[source]))
        client.call("resume", source=source)
        pump_all([client], lambda: len(markers(client.got.streams[source])) > paused_at + 20, "markers after resume")
        ticks = [int(m.split()[1]) for m in markers(client.got.streams[source])]
        assert ticks == sorted(ticks)
        assert any(b - a > 1 for a, b in zip(ticks, ticks[1:])), "markers made while paused were not sent"

        assert client.call("pause", source=999)["error"].startswith("no source 999")
        assert "hz must be" in client.call("rate", source=source, hz=-5)["error"]
        assert client.call("rate", source=source, hz=50)["result"]["sent"] == "rate 50"
    finally:
        until.write_text("")
        program.wait(PATIENCE)
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert server.returncode == 0


def _pump_for(client: WireClient, seconds: float) -> None:
    try:
        pump_all([client], lambda: False, "nothing", seconds)
    except AssertionError:
        pass


def test_a_killed_program_leaves_a_recording_readable_to_its_last_event(
    tmp_path: Path, checker: Callable[[Path], peers.Counts]
) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    records = tmp_path / "rec"
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--record", str(records))
    program = python_program(tmp_path, lpm_dir, "steady.py", str(tmp_path / "never"))
    client = WireClient(address)
    try:
        client.call("subscribe", sources="all")
        pump_all([client], lambda: any(len(markers(s)) > 100 for s in client.got.streams.values()), "markers")
        program.send_signal(signal.SIGKILL)
        program.wait(PATIENCE)
        pump_all([client], lambda: len(gone(client)) == 1, "the server to see the program gone")
        (source,) = gone(client)
        info = sources_by_name(client)[f"python-{program.pid}"]
        assert info["live"] is False and info["ended"] is False  # killed: no end marker
        (path,) = records.glob(f"{source}-*.eventlog")
        items = read_events(path.read_bytes())  # strict: every byte is a whole event
        end = items[-1]
        assert isinstance(end, EndOfStream) and not end.complete and end.pending == 0
        recorded = [e.marker for e in items if isinstance(e, ev.UserMarker)]
        assert recorded == markers(client.got.streams[source])
        assert len(recorded) > 100
        checker(path)
        # The server keeps the state of a program that is gone.
        client.call("state", source=source)
        client.read_until(lambda: len(client.got.states.get(source, [])) >= 2)
        assert client.got.states[source][-1]["state"]["by_type"]["UserMarker"] == len(recorded)
    finally:
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert server.returncode == 0


def test_garbage_restarts_and_cut_streams_never_stop_the_others(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    good = sample_eventlog(seed=3)
    # A file: garbage, a whole log, garbage, a restarted log cut inside an event.
    messy = tmp_path / "messy.eventlog"
    messy.write_bytes(b"garbage!" * 100 + good + os.urandom(300).replace(b"hdrb", b"xxxx") + good[: len(good) - 3])
    fifo = tmp_path / "cut.fifo"
    os.mkfifo(fifo, 0o600)
    records = tmp_path / "rec"
    server, address = start_server(
        tmp_path, "--dir", str(lpm_dir), "--file", str(messy), "--fifo", str(fifo), "--record", str(records)
    )
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    client = WireClient(address)
    try:
        client.call("subscribe", sources="all")
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, b"\x00\x01junk" + good[: len(good) // 2 + 5])  # stops mid-event
        os.close(writer)
        def ended(name: str) -> bool:
            found = sources_by_name(client).get(name)
            return found is not None and found["live"] is False

        wait_for(lambda: ended("messy.eventlog") and ended("cut.fifo"), "the file and the FIFO to end")
        pump_all([client], lambda: any(len(markers(s)) > 50 for s in client.got.streams.values()), "the program")
        until.write_text("")
        program.wait(PATIENCE)
        pump_all([client], lambda: ended(f"python-{program.pid}"), "the program to end")
        sources = sources_by_name(client)
        assert sources["messy.eventlog"]["skipped_bytes"] >= 800 + 300
        # The file was read before the client came: its recording shows what the
        # server made of it, the whole log inside the garbage byte for byte, then
        # the restarted one up to its last whole event.
        messy_id = sources["messy.eventlog"]["id"]
        first_stream, restarted = sorted(records.glob(f"{messy_id}-*.eventlog"), key=lambda p: len(p.name))
        assert first_stream.read_bytes() == good
        cut_short = read_events(restarted.read_bytes())
        assert isinstance(cut_short[-1], EndOfStream) and cut_short[-1].pending == 0 and not cut_short[-1].complete
        state = client.got.states[messy_id][0]["state"]
        assert state["headers"] == 2
        cut = read_events(bytes(client.got.streams[sources["cut.fifo"]["id"]]))
        assert isinstance(cut[-1], EndOfStream) and cut[-1].pending == 0, "only whole events were forwarded"
        steady = sources[f"python-{program.pid}"]
        ticks = markers(client.got.streams[steady["id"]])
        assert ticks == [f"tick {i}" for i in range(len(ticks))] and len(ticks) > 50
        assert server.poll() is None
    finally:
        until.write_text("")
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert server.returncode == 0


def test_recordings_replayed_fast_and_at_their_own_pace(tmp_path: Path) -> None:
    fast, paced = tmp_path / "fast.eventlog", tmp_path / "paced.eventlog"
    fast.write_bytes(sample_eventlog(seed=5))
    paced.write_bytes(sample_eventlog(seed=6, seconds=2))
    started = time.monotonic()
    server, address = start_server(
        tmp_path, "--no-discover", "--replay", str(fast), "--speed", "0", "--record", str(tmp_path / "rec")
    )
    client = WireClient(address)
    try:

        def ended(name: str) -> bool:
            found = sources_by_name(client).get(name)
            return found is not None and found["ended"] is True

        wait_for(lambda: ended("fast.eventlog"), "the fast replay")
        (recorded,) = (tmp_path / "rec").glob("*-fast.eventlog.eventlog")
        assert recorded.read_bytes() == fast.read_bytes()
        source = sources_by_name(client)["fast.eventlog"]
        assert source["kind"] == "replay"
        client.call("state", source=source["id"])
        client.read_until(lambda: source["id"] in client.got.states)
        state = SourceState()
        for item in read_events(fast.read_bytes()):
            if isinstance(item, ev.Event):
                state.add(item)
            elif isinstance(item, Header):
                state.new_header()
        assert client.got.states[source["id"]][0]["state"] == state.snapshot()
    finally:
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert time.monotonic() - started < 60

    server, address = start_server(tmp_path, "--no-discover", "--replay", str(paced), "--speed", "1")
    client = WireClient(address)
    started = time.monotonic()
    try:
        wait_for(lambda: sources_by_name(client)["paced.eventlog"]["ended"] is True, "the paced replay")
        # Its events span two seconds, so at speed 1 it cannot end sooner.
        assert time.monotonic() - started >= 1.5
    finally:
        client.close()
        server.terminate()
        server.wait(PATIENCE)


def test_the_help_documents_every_option() -> None:
    out = subprocess.run([sys.executable, "-m", "lpm", "server", "--help"], capture_output=True, text=True, check=False,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    for option in ("--listen", "--dir", "--no-discover", "--fifo", "--file", "--replay", "--speed", "--record",
                   "--queue", "--max-clients", "--max-sources", "--max-threads"):
        assert option in out.stdout


def test_bad_clients_and_a_random_source_are_dropped_alone(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    noise = tmp_path / "noise.fifo"
    os.mkfifo(noise, 0o600)
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--fifo", str(noise))
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    good = WireClient(address)
    silent = WireClient(address)  # connects and never says a word
    try:
        good.call("subscribe", sources="all")
        writer = os.open(noise, os.O_WRONLY)
        rng = random.Random(11)
        os.write(writer, bytes(rng.getrandbits(8) for _ in range(200_000)).replace(b"hdrb", b"xxxx"))
        os.close(writer)
        for garbage in (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a frame at all
            encode_frame(Frame(Kind.SERVICE, 0, b"{not json")),
            encode_frame(Frame(Kind.EVENTS, 0, b"events from a client")),
            encode_frame(Frame(Kind.SERVICE, 0, service.request(1, "subscribe")))[:-3],  # then hangs up mid-frame
        ):
            bad = socket.create_connection(address, timeout=PATIENCE)
            bad.sendall(garbage)
            if garbage.startswith(b"LPMF") and not garbage.endswith(b"}"):
                bad.close()
                continue
            bad.settimeout(PATIENCE)
            reply = b""
            while True:  # until the server hangs up on it (notices to every client may come first)
                chunk = bad.recv(1 << 16)
                if not chunk:
                    break
                reply += chunk
            assert b"error" in reply, f"{garbage!r} got {reply!r}"
            bad.close()
        pump_all([good], lambda: any(len(markers(s)) > 100 for s in good.got.streams.values()), "the program")
        until.write_text("")
        program.wait(PATIENCE)
        sources = sources_by_name(good)
        assert sources["noise.fifo"]["skipped_bytes"] >= 190_000 and sources["noise.fifo"]["events"] == 0
        steady = sources[f"python-{program.pid}"]
        pump_all([good], lambda: sources_by_name(good)[f"python-{program.pid}"]["live"] is False, "the program to end")
        ticks = markers(good.got.streams[steady["id"]])
        assert ticks == [f"tick {i}" for i in range(len(ticks))]
        assert silent.call("sources")["result"], "the silent client is still served"
        log = (tmp_path / "server.log").read_text()
        assert "protocol error" in log
    finally:
        until.write_text("")
        good.close()
        silent.close()
        server.terminate()
        server.wait(PATIENCE)
    assert server.returncode == 0


def test_a_program_shorter_than_a_scan_is_not_lost(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address = start_server(tmp_path, "--dir", str(lpm_dir))
    script = tmp_path / "quick.py"
    script.write_text("import lpm, sys\nlpm.marker(sys.argv[1])\n")
    client = WireClient(address)
    try:
        wait_for(lambda: (lpm_dir / "lpm-server.pid").exists(), "the server to mark the directory")
        # Each lives a few milliseconds with its FIFO; without waiting for the
        # server at exit, most would end before its scan found them.
        for i in range(5):
            done = subprocess.run([sys.executable, "-m", "lpm", "run", str(script), f"quick {i}"], timeout=PATIENCE,
                                  env=dict(os.environ, LPM_DIR=str(lpm_dir)), capture_output=True)
            assert done.returncode == 0, done.stderr
        wait_for(lambda: sum(s["ended"] for s in sources_by_name(client).values()) == 5, "every program's whole stream")
        for source in sources_by_name(client).values():
            client.call("state", source=source["id"])
            client.read_until(lambda: source["id"] in client.got.states)
            assert [m["name"] for m in client.got.states[source["id"]][-1]["state"]["markers"]] in (
                [[f"quick {i}"] for i in range(5)]
            )
    finally:
        client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert not (lpm_dir / "lpm-server.pid").exists(), "the server takes its mark away"
    # A mark left by a server that is gone does not make programs wait.
    (lpm_dir / "lpm-server.pid").write_text("999999999\n")
    from lpm.leech import paths

    assert not paths.server_watching(str(lpm_dir))
