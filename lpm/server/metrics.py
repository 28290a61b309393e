"""``/metrics``: the server's sources in the Prometheus text exposition format.

Version 0.0.4 of the format (``text/plain; version=0.0.4``): one ``# HELP``
and ``# TYPE`` per family, then its samples.  Names are stable and follow
Prometheus' conventions: ``lpm_`` prefix, base units (seconds, bytes),
``_total`` on counters.  Every per-source sample carries labels that
identify the program: ``source`` (the server's id), ``name``, ``pid`` and
``kind``; a program's ``program`` label is its script or executable when the
stream said so.  Ended sources stay until the server forgets them, marked by
``lpm_source_live 0``, so their last values can still be scraped.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Tuple

from .hub import Hub
from .source import Source

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (name, type, help) of every family, in the order they are written.
FAMILIES: List[Tuple[str, str, str]] = [
    ("lpm_sources", "gauge", "Sources the server knows, live or ended."),
    ("lpm_clients", "gauge", "Clients connected to the server, by transport (web: pages following the live stream)."),
    ("lpm_source_live", "gauge", "1 while the source's program is streaming, 0 once it ended."),
    ("lpm_source_subscribers", "gauge", "TCP and UDP clients subscribed to the source's events."),
    ("lpm_events_received_total", "counter", "Events the server received from the source."),
    ("lpm_events_lost_total", "counter", "Events the source's program reported lost (dropped by its leech)."),
    ("lpm_events_unreported_total", "counter", "Events missing from the stream that no loss record accounts for."),
    ("lpm_bytes_received_total", "counter", "Bytes the server received from the source."),
    ("lpm_gc_collections_total", "counter", "Garbage collections, by generation."),
    ("lpm_gc_collected_total", "counter", "Objects the collector freed."),
    ("lpm_gc_pause_seconds_total", "counter", "Time spent in garbage collection."),
    ("lpm_gc_pause_seconds_max", "gauge", "Longest garbage collection pause."),
    ("lpm_heap_rss_bytes", "gauge", "Resident set size of the program."),
    ("lpm_heap_allocated_blocks", "gauge", "Memory blocks the Python allocator has handed out."),
    ("lpm_heap_traced_bytes", "gauge", "Memory tracemalloc traces now (0 when it is off)."),
    ("lpm_threads", "gauge", "Threads of the program, by status."),
    ("lpm_samples_total", "counter", "Stack samples received."),
]


def render(hub: Hub, transports: Dict[str, int]) -> bytes:
    """The exposition of every family; ``transports`` counts clients by transport."""
    samples: Dict[str, List[str]] = {name: [] for name, _, _ in FAMILIES}
    samples["lpm_sources"].append(_line("lpm_sources", {}, len(hub.sources)))
    for transport, n in sorted(transports.items()):
        samples["lpm_clients"].append(_line("lpm_clients", {"transport": transport}, n))
    subscribers: Dict[int, int] = {}
    for client in hub.clients.values():
        for number in client.subs:
            subscribers[number] = subscribers.get(number, 0) + 1
    for source in hub.sources.values():
        _source(source, subscribers.get(source.id, 0), samples)
    out: List[str] = []
    for name, kind, text in FAMILIES:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples[name])
    return ("\n".join(out) + "\n").encode("utf-8")


def _source(source: Source, subscribers: int, samples: Dict[str, List[str]]) -> None:
    state = source.state
    info = source.info()
    labels = {"source": str(source.id), "name": source.name, "pid": str(info.get("pid") or ""), "kind": source.kind}
    args = [a for a in state.program.get("args") or [] if isinstance(a, str)]
    if args:  # a Python program's script, else the executable
        labels["program"] = os.path.basename(next((a for a in args if a.endswith(".py")), args[0]))

    def add(name: str, value: float, **extra: str) -> None:
        samples[name].append(_line(name, {**labels, **extra}, value))

    add("lpm_source_live", 1 if source.live else 0)
    add("lpm_source_subscribers", subscribers)
    add("lpm_events_received_total", state.events)
    loss = state.loss()
    add("lpm_events_lost_total", loss["reported_lost"] + loss["events_lost"])
    add("lpm_events_unreported_total", loss["unreported"])
    add("lpm_bytes_received_total", source.bytes_in)
    gc = state.gc
    for generation, n in sorted(gc.by_generation.items()):
        add("lpm_gc_collections_total", n, generation=str(generation))
    add("lpm_gc_collected_total", gc.collected)
    add("lpm_gc_pause_seconds_total", gc.total_pause_ns / 1e9)
    add("lpm_gc_pause_seconds_max", gc.max_pause_ns / 1e9)
    heap: Dict[str, Any] = state.heap
    for name, key in (("lpm_heap_rss_bytes", "rss"), ("lpm_heap_allocated_blocks", "allocated_blocks"),
                      ("lpm_heap_traced_bytes", "traced_current")):
        if isinstance(heap.get(key), (int, float)):
            add(name, heap[key])
    by_status: Dict[str, int] = {}
    for thread in state.threads.values():
        by_status[thread.status] = by_status.get(thread.status, 0) + 1
    for status, n in sorted(by_status.items()):
        add("lpm_threads", n, status=status)
    add("lpm_samples_total", state.samples)


def _line(name: str, labels: Dict[str, str], value: float) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"


def _escape(value: str) -> str:
    """Label values escape backslash, double quote and newline (the format's rule)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


__all__ = ["render", "CONTENT_TYPE", "FAMILIES"]
