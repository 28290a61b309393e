"""Run a Python program under the leech, unchanged.

    python -m lpm run [options] script.py [args...]
    python -m lpm run [options] -m module [args...]

The program sees the argv it would see without lpm, and lpm exits with the
program's exit status.  Its events stream into a FIFO in the lpm directory
(printed on stderr with -v), where `lpm show` or the server reads them; with
nobody reading, the program runs at full speed and the leech keeps a bounded
backlog.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback

from ..errors import CommandError
from ..leech import config as leech_config

HELP = "run a Python script or module with the leech streaming its events"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = leech_config.LeechConfig()
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script, like python -m")
    parser.add_argument(
        "--sample-rate", type=float, metavar="HZ", help=f"stack samples per second, 0 for none (default {defaults.sample_rate:g})"
    )
    parser.add_argument(
        "--heap-interval", type=float, metavar="S", help=f"seconds between heap figures (default {defaults.heap_interval:g})"
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        metavar="S",
        help=f"seconds between flushes of partly filled buffers (default {defaults.flush_interval:g})",
    )
    parser.add_argument(
        "--budget", type=int, metavar="BYTES", help=f"bytes of event buffers in all (default {defaults.budget})"
    )
    parser.add_argument("--dir", dest="directory", metavar="DIR", help="directory for the FIFOs (default: $LPM_DIR, ...)")
    parser.add_argument(
        "--implementation",
        choices=["auto", "native", "python"],
        help="native (C) or python leech (default auto: native when it loads)",
    )
    parser.add_argument("target", nargs="?", metavar="script.py", help="the program to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")


def run(args: argparse.Namespace) -> int:
    import lpm

    if args.module is None and args.target is None:
        raise CommandError("name a script to run, or -m MODULE", exit_code=2)
    settings = {
        "sample_rate": args.sample_rate,
        "heap_interval": args.heap_interval,
        "flush_interval": args.flush_interval,
        "budget": args.budget,
        "directory": args.directory,
        "implementation": args.implementation,
    }
    if args.module is not None:
        argv = [args.module] + ([args.target] if args.target is not None else []) + args.args
    else:
        if not os.path.exists(args.target):
            raise CommandError(f"cannot run {args.target}: no such file", exit_code=2)
        argv = [args.target] + args.args
    leech = lpm.start(**settings)
    import logging

    logging.getLogger("lpm").info("streaming to %s", leech.data_path)
    sys.argv = argv
    code = 0
    try:
        if args.module is not None:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(args.target)))
            runpy.run_path(args.target, run_name="__main__")
    except SystemExit as exit:
        code = _exit_code(exit.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        lpm.stop()
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
