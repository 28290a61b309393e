"""Golden streams, checked by hand once, compared on every run.

tests/golden/ holds:

- ghc-threads.eventlog: written by the real GHC 9.0.2 runtime running
  ghc-threads.hs with +RTS -l -N2 (threads, an MVar, messages, a marker);
- python-sample.eventlog: lpm.eventlog.sample.sample_eventlog(seconds=1);
- restarted.eventlog: garbage with a decoy "hdrb", a stream cut off without its
  end marker, a restarted stream with an event type lpm does not know.

Each has FILE.show.txt (``lpm show FILE``) and FILE.stats.json (``lpm show
--stats --json FILE``).  After a deliberate change of output, regenerate them
with those commands, read the diff line by line, and commit it.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from lpm.cli import main
from lpm.eventlog.sample import sample_eventlog

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
NAMES = ["ghc-threads", "python-sample", "restarted"]


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_show_matches_golden_text(name: str) -> None:
    code, text = run_cli("show", str(GOLDEN / f"{name}.eventlog"))
    assert code == 0
    assert text == (GOLDEN / f"{name}.show.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_stats_match_golden_json(name: str) -> None:
    code, text = run_cli("show", "--stats", "--json", str(GOLDEN / f"{name}.eventlog"))
    assert code == 0
    assert json.loads(text) == json.loads((GOLDEN / f"{name}.stats.json").read_text())


def test_sample_generator_still_makes_the_golden_bytes() -> None:
    assert sample_eventlog(seconds=1) == (GOLDEN / "python-sample.eventlog").read_bytes()


def test_hand_checked_facts_of_the_ghc_stream() -> None:
    stats = json.loads((GOLDEN / "ghc-threads.stats.json").read_text())
    # Counted by hand from `ghc-events show`: 7 threads created, 17 runs and
    # stops, 3 labels (the I/O and timer managers), 2 user messages, 1 marker,
    # and 3 block markers (two caps and the global buffer).
    assert stats["by_id"]["0"] == 7
    assert stats["by_id"]["1"] == stats["by_id"]["2"] == 17
    assert stats["by_id"]["44"] == 3
    assert stats["by_id"]["19"] == 2
    assert stats["by_id"]["58"] == 1
    assert stats["by_id"]["18"] == 3
    assert stats["header_types"] == 69
    assert stats["complete"] is True
    text = (GOLDEN / "ghc-threads.show.txt").read_text(encoding="utf-8")
    assert "cap 0: héllo\n" in text
    assert 'thread 4 has label "TimerManager"' in text
