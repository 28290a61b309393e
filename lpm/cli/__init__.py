"""``python -m lpm``: the command line.

Each subcommand is a module in this package with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
in the order ``--help`` shows them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from .. import __version__
from ..errors import CommandError, LpmError
from . import demo, run, show

COMMANDS: dict[str, ModuleType] = {"run": run, "show": show, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpm",
        description="Live profile monitor for Python (and GHC) programs, speaking the GHC eventlog format.",
    )
    parser.add_argument("--version", action="version", version=f"lpm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug output)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    program: list[str] | None = None
    if "run" in words:
        # What follows the program's name is the program's own: keep argparse away.
        at = words.index("run") + 1
        own, program = run.split_program(words[at:])
        words = words[:at] + own
    args = parser.parse_args(words)
    if program is not None:
        args.program = program
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="lpm: %(levelname)s: %(message)s",
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(COMMANDS[args.command].run(args))
    except CommandError as err:
        print(f"lpm {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except LpmError as err:
        print(f"lpm {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
