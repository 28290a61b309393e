"""Show what lpm sees: write the eventlog of a small sample program, then
print its events and a count per type.

The live demo (a program under the leech, the server and the top view) joins
this command when those parts exist.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from types import SimpleNamespace

from ..eventlog.sample import sample_eventlog
from . import show

HELP = "write a sample program's eventlog and show it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="keep the sample eventlog in FILE")
    parser.add_argument("--lines", type=int, default=25, metavar="N", help="events to print (default 25)")


def run(args: argparse.Namespace) -> int:
    data = sample_eventlog()
    if args.out:
        path = args.out
        with open(path, "wb") as f:
            f.write(data)
    else:
        fd, path = tempfile.mkstemp(suffix=".eventlog", prefix="lpm-demo-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    try:
        print(f"== a sample Python program's eventlog: {path} ({len(data)} bytes)\n")
        lines = _capture(lambda: show.run(SimpleNamespace(file=path, stats=False, json=False, no_header=True)))
        shown = lines.splitlines()
        print("\n".join(shown[: args.lines + 1]))
        if len(shown) > args.lines + 1:
            print(f"... {len(shown) - args.lines - 1} more lines (python -m lpm show {path})")
        print("\n== events per type (python -m lpm show --stats FILE)\n")
        return show.run(SimpleNamespace(file=path, stats=True, json=False, no_header=True))
    finally:
        if not args.out:
            os.unlink(path)


def _capture(fn: "object") -> str:
    import io

    old = sys.stdout
    sys.stdout = buf = io.StringIO()
    try:
        fn()  # type: ignore[operator]
    finally:
        sys.stdout = old
    return buf.getvalue()
