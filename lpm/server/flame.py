"""Stack samples merged for flame graphs: the whole run and the last minute.

A flame graph needs whole stacks, which the hottest-functions table of
:mod:`lpm.server.state` throws away.  :class:`Stacks` keeps them two ways,
both bounded:

- the whole run as a tree (root: the outermost frame), each node counting
  the samples whose stack passes through it; past :data:`MAX_NODES` nodes a
  sample's deeper frames are counted at the deepest node it already has
  (``truncated`` says how many samples that cut);
- the last :data:`WINDOW` seconds as one counter of distinct stacks per
  second of the program's clock, merged into a tree on request.

Either becomes JSON as ``{"name", "file", "line", "value", "children"}``
from the root ``all``, children by value, at most ``max_nodes`` of them (the
smallest merged into one ``(other)`` child), the shape speedscope and d3
flame graphs read.
"""

from __future__ import annotations

import collections
from typing import Any, Counter, Deque, Dict, List, Tuple

#: (name, file, first line) of a function.
Frame = Tuple[str, str, int]
Stack = Tuple[Frame, ...]

#: Nodes of the whole-run tree at most.
MAX_NODES = 50_000
#: Seconds of per-second stack counts kept.
WINDOW = 60
#: Distinct stacks kept per second.
MAX_STACKS_PER_SECOND = 5_000
ROOT: Frame = ("all", "", 0)


class _Node:
    __slots__ = ("value", "children")

    def __init__(self) -> None:
        self.value = 0
        self.children: Dict[Frame, _Node] = {}


class Stacks:
    def __init__(self, max_nodes: int = MAX_NODES, window: int = WINDOW) -> None:
        self.max_nodes = max_nodes
        self.window = window
        self.root = _Node()
        self.nodes = 1
        self.truncated = 0
        self._seconds: Deque[Tuple[int, Counter[Stack]]] = collections.deque()

    def add(self, ts: int, stack: Stack) -> None:
        """One sample at ``ts`` (ns) whose frames run root first."""
        node = self.root
        node.value += 1
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                if self.nodes >= self.max_nodes:
                    self.truncated += 1
                    break
                child = node.children[frame] = _Node()
                self.nodes += 1
            child.value += 1
            node = child
        second = ts // 1_000_000_000
        if not self._seconds or self._seconds[-1][0] != second:
            if self._seconds and second < self._seconds[-1][0]:
                second = self._seconds[-1][0]  # a thread's late block: count it in the newest second
            else:
                self._seconds.append((second, collections.Counter()))
                while self._seconds and self._seconds[0][0] <= second - self.window:
                    self._seconds.popleft()
        counts = self._seconds[-1][1]
        if stack in counts or len(counts) < MAX_STACKS_PER_SECOND:
            counts[stack] += 1

    def tree(self, seconds: int = 0, max_nodes: int = 2_000) -> Dict[str, Any]:
        """The flame tree of the whole run (``seconds`` 0) or of the last
        ``seconds`` seconds of samples (at most the window)."""
        if seconds <= 0:
            return _json(ROOT, self.root, max_nodes)
        root = _Node()
        if self._seconds:
            newest = self._seconds[-1][0]
            for second, counts in self._seconds:
                if second > newest - seconds:
                    for stack, n in counts.items():
                        _add(root, stack, n)
        return _json(ROOT, root, max_nodes)


def _add(root: _Node, stack: Stack, n: int) -> None:
    node = root
    node.value += n
    for frame in stack:
        child = node.children.get(frame)
        if child is None:
            child = node.children[frame] = _Node()
        child.value += n
        node = child


def _json(frame: Frame, node: _Node, max_nodes: int) -> Dict[str, Any]:
    """Breadth first, biggest first, so a cap cuts the thinnest branches."""
    out: Dict[str, Any] = {"name": frame[0], "file": frame[1], "line": frame[2], "value": node.value, "children": []}
    budget = max_nodes - 1
    queue: Deque[Tuple[_Node, List[Dict[str, Any]]]] = collections.deque([(node, out["children"])])
    while queue:
        parent, children = queue.popleft()
        items = sorted(parent.children.items(), key=lambda kv: kv[1].value, reverse=True)
        other = 0
        for child_frame, child in items:
            if budget <= 0:
                other += child.value
                continue
            budget -= 1
            entry: Dict[str, Any] = {"name": child_frame[0], "file": child_frame[1], "line": child_frame[2],
                                     "value": child.value, "children": []}
            children.append(entry)
            queue.append((child, entry["children"]))
        if other:
            children.append({"name": "(other)", "file": "", "line": 0, "value": other, "children": []})
    return out


__all__: List[str] = ["Stacks", "Frame", "Stack", "MAX_NODES", "WINDOW"]
