"""A small program for the demo: worker threads parse and crunch, the main
thread serves batches, with spans, markers, counters and some garbage.

Run it as ``python -m lpm run -m lpm.cli.sample_app --seconds 5``.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time

import lpm


def parse(rnd: random.Random) -> list[dict[str, object]]:
    doc = json.dumps([{"id": i, "tags": [rnd.random() for _ in range(8)]} for i in range(200)])
    return list(json.loads(doc))


def crunch(rows: list[dict[str, object]]) -> float:
    total = 0.0
    for row in rows:
        tags = row["tags"]
        assert isinstance(tags, list)
        total += sum(x * x for x in tags)
    return total


def make_garbage() -> None:
    nodes: list[dict[str, object]] = []
    for i in range(2000):
        node: dict[str, object] = {"i": i}
        node["self"] = node  # a cycle only the collector frees
        nodes.append(node)


def worker(name: str, stop: threading.Event, done: list[int]) -> None:
    rnd = random.Random(name)
    while not stop.is_set():
        with lpm.span("job"):
            crunch(parse(rnd))
            make_garbage()
        done[0] += 1
        lpm.counter("jobs done", done[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()
    stop = threading.Event()
    done = [0]
    pool = [threading.Thread(target=worker, args=(f"worker-{i}", stop, done), name=f"worker-{i}") for i in range(args.threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + args.seconds
    batch = 0
    while time.monotonic() < deadline:
        batch += 1
        lpm.marker(f"batch {batch}")
        time.sleep(0.25)
    stop.set()
    for t in pool:
        t.join()
    lpm.message(f"finished {done[0]} jobs in {batch} batches")


if __name__ == "__main__":
    main()
