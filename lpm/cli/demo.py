"""Watch a sample program live, the whole way: the program runs under the
leech (python -m lpm run -m lpm.cli.sample_app), a server (python -m lpm
server, on a free loopback port, watching a private directory) reads it, and
this command is a client of that server.

On a terminal it shows the `top` view (q quits).  Otherwise it prints the
interesting events as they arrive and, at the end, the count of every event
type and the proof, per thread, that nothing was lost silently.  The program
and the server are stopped when it ends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from typing import Any, Callable

from ..errors import CommandError
from ..eventlog import Event, Header
from ..eventlog import events as ev
from ..eventlog.accounting import Accounting

HELP = "run a sample program under the leech and watch its events live"

#: Event types worth a line each; samples, code and settings are only counted.
SHOWN = (
    ev.CreateThread,
    ev.ThreadLabel,
    ev.StopThread,
    ev.UserMarker,
    ev.UserMessage,
    ev.PyHeap,
    ev.PyDataLoss,
    ev.RtsIdentifier,
    ev.ProgramArgs,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the sample program runs (default 5)")
    parser.add_argument("--all", action="store_true", help="print every event, samples included")
    parser.add_argument(
        "--implementation", choices=["auto", "native", "python"], default="auto", help="which leech (default auto)"
    )
    parser.add_argument("--plain", action="store_true", help="print events and counts even on a terminal (no top view)")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lpm-demo-") as lpm_dir:
        os.chmod(lpm_dir, 0o700)
        env = dict(os.environ, LPM_DIR=lpm_dir)
        server = subprocess.Popen(
            [sys.executable, "-m", "lpm", "server", "--listen", "127.0.0.1:0", "--dir", lpm_dir],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        app: subprocess.Popen[bytes] | None = None
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if "listening on" not in line:
                raise CommandError(f"the server did not start: {line.strip() or 'no output'}")
            host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
            address = (host, int(port))
            cmd = [sys.executable, "-m", "lpm", "run", "--implementation", args.implementation]
            cmd += ["-m", "lpm.cli.sample_app", "--seconds", str(args.seconds)]
            print(f"== server on {host}:{port}; running: {' '.join(cmd[1:])}", flush=True)
            if sys.stdout.isatty() and not args.plain:
                app = subprocess.Popen(cmd, env=env)
                return _top(address, app)
            # Subscribed before the program starts, the watcher sees every
            # event from its first (a client that joins later gets a
            # snapshot, not the thread announcements already made).
            _, watch = _watcher(address, args.all)
            app = subprocess.Popen(cmd, env=env)
            return watch(app)
        finally:
            if app is not None and app.poll() is None:
                app.terminate()
            if app is not None:
                app.wait()
            server.terminate()
            server.wait()


def _top(address: tuple[str, int], app: subprocess.Popen[bytes]) -> int:
    from ..client import Client, ServiceError
    from ..views.top import TopView, run_curses

    view = TopView()
    client = Client(address, on_state=view.update).start()

    def refresh() -> None:
        try:
            for source in client.call("sources"):
                if source["id"] not in view.snapshots or source["live"]:
                    client.call("state", source=source["id"])
            view.status = "" if app.poll() is None else f"the sample program has ended ({app.returncode}); q quits"
        except (ConnectionError, TimeoutError, ServiceError) as err:
            view.status = f"server: {err}"

    def pause(source: int, paused: bool) -> str:
        try:
            client.call("pause" if paused else "resume", source=source)
        except (ConnectionError, TimeoutError, ServiceError) as err:
            return str(err)
        return "paused" if paused else "resumed"

    try:
        run_curses(view, refresh, 0.5, pause)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _watcher(address: tuple[str, int], show_all: bool) -> tuple[Any, Callable[[subprocess.Popen[bytes]], int]]:
    """A client subscribed to every source, connected; and what waits for
    the program and prints the summary."""
    from ..client import Client

    counts: Counter[str] = Counter()
    accounts = Accounting()
    threads: dict[int, str] = {}
    done = threading.Event()

    def on_header(source: int, header: Header) -> None:
        accounts.reset()

    def on_event(source: int, item: Event) -> None:
        counts[type(item).__name__] += 1
        accounts.add(item)
        if isinstance(item, ev.ThreadLabel):
            threads[item.thread] = item.label
        if show_all or isinstance(item, SHOWN):
            print(f"{item.ts / 1e9:9.3f}s  {item.describe()}", flush=True)

    def on_service(message: dict[str, object]) -> None:
        if message.get("notice") == "source-gone":
            done.set()

    client = Client(address, subscribe={"sources": "all"}, on_header=on_header, on_event=on_event,
                    on_service=on_service).start()
    client.connected.wait(10)
    try:
        client.call("sources", 10)  # answered after the subscription: it is in place
    except (ConnectionError, TimeoutError):
        pass

    def watch(app: subprocess.Popen[bytes]) -> int:
        complete = False
        try:
            while not done.wait(0.1):
                if app.poll() is not None and not client.connected.is_set():
                    break
            try:
                info = [s for s in client.call("sources") if s["kind"] == "leech"]
                complete = bool(info) and all(s["ended"] for s in info)
            except (ConnectionError, TimeoutError):
                pass
        finally:
            client.close()
        return _summary(counts, accounts, threads, complete, app)

    return client, watch


def _summary(counts: Counter[str], accounts: Accounting, threads: dict[int, str], complete: bool, app: subprocess.Popen[bytes]) -> int:
    code = app.wait()
    print(f"\n== the program exited with status {code}; its stream {'is complete' if complete else 'stopped early'}")
    print("\n== events per type")
    for name, n in counts.most_common():
        print(f"  {n:8d}  {name}")
    print("\n== per thread: received + reported lost = produced")
    for number, acct in sorted(accounts.threads.items()):
        verdict = "ok" if acct.balanced else f"UNACCOUNTED {acct.unreported}"
        print(
            f"  thread {number:3d} {threads.get(number, '?'):14s} received {acct.received:6d}"
            f"  lost {acct.lost:5d}  produced {acct.produced if acct.produced is not None else '?':>6}  {verdict}"
        )
    return 0 if complete else 1
