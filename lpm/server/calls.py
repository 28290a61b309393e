"""Traced calls (``lpm run --trace``) as exact call trees and durations.

Sans-IO, fed by :class:`lpm.server.state.SourceState` in stream order: each
thread's ``PyCall`` and ``PyReturn`` (a code number each, a timestamp) keep a
stack per thread; every return closes a call, whose duration goes to

- its function: calls, total time (the outermost call of a recursion only,
  so a recursive function's total is the time spent inside it, as cProfile
  counts "cumtime") and own time (minus its callees);
- its node in the call tree: one node per distinct path from a thread's
  outermost traced call, with the calls made along it and their time.

A return matches the innermost open call of its function; calls above it
(whose returns were lost with a dropped buffer) are closed with it; a return
with no call open (tracing began inside the function) is counted apart.
Code numbers are the tracer's, never reused in a run, so they are resolved
to names only when the state is read (a declaration may come after a use).

Bounded: at most ``functions`` numbers and ``nodes`` tree nodes are kept;
past them, calls still count on the node of their caller and in
``calls_over_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

#: (name, file, first line): a function, whichever generation numbered it.
FunctionKey = Tuple[str, str, int]


@dataclass
class CallStats:
    calls: int = 0
    total_ns: int = 0
    own_ns: int = 0


class _Frame:
    __slots__ = ("code", "start", "children", "node", "outer")

    def __init__(self, code: int, start: int, node: int, outer: bool) -> None:
        self.code = code
        self.start = start
        self.children = 0  # ns spent in callees
        self.node = node
        self.outer = outer  # the outermost open call of its function in this thread


class CallTree:
    """Every thread's traced calls, folded into functions and a call tree."""

    ROOT = 0

    def __init__(self, functions: int = 10_000, nodes: int = 20_000,
                 on_limit: Optional[Callable[[str, str], None]] = None,
                 on_close: Optional[Callable[[int, int, int, int], None]] = None) -> None:
        self.max_functions = functions
        self.max_nodes = nodes
        self.on_limit = on_limit or (lambda name, text: None)
        #: Called with (thread, code, start, end) as each call closes (the
        #: Chrome trace's slices, lpm.views.export).
        self.on_close = on_close
        self.functions: Dict[int, CallStats] = {}  # code number -> stats
        # Node 0 is the root; node -> (parent, code), and its stats.
        self._node_of: Dict[Tuple[int, int], int] = {}
        self.node_key: List[Tuple[int, int]] = [(-1, -1)]
        self.node_stats: List[CallStats] = [CallStats()]
        self._stacks: Dict[int, List[_Frame]] = {}
        self._open: Dict[int, Dict[int, int]] = {}  # thread -> code -> open calls
        self.calls = 0
        self.unmatched_returns = 0
        self.calls_over_limit = 0

    def call(self, thread: int, code: int, ts: int) -> None:
        stack = self._stacks.setdefault(thread, [])
        parent = stack[-1].node if stack else self.ROOT
        node = self._node_of.get((parent, code))
        if node is None:
            if len(self.node_key) < self.max_nodes:
                node = len(self.node_key)
                self._node_of[(parent, code)] = node
                self.node_key.append((parent, code))
                self.node_stats.append(CallStats())
            else:
                node = parent
                self.calls_over_limit += 1
                self.on_limit("call-nodes", f"more than {self.max_nodes} distinct call paths traced: deeper calls "
                                            "count on their caller's node (calls_over_limit)")
        open_calls = self._open.setdefault(thread, {})
        depth = open_calls.get(code, 0)
        open_calls[code] = depth + 1
        stack.append(_Frame(code, ts, node, depth == 0))

    def ret(self, thread: int, code: int, ts: int) -> None:
        stack = self._stacks.get(thread)
        open_calls = self._open.get(thread)
        if not stack or not open_calls or not open_calls.get(code):
            self.unmatched_returns += 1
            return
        while stack:
            frame = stack.pop()
            self._close(thread, frame, ts, stack)
            if frame.code == code:
                break

    def _close(self, thread: int, frame: _Frame, ts: int, stack: List[_Frame]) -> None:
        duration = max(0, ts - frame.start)
        if self.on_close is not None:
            self.on_close(thread, frame.code, frame.start, ts)
        open_calls = self._open[thread]
        open_calls[frame.code] -= 1
        if stack:
            stack[-1].children += duration
        self.calls += 1
        stats = self.functions.get(frame.code)
        if stats is None:
            if len(self.functions) >= self.max_functions:
                self.calls_over_limit += 1
                self.on_limit("traced-functions", f"more than {self.max_functions} traced function numbers: "
                                                  "the calls of the others are counted apart (calls_over_limit)")
                stats = None
            else:
                stats = self.functions[frame.code] = CallStats()
        if stats is not None:
            stats.calls += 1
            stats.own_ns += max(0, duration - frame.children)
            if frame.outer:
                stats.total_ns += duration
        node = self.node_stats[frame.node]
        if frame.node != self.ROOT:
            node.calls += 1
            node.total_ns += duration
            node.own_ns += max(0, duration - frame.children)

    def end_thread(self, thread: int, ts: int) -> None:
        """The thread is gone: its open calls end at ``ts``."""
        stack = self._stacks.pop(thread, [])
        self._open.setdefault(thread, {})
        while stack:
            self._close(thread, stack.pop(), ts, stack)
        self._open.pop(thread, None)

    def open_threads(self) -> List[int]:
        """The threads with calls still open."""
        return [thread for thread, stack in self._stacks.items() if stack]

    # -- reading -------------------------------------------------------------

    def by_function(self, names: Dict[int, FunctionKey], n: int) -> List[Dict[str, Any]]:
        """The ``n`` functions with the most total time, numbers of one
        function (one per generation) merged."""
        merged: Dict[FunctionKey, CallStats] = {}
        for code, stats in self.functions.items():
            key = names.get(code, ("?", "", 0))
            into = merged.setdefault(key, CallStats())
            into.calls += stats.calls
            into.total_ns += stats.total_ns
            into.own_ns += stats.own_ns
        top = sorted(merged.items(), key=lambda kv: (kv[1].total_ns, kv[1].calls), reverse=True)[:n]
        return [{"name": name, "file": filename, "line": line, "calls": s.calls, "total_ns": s.total_ns,
                 "own_ns": s.own_ns} for (name, filename, line), s in top]

    def tree(self, names: Dict[int, FunctionKey], most: int = 2000) -> Dict[str, Any]:
        """The call tree as nested dicts in the shape of the sampled flame
        tree (``name``, ``file``, ``line``, ``value``: ns, ``children``) with
        ``calls``, ``total_ns`` and ``own_ns``: the ``most`` busiest nodes and
        their paths."""
        keep = sorted(range(1, len(self.node_key)), key=lambda i: self.node_stats[i].total_ns, reverse=True)[:most]
        wanted = set(keep)
        for i in keep:  # a kept node's ancestors too, so every path is whole
            parent = self.node_key[i][0]
            while parent > 0 and parent not in wanted:
                wanted.add(parent)
                parent = self.node_key[parent][0]
        built: Dict[int, Dict[str, Any]] = {
            0: {"name": "all", "file": "", "line": 0, "value": 0, "calls": 0, "total_ns": 0, "own_ns": 0,
                "children": []}}
        for i in sorted(wanted):
            parent, code = self.node_key[i]
            s = self.node_stats[i]
            name, filename, line = names.get(code, ("?", "", 0))
            node = {"name": name, "file": filename, "line": line, "value": s.total_ns, "calls": s.calls,
                    "total_ns": s.total_ns, "own_ns": s.own_ns, "children": []}
            built[i] = node
            built[parent]["children"].append(node)
        root = built[0]
        root["value"] = root["total_ns"] = sum(child["total_ns"] for child in root["children"])
        root["calls"] = sum(child["calls"] for child in root["children"])
        return root

    def summary(self, names: Dict[int, FunctionKey], n: int) -> Dict[str, Any]:
        return {
            "calls": self.calls,
            "open": sum(len(s) for s in self._stacks.values()),
            "unmatched_returns": self.unmatched_returns,
            "calls_over_limit": self.calls_over_limit,
            "nodes": len(self.node_key) - 1,
            "functions": self.by_function(names, n),
        }
