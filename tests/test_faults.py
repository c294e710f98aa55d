"""The fault table of ``analyses/faults.py``: every bad value of every option of every command
ends cleanly (one ``error:`` line and exit code 2, or accepted) and no user file changes. The
commands whose accepted cases run a whole study (``reproduce``, ``pretrain``) are left to
``python analyses/faults.py --commands reproduce,pretrain``; their refusals are tested in
``test_reproduce.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

FAULTS = Path(__file__).resolve().parents[1] / "analyses" / "faults.py"
FAST = {"data", "train", "eval", "report", "presets", "export", "shared", "graft", "ablate", "heads", "neurons", "attention", "patch", "trace"}


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("faults", FAULTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("faults", None)


def test_bad_options_end_cleanly_and_lose_no_file(faults, tmp_path: Path) -> None:
    here = os.getcwd()
    try:
        outcomes = faults.run_all(tmp_path, commands=FAST)
    finally:
        os.chdir(here)
    counts = faults.summary(outcomes)
    failing = [" ".join(o.case.args) for o in outcomes if not o.clean or o.lost]
    assert counts["cases"] > 300 and counts["commands"] == len(FAST)
    assert counts["tracebacks"] == 0 and counts["unclean"] == 0 and counts["files lost or changed"] == 0, failing
    assert counts["clean errors"] > counts["accepted"]  # most bad values are refused, not run
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_the_table_covers_every_command() -> None:
    import typer
    from mechrecall_cli.app import app

    commands = set(typer.main.get_command(app).commands) - {"ablate-heads"}  # an alias of heads
    assert commands == FAST | {"reproduce", "pretrain"}
