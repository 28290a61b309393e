"""Settings of a leech, with the defaults a profiler user expects.

Each can be given to ``lpm.start(...)``, as an option of ``lpm run``, or as an
``LPM_<NAME>`` environment variable (``LPM_SAMPLE_RATE=200``), in that order of
precedence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from ..errors import LeechError


@dataclass(frozen=True)
class LeechConfig:
    sample_rate: float = 100.0
    """Stack samples per second of every thread; 0 turns sampling off."""

    heap_interval: float = 1.0
    """Seconds between heap figures (RSS, blocks, tracemalloc) and per-thread CPU times."""

    flush_interval: float = 0.010
    """Seconds between flushes of partly filled buffers, so quiet threads stay live; 0: only full buffers."""

    generation_interval: float = 5.0
    """Seconds between generations: thread status, settings and sequence points re-sent; 0: never."""

    budget: int = 4 << 20
    """Bytes of event buffers in all; when they are all in use, new events are dropped and counted."""

    buffer_size: int = 16 << 10
    """Bytes of one thread buffer (the unit taken from and returned to the budget)."""

    stop_timeout: float = 2.0
    """Seconds stop() waits for a slow reader to take the last events before giving up on them."""

    directory: str | None = None
    """Where the FIFOs go; default: $LPM_DIR, $XDG_RUNTIME_DIR/lpm or <tmp>/lpm-<uid>."""

    fixed_clock: int | None = None
    """Every timestamp is this value (for tests that compare bytes); None: the real clock."""

    implementation: str = "auto"
    """"native", "python" or "auto" (native when it loads; LPM_PUREPYTHON=1 forces python)."""

    def __post_init__(self) -> None:
        if self.sample_rate < 0 or self.sample_rate > 10_000:
            raise LeechError(f"sample_rate {self.sample_rate} is outside 0..10000 per second")
        for name in ("heap_interval", "flush_interval", "generation_interval", "stop_timeout"):
            if getattr(self, name) < 0:
                raise LeechError(f"{name} {getattr(self, name)} must not be negative")
        if self.buffer_size < 4096 or self.buffer_size > (1 << 20):
            raise LeechError(f"buffer_size {self.buffer_size} is outside 4 KiB..1 MiB")
        if self.budget < 2 * self.buffer_size:
            raise LeechError(f"budget {self.budget} must hold at least two buffers of {self.buffer_size} bytes")
        if self.implementation not in ("auto", "native", "python"):
            raise LeechError(f"implementation {self.implementation!r} is not auto, native or python")

    @property
    def buffers(self) -> int:
        """How many buffers the budget holds."""
        return self.budget // self.buffer_size


_DEFAULTS = LeechConfig()


def from_environment(env: Mapping[str, str] | None = None, **overrides: Any) -> LeechConfig:
    """Defaults, then ``LPM_*`` variables, then ``overrides`` that are not None."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(LeechConfig):
        raw = env.get("LPM_" + f.name.upper())
        if raw is None or raw == "":
            continue
        kind = type(getattr(_DEFAULTS, f.name))
        try:
            if f.name in ("directory", "implementation"):
                values[f.name] = raw
            elif f.name == "fixed_clock" or kind is int:
                values[f.name] = int(raw, 0)
            else:
                values[f.name] = float(raw)
        except ValueError:
            raise LeechError(f"LPM_{f.name.upper()}={raw!r} is not a valid {f.name}") from None
    if env.get("LPM_PUREPYTHON"):
        values["implementation"] = "python"
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(LeechConfig)}
    if unknown:
        raise LeechError(f"unknown leech settings: {', '.join(sorted(unknown))}")
    return replace(_DEFAULTS, **values)


__all__ = ["LeechConfig", "from_environment"]
