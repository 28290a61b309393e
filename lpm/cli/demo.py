"""Show what lpm sees: write the eventlog of a small sample program, then
print its events and a count per type.

The live demo (a program under the leech, the server and the top view) joins
this command when those parts exist.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

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
        text = io.StringIO()
        show.show_file(path, text, header=False)
        shown = text.getvalue().splitlines()
        print("\n".join(shown[: args.lines + 1]))
        if len(shown) > args.lines + 1:
            print(f"... {len(shown) - args.lines - 1} more lines (python -m lpm show {path})")
        print("\n== events per type (python -m lpm show --stats FILE)\n")
        return show.stats_file(path, sys.stdout)
    finally:
        if not args.out:
            os.unlink(path)

