"""Faults (issue 8) with real processes: a server SIGKILLed and started again
while a program streams and a client watches."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import List

from lpm.client import Client
from lpm.eventlog import EndOfStream, EventLogReader, events as ev
from lpm.eventlog.reader import NEED_DATA

from .wire import PATIENCE, free_port, python_program, start_server, wait_for



def _ticks(path: Path) -> tuple[List[int], EndOfStream]:
    """The markers of a recording read strictly (a format error fails the
    test), and how it ends."""
    reader = EventLogReader()
    reader.feed(path.read_bytes())
    reader.close()
    ticks: List[int] = []
    while True:
        item = reader.next_event()
        if isinstance(item, EndOfStream):
            return ticks, item
        assert item is not NEED_DATA
        if isinstance(item, ev.UserMarker):
            ticks.append(int(item.marker.split()[1]))


def test_a_server_killed_and_restarted_under_a_program_and_a_client(tmp_path: Path) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    port = free_port()
    common = ["--listen", f"127.0.0.1:{port}", "--dir", str(lpm_dir)]
    first, address = start_server(tmp_path, *common, "--record", str(tmp_path / "first"))
    until = tmp_path / "stop"
    program = python_program(tmp_path, lpm_dir, "steady.py", str(until))
    ticks: List[int] = []
    lock = threading.Lock()

    def on_event(source: int, e: ev.Event) -> None:
        if isinstance(e, ev.UserMarker):
            with lock:
                ticks.append(int(e.marker.split()[1]))

    client = Client(address, subscribe={"sources": "all"}, on_event=on_event, backoff=(0.05, 2.0, 0.5),
                    connect_timeout=PATIENCE).start()
    second = None
    try:
        wait_for(lambda: len(ticks) > 200, "markers through the first server")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(PATIENCE)
        with lock:
            before = max(ticks)
        second, _ = start_server(tmp_path, *common, "--record", str(tmp_path / "second"))
        wait_for(lambda: client.connections == 2, "the client to reconnect")
        wait_for(lambda: max(ticks) > before + 200, "markers through the second server")
        assert program.poll() is None, "the program runs on"
        until.touch()
        assert program.wait(PATIENCE) == 0, "and ends normally"
        assert program.stdout is not None
        emitted = int(program.stdout.read())
    finally:
        client.close()
        if second is not None:
            second.terminate()
            second.wait(PATIENCE)
        if program.poll() is None:
            program.kill()
    # The cut recording reads cleanly up to the cut; the second is whole.
    [cut] = list((tmp_path / "first").glob("*.eventlog"))
    cut_ticks, cut_end = _ticks(cut)
    assert cut_ticks and not cut_end.complete, "a recording cut by the kill, valid up to the cut"
    assert cut_ticks == sorted(cut_ticks)
    [whole] = list((tmp_path / "second").glob("*.eventlog"))
    whole_ticks, whole_end = _ticks(whole)
    assert whole_end.complete and whole_ticks[-1] == emitted - 1, "the second recording runs to the program's end"
    assert whole_ticks[0] > cut_ticks[-1], "it starts after the cut, nothing sent twice"
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks), "the client saw each marker once, in order"
