#!/usr/bin/env python3
"""Bench workload "json": json.dumps and json.loads of a ~1 MB document, repeatedly.

Almost all the time is spent in the json module's C accelerator, holding the
GIL: a sampler thread gets few chances to run.  Prints ``BENCH_ELAPSED
<seconds>`` for the hot section only (the document is built before it) and
``BENCH_MAXRSS <KiB>`` (peak RSS).

Scale: argv[1], else $LPM_BENCH_SCALE, else 1.0 (about 1.2 s plain).
"""

from __future__ import annotations

import json
import random
from typing import Any, Dict, List

from harness import run


def document(target_bytes: int = 1_000_000) -> Dict[str, Any]:
    rng = random.Random(42)
    records: List[Dict[str, Any]] = []
    doc: Dict[str, Any] = {"version": 3, "generated": "2024-01-01T00:00:00Z", "records": records}
    size = 0
    i = 0
    while size < target_bytes:
        rec = {
            "id": i,
            "name": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)),
            "score": rng.random() * 1000,
            "active": rng.random() < 0.5,
            "tags": [rng.choice(["red", "green", "blue", "ünïcode", "x\"y"]) for _ in range(4)],
            "nested": {"a": rng.randint(0, 10**9), "b": [rng.random() for _ in range(3)], "c": None},
        }
        records.append(rec)
        size += len(json.dumps(rec)) + 2
        i += 1
    return doc


def work(doc: Dict[str, Any], factor: float) -> int:
    total = 0
    for _ in range(max(1, round(16 * factor))):
        text = json.dumps(doc)
        back = json.loads(text)
        total += len(text) + len(back["records"])
    return total


if __name__ == "__main__":
    doc = document()  # built before the timed section
    run(lambda factor: work(doc, factor))
