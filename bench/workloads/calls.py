#!/usr/bin/env python3
"""Bench workload "calls": call-heavy Python code.

Recursive fib plus a small object/method scheduler (tasks that pass packets to
each other through a scheduler's queue, in the spirit of "richards").  Prints
``BENCH_ELAPSED <seconds>`` for the hot section only and ``BENCH_MAXRSS <KiB>`` (peak RSS).

Scale: argv[1], else $LPM_BENCH_SCALE, else 1.0 (about 1.2 s plain on a
2-vCPU machine of the reference kind).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional

from harness import run


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Packet:
    __slots__ = ("kind", "datum", "data")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.datum = 0
        self.data: List[int] = [0, 0, 0, 0]

    def touch(self, value: int) -> None:
        self.datum = (self.datum + value) & 0xFFFF
        self.data[value & 3] = value


class Task:
    def __init__(self, name: int, scheduler: Scheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.count = 0

    def run(self, packet: Optional[Packet]) -> Optional[Packet]:
        raise NotImplementedError


class Worker(Task):
    def run(self, packet: Optional[Packet]) -> Optional[Packet]:
        if packet is None:
            return None
        self.count += 1
        for i in range(4):
            packet.touch(self.count + i)
        return packet


class Handler(Task):
    def __init__(self, name: int, scheduler: Scheduler) -> None:
        super().__init__(name, scheduler)
        self.held: Deque[Packet] = deque()

    def run(self, packet: Optional[Packet]) -> Optional[Packet]:
        if packet is not None:
            self.held.append(packet)
        if len(self.held) > 2:
            out = self.held.popleft()
            out.kind = (out.kind + 1) % 3
            return out
        return None


class Idler(Task):
    def run(self, packet: Optional[Packet]) -> Optional[Packet]:
        self.count += 1
        if self.count % 7 == 0:
            return Packet(self.count % 3)
        return packet


class Scheduler:
    def __init__(self) -> None:
        self.tasks: List[Task] = []
        self.queue: Deque[tuple[int, Optional[Packet]]] = deque()
        self.switches = 0

    def add(self, task: Task) -> None:
        self.tasks.append(task)

    def send(self, target: int, packet: Optional[Packet]) -> None:
        self.queue.append((target % len(self.tasks), packet))

    def step(self) -> None:
        target, packet = self.queue.popleft()
        task = self.tasks[target]
        self.switches += 1
        out = task.run(packet)
        self.send(target + 1 + (out.kind if out is not None else 0), out)

    def run(self, steps: int) -> int:
        for i in range(len(self.tasks)):
            self.send(i, Packet(i % 3))
        for _ in range(steps):
            self.step()
        return self.switches


def build() -> Scheduler:
    s = Scheduler()
    for i in range(10):
        kind = i % 3
        s.add(Worker(i, s) if kind == 0 else Handler(i, s) if kind == 1 else Idler(i, s))
    return s


def work(factor: float) -> int:
    total = 0
    for _ in range(max(1, round(19 * factor))):
        total += fib(26)
        total += build().run(30_000)
    return total


if __name__ == "__main__":
    run(work)
