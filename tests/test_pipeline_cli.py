"""The analysis commands end to end on two small runs (mixed and two-stage): trace, shared,
graft, ablate and report, as a user would chain them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mechrecall as mr
from mechrecall_cli.app import app

from conftest import FAST_TRAIN

runner = CliRunner()


def _ok(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def two_runs(mixed_run: mr.Run, world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    mixed = root / "mixed"
    shutil.copytree(mixed_run.path, mixed)
    config = mr.TrainConfig(strategy="two-stage", bio_steps=150, qa_steps=150, **FAST_TRAIN)
    two = mr.train_run(world_dir, root / "two-stage", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    return mixed, two.path


def test_trace_shared_graft_ablate_report(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    mixed, two = two_runs
    for run in (mixed, two):
        _ok("trace", run, "--individuals", "5", "--no-progress", "--device", "cpu")
    output = _ok("shared", mixed, two, "--fraction", "0.02", "--figure", tmp_path / "curve.html")
    assert "|S_k| ratio" in output and (tmp_path / "curve.html").exists() and (tmp_path / "plotly.min.js").exists()
    _ok("shared", mixed, "--by", "head")
    assert (mixed / "figures" / "shared_heads.html").exists()
    _ok("shared", mixed, two, "--fraction", "0.02")  # the exported masks the ablations use
    for run in (mixed, two):
        graft = json.loads(_ok("graft", run, "--sparsity", "0.05", "--steps", "4", "--no-progress", "--device", "cpu", "--json"))
        assert graft["size"] > 0 and "shared_overlap" in graft
        for what in ("shared", "random", "graft-minus-shared"):
            result = json.loads(_ok("ablate", run, "--what", what, "--seeds", "2", "--device", "cpu", "--json"))
            assert set(result["ablated"]) == {"bio", "qa_id", "qa_ood"}
    output = _ok("report", two, mixed, "--out", tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "\\|S ∩ γ\\|₀ / \\|γ\\|₀" in markdown and "11.0%" in markdown and "S reset" in markdown
    assert "| measure | study | mixed | two-stage | agrees in direction |" in markdown  # mixed first, whatever the order given
    assert "## Shared ablation against random" in markdown and "## Head ablation curves" not in markdown  # no heads.json yet
    assert "plotly" in (tmp_path / "report" / "report.html").read_text()[:200000]


def test_bad_analysis_options(two_runs: tuple[Path, Path]) -> None:
    mixed, _ = two_runs
    for args, fragment in (
        (["shared", mixed, "--by", "layer"], "unknown --by 'layer'"),
        (["shared", mixed, "--k", "5", "--fraction", "0.1"], "exactly one of --k and --fraction"),
        (["graft", mixed, "--sparsity", "1.5"], "--sparsity must lie strictly between 0 and 1"),
        (["ablate", mixed, "--what", "nothing"], "unknown --what 'nothing'"),
        (["trace", mixed, "--measure", "hessian"], "unknown influence measure 'hessian'"),
        (["trace", mixed, "--split", "bio"], "unknown split 'bio'"),
    ):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert fragment in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("mixed", "two_stage", "kind", "expected"),
    [
        ([0.56, 0.52, 0.53], [0.022, 0.021, 0.022], "pct", "yes"),  # far apart: the study's direction
        ([0.40], [0.60], "pct", "no"),  # one seed, the other way
        ([0.0003], [0.0], "pct", "tie"),  # 0.03% vs 0%: both print as 0.0%
        ([0.50, 0.70], [0.55, 0.57], "pct", "tie"),  # 60 ± 10 vs 56 ± 1: within the spread
        ([0.5614], [0.5604], "pct3", "yes"),  # a precise kind tells 56.140% from 56.040%
    ],
)
def test_agreement_needs_a_difference_beyond_spread_and_precision(mixed: list[float], two_stage: list[float], kind: str, expected: str) -> None:
    from mechrecall.report import direction

    assert direction(mixed, two_stage, kind, mixed_larger=True) == expected
