"""Facts about the machine that every benchmark prints beside its numbers."""

from __future__ import annotations

from typing import Optional


def cpu_model() -> Optional[str]:
    """The CPU's model name from /proc/cpuinfo, or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
