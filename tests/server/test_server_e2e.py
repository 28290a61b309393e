"""The server with real processes on loopback: two Python programs under the
leech and a GHC program writing into a FIFO, one server, three TCP clients
(one from the start, one that joins late, one that never reads)."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List

from lpm.eventlog import Header, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.accounting import Accounting
from lpm.server.state import SourceState

from ..ghc import peers
from .wire import WireClient, first, pump_all, python_program, sources_by_name, start_server, wait_for

PATIENCE = 60.0


def decoded(stream: bytes | bytearray) -> List[Any]:
    return read_events(bytes(stream))


def account(items: List[Any]) -> Accounting:
    acct = Accounting()
    for item in items:
        if isinstance(item, Header):
            acct.reset()
        elif isinstance(item, ev.Event):
            acct.add(item)
    return acct


def type_counts(items: List[Any]) -> Counter[str]:
    return Counter(type(e).__name__ for e in items if isinstance(e, ev.Event) and not isinstance(e, ev.EventBlock))


def rebuilt_state(items: List[Any], upto: int | None = None) -> Dict[str, Any]:
    """The state a SourceState holds after the first ``upto`` events of a stream."""
    state = SourceState()
    n = 0
    for item in items:
        if isinstance(item, Header):
            state.new_header()
        elif isinstance(item, ev.Event):
            if upto is not None and n >= upto:
                break
            state.add(item)
            n += 1
    return state.snapshot()


def test_three_sources_three_clients(
    tmp_path: Path, binaries: Dict[str, Path], checker: Callable[[Path], peers.Counts]
) -> None:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    fifo = tmp_path / "ghc.fifo"
    os.mkfifo(fifo, 0o600)
    records = tmp_path / "rec"
    server, address = start_server(
        tmp_path, "--dir", str(lpm_dir), "--fifo", str(fifo), "--record", str(records), "--queue", "262144"
    )
    procs: List[subprocess.Popen[bytes]] = []
    clients: List[WireClient] = []
    try:
        early = WireClient(address)
        clients.append(early)
        assert early.call("subscribe", sources="all")["result"] == {"sources": [1]}  # the GHC FIFO, waiting
        stalled = WireClient(address, rcvbuf=4096)
        clients.append(stalled)
        stalled.request("subscribe", sources="all")  # and never reads again until the end
        # The others read all the time: a client that stops reading is a stalled one.

        until = tmp_path / "stop-steady"
        steady = python_program(tmp_path, lpm_dir, "steady.py", str(until))
        gate = tmp_path / "start-workers"
        workers = python_program(tmp_path, lpm_dir, "workers.py", "4", "20000", "5", str(gate))
        procs += [steady, workers]
        ghc = subprocess.Popen(
            [str(binaries["Threads"]), "+RTS", "-l", f"-ol{fifo}", "-N2", "-RTS"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=peers.PEER_ENV,
        )
        procs.append(ghc)

        def steady_events() -> int:
            found = first(list(sources_by_name(early).values()), lambda s: s["pid"] == steady.pid)
            return 0 if found is None else int(found["events"])

        def listed(pid: int) -> bool:
            return any(s["pid"] == pid for s in sources_by_name(early).values())

        wait_for(lambda: early.pump() and listed(workers.pid), "the server to find the workers program")
        gate.write_text("")
        pump_all([early], lambda: workers.poll() is not None, "the workers program to end")
        wait_for(lambda: early.pump() and steady_events() > 300, "the steady program's events")
        late = WireClient(address)
        clients.append(late)
        late.call("subscribe", sources="all")
        try:
            late.read_until(lambda: len(late.got.states) >= 3, 10)
        except AssertionError:
            raise AssertionError(f"{late.got.replies} {late.got.errors} {list(late.got.states)} {sources_by_name(early)}")
        early.pump()
        until.write_text("")
        pump_all([early, late], lambda: all(p.poll() is not None for p in procs), "the programs to end")
        assert steady.returncode == 0, steady.stderr.read() if steady.stderr else ""
        assert workers.returncode == 7
        assert ghc.returncode == 0
        ticks = int(steady.stdout.read() if steady.stdout else b"0")

        def gone(client: WireClient) -> set[int]:
            return {n["source"] for n in client.got.notices if n["notice"] == "source-gone"}

        early.read_until(lambda: len(gone(early)) >= 3)
        sources = sources_by_name(early)
        by_pid = {s["pid"]: s for s in sources.values()}
        steady_id, workers_id = by_pid[steady.pid]["id"], by_pid[workers.pid]["id"]
        ghc_id = sources[fifo.name]["id"]
        late.read_until(lambda: steady_id in gone(late))

        for client in (early, late):
            assert not [n for n in client.got.notices if n["notice"] == "dropped"], "a client that reads loses nothing"
        # Every healthy client's stream balances exactly, per thread, per source
        # (the late client joined after the workers program had ended).
        for client, source_id in ((early, steady_id), (early, workers_id), (late, steady_id)):
            acct = account(decoded(client.got.streams[source_id]))
            assert acct.threads, f"client saw no threads of source {source_id}: {type_counts(decoded(client.got.streams[source_id]))} {sources}"
            (tmp_path / f"got-{client is early}-{source_id}.eventlog").write_bytes(bytes(client.got.streams[source_id]))
            for number, thread in acct.threads.items():
                assert thread.balanced, f"source {source_id} thread {number}: {thread} {sources}"
                assert thread.gaps == 0
        early_steady = decoded(early.got.streams[steady_id])
        ticks_seen = [e.marker for e in early_steady if isinstance(e, ev.UserMarker)]
        assert ticks_seen == [f"tick {i}" for i in range(ticks)], "the early client got every marker, in order"
        late_ticks = [int(e.marker.split()[1]) for e in decoded(late.got.streams[steady_id]) if isinstance(e, ev.UserMarker)]
        assert late_ticks and late_ticks == list(range(late_ticks[0], ticks)), "the late client got every marker after it joined"
        worker_markers = [e for e in decoded(early.got.streams[workers_id]) if isinstance(e, ev.UserMarker)]
        assert len(worker_markers) == 4 * 20000 + 2

        # The late client's snapshot is the state the server had when it joined.
        for source_id in (steady_id, workers_id, ghc_id):
            snapshot = late.got.states[source_id][0]["state"]
            expected = rebuilt_state(decoded(early.got.streams[source_id]), snapshot["events"])
            assert snapshot == expected
        # And the final state is what a client rebuilds from the whole stream.
        final = early.call("state", source=steady_id)
        assert final["result"] == {"source": steady_id}
        early.read_until(lambda: len(early.got.states[steady_id]) >= 2)
        assert early.got.states[steady_id][-1]["state"] == rebuilt_state(early_steady)

        # The GHC program's stream, as the early client got it and as recorded,
        # is what ghc-events reads.
        ghc_items = decoded(early.got.streams[ghc_id])
        recorded = sorted(records.glob(f"{ghc_id}-*.eventlog"))
        assert len(recorded) == 1
        theirs = checker(recorded[0])
        assert theirs.by_name == {k: v for k, v in peers.by_name(Counter(peers.type_id_of(e) for e in ghc_items if isinstance(e, ev.Event))).items()}
        for source_id in (steady_id, workers_id):
            (path,) = records.glob(f"{source_id}-*.eventlog")
            assert type_counts(read_events(path.read_bytes())) == type_counts(decoded(early.got.streams[source_id]))
            checker(path)

        # The client that never read lost events and is told so, or was cut off.
        try:
            pump_all([stalled], lambda: stalled.closed or any(n["notice"] == "dropped" for n in stalled.got.notices),
                     "the stalled client to hear of its loss", 10)
        except AssertionError:
            raise AssertionError(f"{ {k: len(v) for k, v in stalled.got.streams.items()} } {stalled.got.notices} {stalled.got.replies} {stalled.got.errors}") from None
        dropped = [n for n in stalled.got.notices if n["notice"] == "dropped"]
        assert stalled.closed or sum(n["events"] for n in dropped) > 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for client in clients:
            client.close()
        server.terminate()
        server.wait(PATIENCE)
    assert server.returncode == 0, (tmp_path / "server.log").read_text()
