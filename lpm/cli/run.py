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

import os
import sys

from ..errors import CommandError
from ..leech import config as leech_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import CodeType, ModuleType

HELP = "run a Python script or module with the leech streaming its events"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = leech_config.LeechConfig()
    parser.add_argument(
        "program",
        nargs="*",
        metavar="script.py | -m MODULE",
        help="the program and its arguments (everything after the script or -m MODULE is the program's)",
    )
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
        "--budget", type=int, metavar="BYTES", help=f"bytes of event buffers in all (default {defaults.budget}; {leech_config.TRACE_BUDGET} with --trace)"
    )
    parser.add_argument("--dir", dest="directory", metavar="DIR", help="directory for the FIFOs (default: $LPM_DIR, ...)")
    parser.add_argument(
        "--implementation",
        choices=["auto", "native", "python"],
        help="native (C) or python leech (default auto: native when it loads)",
    )
    parser.add_argument(
        "--trace",
        action="store_const",
        const="on",
        help="trace every call and return of Python and C functions from the start, in every thread "
        "(PyCall/PyReturn events: exact call trees, nested slices in exports); costs what a profiler does, "
        "so it is off by default; the control FIFO's 'trace on|off' switches it at run time",
    )
    parser.add_argument(
        "--asyncio",
        action="store_const",
        const="on",
        help="track asyncio tasks from the start: each task's creation (name, coroutine), start and end, and "
        "each loop's lag (counter asyncio.lag_ms); the control FIFO's 'asyncio on|off' switches it",
    )
    parser.add_argument(
        "--alloc",
        action="store_const",
        const="on",
        help="track allocations from the start (native leech): every thread's bytes allocated and freed, and one "
        "allocation in every --alloc-sample bytes with its stack; the control FIFO's 'alloc on|off' switches it",
    )
    parser.add_argument(
        "--alloc-sample",
        type=int,
        metavar="BYTES",
        help=f"bytes between sampled allocations, 0 for none (default {defaults.alloc_sample})",
    )
    parser.add_argument(
        "--keep-out",
        choices=["on", "off"],
        help="on (default; native leech): lpm's own objects are kept out of the program's garbage collections "
        "while it runs, so its full collections do not walk them (nor does gc.get_objects() list them); "
        "off: they are walked as any other",
    )
    parser.add_argument(
        "--sampler",
        choices=["auto", "gil"],
        help="auto: the native leech samples without taking the GIL where it can (default); "
        "gil: the monitor thread takes the GIL for each sample",
    )


def run(args: argparse.Namespace) -> int:
    import lpm

    program: list[str] = args.program
    module = target = None
    script: tuple[bytes, ModuleType] | None = None
    if program[:1] == ["-m"]:
        if len(program) < 2:
            raise CommandError("-m needs a module name", exit_code=2)
        module, rest = program[1], program[2:]
    elif program:
        target, rest = program[0], program[1:]
    else:
        raise CommandError("name a script to run, or -m MODULE", exit_code=2)
    settings = {
        "sample_rate": args.sample_rate,
        "heap_interval": args.heap_interval,
        "flush_interval": args.flush_interval,
        "budget": args.budget,
        "directory": args.directory,
        "implementation": args.implementation,
        "sampler": args.sampler,
        "trace": args.trace,
        "alloc": args.alloc,
        "alloc_sample": args.alloc_sample,
        "asyncio": args.asyncio,
        "keep_out": args.keep_out,
    }
    if module is not None:
        argv = [module, *rest]
    else:
        assert target is not None
        if not os.path.exists(target):
            raise CommandError(f"cannot run {target}: no such file", exit_code=2)
        argv = [target, *rest]
        script = load_script(target)
    leech = lpm.start(**settings)
    if args.verbose:  # logging only when asked: it would stay in the program's memory
        import logging

        logging.getLogger("lpm").info("streaming to %s", leech.data_path)
    sys.argv = argv
    code = 0
    try:
        if module is not None:
            import runpy

            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            assert target is not None
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            if script is None:
                import runpy

                runpy.run_path(target, run_name="__main__")
            else:
                # Run from here, not from a function of lpm's that starts after
                # the leech: the pure tracer leaves out whatever lpm's code calls.
                source, main = script
                code_object = compile_script(source, str(main.__file__))
                saved = sys.modules.get("__main__")
                sys.modules["__main__"] = main
                try:
                    exec(code_object, main.__dict__)
                finally:
                    if saved is None:
                        sys.modules.pop("__main__", None)
                    else:
                        sys.modules["__main__"] = saved
    except SystemExit as exit:
        code = _exit_code(exit.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback  # only now: it stays in the program's memory

        traceback.print_exc()
        code = 1
    finally:
        lpm.stop()
    return code


def load_script(path: str) -> tuple[bytes, ModuleType] | None:
    """What ``runpy.run_path(path, run_name="__main__")`` makes of a source
    file: its source (for :func:`compile_script`), and the new ``__main__``
    module (with ``__file__`` and ``__package__`` as ``python path`` sets
    them) that it runs in and that stands in ``sys.modules`` while it runs.

    runpy imports pkgutil for it (and, from 3.12, typing behind pkgutil),
    whose objects would stay in the program's heap, each walked by every
    full collection the program makes.  For anything else ``python path``
    runs (a directory or zip archive with ``__main__.py``, a compiled file:
    all hold NUL bytes, or are directories) this gives None: runpy's work."""
    import io  # loaded at start-up: io.open_code, as runpy reads code

    if os.path.isdir(path):
        return None
    path = os.path.abspath(path)  # as python names a script it runs, from 3.9
    with io.open_code(path) as f:
        source = f.read()
    if b"\0" in source:
        return None
    main = type(sys)("__main__")  # types.ModuleType, without importing types
    main.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__=None, __spec__=None)
    return source, main


def compile_script(source: bytes, path: str) -> CodeType:
    """``compile(source, path, "exec")``, without this module's __future__
    flags.  The builtin compile() sets up the ast module's classes (510
    objects on 3.9 to 950 on 3.13) that would then stay in the program's
    heap; the C API's compile does not, so it is called through ctypes when
    the native leech has loaded ctypes already."""
    ctypes = sys.modules.get("ctypes")
    if ctypes is None:
        return compile(source, path, "exec", dont_inherit=True)
    file_input = 257  # Py_file_input
    prototype = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                  ctypes.c_int)
    compile_string = prototype(("Py_CompileStringExFlags", ctypes.pythonapi))
    code: CodeType = compile_string(source, os.fsencode(path), file_input, None, -1)
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


#: run's own options that take a value, so split_program can step over it.
_VALUED = ("--sample-rate", "--heap-interval", "--flush-interval", "--budget", "--dir", "--implementation", "--sampler",
           "--alloc-sample", "--keep-out")


def split_program(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s arguments into its own options and the program's argv.

    The program starts at the first word that is not one of run's options (the
    script), at ``-m`` (the module), or after ``--``; from there on every word is
    the program's, even ones that look like lpm's options.
    """
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[:i], argv[i + 1 :]
        if word == "-m" or not word.startswith("-"):
            return argv[:i], argv[i:]
        i += 2 if word in _VALUED else 1
    return argv, []
