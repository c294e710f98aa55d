"""`mechrecall reproduce`: the whole study on a micro setting — every step, the report, and the
cache (a second run is a no-op, a changed option reruns only what depends on it, an interrupted
study resumes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechrecall.config import parse_overrides
from mechrecall.errors import RunDirError
from mechrecall.reproduce import LEDGER, ReproduceConfig, export_report, reproduce
from mechrecall_cli.app import app

# the tiny preset shrunk to seconds: a micro model (1 layer, 2 heads) on 16 people
MICRO = [
    "people=16", "name=micro", "steps=30", "bio_steps=15", "qa_steps=15", "batch_size=16", "checkpoint_every=10",
    "individuals=2", "graft_steps=3", "control_seeds=2", "heads_curve=[50,100]", "attention_people=4", "patch_pairs=2",
]
STEPS_PER_RUN = ("train", "trace", "shared", "graft", "ablate", "heads", "attention", "patch")
SECTIONS = (
    "The strategy gap", "Shared parameters", "Grafting", "Shared ablation against random", "Head concentration",
    "Head ablation curves", "Attention patterns", "Activation patching",
)


def micro(seeds: int = 1, *extra: str) -> ReproduceConfig:
    return ReproduceConfig(preset="tiny", seeds=seeds, overrides=parse_overrides([*MICRO, *extra]))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "tiny"
    outcomes = reproduce(out, micro(seeds=2), device="cpu", progress=False)
    expected = [f"s{s}/world" for s in range(2)] + [f"s{s}/{g}/{n}" for s in range(2) for g in ("mixed", "two-stage") for n in STEPS_PER_RUN]
    assert sorted(o.id for o in outcomes) == sorted(expected + ["report"])
    assert all(o.status == "ran" for o in outcomes)
    return out


def _copy(study: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(study, copy)
    return copy


def test_report_has_a_section_per_finding_with_seed_spread(study: Path) -> None:
    markdown = (study / "report.md").read_text()
    for title in SECTIONS:
        assert f"## {title}" in markdown
    assert "mixed seeds 0, 1; two-stage seeds 0, 1" in markdown
    gap = markdown.split("## The strategy gap")[1].split("##")[0]
    ood = next(line for line in gap.splitlines() if line.startswith("| QA-OOD accuracy"))
    assert ood.count(" ± ") == 2  # mean ± spread for both strategies
    cells = [c.strip() for c in ood.strip("|").split("|")]
    assert cells[-1] in ("yes", "no", "tie")
    # the mean is the mean of the two seeds' metrics
    values = [json.loads((study / f"s{s}" / "mixed" / "metrics.json").read_text())["qa_ood"]["accuracy"] for s in range(2)]
    assert cells[2].startswith(f"{100 * sum(values) / 2:.1f} ± ")
    page = (study / "report.html").read_text()
    assert page.count("<table>") == len(SECTIONS)
    assert "src=\"http" not in page and "src='http" not in page  # self-contained: plotly.js inline
    assert page.count("Plotly.newPlot") >= 10
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["kind"] == "study" and manifest["config"]["reproduce"]["seeds"] == 2
    assert manifest["config"]["study"]["analysis"]["heads_curve"] == [50, 100]
    assert "torch" in manifest["versions"]


def test_second_run_is_a_noop(study: Path, tmp_path: Path) -> None:
    copy = _copy(study, tmp_path)
    outcomes = reproduce(copy, micro(seeds=2), device="cpu", progress=False)
    assert {o.status for o in outcomes} == {"cached"}


def test_changed_option_reruns_only_what_depends_on_it(study: Path, tmp_path: Path) -> None:
    copy = _copy(study, tmp_path)
    outcomes = reproduce(copy, micro(2, "patch_pairs=3"), device="cpu", progress=False)
    assert sorted(o.id for o in outcomes if o.status == "ran") == sorted(
        [f"s{s}/{g}/patch" for s in range(2) for g in ("mixed", "two-stage")] + ["report"]
    )
    # the graft feeds the ablations and the head rankings, not the trace, attention or patching
    outcomes = reproduce(copy, micro(2, "patch_pairs=3", "graft_steps=4"), device="cpu", progress=False)
    ran = {o.id.split("/")[-1] for o in outcomes if o.status == "ran"}
    assert ran == {"graft", "ablate", "heads", "report"}


def test_interrupted_study_resumes(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy(study, tmp_path)
    # a training setting changed, so every run trains again; grafting fails midway
    import mechrecall.grafting

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mechrecall.grafting, "graft_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(copy, micro(2, "steps=32"), device="cpu", progress=False)
    ledger = json.loads((copy / LEDGER).read_text())
    monkeypatch.undo()
    outcomes = {o.id: o.status for o in reproduce(copy, micro(2, "steps=32"), device="cpu", progress=False)}
    # mixed training, trace and shared set finished before the interruption and are not redone
    for name in ("train", "trace", "shared"):
        assert outcomes[f"s0/mixed/{name}"] == "cached"
        assert ledger[f"s0/mixed/{name}"]["key"] == json.loads((copy / LEDGER).read_text())[f"s0/mixed/{name}"]["key"]
    assert outcomes["s0/mixed/graft"] == "ran"
    assert outcomes["s0/world"] == "cached"


def test_export_copies_the_report_with_working_links(study: Path, tmp_path: Path) -> None:
    written = export_report(study, tmp_path / "figures")
    names = {p.relative_to(tmp_path / "figures").as_posix() for p in written}
    assert {"report.md", "report.html", "figures/accuracy.html", "figures/plotly.min.js"} <= names
    markdown = (tmp_path / "figures" / "report.md").read_text()
    for link in [part.split(")")[0] for part in markdown.split("](")[1:]]:
        assert (tmp_path / "figures" / link).is_file(), link


runner = CliRunner()


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0], lines[0]


def test_cli_says_when_nothing_is_left_to_do(study: Path, tmp_path: Path) -> None:
    copy = _copy(study, tmp_path)
    args = ["reproduce", "--out", str(copy), "--seeds", "2", "--no-progress", "--device", "cpu", "--figures", str(tmp_path / "figs")]
    for item in MICRO:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nothing to do: all 35 steps are cached" in result.output
    assert "The strategy gap" in result.output and (tmp_path / "figs" / "report.html").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--set", "bogus=1"], "--set bogus: not a setting"),
        (["--set", "seed=1"], "seeds come from --seeds"),
        (["--set", "steps"], "is not key=value"),
        (["--set", "shared_fraction=2"], "shared fraction must lie in (0, 1)"),
        (["--set", "heads_curve=abc"], "heads_curve takes a list like [1,2]"),
        (["--set", "permute=1"], "permute takes true or false"),
        (["--set", "steps=1.5"], "steps takes an integer"),
        (["--set", "heads_top=abc"], "heads top 'abc' is neither a percentage"),
        (["--set", "name=no-such-model"], "model 'no-such-model' is not available offline"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--device", "bogus"], "unknown --device 'bogus'"),
    ],
)
def test_cli_bad_input(args: list[str], fragment: str, tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["reproduce", "--out", str(tmp_path / "s"), *args]), fragment)
    assert not (tmp_path / "s").exists()


def test_cli_refuses_files_where_folders_belong(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    _one_line_error(runner.invoke(app, ["reproduce", "--out", str(tmp_path / "a-file")]), "is a file, not a study folder")
    _one_line_error(runner.invoke(app, ["reproduce", "--out", str(tmp_path / "s"), "--figures", str(tmp_path / "a-file")]), "is a file; give a folder")
    assert not (tmp_path / "s").exists() and (tmp_path / "a-file").read_text() == "x"


def test_cli_refuses_a_folder_that_is_not_a_study(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    _one_line_error(runner.invoke(app, ["reproduce", "--out", str(tmp_path / "notes"), *sum((["--set", m] for m in MICRO), [])]), "is not a study folder")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_markdown_figures_are_png_exactly_when_an_exporter_is_there(study: Path) -> None:
    from mechrecall.report import static_exporter

    markdown = (study / "report.md").read_text()
    pngs = sorted((study / "figures").glob("*.png"))
    if static_exporter():  # kaleido and a browser (pip install -e ".[static]")
        assert len(pngs) == markdown.count(".png)") >= 10
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    else:
        assert not pngs and ".png)" not in markdown and markdown.count("- figure: [") >= 10


def test_strategy_gap_table_reads_a_study_without_training(study: Path) -> None:
    from mechrecall.runs import open_run
    from mechrecall.sweep import study_rows, summarize

    rows = study_rows(study)
    assert sorted((row["seed"], row["strategy"]) for row in rows) == [(0, "mixed"), (0, "two-stage"), (1, "mixed"), (1, "two-stage")]
    for row in rows:
        metrics = open_run(study / f"s{row['seed']}" / row["strategy"]).metrics()
        assert row["qa_ood"] == metrics["qa_ood"]["accuracy"] and row["trial"].startswith("tiny people=16")
    (entry,) = summarize(rows)
    by = {(row["seed"], row["strategy"]): row["qa_ood"] for row in rows}
    gaps = [by[(seed, "mixed")] - by[(seed, "two-stage")] for seed in (0, 1)]
    assert entry["gap"][0] == pytest.approx(sum(gaps) / 2)
    assert entry["seeds"] == 2
    with pytest.raises(RunDirError, match="not a study folder"):
        study_rows(study / "s0" / "mixed")
