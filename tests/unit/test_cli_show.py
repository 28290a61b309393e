"""`python -m lpm show`: exit codes, messages, stdin, real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lpm.eventlog import EventLogWriter
from lpm.eventlog.events import UserMarker
from lpm.eventlog.sample import sample_eventlog


def lpm(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "lpm", *args], input=stdin, capture_output=True, timeout=60)


def test_show_from_stdin() -> None:
    data = EventLogWriter().eventlog([UserMarker(5, None, "from stdin")])
    done = lpm("show", "--no-header", "-", stdin=data)
    assert done.returncode == 0
    assert done.stdout.decode().splitlines() == ["5: marker: from stdin", "-- end of data"]


def test_stats_json_counts(tmp_path: Path) -> None:
    path = tmp_path / "s.eventlog"
    path.write_bytes(sample_eventlog(seconds=1))
    done = lpm("show", "--stats", "--json", str(path))
    assert done.returncode == 0
    stats = json.loads(done.stdout)
    assert stats["complete"] is True
    assert stats["total"] == sum(stats["by_id"].values())
    assert stats["by_id"]["18"] > 0, "block markers are counted"
    assert stats["header_types"] > 80


def test_truncated_file_exits_zero_and_says_so(tmp_path: Path) -> None:
    data = sample_eventlog(seconds=1)
    path = tmp_path / "cut.eventlog"
    path.write_bytes(data[: len(data) // 2])
    done = lpm("show", "--stats", "--json", str(path))
    assert done.returncode == 0
    assert json.loads(done.stdout)["complete"] is False
    assert b"stops without its end marker" in done.stderr


def test_corrupt_file_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    data = sample_eventlog(seconds=1)
    header_end = data.index(b"datb") + 4
    path = tmp_path / "bad.eventlog"
    path.write_bytes(data[:header_end] + b"\x12\x34" + b"\x00" * 20)
    for args in (["show", str(path)], ["show", "--stats", str(path)]):
        done = lpm(*args)
        assert done.returncode == 1
        lines = done.stderr.decode().strip().splitlines()
        assert lines == [f"lpm show: {path}: corrupt eventlog at byte {header_end}: event type 4660 is not declared in the header"]


def test_missing_file(tmp_path: Path) -> None:
    done = lpm("show", str(tmp_path / "nope.eventlog"))
    assert done.returncode == 1
    assert b"cannot open" in done.stderr and b"No such file" in done.stderr


def test_json_needs_stats() -> None:
    done = lpm("show", "--json", "-")
    assert done.returncode == 2
    assert b"--json goes with --stats" in done.stderr


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "s.eventlog"
    path.write_bytes(sample_eventlog(seconds=2))
    proc = subprocess.run(
        f"{sys.executable} -m lpm show {path} | head -n 2", shell=True, capture_output=True, timeout=60
    )
    assert proc.stdout.count(b"\n") == 2
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["show", "--help"], ["demo", "--help"], ["run", "--help"]])
def test_help(argv: list[str]) -> None:
    done = lpm(*argv)
    assert done.returncode == 0
    assert b"usage: lpm" in done.stdout


def test_demo_watches_a_sample_program_live() -> None:
    done = lpm("demo", "--seconds", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert 'has label "worker-0"' in out and "marker: batch 1" in out
    assert "its stream is complete" in out
    assert "PySample" in out and "UNACCOUNTED" not in out


def test_run_splits_its_options_from_the_programs() -> None:
    from lpm.cli.run import split_program

    assert split_program(["--sample-rate", "5", "app.py", "--sample-rate", "9"]) == (
        ["--sample-rate", "5"],
        ["app.py", "--sample-rate", "9"],
    )
    assert split_program(["-m", "http.server", "-h"]) == ([], ["-m", "http.server", "-h"])
    assert split_program(["--dir=/x", "--", "-weird.py"]) == (["--dir=/x"], ["-weird.py"])
    assert split_program(["--help"]) == (["--help"], [])
    assert split_program(["--keep-out", "off", "app.py"]) == (["--keep-out", "off"], ["app.py"])


def test_run_steps_over_the_value_of_every_option_that_takes_one() -> None:
    import argparse

    from lpm.cli import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:
            for option in action.option_strings:
                assert run.split_program([option, "v", "app.py"]) == ([option, "v"], ["app.py"]), option


def test_run_passes_the_exit_status_and_argv_through(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nsys.exit(5)\n")
    done = subprocess.run(
        [sys.executable, "-m", "lpm", "run", "--sample-rate", "0", str(script), "--budget", "x"],
        capture_output=True,
        timeout=60,
        env={**__import__("os").environ, "LPM_DIR": str(tmp_path / "lpm")},
    )
    assert done.returncode == 5, done.stderr
    assert done.stdout == b"['--budget', 'x']\n"


def test_run_without_a_program_says_what_to_do() -> None:
    done = lpm("run")
    assert done.returncode == 2
    assert b"name a script to run, or -m MODULE" in done.stderr
