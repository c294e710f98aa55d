"""`mechrecall reproduce`: the whole study on a micro setting — every step, the report, and the
cache (a second run is a no-op, a changed option reruns only what depends on it, an interrupted
study resumes)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from mechrecall_cli.app import app
from typer.testing import CliRunner

from mechrecall.config import parse_overrides
from mechrecall.errors import RunDirError
from mechrecall.reproduce import LEDGER, ReproduceConfig, export_report, reproduce

STEPS_PER_RUN = ("train", "shared", "graft", "ablate", "heads", "neurons", "attention", "patch")
SECTIONS = (
    "Preconditions", "The strategy gap", "Shared parameters", "Grafting", "Shared ablation against random", "Attention heads",
    "MLP neurons (not in the study)", "Attention patterns", "Activation patching",
)
VERDICTS = ("agrees", "does not agree", "not measurable", "no claim")
# what each analysis of a run reads is written by (by hand, from each analysis' inputs): the trace,
# θ_pre and θ_task by the training, S by `shared`, γ by `graft`
READS_FROM = {"shared": ("train",), "graft": ("train", "shared"), "ablate": ("train", "shared"), "heads": ("train", "shared", "graft"),
              "neurons": ("train", "shared"), "attention": ("train", "shared"), "patch": ("train",)}


def micro(seeds: tuple[int, ...] = (0,), *extra: str) -> ReproduceConfig:
    """The micro preset: every step of the study (base included) in about a minute."""
    return ReproduceConfig(preset="micro", seeds=seeds, overrides=parse_overrides(list(extra)))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "micro"
    outcomes = reproduce(out, micro((0, 1)), device="cpu", progress=False, jobs=2)  # side by side: see test_schedule.py
    expected = ["base/world", "base/train"] + [f"s{s}/world" for s in range(2)]
    expected += [f"s{s}/{g}/{n}" for s in range(2) for g in ("mixed", "two-stage") for n in STEPS_PER_RUN]
    assert sorted(o.id for o in outcomes) == sorted(expected + ["report"])
    assert all(o.status == "ran" for o in outcomes)
    return out


def _copy(study: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "micro"
    shutil.copytree(study, copy)
    return copy


def test_report_states_what_reproduces_with_every_row_beside_its_control(study: Path) -> None:
    markdown = (study / "report.md").read_text()
    assert "## What these runs reproduce" in markdown
    summary = markdown.split("## What these runs reproduce")[1].split("## ")[0]
    assert "**Preconditions** (the first section): " in summary and " of " in summary.split("**Preconditions**")[1].splitlines()[0]
    assert summary.count("- **") >= 5 and all(line.split("**")[1] in VERDICTS for line in summary.splitlines() if line.startswith("- **"))
    for title in SECTIONS:
        assert f"## {title}" in markdown
    assert "mixed seeds 0, 1; two-stage seeds 0, 1" in markdown
    assert "θ_pre: a base pre-trained here (bio recipe" in markdown
    # where θ_pre was made: its hash and the machine its manifest records, so two reports can be compared
    base_manifest = json.loads((study / "base" / "manifest.json").read_text())
    assert set(base_manifest["machine"]) == {"architecture", "cpu", "cpu_capability", "cores", "system"}
    made_on = next(line for line in markdown.splitlines() if line.startswith("Made on: "))
    assert f"θ_pre sha256 {base_manifest['files']['model.safetensors'][:16]}, trained on {base_manifest['machine']['cpu']}" in made_on
    assert f"torch kernels {base_manifest['machine']['cpu_capability']}" in made_on and f"torch {base_manifest['versions']['torch']}," in made_on
    gap = markdown.split("## The strategy gap")[1].split("##")[0]
    header = next(line for line in gap.splitlines() if line.startswith("| measure"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["measure", "study", "mixed", "mixed control", "two-stage", "two-stage control", "verdict"]
    ood = next(line for line in gap.splitlines() if line.startswith("| QA-OOD accuracy"))
    cells = [c.strip() for c in ood.strip("|").split("|")]
    assert any(cells[-1].startswith(v) for v in VERDICTS)
    # the mean is the mean of the two seeds' metrics; the control is the chance level
    values = [json.loads((study / f"s{s}" / "mixed" / "metrics.json").read_text())["qa_ood"]["accuracy"] for s in range(2)]
    assert cells[2].startswith(f"{100 * sum(values) / 2:.1f} ± ")
    chance = [json.loads((study / f"s{s}" / "mixed" / "manifest.json").read_text())["training"]["chance"]["qa_ood"] for s in range(2)]
    assert cells[3].startswith(f"{100 * sum(chance) / 2:.1f} ± ")
    # two-stage's QA-OOD before any QA was trained: the last BIO-stage evaluation, beside chance; mixed has none
    stage_one = next(line for line in gap.splitlines() if line.startswith("| QA-OOD at the end of the BIO stage"))
    cells = [c.strip() for c in stage_one.strip("|").split("|")]
    evals = [json.loads((study / f"s{s}" / "two-stage" / "manifest.json").read_text())["training"]["evals"] for s in range(2)]
    before_qa = [[e for e in runs if e["phase"] == "bio"][-1]["qa_ood"] for runs in evals]
    assert cells[2:4] == ["·", "·"] and cells[4].startswith(f"{100 * sum(before_qa) / 2:.1f} ± ")
    page = (study / "report.html").read_text()
    assert page.count("<table>") == len(SECTIONS)
    assert "src=\"http" not in page and "src='http" not in page  # self-contained: plotly.js inline
    assert page.count("Plotly.newPlot") >= 10
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["kind"] == "study" and manifest["config"]["reproduce"]["seeds"] == [0, 1]
    assert manifest["config"]["study"]["analysis"]["heads_curve"] == [50.0, 100.0]
    assert "torch" in manifest["versions"]


def test_every_run_fine_tunes_the_one_pre_trained_base(study: Path) -> None:
    from mechrecall.runs import open_run

    base = open_run(study / "base")
    assert base.world().config.population == "b" and base.train_config.strategy == "bio"
    base_people = set(base.world().dataset["people"]["full_name"])
    tuned = base.directory.load_tensors("model.safetensors")
    for seed in (0, 1):
        for strategy in ("mixed", "two-stage"):
            run = open_run(study / f"s{seed}" / strategy)
            assert run.world().config.population == "a"
            assert not base_people & set(run.world().dataset["people"]["full_name"])  # no person of the studied world
            theta_pre = run.directory.load_tensors("base.safetensors")
            assert all(torch.equal(theta_pre[n], tuned[n]) for n in tuned)  # θ_pre is the base's weights
            assert "trace_training.safetensors" in run.directory.manifest["files"]  # the study's trace, during training


def test_each_step_started_after_the_steps_it_reads_had_ended(study: Path) -> None:
    """Trainings and analyses ran side by side in two workers; the ledger's clock says each one
    waited for what it reads: a run's training for its world and the base, each analysis for the
    steps that write its inputs (the graft before the heads ranked by grafted size), and never
    more than two at once."""
    ledger = json.loads((study / LEDGER).read_text())
    span = {step: (record["started"], record["started"] + record["seconds"]) for step, record in ledger.items()}
    # the ledger rounds "started" and "seconds" to 10 ms each: an end read from it is off by up to
    # 10 ms and a start by up to 5 ms, so "after" holds to within 20 ms (at 10 ms it failed on a
    # graft that ended as its run's ablation began: 43.62 ≥ 43.63 − 0.01 in floating point)
    slack = 0.02
    for seed in range(2):
        for strategy in ("mixed", "two-stage"):
            run = f"s{seed}/{strategy}"
            pairs = [(f"s{seed}/world", f"{run}/train"), ("base/train", f"{run}/train")]
            pairs += [(f"{run}/{before}", f"{run}/{after}") for after, befores in READS_FROM.items() for before in befores]
            for before, after in pairs:
                assert span[after][0] >= span[before][1] - slack, (before, after)
    assert span["report"][0] >= max(end for step, (_, end) in span.items() if step != "report") - slack
    moments = sorted(start for start, _ in span.values())  # the ledger rounds to 10 ms
    assert max(sum(start <= moment < end - 0.02 for start, end in span.values()) for moment in moments) <= 2
    last_run = json.loads((study / "manifest.json").read_text())["last_run"]
    assert last_run["jobs"] == 2 and 0 < last_run["wall_seconds"]


def test_a_runs_analyses_wait_only_for_their_inputs() -> None:
    """The plan orders a run's analyses by what they read, not in a chain: after S is made, the
    graft, the ablation, the neurons and the attention may run side by side; the heads wait for
    the graft; patching needs only θ_task."""
    from mechrecall.reproduce import plan

    config = micro((0,))
    steps = {step.id: step for step in plan(Path("unused"), config, config.study(), device="cpu")}
    for strategy in ("mixed", "two-stage"):
        for after, befores in READS_FROM.items():
            assert set(steps[f"s0/{strategy}/{after}"].after) == {f"s0/{strategy}/{b}" for b in befores}, after


def test_second_run_is_a_noop(study: Path, tmp_path: Path) -> None:
    copy = _copy(study, tmp_path)
    outcomes = reproduce(copy, micro((0, 1)), device="cpu", progress=False)
    assert {o.status for o in outcomes} == {"cached"}


def test_changed_option_reruns_only_what_depends_on_it(study: Path, tmp_path: Path) -> None:
    copy = _copy(study, tmp_path)
    outcomes = reproduce(copy, micro((0, 1), "patch_pairs=3"), device="cpu", progress=False)
    assert sorted(o.id for o in outcomes if o.status == "ran") == sorted(
        [f"s{s}/{g}/patch" for s in range(2) for g in ("mixed", "two-stage")] + ["report"]
    )
    # the graft feeds the head rankings (through its mask's hash), not the shared set, the ablation,
    # attention or patching
    masks = {p: (copy / p / "graft.safetensors").read_bytes() for p in ("s0/mixed", "s0/two-stage", "s1/mixed", "s1/two-stage")}
    outcomes = reproduce(copy, micro((0, 1), "patch_pairs=3", "graft_steps=4"), device="cpu", progress=False)
    ran = {o.id for o in outcomes if o.status == "ran"}
    for path, before in masks.items():
        assert f"{path}/graft" in ran
        assert (f"{path}/heads" in ran) == ((copy / path / "graft.safetensors").read_bytes() != before)
    assert {i.split("/")[-1] for i in ran} <= {"graft", "heads", "report"}  # not neurons: it reads S, not γ


def test_interrupted_study_resumes(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy(study, tmp_path)
    # a training setting changed, so every run trains again (not the base); grafting fails midway
    import mechrecall.findings.graft

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mechrecall.findings.graft, "learn_graft", interrupted)
    with pytest.raises(KeyboardInterrupt):  # one job: the analyses run in this process, where the patch is
        reproduce(copy, micro((0, 1), "steps=64"), device="cpu", progress=False, jobs=1)
    ledger = json.loads((copy / LEDGER).read_text())
    monkeypatch.undo()
    outcomes = {o.id: o.status for o in reproduce(copy, micro((0, 1), "steps=64"), device="cpu", progress=False, jobs=2)}
    # mixed training and its shared set finished before the interruption and are not redone
    for name in ("train", "shared"):
        assert outcomes[f"s0/mixed/{name}"] == "cached"
        assert ledger[f"s0/mixed/{name}"]["key"] == json.loads((copy / LEDGER).read_text())[f"s0/mixed/{name}"]["key"]
    assert outcomes["s0/mixed/graft"] == "ran"
    assert outcomes["s0/world"] == outcomes["base/train"] == "cached"


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
    args = ["reproduce", "--preset", "micro", "--out", str(copy), "--seeds", "2", "--no-progress", "--device", "cpu", "--figures", str(tmp_path / "figs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nothing to do: all 37 steps are cached" in result.output
    assert "mixed training extracts facts of unseen people" in result.output and (tmp_path / "figs" / "report.html").is_file()


def test_any_seed_on_demand(study: Path, tmp_path: Path) -> None:
    """--seed S runs the given seeds instead of 0 … N−1; seeds already there come from the cache."""
    copy = _copy(study, tmp_path)
    outcomes = {o.id: o.status for o in reproduce(copy, micro((1, 7)), device="cpu", progress=False)}
    assert outcomes["s1/mixed/train"] == "cached" and outcomes["base/train"] == "cached"
    assert outcomes["s7/world"] == outcomes["s7/mixed/train"] == outcomes["s7/two-stage/patch"] == "ran"
    assert "s0/world" not in outcomes
    assert "mixed seeds 1, 7; two-stage seeds 1, 7" in (copy / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--preset", "huge"], "'huge' is not one of"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--seed", "1", "--seed", "1"], "--seed values must be distinct"),
        (["--seed", "-3"], "--seed -3 must be an integer in [0, 2147483647]"),
        (["--seed", "99999999999999999999"], "--seed 99999999999999999999 must be an integer"),
        (["--seeds", "2", "--seed", "1"], "give --seeds N or --seed S"),
        (["--set", "base=pretrained"], "unknown base recipe 'pretrained'"),
        (["--set", "base_steps=abc"], "base_steps takes an integer"),
        (["--set", "qa_lr=x"], "qa_lr takes a number or null"),
        (["--set", "lr=NaN"], "lr must be a positive number"),
        (["--set", "max_steps=[1]"], "max_steps takes an integer or null"),
        (["--set", "bogus=1"], "--set bogus: not a setting"),
        (["--set", "seed=1"], "seeds come from --seeds"),
        (["--set", "steps"], "is not key=value"),
        (["--set", "shared_fraction=2"], "shared fraction must lie in (0, 1)"),
        (["--set", "heads_curve=abc"], "heads_curve takes a list like [1,2]"),
        (["--set", "permute=1"], "permute takes true or false"),
        (["--set", "steps=1.5"], "steps takes an integer"),
        (["--set", "heads_top=abc"], "heads top 'abc' is neither a percentage"),
        (["--set", "name=no-such-model", "--set", "base=random"], "model 'no-such-model' is not available offline"),
        (["--set", "name=no-such-model"], "a base pre-trained here needs a model built here"),
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
    _one_line_error(runner.invoke(app, ["reproduce", "--preset", "micro", "--out", str(tmp_path / "notes")]), "is not a study folder")
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
        assert row["qa_ood"] == metrics["qa_ood"]["accuracy"] and row["trial"] == "micro"
    (entry,) = summarize(rows)
    by = {(row["seed"], row["strategy"]): row["qa_ood"] for row in rows}
    gaps = [by[(seed, "mixed")] - by[(seed, "two-stage")] for seed in (0, 1)]
    assert entry["gap"][0] == pytest.approx(sum(gaps) / 2)
    assert entry["seeds"] == 2
    with pytest.raises(RunDirError, match="not a study folder"):
        study_rows(study / "s0" / "mixed")


def test_a_killed_study_leaves_no_worker_training_and_resumes(tmp_path: Path) -> None:
    """`kill` (SIGTERM) on reproduce ends it with the interrupted line and exit 130; its training
    workers stop too (no orphan keeps writing the run), and its checkpoint is kept for the same command to resume."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "study"
    command = [sys.executable, "-c", "from mechrecall_cli.app import main; main()", "reproduce", "--preset", "micro", "--out", str(out),
               "--set", "steps=1500", "--set", "bio_steps=750", "--set", "qa_steps=750", "--set", "checkpoint_every=10",
               "--no-progress", "--device", "cpu", "--jobs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "s0" / "mixed" / "checkpoint.safetensors"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    time.sleep(2)
    before = checkpoint.stat().st_mtime_ns
    time.sleep(3)
    assert checkpoint.stat().st_mtime_ns == before  # nothing trains on after the study stopped
    assert checkpoint.exists()  # what a resume starts from (resuming itself: test_interrupted_study_resumes)


def test_results_table_has_a_row_per_seed_strategy_and_measure(study: Path) -> None:
    import csv

    from mechrecall.runs import open_run

    with open(study / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"seed", "strategy", "source", "measure", "value"}
    for seed in (0, 1):
        for strategy in ("mixed", "two-stage"):
            mine = {(r["source"], r["measure"]): float(r["value"]) for r in rows if r["seed"] == str(seed) and r["strategy"] == strategy}
            metrics = open_run(study / f"s{seed}" / strategy).metrics()
            assert mine["metrics", "qa_ood.accuracy"] == pytest.approx(metrics["qa_ood"]["accuracy"])
            assert ("training", "relative_update") in mine and {"shared", "graft", "ablate", "heads"} <= {s for s, _ in mine}
            assert (("training", "bio_after_stage1") in mine) == (strategy == "two-stage")
            assert (("training", "qa_ood_after_stage1") in mine) == (strategy == "two-stage")
    assert "results.csv" in json.loads((study / "manifest.json").read_text())["files"]


def test_headline_numbers_are_the_runs_own(study: Path) -> None:
    """analyses/headline.py plots (and prints) what the runs' files hold: accuracies per seed, and
    the heads reset beside every random draw — checked against the JSON by hand."""
    import importlib.util
    import statistics

    spec = importlib.util.spec_from_file_location("headline", Path(__file__).parents[1] / "analyses" / "headline.py")
    headline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(headline)
    data = headline.collect(study)
    for strategy in ("mixed", "two-stage"):
        runs = [study / f"s{seed}" / strategy for seed in (0, 1)]
        metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
        heads = [json.loads((run / "heads.json").read_text()) for run in runs]
        assert [m["qa_ood"] for m in data[strategy]["metrics"]] == [m["qa_ood"]["accuracy"] for m in metrics]
        assert data[strategy]["ranked"] == [h["headline"]["ranked"]["shared"]["accuracy"]["qa_ood"] for h in heads]
        draws = [d["accuracy"]["qa_ood"] for h in heads for d in h["headline"]["random"]]
        assert data[strategy]["random"] == draws and len(draws) == sum(len(h["headline"]["random"]) for h in heads)
    lines = headline.summary(data)
    expected = f"{100 * statistics.fmean(data['mixed']['random']):.1f} ± {100 * statistics.pstdev(data['mixed']['random']):.1f}%"
    assert expected in lines[1] and lines[1].startswith("mixed QA-OOD: before")


def _keys(out: Path, config: ReproduceConfig) -> dict[str, str | None]:
    from mechrecall.reproduce import plan

    return {step.id: step.key() for step in plan(out, config, config.study(), "cpu")}


def test_a_changed_architecture_is_trained_again_and_a_neutral_new_setting_is_not(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys name a built size's architecture once it differs from what the name meant before, so a
    run made with the old one is never reused; a setting added at its old behaviour (ℓ1 = 0) keeps
    every finished step."""
    from mechrecall import config as config_module
    from mechrecall.runs import _same_config, open_run, run_config

    ledger = json.loads((study / LEDGER).read_text())
    recorded = {step: record["key"] for step, record in ledger.items()}
    neutral = _keys(study, micro((0, 1), "l1_to_base=0.0"))
    assert all(recorded[s] == k for s, k in neutral.items() if s != "report")  # the report names its --set
    with_l1 = _keys(study, micro((0, 1), "l1_to_base=0.5"))
    assert {s for s, k in with_l1.items() if k != recorded.get(s)} >= {f"s{s}/{g}/train" for s in range(2) for g in ("mixed", "two-stage")}
    assert with_l1["base/train"] == recorded["base/train"]  # the base never reads the fine-tuning's ℓ1

    # before: the base run's own config matches what would be asked of it now
    from mechrecall.artifacts import ArtifactDir

    base = open_run(study / "base")
    base_world = ArtifactDir.open(study / "worlds" / "base")
    assert _same_config(base.directory.config, run_config(base_world, base.model_config, base.train_config, "micro"))
    # a run made before micro lost its trained b_U recorded no architecture: it is not reused
    legacy = {**base.directory.config, "model": {k: v for k, v in base.directory.config["model"].items() if k != "architecture"}}
    assert "architecture" in base.directory.config["model"]
    assert not _same_config(legacy, run_config(base_world, base.model_config, base.train_config, "micro"))
    changed = dataclasses.replace(config_module.MODEL_SIZES["micro"], d_mlp=128)
    monkeypatch.setitem(config_module.MODEL_SIZES, "micro", changed)
    moved = _keys(study, micro((0, 1)))
    assert moved["base/train"] != recorded["base/train"] and moved["base/world"] == recorded["base/world"]
    # and the run folder is not taken for a finished run of the new architecture either
    assert not _same_config(base.directory.config, run_config(base_world, base.model_config, base.train_config, "micro"))


def test_ood_structure_adds_up_to_the_runs_own_accuracy(study: Path) -> None:
    """analyses/ood_structure.py: its accuracy is the run's recorded QA-OOD; people, attributes and
    wrong answers partition the questions; the binomial reference holds as many people."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ood_structure", Path(__file__).parents[1] / "analyses" / "ood_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = study / "s0" / "mixed"
    result = module.structure(run)
    metrics = json.loads((run / "metrics.json").read_text())["qa_ood"]
    assert result["accuracy"] == pytest.approx(metrics["accuracy"]) and result["n"] == metrics["n"]
    assert result["by_attribute"] == pytest.approx(metrics["by_attribute"])
    assert sum(result["per_person"].values()) == result["people"] == pytest.approx(sum(result["binomial"].values()))
    right = sum(j * n for j, n in result["per_person"].items())
    assert right == round(result["accuracy"] * result["n"]) and sum(result["wrong"].values()) == result["n"] - right
    assert any("Dispersion index" in line for line in module.lines(result))


def test_compare_runs_reads_where_two_trainings_part(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """analyses/compare_runs.py: a run against itself is the same config whose losses never part;
    two seeds differ in their seeds and part at the first logged step; the gaps are exact."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).parents[1] / "analyses" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == [("a.c", 2, 3), ("d", None, 4)]
    gaps = module.loss_gaps([{"step": 10, "loss_bio": 2.0, "lr": 1.0}, {"step": 20, "loss_bio": 1.0}], [{"step": 10, "loss_bio": 1.5}])
    assert gaps == [(10, "loss_bio", 0.25)]
    run, other = study / "s0" / "mixed", study / "s1" / "mixed"
    for pair in ((run, run), (run, other)):
        sys.argv = ["compare_runs.py", str(pair[0]), str(pair[1])]
        module.main()
    same, different = capsys.readouterr().out.split("configs differ")
    assert same.startswith("same config") and "part (relative difference > 1e-4) at step never" in same
    assert "| qa_ood |" in same and "+0.00 |" in same.split("| qa_ood |")[1].splitlines()[0]
    assert "seed" in different.splitlines()[0] and "at step never" not in different


def test_task_vector_graft_of_every_element_is_theta_task(study: Path) -> None:
    """analyses/task_vector.py: grafting all of Δθ onto θ_pre gives θ_task's QA-ID exactly; the
    energy held by the top elements grows with their share and ends at all of it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("task_vector", Path(__file__).parents[1] / "analyses" / "task_vector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.task_vector(study / "s0" / "mixed", (0.05, 1.0))
    assert result["grafted_qa_id"][1.0] == result["tuned_qa_id"]
    energies = list(result["top_energy"].values())
    assert energies == sorted(energies) and 0 < energies[0] <= energies[-1] <= 1.0 + 1e-6
    assert 0.0 <= result["unchanged"] < 1.0 and any("θ_pre + top 100%" in line for line in module.lines(result))
    # the parts partition the trainable elements, each parameter of the model in the part its name says
    from mechrecall.runs import open_run

    run = open_run(study / "s0" / "mixed")
    tuned, base = run.load_model(), run.load_model("base")
    names = [n for n, p in tuned.named_parameters() if p.requires_grad]
    assert {module.part(n) for n in names} == set(module.PARTS) and sum(p["elements"] for p in result["parts"].values()) == result["elements"]
    assert module.part("blocks.1.attn.W_O") == "attn" and module.part("blocks.0.ln2.w") == "norm" and module.part("pos_embed.W_pos") == "embed"
    # reference, by the other road: θ_task with its attention weights copied back from θ_pre
    import torch

    from mechrecall.evaluation import accuracy_evaluator

    start = dict(base.named_parameters())
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if ".attn." in name:
                parameter.copy_(start[name])
    evaluate = accuracy_evaluator(run.tokenizer(), run.world().dataset, metrics=("qa_id",))
    assert result["parts"]["attn"]["all_but"] == pytest.approx(evaluate(tuned)["qa_id"], abs=0.01)
    with torch.no_grad():
        attn = [(p - start[n]).flatten() for n, p in run.load_model().named_parameters() if ".attn." in n]
        relative = float(torch.cat(attn).norm() / torch.cat([start[n].flatten() for n in start if ".attn." in n]).norm())
    assert result["parts"]["attn"]["relative_change"] == pytest.approx(relative, rel=1e-5)


def test_timing_reads_the_schedule_the_study_ran(study: Path, tmp_path: Path) -> None:
    """analyses/timing.py: the side-by-side span is the ledger's first start to its last end, and
    it fits in the wall clock of the study's run (which also spawned its workers and wrote the manifest)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("timing", Path(__file__).parents[1] / "analyses" / "timing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ledger = json.loads((study / LEDGER).read_text())
    seed0 = [r for step, r in ledger.items() if not step.startswith("s1/")]
    assert module.span(study, 0) == pytest.approx(max(r["started"] + r["seconds"] for r in seed0) - min(r["started"] for r in seed0))
    # every time is recorded to 0.01 s: the span (two starts and a length) and the wall clock may each
    # be off by their rounding, 0.02 s together at most, and by nothing more
    assert module.span(study, 0) <= json.loads((study / "manifest.json").read_text())["last_run"]["wall_seconds"] + 0.02 + 1e-9
    # steps that did not run in one reproduce (a report rewritten later, by another seed's run) give no span
    later = tmp_path / "later"
    later.mkdir()
    moved = {**ledger, "report": {**ledger["report"], "started": ledger["report"]["started"] + 3600}}
    (later / LEDGER).write_text(json.dumps(moved))
    assert module.span(later, 0) is None and module.span(later, 1) is None
    parts = module.parts(study, 0)
    assert parts["total, one part after another"] == pytest.approx(
        parts["base (pre-training, alone)"] + parts["both trainings, side by side (the slower)"] + parts["worlds, analyses and report"])


def test_the_report_describes_the_world_as_run_after_set(tmp_path: Path) -> None:
    """`--set bio_per_person=3 …` on the tiny preset: the report's opening no longer presents the
    preset's own description (one BIO each) as what was run, and its world line says what was."""
    from mechrecall.reproduce import ReproduceConfig, preamble

    changed = ReproduceConfig(preset="tiny", overrides={"bio_per_person": 3, "permute": True, "fullname": True, "qa_id_fraction": 0.5})
    first, world = preamble(changed, changed.study(), tmp_path)[:2]
    assert first.startswith("`mechrecall reproduce --preset tiny --seed 0 --set bio_per_person=3 --set permute=true")
    assert first.endswith("with the settings set above changed.") and "the tiny preset (CPU default" in first
    assert world.startswith("World: 1,000 people, 3 BIOs each, permuted, the full name in every sentence; QA of 50% of them trained")
    plain = ReproduceConfig(preset="tiny")
    first, world = preamble(plain, plain.study(), tmp_path)[:2]
    assert first.endswith(f"`: {plain.study().description}.")
    assert world == ("World: 1,000 people, 1 BIO each, pronouns after the first sentence; QA of 90% of them trained "
                     "(in-distribution), the rest held out; model: tiny-h16.")


def test_shared_tensors_reads_where_s_and_the_survival_reset_lie(study: Path) -> None:
    """analyses/shared_tensors.py: per tensor, |S| as the stored mask holds it (counted here element by
    element), the 1% reset's count there as ablate drew it (the whole draw placed, no tensor over its
    size), the token rows S touches, and the drop ablate measured."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("shared_tensors", Path(__file__).parents[1] / "analyses" / "shared_tensors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = study / "s0" / "mixed"
    stored = load_file(str(run / "shared_mask.safetensors"))
    found = module.layout(run, top=len(stored))
    counted = {name: sum(int(v) for v in tensor.flatten().tolist()) for name, tensor in stored.items()}
    assert found["size"] == sum(counted.values()) > 0
    assert {row["tensor"]: row["shared"] for row in found["rows"]} == {n: c for n, c in counted.items() if c}
    assert [row["shared"] for row in found["rows"]] == sorted((row["shared"] for row in found["rows"]), reverse=True)
    ablation = json.loads((run / "ablate.json").read_text())
    assert found["survival_size"] == ablation["survival_size"] == sum(row["survival"] for row in found["rows"])
    assert all(0 < row["survival"] <= row["numel"] == stored[row["tensor"]].numel() for row in found["rows"])
    embedding = stored["embed.W_E"]
    touched = sum(1 for token in range(embedding.shape[0]) if any(int(v) for v in embedding[token].tolist()))
    assert found["embedding_rows"] == (touched, embedding.shape[0])
    drops = [1 - draw["qa_ood"] / ablation["tuned"]["qa_ood"] for draw in ablation["survival"]]
    assert found["survival_drop"] == pytest.approx(sum(drops) / len(drops))
    assert "| 0 | mixed | " in module.markdown(study, top=3)


@pytest.mark.parametrize("case", ["not-a-folder", "top-zero", "no-seeds", "markdown-under-a-file"])
def test_shared_tensors_refuses_bad_input_with_one_line(case: str, study: Path, tmp_path: Path) -> None:
    """analyses/shared_tensors.py on bad input: exit code 2, one `error:` line, no traceback, and the
    file a --markdown path would sit under is left as it was."""
    import subprocess
    import sys

    script = str(Path(__file__).parents[1] / "analyses" / "shared_tensors.py")
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    (tmp_path / "empty").mkdir()
    arguments = {
        "not-a-folder": ["--study", str(mine)],
        "top-zero": ["--study", str(study), "--top", "0"],
        "no-seeds": ["--study", str(tmp_path / "empty")],
        "markdown-under-a-file": ["--study", str(study), "--markdown", str(mine / "table.md")],
    }[case]
    done = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert mine.read_text() == "mine"


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "analyses" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reset_parts_splits_ablates_own_draw_into_disjoint_parts(study: Path) -> None:
    """analyses/reset_parts.py: the tokens new to θ_pre hold every last name of the studied world (the
    base's population never uses them) and no token of the base's BIO texts; each survival draw, split,
    gives four disjoint masks whose union is the draw, the embedding's part counted here row by row;
    the whole draw measured again is exactly ablate.json's drop."""
    from safetensors.torch import load_file

    import mechrecall as mr
    from mechrecall.findings.shared import read_shared_mask
    from mechrecall.masks import random_scaled
    from mechrecall.params import ParameterIndex

    module = _script("reset_parts")
    run, base = mr.open_run(study / "s0" / "mixed"), mr.open_run(study / "base")
    new = module.training_tokens(run) - module.training_tokens(base)
    tokenizer = run.tokenizer()
    last_names = set(run.world().dataset["people"]["last_name"])
    assert not last_names & set(base.world().dataset["people"]["last_name"])
    assert {tokenizer.convert_tokens_to_ids(name) for name in last_names} <= new
    base_tokens = {t for text in base.world().dataset["bio"]["text"] for t in tokenizer(text, add_special_tokens=False)["input_ids"]}
    assert base_tokens and not base_tokens & new

    ablation = json.loads((run.path / "ablate.json").read_text())
    shared = read_shared_mask(run, ParameterIndex.from_spec(run.spec()))
    draw = random_scaled(shared, ablation["survival_size"], ablation["seeds"][0])
    whole = {name for name, chosen in draw.items() if bool(chosen.all())}
    new_rows = torch.tensor([t in new for t in range(draw[module.EMBEDDING].shape[0])])
    parts = module.split_draw(draw, new_rows, whole)
    assert list(parts) == list(module.PARTS)
    header = module.markdown(study, ("mixed",), 1).splitlines()
    assert len({line.count("|") for line in header[:3]}) == 1  # every row of the table has the header's columns
    for name, chosen in draw.items():
        stack = torch.stack([parts[p][name] for p in module.PARTS]).int()
        assert torch.equal(stack.sum(0), chosen.int())  # disjoint, and together the draw
    embedding = draw[module.EMBEDDING]
    in_new_rows = sum(int(embedding[t].sum()) for t in range(embedding.shape[0]) if t in new)
    assert int(parts[module.PARTS[0]][module.EMBEDDING].sum()) == in_new_rows
    assert sum(int(parts[module.PARTS[2]][n].sum()) for n in draw) == sum(draw[n].numel() for n in whole)

    found = module.measure(run.path, study / "base", draws=None)
    drops = [1 - d["qa_ood"] / ablation["tuned"]["qa_ood"] for d in ablation["survival"]]
    assert found["drops"]["whole draw"] == pytest.approx(sum(drops) / len(drops))
    assert found["new_rows"] == len(new) and found["draws"] == len(ablation["seeds"])
    assert sum(found["counts"][p] for p in module.PARTS) == pytest.approx(ablation["survival_size"])
    assert set(found["drops"]) == {"whole draw", *module.PARTS, module.WITHOUT_WHOLE}
    assert found["counts"][module.WITHOUT_WHOLE] == pytest.approx(ablation["survival_size"] - found["counts"][module.PARTS[2]])
    assert found["new_last_names"] == len(last_names)
    assert found["relative_update"] == json.loads((run.path / "manifest.json").read_text())["training"]["relative_update"]
    assert load_file(str(run.path / "shared_mask.safetensors")).keys() == shared.keys()


@pytest.mark.parametrize("case", ["not-a-folder", "draws-zero", "no-seeds", "no-base", "markdown-under-a-file"])
def test_reset_parts_refuses_bad_input_with_one_line(case: str, study: Path, tmp_path: Path) -> None:
    """analyses/reset_parts.py on bad input: exit code 2, one `error:` line, no traceback; the file a
    --markdown path would sit under is left as it was."""
    import subprocess
    import sys

    script = str(Path(__file__).parents[1] / "analyses" / "reset_parts.py")
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "baseless" / "s0").mkdir(parents=True)
    arguments = {
        "not-a-folder": ["--study", str(mine)],
        "draws-zero": ["--study", str(study), "--draws", "0"],
        "no-seeds": ["--study", str(tmp_path / "empty")],
        "no-base": ["--study", str(tmp_path / "baseless")],
        "markdown-under-a-file": ["--study", str(study), "--strategy", "mixed", "--draws", "1", "--markdown", str(mine / "table.md")],
    }[case]
    done = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert mine.read_text() == "mine"


def test_the_person_split_reaches_the_base_and_the_studied_worlds(tmp_path: Path) -> None:
    """--set population_split=person: the plan's base world (population b) and every studied world
    (population a) are drawn with it, so the base knows every name token of the studied people; at
    the default split the world steps keep the keys they had before the setting existed."""
    from mechrecall.config import to_dict
    from mechrecall.reproduce import plan

    config = micro((0, 1), "population_split=person")
    steps = {step.id: step for step in plan(tmp_path / "m", config, config.study(), "cpu")}
    assert steps["base/world"].options["world"]["population_split"] == "person"
    assert steps["base/world"].options["world"]["population"] == "b"
    for seed in (0, 1):
        assert steps[f"s{seed}/world"].options["world"]["population_split"] == "person"
        assert steps[f"s{seed}/world"].options["world"]["population"] == "a"
    default = micro((0,))
    plain = {step.id: step for step in plan(tmp_path / "d", default, default.study(), "cpu")}
    study = default.study()
    before = {k: v for k, v in to_dict(dataclasses.replace(study.world, population="a", seed=0)).items() if k != "population_split"}
    assert plain["s0/world"].options == {"world": before}
    assert plain["base/world"].options == {"world": {k: v for k, v in to_dict(study.base.world()).items() if k != "population_split"}}
