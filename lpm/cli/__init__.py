"""``python -m lpm``: the command line.

Each subcommand is a module in this package with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
in the order ``--help`` shows them.  Only the module of the command given is
imported (all of them for ``--help``): ``lpm run`` shares its process with the
profiled program, and whatever it imports stays alive there.
"""

from __future__ import annotations

import importlib
import sys

from .. import __version__
from ..errors import CommandError, LpmError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import ModuleType
    from typing import Sequence

COMMANDS = ("run", "show", "server", "client", "demo")
#: What parsing imports (argparse's help formatter asks shutil for the
#: terminal's width; shutil brings the compressors) and nothing else uses:
#: ``lpm run`` forgets these once it has its options, when the program had
#: not imported them, so that they are not in the program's heap, each object
#: walked by every full collection the program makes.  Modules with state a
#: second copy would split (threading, re's caches, warnings) stay.
PARSING_ONLY = (
    "argparse", "gettext", "locale", "_locale", "shutil", "fnmatch", "bz2", "_bz2", "lzma", "_lzma", "_compression",
)


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, subcommands other than ``only`` are left out."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lpm",
        description="Live profile monitor for Python (and GHC) programs, speaking the GHC eventlog format.",
    )
    parser.add_argument("--version", action="version", version=f"lpm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug output)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        module = command_module(name)
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
    before = set(sys.modules)
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in words if not word.startswith("-")), None)
    program: list[str] | None = None
    if chosen == "run":
        # What follows the program's name is the program's own: keep argparse away.
        at = words.index("run") + 1
        own, program = command_module("run").split_program(words[at:])
        words = words[:at] + own
    wants_help = "-h" in words or "--help" in words
    parser = build_parser(chosen if chosen in COMMANDS and not wants_help else None)
    args = parser.parse_args(words)
    if program is not None:
        args.program = program
    if args.command != "run" or args.verbose:
        # Not for a quiet `lpm run`: logging is large and would stay in the program's memory.
        import logging

        logging.basicConfig(
            level=logging.WARNING - 10 * min(args.verbose, 2),
            format="lpm: %(levelname)s: %(message)s",
        )
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    command: str = args.command
    options: object = args
    if command == "run":
        # The options as a plain namespace: argparse's Namespace would keep argparse alive.
        from types import SimpleNamespace

        options = SimpleNamespace(**vars(args))
        del parser, args
        forget_modules(before)
    try:
        return int(command_module(command).run(options))
    except CommandError as err:
        print(f"lpm {command}: {err}", file=sys.stderr)
        return err.exit_code
    except LpmError as err:
        print(f"lpm {command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def forget_modules(before: set[str]) -> None:
    """Drops the modules of :data:`PARSING_ONLY` imported since ``before``
    was taken, and collects them (a module's functions and its namespace
    refer to each other: only the cyclic GC frees them)."""
    import gc

    dropped = [name for name in PARSING_ONLY if name not in before and sys.modules.pop(name, None) is not None]
    if dropped:
        gc.collect()
