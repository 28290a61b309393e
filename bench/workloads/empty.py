#!/usr/bin/env python3
"""Bench program "empty": no work at all, for start-up and shutdown costs.

Prints ``BENCH_ELAPSED 0`` and ``BENCH_MAXRSS <KiB>`` (peak RSS) like the workloads, so
the whole-process wall, CPU and RSS of a variant can be compared with plain.
"""

from __future__ import annotations

from harness import peak_rss_kib


def main() -> None:
    print("BENCH_ELAPSED 0.000000")
    print(f"BENCH_MAXRSS {peak_rss_kib()}", flush=True)


if __name__ == "__main__":
    main()
