#!/usr/bin/env python3
"""The long fuzz run over every decoder a peer can reach (issue 8).

The quick pass in ``tests/fuzz`` runs a few thousand cases per decoder; this
runs the same fuzzers (:mod:`tests.fuzz.cases`) for as long as it is told, so
that rarer inputs come up, and measures what the quick pass cannot: the
memory each decoder's run peaked at (``tracemalloc`` over the last quarter
of its time, since tracing makes the fuzz up to ten times slower, and the
growth of the process's resident memory over its whole time).

::

    python bench/fuzz.py --seconds 60                 # every decoder, 60 s in all
    python bench/fuzz.py --seconds 600 --seed 7 --decoders http service

For each decoder it prints the count of cases run, cases per second, the
slowest case, the peak memory, and every failure (first input in hex, with
its traceback) grouped by where it was raised; bugs already known
(``KNOWN`` in tests/fuzz/cases.py, each with an xfail reproducer) are marked
so.  Exit status 1 on any failure, known ones included: the run is clean only
when they are fixed.  A failure is replayed by the same ``--seed`` and
``--decoders`` (cases are seeded by seed, decoder and case number).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz import cases  # noqa: E402


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fuzz every lpm decoder (eventlog reader, TCP frames, hub, service messages, UDP datagrams, "
                    "HTTP requests) with seeded mutations of valid inputs; report cases run, rate, peak memory "
                    "and failures.  Exit status 1 on any failure.",
        epilog="decoders: " + ", ".join(cases.FUZZERS))
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="total time, shared equally by the chosen decoders (default 60)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the run (default: from the clock, printed so the run can be replayed)")
    parser.add_argument("--decoders", nargs="+", choices=list(cases.FUZZERS), default=list(cases.FUZZERS),
                        metavar="NAME", help="decoders to fuzz (default: all)")
    parser.add_argument("--case-limit", type=float, default=1.0,
                        help="a case slower than this many seconds is a failure (default 1)")
    parser.add_argument("--memory-limit", type=float, default=64.0,
                        help="a decoder whose traced peak exceeds this many MiB fails (default 64)")
    parser.add_argument("--trace", type=float, default=0.25, metavar="FRACTION",
                        help="the last FRACTION of each decoder's time runs under tracemalloc, which is up "
                             "to ten times slower, to measure its peak (default 0.25; 0: never, 1: always)")
    parser.add_argument("--show", type=int, default=3, help="failures shown in full per decoder (default 3)")
    return parser.parse_args(argv)


def current_rss() -> int:
    """This process's resident memory now, in bytes (0 where /proc is not)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    share = args.seconds / len(args.decoders)
    print(f"fuzz: seed {seed}, {len(args.decoders)} decoders, {share:.1f} s each, case limit {args.case_limit} s, "
          f"python {sys.version.split()[0]}", flush=True)
    reports: List[cases.Report] = []
    over_memory: List[str] = []
    for name in args.decoders:
        fuzzer = cases.FUZZERS[name]()
        traced = share * min(max(args.trace, 0.0), 1.0)
        rss_before = current_rss()
        try:
            # Untraced first (fast), then traced: what the long-lived decoders
            # allocate while the fuzz goes on is in the peak.
            report = cases.run(fuzzer, seed, seconds=share - traced, case_limit=args.case_limit)
            if traced > 0:
                tracemalloc.start()
                try:
                    cases.run(fuzzer, seed, seconds=traced, case_limit=args.case_limit * 10,
                              first=report.cases, report=report)
                    report.peak_bytes = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                if report.peak_bytes > args.memory_limit * (1 << 20):
                    over_memory.append(name)
        finally:
            fuzzer.close()
        rss_growth = (current_rss() - rss_before) / (1 << 20)
        reports.append(report)
        rate = report.cases / report.seconds if report.seconds else 0.0
        peak = f"{report.peak_bytes / (1 << 20):6.1f} MiB" if report.peak_bytes is not None else "   (untraced)"
        status = "ok" if not report.failed else f"{report.failed} FAILED ({len(report.by_signature)} kinds)"
        print(f"  {name:17} {report.cases:9,} cases {rate:8,.0f}/s  slowest {report.slowest * 1000:7.1f} ms  "
              f"traced peak {peak}  RSS {rss_growth:+6.1f} MiB  {status}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(r.cases for r in reports)
    failed = sum(r.failed for r in reports)
    print(f"total: {total:,} cases, {failed:,} failed; max RSS {rss:.0f} MiB")
    for name in over_memory:
        print(f"\nFAILURE {name}: traced peak over {args.memory_limit} MiB")
    for report in reports:
        for kind, count in report.by_signature.items():
            known = cases.known_bug(kind)
            print(f"\nFAILURE {report.decoder}: {count} cases: {kind}" + (f"\n  KNOWN BUG: {known}" if known else ""))
        for failure in report.failures[: args.show]:
            print("  " + failure.describe().replace("\n", "\n  "))
    return 1 if failed or over_memory else 0


if __name__ == "__main__":
    sys.exit(main())
