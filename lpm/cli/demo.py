"""Watch a sample program live: it runs under the leech in a child process
(python -m lpm run -m lpm.cli.sample_app), and this command reads its FIFO as
the events arrive, printing the interesting ones and, at the end, the count of
every event type and the proof that nothing was lost silently.

The server and the top view join this command when they exist.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

from ..errors import CommandError
from ..eventlog import NEED_DATA, EndOfStream, Event, EventLogReader, Header
from ..eventlog import events as ev
from ..eventlog.accounting import Accounting
from ..leech.paths import open_reader

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


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lpm-demo-") as lpm_dir:
        os.chmod(lpm_dir, 0o700)
        env = dict(os.environ, LPM_DIR=lpm_dir)
        cmd = [sys.executable, "-m", "lpm", "run", "--implementation", args.implementation]
        cmd += ["-m", "lpm.cli.sample_app", "--seconds", str(args.seconds)]
        print(f"== running: {' '.join(cmd[1:])}", flush=True)
        app = subprocess.Popen(cmd, env=env)
        try:
            fifo = _wait_for_fifo(lpm_dir, app)
            print(f"== reading its events live from {fifo}\n", flush=True)
            return _watch(fifo, app, args.all)
        finally:
            if app.poll() is None:
                app.terminate()
            app.wait()


def _wait_for_fifo(directory: str, app: subprocess.Popen[bytes]) -> str:
    while True:
        names = [n for n in os.listdir(directory) if n.endswith(".data")]
        if names:
            return os.path.join(directory, names[0])
        if app.poll() is not None:
            raise CommandError(f"the sample program exited ({app.returncode}) before it streamed anything")
        time.sleep(0.01)


def _watch(fifo: str, app: subprocess.Popen[bytes], show_all: bool) -> int:
    reader = EventLogReader()
    counts: Counter[str] = Counter()
    accounts = Accounting()
    threads: dict[int, str] = {}
    with open(open_reader(fifo), "rb", buffering=0) as stream:
        while True:
            data = stream.read(1 << 16)
            if not data:
                reader.close()
            else:
                reader.feed(data)
            for item in reader.events():
                if isinstance(item, Header):
                    accounts.reset()
                elif isinstance(item, Event):
                    counts[type(item).__name__] += 1
                    accounts.add(item)
                    if isinstance(item, ev.ThreadLabel):
                        threads[item.thread] = item.label
                    if show_all or isinstance(item, SHOWN):
                        print(f"{item.ts / 1e9:9.3f}s  {item.describe()}", flush=True)
                elif isinstance(item, EndOfStream):
                    return _summary(counts, accounts, threads, item.complete, app)
            if not data:
                return _summary(counts, accounts, threads, False, app)


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
