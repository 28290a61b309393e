"""`lpm client top` in plain text and in a real terminal (tmux), against a
server watching a live program with known call chains."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..server.wire import WireClient, python_program, sources_by_name, start_server, wait_for

PATIENCE = 60.0


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[tuple[str, int], int]]:
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, address = start_server(tmp_path, "--dir", str(lpm_dir))
    program = python_program(tmp_path, lpm_dir, "stacks.py", "60")
    client = WireClient(address)
    try:
        wait_for(lambda: any(s["pid"] == program.pid and s["events"] > 200 for s in sources_by_name(client).values()),
                 "the program's samples")
        yield address, program.pid
    finally:
        client.close()
        program.kill()
        program.wait(PATIENCE)
        server.terminate()
        server.wait(PATIENCE)


def test_plain_text_when_not_a_terminal(watched: tuple[tuple[str, int], int]) -> None:
    address, pid = watched
    done = subprocess.run(
        [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "top", "--rounds", "2",
         "--interval", "0.5"],
        capture_output=True, text=True, timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"python-{pid}" in text
    for expected in ("MainThread", "spinner", "sleeper", "main_spin", "worker_outer", "THREAD", "FUNCTION"):
        assert expected in text, expected


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_top_in_a_real_terminal_reacts_to_keys(watched: tuple[tuple[str, int], int], tmp_path: Path) -> None:
    address, pid = watched
    session = f"lpm-top-{pid}"
    command = f"{sys.executable} -m lpm client --server {address[0]}:{address[1]} top --interval 0.3"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def shows(text: str) -> bool:
        return text in screen()

    def functions() -> str:
        return screen().split("FUNCTION", 1)[-1]

    try:
        wait_for(lambda: shows("spinner") and shows("FUNCTION"), "top to show the program")
        assert "sort total" in screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "s"], check=True)
        wait_for(lambda: shows("sort own"), "the sort to change")
        # By own samples the spinning functions lead, whatever the window's height.
        wait_for(lambda: "main_spin" in functions() or "spin" in functions(), "the hottest own functions")
        subprocess.run(["tmux", "send-keys", "-t", session, "/", "s", "l", "e", "e", "p", "Enter"], check=True)
        wait_for(lambda: shows("filter 'sleep'"), "the filter")
        wait_for(lambda: "sleeper" in functions() and "main_spin" not in functions(), "the filter to pick functions")
        subprocess.run(["tmux", "send-keys", "-t", session, "P"], check=True)
        wait_for(lambda: shows("paused"), "the pause")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + PATIENCE
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "top did not quit on q"
            time.sleep(0.05)
    finally:
        (tmp_path / "screen.txt").write_text(screen() if subprocess.run(["tmux", "has-session", "-t", session],
                                                                         capture_output=True).returncode == 0 else "")
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
