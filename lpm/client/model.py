"""A source's live state as typed objects: what ``on_state`` hands a program.

Built from the server's JSON snapshot (:meth:`lpm.server.state.SourceState.snapshot`);
``raw`` keeps the whole JSON for fields not modelled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class ThreadView:
    id: int
    label: str
    status: str
    created_ns: Optional[int]
    last_ns: int
    cpu_ns: Optional[int]
    native_id: Optional[int]
    cap: Optional[int]


@dataclass(frozen=True)
class FunctionView:
    name: str
    file: str
    line: int
    own: int  #: samples with it innermost
    total: int  #: samples with it anywhere on the stack


@dataclass(frozen=True)
class TracedView:
    """A traced function (``lpm run --trace``): exact, not sampled."""

    name: str
    file: str
    line: int
    calls: int
    total_ns: int  #: time inside it, outermost calls of a recursion only
    own_ns: int  #: that, minus the functions it called


@dataclass(frozen=True)
class GcView:
    collections: int
    by_generation: Dict[int, int]
    collected: int
    uncollectable: int
    last_pause_ns: Optional[int]
    max_pause_ns: int
    total_pause_ns: int
    in_gc: bool


@dataclass(frozen=True)
class LossView:
    events_lost: int  #: what the program's leech reported dropping
    bytes_lost: int
    received: int
    reported_lost: int
    unreported: int  #: gaps nobody reported: must stay 0
    malformed: int


@dataclass(frozen=True)
class Snapshot:
    source: int
    name: str
    info: Dict[str, Any]
    time_ns: int
    events: int
    by_type: Dict[str, int]
    program: Dict[str, Any]
    settings: Dict[str, str]
    threads: Tuple[ThreadView, ...]
    gc: GcView
    heap: Dict[str, int]
    counters: Dict[str, Dict[str, Any]]
    markers: Tuple[Tuple[int, str], ...]
    messages: Tuple[Tuple[int, str], ...]
    functions: Tuple[FunctionView, ...]
    samples: int
    loss: LossView
    traced: Tuple[TracedView, ...] = ()  #: by total time, when the program is traced
    traced_calls: int = 0
    #: Allocation tracking: {"threads": [{thread, allocated, allocations,
    #: freed, frees}], "sampled_bytes", "sites": [{name, file, line, bytes}]}.
    allocations: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> Snapshot:
        """From a STATE frame's JSON ``{"source", "name", "info", "state"}``.

        Raises:
            KeyError, TypeError, ValueError: the JSON is not a snapshot.
        """
        state = body["state"]
        gc = state["gc"]
        pauses = gc["pause_ns"]
        loss = state["loss"]
        return cls(
            source=int(body["source"]),
            name=str(body["name"]),
            info=dict(body.get("info", {})),
            time_ns=int(state["time_ns"]),
            events=int(state["events"]),
            by_type={str(k): int(v) for k, v in state["by_type"].items()},
            program=dict(state["program"]),
            settings={str(k): str(v) for k, v in state["settings"].items()},
            threads=tuple(ThreadView(**t) for t in state["threads"]),
            gc=GcView(
                collections=int(gc["collections"]),
                by_generation={int(g): int(n) for g, n in gc["by_generation"].items()},
                collected=int(gc["collected"]),
                uncollectable=int(gc["uncollectable"]),
                last_pause_ns=pauses["last"],
                max_pause_ns=int(pauses["max"]),
                total_pause_ns=int(pauses["total"]),
                in_gc=bool(gc["in_gc"]),
            ),
            heap={str(k): v for k, v in state["heap"].items()},
            counters={str(k): dict(v) for k, v in state["counters"].items()},
            markers=tuple((int(m["ts"]), str(m["name"])) for m in state["markers"]),
            messages=tuple((int(m["ts"]), str(m["text"])) for m in state["messages"]),
            functions=tuple(FunctionView(**f) for f in state["functions"]),
            samples=int(state["samples"]),
            loss=LossView(
                events_lost=int(loss["events_lost"]),
                bytes_lost=int(loss["bytes_lost"]),
                received=int(loss["received"]),
                reported_lost=int(loss["reported_lost"]),
                unreported=int(loss["unreported"]),
                malformed=int(loss["malformed"]),
            ),
            traced=tuple(TracedView(**f) for f in state.get("calls", {}).get("functions", ())),
            traced_calls=int(state.get("calls", {}).get("calls", 0)),
            allocations=dict(state.get("allocations", {})),
            raw=state,
        )
