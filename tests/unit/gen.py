"""Seeded random events of every registered type, for round-trip tests."""

from __future__ import annotations

import random

from lpm.eventlog import EVENT_TYPES, Event
from lpm.eventlog.layout import Value

_INT_BITS = {"B": 8, "H": 16, "I": 32, "Q": 64}
# "\udcff" is the byte 0xff that is not UTF-8, kept by surrogateescape.
_ALPHABET = "abcdefghij XYZ_é✓\U0001f40d\udcff"


def _text(rnd: random.Random) -> str:
    n = rnd.choice([0, 1, 5, 40])
    s = "".join(rnd.choice(_ALPHABET) for _ in range(n))
    return s


def random_value(code: str, rnd: random.Random) -> Value:
    if code in _INT_BITS:
        bits = _INT_BITS[code]
        return rnd.choice([0, 1, (1 << bits) - 1, rnd.getrandbits(bits)])
    if code == "q":
        return rnd.choice([0, -1, -(1 << 63), (1 << 63) - 1, rnd.getrandbits(63) - (1 << 62)])
    if code == "d":
        return rnd.choice([0.0, -1.5, 1e300, rnd.random() * 1e6])
    if code in "st":
        return _text(rnd)
    if code == "y":
        return bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 7, 100])))
    if code == "S":
        return tuple(_text(rnd) for _ in range(rnd.choice([0, 1, 3])))
    if code == "a":
        return tuple(rnd.getrandbits(32) for _ in range(rnd.choice([0, 1, 3, 255])))
    if code == "i":
        return tuple(rnd.getrandbits(32) for _ in range(rnd.choice([0, 1, 3, 300])))
    raise AssertionError(f"no generator for field code {code!r}")


def random_event(cls: type[Event], rnd: random.Random, ts: int, cap: int | None) -> Event:
    values = [random_value(code, rnd) for code in cls.LAYOUT.codes]
    return cls(ts, cap, *values)


def random_events(rnd: random.Random, n: int, cap: int | None) -> list[Event]:
    """``n`` events cycling through every registered type, with rising timestamps."""
    classes = sorted(EVENT_TYPES.values(), key=lambda c: c.ID)
    classes = [c for c in classes if c.ID != 18]  # block markers are the writer's business
    ts = rnd.getrandbits(20)
    out = []
    for i in range(n):
        ts += rnd.getrandbits(16)
        out.append(random_event(classes[i % len(classes)], rnd, ts, cap))
    return out
