#!/usr/bin/env python3
"""Bench workload "gc": allocation- and collector-heavy Python code.

Builds trees whose nodes point to their parent and their children (reference
cycles only the cyclic GC can free) and dicts that refer to themselves, drops
them, and repeats, with the collector at its default thresholds.  Prints
``BENCH_ELAPSED <seconds>`` for the hot section only and ``BENCH_MAXRSS <KiB>`` (peak RSS).

Scale: argv[1], else $LPM_BENCH_SCALE, else 1.0 (about 1.2 s plain).
"""

from __future__ import annotations

import gc
from typing import Any, Dict, List, Optional

from harness import run


class Node:
    __slots__ = ("parent", "children", "payload", "__weakref__")

    def __init__(self, parent: Optional[Node], payload: Dict[str, Any]) -> None:
        self.parent = parent
        self.children: List[Node] = []
        self.payload = payload


def tree(depth: int, fanout: int, parent: Optional[Node] = None) -> Node:
    info: Dict[str, Any] = {"depth": depth, "tags": [depth, fanout], "name": f"n{depth}"}
    info["self"] = info  # a dict in a cycle with itself
    node = Node(parent, info)
    if depth > 0:
        for _ in range(fanout):
            node.children.append(tree(depth - 1, fanout, node))
    return node


def count(node: Node) -> int:
    return 1 + sum(count(c) for c in node.children)


def work(factor: float) -> int:
    total = 0
    keep: List[Node] = []
    for i in range(max(1, round(45 * factor))):
        root = tree(6, 4)  # 5461 nodes, each with a self-referencing dict
        total += count(root)
        keep.append(root)
        if len(keep) > 3:  # a few trees stay alive for a while, so older generations fill up
            keep.pop(0)
    total += gc.collect()
    return total


if __name__ == "__main__":
    run(work)
