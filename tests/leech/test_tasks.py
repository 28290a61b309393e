"""asyncio tracking (issue 9): each task's life, exactly, and the loop's
lag; switched on and off while the program runs.  Both leeches."""

from __future__ import annotations

from pathlib import Path

from lpm.eventlog import events as ev

from .helpers import decode, recorded
from .live import LiveProgram


def test_every_task_created_started_and_ended_with_its_fate(tmp_path: Path, implementation: str) -> None:
    stream = decode(recorded("tasks_known.py", [], tmp_path, implementation,
                             run_options=["--asyncio", "--sample-rate", "0"]))
    assert stream.complete
    created = {e.task: e for e in stream.events if isinstance(e, ev.PyTaskCreate)}
    started = [e.task for e in stream.of_type(ev.PyTaskStart)]  # type: ignore[attr-defined]
    ended = {e.task: e.status for e in stream.of_type(ev.PyTaskEnd)}  # type: ignore[attr-defined]
    named = {e.name: e.task for e in stream.of_type(ev.PyTaskStart)}  # type: ignore[attr-defined]
    by_name = {name: created[number] for name, number in named.items()}
    names = [f"worker-{i}" for i in range(4)] + ["boom", "sleeper", "blocker"]
    assert set(names) <= set(by_name), sorted(by_name)
    assert by_name["worker-0"].coroutine == "work" and by_name["boom"].coroutine == "boom"
    for name in names:
        number = by_name[name].task
        assert started.count(number) == 1, f"{name} started once"
    fate = {name: ev.TASK_STATUS[ended[by_name[name].task]] for name in names}
    assert fate == {**{f"worker-{i}": "done" for i in range(4)}, "boom": "failed", "sleeper": "cancelled",
                    "blocker": "done"}
    # Created, then started, then ended, in stream order per task.
    order = {id(e): i for i, e in enumerate(stream.events)}
    for name in names:
        number = by_name[name].task
        c = order[id(by_name[name])]
        s = next(order[id(e)] for e in stream.of_type(ev.PyTaskStart) if e.task == number)  # type: ignore[attr-defined]
        d = next(order[id(e)] for e in stream.of_type(ev.PyTaskEnd) if e.task == number)  # type: ignore[attr-defined]
        assert c < s < d, name
    lags = [e.value for e in stream.of_type(ev.PyCounter) if e.name == "asyncio.lag_ms"]  # type: ignore[attr-defined]
    assert lags and max(lags) >= 150, f"the 300 ms block shows as lag: {lags}"


def test_asyncio_tracking_switched_on_mid_run(tmp_path: Path, implementation: str) -> None:
    go = tmp_path / "go"
    live = LiveProgram("tasks_phases.py", [str(go)], tmp_path, implementation)
    live.wait_marker("before done")
    live.command("asyncio on", "lpm.asyncio", "on")
    go.touch()
    stream = live.finish()
    # asyncio.run's own clean-up tasks come after ours; none from before.
    names = sorted(e.name for e in stream.of_type(ev.PyTaskStart))  # type: ignore[attr-defined]
    assert [n for n in names if not n.startswith("Task-")] == [f"after-{i}" for i in range(3)]
    assert len(stream.of_type(ev.PyTaskCreate)) == len(stream.of_type(ev.PyTaskEnd)) == len(names)


def test_a_suspended_task_shows_what_it_awaits(tmp_path: Path, implementation: str) -> None:
    stream = decode(recorded("tasks_awaiting.py", ["1.0"], tmp_path, implementation,
                             run_options=["--asyncio", "--sample-rate", "0", "--heap-interval", "0.1"]))
    deep = next(e.task for e in stream.of_type(ev.PyTaskStart) if e.name == "deep")  # type: ignore[attr-defined]
    chains = [e.chain for e in stream.of_type(ev.PyTaskAwait) if e.task == deep]  # type: ignore[attr-defined]
    assert len(chains) >= 3, chains
    names = [part.split(" (")[0] for part in chains[-1].split(" > ")]
    assert names == ["outer", "middle", "inner", "sleep"], chains[-1]  # asyncio.sleep is a coroutine too
    assert "tasks_awaiting.py:" in chains[-1]
