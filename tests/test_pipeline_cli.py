"""The analysis commands end to end on two small runs (mixed and two-stage): trace, shared,
graft, ablate and report, as a user would chain them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FAST_TRAIN
from mechrecall_cli.app import app
from typer.testing import CliRunner

import mechrecall as mr

runner = CliRunner()


def _ok(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def two_runs(mixed_run: mr.Run, world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from mechrecall.influence import TraceConfig

    root = tmp_path_factory.mktemp("pipeline")
    mixed = root / "mixed"
    shutil.copytree(mixed_run.path, mixed)
    config = mr.TrainConfig(strategy="two-stage", bio_steps=150, qa_steps=150, **FAST_TRAIN)
    two = mr.train_run(world_dir, root / "two-stage", mr.ModelConfig("micro"), config, device="cpu", progress=False,
                       trace=TraceConfig(individuals=6))
    return mixed, two.path


def test_every_analysis_command_chained_then_the_report(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    mixed, two = two_runs
    for run in (mixed, two):
        output = _ok("shared", run, "--fraction", "0.02", "--null-draws", "2")
        assert "null" in output and "exported S_k" in output
        graft = json.loads(_ok("graft", run, "--sparsity", "0.05", "--target", "none", "--steps", "4", "--no-progress", "--device", "cpu", "--json"))
        assert graft["result"] == "GraftResult" and graft["size"] > 0 and graft["intersection"] is not None
        ablation = json.loads(_ok("ablate", run, "--draws", "2", "--device", "cpu", "--json"))
        assert set(ablation["shared"]) == {"bio", "qa_id", "qa_ood"} and len(ablation["random"]) == 2
        _ok("ablate-heads", run, "--top", "50%", "--curve", "50,100", "--draws", "2", "--device", "cpu")
        _ok("attention", run, "--heads", "top:shared:1", "--people", "3", "--device", "cpu")
        _ok("patch", run, "--pairs", "2", "--device", "cpu")
        _ok("trace", run, "--individuals", "5", "--no-progress", "--device", "cpu")  # the post-hoc variant
    _ok("report", two, mixed, "--out", tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "\\|S ∩ γ\\|₀ / \\|γ\\|₀ (control: chance \\|S\\|/N)" in markdown and "11.0% vs 3.9%" in markdown
    assert "| measure | study | mixed | mixed control | two-stage | two-stage control | verdict |" in markdown  # mixed first
    for title in ("Shared ablation against random", "Attention heads", "Attention patterns", "Activation patching"):
        assert f"## {title}" in markdown
    assert "plotly" in (tmp_path / "report" / "report.html").read_text()[:200000]


def test_bad_analysis_options(two_runs: tuple[Path, Path]) -> None:
    mixed, _ = two_runs
    for args, fragment in (
        (["shared", mixed, "--fraction", "1.5"], "--fraction must lie in (0, 1]"),
        (["shared", mixed, "--trace", "later"], "'later' is not one of"),
        (["graft", mixed, "--sparsity", "1.5"], "--sparsity must lie strictly between 0 and 1"),
        (["graft", mixed, "--target", "lots"], "--target 'lots' is not a number (or none)"),
        (["graft", mixed, "--lr", "nan"], "--lr must be a positive number"),
        (["ablate", mixed, "--draws", "0"], "'--draws': Input should be greater than or equal to 1"),
            (["shared", mixed, "--null-draws", "99999999999999999999"], "'--null-draws': Input should be less than or equal to 1000"),
        (["heads", mixed, "--curve", "5,x"], "not a comma-separated list of numbers"),
        (["trace", mixed, "--measure", "hessian"], "'hessian' is not one of"),
        (["trace", mixed, "--split", "bio"], "'bio' is not one of"),
        (["patch", mixed, "--pairs", "0"], "'--pairs': Input should be greater than or equal to 1"),
    ):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert fragment in result.output and "Traceback" not in result.output, result.output


def test_usage_errors_are_one_line_through_the_console_script(two_runs: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    mixed, _ = two_runs
    done = subprocess.run([sys.executable, "-c", "from mechrecall_cli.app import main; main()", "graft", str(mixed), "--steps", "many"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--steps" in lines[0], done.stderr
