"""The sweep tool: trial parsing, runs for both strategies (and a disjoint base), the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechrecall.errors import ConfigError
from mechrecall.sweep import Trial, run_sweep, summarize

SMALL = "people=12,name=micro,steps=4,bio_steps=2,qa_steps=2,batch_size=4,warmup_steps=1"


def test_trial_parsing_routes_settings_and_refuses_unknown_ones() -> None:
    trial = Trial.parse("aug:bio_per_person=3,permute=true,weight_decay=1.0,name=micro")
    world, model, train, base = trial.configs(seed=2)
    assert world.bio_per_person == 3 and world.permute is True and world.seed == 2
    assert train.weight_decay == 1.0 and train.seed == 2 and model.name == "micro" and base.recipe == "mixed"  # the tiny preset's base
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Trial.parse("x:colour=blue")
    with pytest.raises(ConfigError, match="qa-share"):
        Trial.parse("x:qa_share=2")
    with pytest.raises(ConfigError, match="unknown base recipe 'pretrained'"):
        Trial.parse("x:base=pretrained")
    with pytest.raises(ConfigError, match="unknown setting 'base_colour'"):
        Trial.parse("x:base=bio,base_colour=1")
    world, _, _, base = Trial.parse("b:base=bio,base_steps=40,name=micro").configs(seed=1)
    assert base.recipe == "bio" and base.steps == 40 and world.population == "a" and base.world().population == "b"


def test_sweep_trains_both_strategies_and_summarizes_the_gap(tmp_path: Path) -> None:
    trials = [Trial.parse(f"plain:{SMALL},base=random"), Trial.parse(f"disjoint:{SMALL},base=mixed,base_people=12,base_steps=4,base_batch_size=4")]
    rows = run_sweep(trials, [0, 1], tmp_path, device="cpu", progress=False)
    assert len(rows) == 8 and {r["strategy"] for r in rows} == {"mixed", "two-stage"}
    bases = list((tmp_path / "bases").iterdir())
    assert len(bases) == 1 and (bases[0] / "model.safetensors").exists()  # one base for both seeds and strategies
    for row in rows:  # the measures of the presets issue are there
        assert row["chance_qa_ood"] is not None and row["relative_update"] > 0
        assert (row["bio_after_stage1"] is not None) == (row["strategy"] == "two-stage")
        stage_one = [e for e in row["evals"] if e["phase"] == "bio"]
        assert row["qa_ood_after_stage1"] == (stage_one[-1]["qa_ood"] if row["strategy"] == "two-stage" else None)
    summary = {entry["trial"]: entry for entry in summarize(rows)}
    two_stage = [r for r in rows if r["trial"] == "plain" and r["strategy"] == "two-stage"]
    assert summary["plain"]["two-stage/qa_ood_after_stage1"][0] == pytest.approx(sum(r["qa_ood_after_stage1"] for r in two_stage) / 2)
    # a row written before the measure was recorded: read off its evaluations, to the same summary
    older = [{k: v for k, v in r.items() if k != "qa_ood_after_stage1"} for r in rows]
    assert summarize(older) == summarize(rows)
    plain = [r for r in rows if r["trial"] == "plain"]
    gaps = [
        next(r["qa_ood"] for r in plain if r["seed"] == s and r["strategy"] == "mixed")
        - next(r["qa_ood"] for r in plain if r["seed"] == s and r["strategy"] == "two-stage")
        for s in (0, 1)
    ]
    assert summary["plain"]["gap"][0] == pytest.approx(sum(gaps) / 2)
    assert summary["plain"]["seeds"] == 2
    again = run_sweep(trials[:1], [0], tmp_path, device="cpu", progress=False)  # finished runs are reused
    assert again[0]["run"] == rows[0]["run"] and again[0]["qa_ood"] == rows[0]["qa_ood"]
    # a trial that changes only the two-stage QA stage reuses the mixed run of the trial it varies
    varied = run_sweep([Trial.parse(f"gentle:{SMALL},base=random,qa_lr=3e-5")], [0], tmp_path, device="cpu", progress=False)
    assert varied[0]["strategy"] == "mixed" and varied[0]["run"] == rows[0]["run"]
    assert varied[1]["run"].endswith("gentle/two-stage-s0")


def test_strategy_gap_table_renders_the_summary() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("strategy_gap", Path(__file__).parents[1] / "analyses" / "strategy_gap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = [{"trial": "tiny", "mixed/bio": (0.998, 0.001), "mixed/qa_id": (1.0, 0.0), "mixed/qa_ood": (0.5, 0.1),
                "two-stage/qa_id": (0.99, 0.01), "two-stage/qa_ood": (0.1, 0.02), "gap": (0.4, 0.05), "mixed/chance_qa_ood": (0.032, 0.0),
                "two-stage/bio_after_stage1": (1.0, 0.0), "two-stage/qa_ood_after_stage1": (0.05, 0.01), "train_seconds": 600.0}]
    table = module.markdown_table(summary, "0,1,2")
    # a measure the summary lacks (two-stage BIO here) is a dot, not a shifted column
    assert "| tiny | 99.8 ± 0.1 | 100.0 ± 0.0 | 50.0 ± 10.0 | 100.0 ± 0.0 | 5.0 ± 1.0 | · | 99.0 ± 1.0 | 10.0 ± 2.0 | 40.0 ± 5.0 | 3.2 ± 0.0 | 600 |" in table


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seeds", "a"], "give distinct integers >= 0"),
        (["--seeds", "0,0"], "give distinct integers >= 0"),
        (["--presets", "tiny,nope"], "unknown preset 'nope'"),
        (["--study", "missing"], "does not exist or is not a directory"),
        (["--study", "missing", "--seeds", "0"], "give either --study or --presets/--seeds"),
    ],
)
def test_strategy_gap_bad_input_is_one_line_and_writes_nothing(args: list[str], fragment: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "strategy_gap.py"
    root = tmp_path / "root"
    result = subprocess.run(
        [sys.executable, str(script), "--root", str(root), *[str(tmp_path / a) if a == "missing" else a for a in args]],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr
    assert not root.exists()


def test_small_is_the_tiny_recipe_at_a_larger_scale() -> None:
    """The GPU preset changes the scale (people, model, batch), never the recipe: the same world
    augmentation, the same base recipe, the same learning rates and decays. At both scales the base
    is pre-trained on other people's augmented BIOs (varied text), and the studied world is the
    single-BIO world of the sweep's best trial, where mixed training leads."""
    from mechrecall.config import MODEL_SIZES, PRESETS

    tiny, small = PRESETS["tiny"], PRESETS["small"]
    recipe = lambda w: (w.bio_per_person, w.permute, w.fullname, w.qa_id_fraction)  # noqa: E731
    assert recipe(small.world) == recipe(tiny.world) and small.world.people > tiny.world.people
    for study in (tiny, small):
        base = study.base.world()
        assert (base.bio_per_person, base.permute, base.fullname) == (3, True, True)
        assert recipe(study.world) == (1, False, False, 0.9) and base.population != study.world.population
    for field in ("strategy", "lr", "weight_decay", "qa_lr", "qa_weight_decay", "qa_share", "warmup_steps", "min_lr_ratio", "l1_to_base"):
        assert getattr(small.train, field) == getattr(tiny.train, field), field
    for field in ("recipe", "lr", "weight_decay", "qa_share", "bio_per_person", "permute", "fullname"):
        assert getattr(small.base, field) == getattr(tiny.base, field), field
    assert small.base.people == small.world.people and tiny.base.people == tiny.world.people
    sizes = [MODEL_SIZES[study.model.name] for study in (tiny, small)]
    assert all(s.n_layers * s.n_heads >= 16 for s in sizes) and sizes[1].n_layers * sizes[1].n_heads > sizes[0].n_layers * sizes[0].n_heads
    # the passes over the BIO texts in the BIO stage are the same at both scales
    passes = [s.train.bio_steps * s.train.batch_size / (s.world.people * s.world.bio_per_person) for s in (tiny, small)]
    assert passes[1] == pytest.approx(passes[0], rel=0.01)
    mixed = [s.train.steps * s.train.batch_size / s.world.people for s in (tiny, small)]
    assert mixed[1] == pytest.approx(mixed[0], rel=0.01)


def test_gpu_sweep_script_shares_a_base_and_brings_back_every_row(tmp_path: Path) -> None:
    """analyses/gpu_sweep.sh, run here on the CPU: a `wait` line starts once its root's base is
    pre-trained and reuses it; the archive holds both strategies' rows and no weights."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tarfile

    repo = Path(__file__).parents[1]
    work = tmp_path / "work"
    (work / "analyses").mkdir(parents=True)
    shutil.copy(repo / "analyses" / "gpu_sweep.sh", work / "analyses")
    shutil.copy(repo / "analyses" / "sweep.py", work / "analyses")
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shims / "nvidia-smi").write_text("#!/bin/sh\necho no GPU: a test\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    trial = f"t:{SMALL},base=bio,base_people=12,base_steps=4,base_batch_size=4"
    (work / "trials.txt").write_text(f"r|micro|0|{trial}|mixed\nr|micro|0|{trial}|two-stage|wait\n")
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "DEVICE": "cpu", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", "analyses/gpu_sweep.sh", "trials.txt", "300"], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "after the base" in done.stdout
    with tarfile.open(tmp_path / "out" / "gpu.tgz") as archive:
        names = archive.getnames()
        rows = json.load(archive.extractfile("g/r/results.json"))
    assert sorted(r["strategy"] for r in rows) == ["mixed", "two-stage"]
    assert len({n.split("/")[3] for n in names if n.startswith("g/r/bases/") and n.count("/") >= 4}) == 1  # one base
    assert not any(n.endswith(".safetensors") for n in names)


def test_rows_merged_side_by_side_are_all_kept(tmp_path: Path) -> None:
    """Processes that add rows to one results.json at the same time lose none of them."""
    import json
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.map(_add_rows, [(tmp_path, worker) for worker in range(4)])
    rows = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["trial"], r["seed"]) for r in rows) == sorted((f"w{w}", s) for w in range(4) for s in range(25))


def _add_rows(job: tuple[Path, int]) -> None:
    from mechrecall.sweep import _merge_results

    root, worker = job
    for seed in range(25):
        _merge_results(root / "results.json", {"trial": f"w{worker}", "seed": seed, "strategy": "mixed"})


def test_a_sweep_waits_for_a_base_another_process_is_pre_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Sweeps side by side (one per core) that need the same base: the second waits for the
    first's base and goes on, instead of failing on its lock (it did, with a traceback)."""
    import dataclasses
    import threading

    from mechrecall import sweep
    from mechrecall.artifacts import output_lock

    monkeypatch.setattr(sweep, "BASE_POLL_SECONDS", 0.05)
    trial = Trial.parse(f"t:{SMALL},base=bio,base_people=12,base_steps=4,base_batch_size=4")
    _, model, _, base = trial.configs(seed=0)
    out = tmp_path / "bases" / sweep._key(base, dataclasses.replace(model, seed=base.seed))
    result: dict[str, list] = {}
    worker = threading.Thread(target=lambda: result.update(rows=run_sweep([trial], [0], tmp_path, strategies=("mixed",), device="cpu", progress=False)))
    with output_lock(out):  # another process is pre-training this base
        worker.start()
        worker.join(timeout=2.0)
        assert worker.is_alive() and "rows" not in result  # waiting, not failed
    worker.join(timeout=300)
    assert not worker.is_alive() and len(result["rows"]) == 1 and (out / "model.safetensors").exists()
    assert "another process holds this base" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--trial", "x:colour=blue"], "unknown setting 'colour'"),
    (["--table-only"], "holds no results.json"),
])
def test_sweep_script_bad_input_is_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    done = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "root"), *args], capture_output=True, text=True)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "root").exists()


def test_sweep_table_outlives_its_run_folders(tmp_path: Path) -> None:
    """The rows written beside a --markdown page rebuild the same page once the runs are gone
    (a new machine): the table of every trial, negative ones included, is never lost again."""
    import shutil
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    root, page = tmp_path / "root", tmp_path / "docs" / "sweep.md"
    done = subprocess.run([sys.executable, str(script), "--root", str(root), "--preset", "micro", "--trial", f"t:{SMALL},base=random",
                           "--device", "cpu", "--no-progress", "--markdown", str(page)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first = page.read_text()
    assert "`t`: 12 people" in first and page.with_suffix(".json").is_file()
    import json

    from mechrecall.data.templates import ATTRIBUTE_LABELS, ATTRIBUTES

    for strategy in ("mixed", "two-stage"):  # which facts are extracted, as each run's own evaluation counted them
        shares = json.loads((root / "t" / f"{strategy}-s0" / "metrics.json").read_text())["qa_ood"]["by_attribute"]
        assert sorted(shares) == sorted(ATTRIBUTES)
        expected = f"- `t` {strategy} s0: " + ", ".join(f"{ATTRIBUTE_LABELS[a]} {100 * shares[a]:.1f}" for a in ATTRIBUTES)
        assert expected in first.splitlines()
    shutil.rmtree(root)
    kept = tmp_path / "kept.json"
    page.with_suffix(".json").rename(kept)
    again = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "new"), "--table-only", "--rows", str(kept), "--markdown", str(page)],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert page.read_text() == first
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = subprocess.run([sys.executable, str(script), "--table-only", "--rows", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2 and "not the rows of a sweep table" in refused.stderr and "Traceback" not in refused.stderr


def test_sweep_script_ctrl_c_is_one_line_and_resumes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    command = [sys.executable, str(script), "--root", str(tmp_path), "--preset", "micro", "--device", "cpu", "--no-progress",
               "--strategies", "mixed", "--trial", "t:people=12,name=micro,steps=100000,batch_size=4,warmup_steps=1,checkpoint_every=5,base=random"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "t" / "mixed-s0" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "run the same command again to resume" in stderr and "Traceback" not in stderr
    assert checkpoint.exists()


def test_a_kept_stopped_run_that_has_finished_since_is_no_longer_listed_as_stopped(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    row = {"trial": "t", "seed": 0, "strategy": "two-stage", "run": str(tmp_path / "gone"), "bio": 1.0, "qa_id": 1.0, "qa_ood": 0.5,
           "seconds": 1.0, "settings": "s"}
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({"rows": [row], "stopped": ["`t/two-stage-s0` (stopped at step 3)", "`u/mixed-s0` (stopped at step 4)"]}))
    page = tmp_path / "page.md"
    done = subprocess.run([sys.executable, str(script), "--table-only", "--root", str(tmp_path / "r"), "--rows", str(kept), "--markdown", str(page)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "`u/mixed-s0` (stopped at step 4)" in text and "`t/two-stage-s0` (stopped" not in text


def test_a_run_listed_as_stopped_twice_is_shown_once_at_the_furthest_step(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    kept = tmp_path / "kept.json"
    lines = ["`w/mixed-s0` (stopped at step 1900; no evaluation yet)", "`w/mixed-s0` (stopped at step 5900; step 4000: BIO 97.8)",
             "`w/mixed-s0` (stopped at step 300; no evaluation yet)", "`v/mixed-s1` (stopped at step 7)"]
    kept.write_text(json.dumps({"rows": [], "stopped": lines}))
    page = tmp_path / "page.md"
    done = subprocess.run([sys.executable, str(script), "--table-only", "--root", str(tmp_path / "r"), "--rows", str(kept), "--markdown", str(page)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.count("`w/mixed-s0`") == 1 and "stopped at step 5900; step 4000: BIO 97.8" in text
    assert "`v/mixed-s1` (stopped at step 7)" in text
    assert json.loads(page.with_suffix(".json").read_text())["stopped"] == [lines[1], lines[3]]


def test_sweep_script_never_overwrites_a_json_beside_the_page_that_is_not_its_rows(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({"rows": [{"trial": "t", "seed": 0, "strategy": "mixed", "run": "gone", "bio": 1.0, "qa_id": 1.0,
                                          "qa_ood": 0.5, "seconds": 1.0}]}))
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    done = subprocess.run([sys.executable, str(script), "--table-only", "--root", str(tmp_path / "r"), "--rows", str(kept),
                           "--markdown", str(tmp_path / "notes.md")], capture_output=True, text=True)
    assert done.returncode == 2 and "left alone" in done.stderr and "Traceback" not in done.stderr
    assert mine.read_text() == '{"mine": 1}' and not (tmp_path / "notes.md").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"seed": 0}]}))
    refused = subprocess.run([sys.executable, str(script), "--table-only", "--rows", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2 and "not the rows of a sweep table" in refused.stderr and "Traceback" not in refused.stderr
    bad.write_text(json.dumps({"rows": [{"trial": "t", "seed": 0, "strategy": "mixed"}]}))  # no run: the page could not name its settings
    refused = subprocess.run([sys.executable, str(script), "--table-only", "--rows", str(bad), "--markdown", str(tmp_path / "p.md")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "not the rows of a sweep table" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "p.md").exists() and not (tmp_path / "p.json").exists()


def _row(strategy: str, seed: int, evals: list[tuple[int, float]]) -> dict:
    """A sweep row with evaluations at the given (step, QA-OOD) points; the last one is its end."""
    return {"trial": "t", "seed": seed, "strategy": strategy, "run": "gone", "bio": 1.0, "qa_id": 1.0, "qa_ood": evals[-1][1],
            "evals": [{"step": step, "phase": "mixed", "bio": 1.0, "qa_id": 1.0, "qa_ood": ood} for step, ood in evals], "seconds": 1.0}


def test_the_gap_at_equal_steps_reads_both_strategies_at_the_shorter_runs_length() -> None:
    """Mixed trained 12,000 steps against two-stage's 3,500: the end-of-training gap credits mixed
    with more training; at equal steps mixed is read at its last evaluation before step 3,500."""
    from mechrecall.sweep import equal_steps_gap

    mixed = _row("mixed", 0, [(3000, 0.13), (6000, 0.21), (12000, 0.25)])
    two_stage = _row("two-stage", 0, [(2000, 0.11), (3500, 0.15)])
    gap, step = equal_steps_gap(mixed, two_stage)
    assert step == 3500 and gap == pytest.approx(0.13 - 0.15)
    # two-stage the longer one: it is read at its last evaluation at or before mixed's end
    gap, step = equal_steps_gap(_row("mixed", 0, [(4500, 0.30)]), _row("two-stage", 0, [(2000, 0.1), (4000, 0.2), (6000, 0.4)]))
    assert step == 4500 and gap == pytest.approx(0.30 - 0.2)
    # no evaluation of the longer run at or before the shorter's end; a row without evaluations
    assert equal_steps_gap(_row("mixed", 0, [(4500, 0.3)]), _row("two-stage", 0, [(2000, 0.1), (3500, 0.2)])) is None
    assert equal_steps_gap({**mixed, "evals": []}, two_stage) is None
    rows = [mixed, two_stage, _row("mixed", 1, [(3000, 0.17), (12000, 0.29)]), _row("two-stage", 1, [(2000, 0.1), (3500, 0.13)])]
    entry = summarize(rows)[0]
    by_hand = [0.13 - 0.15, 0.17 - 0.13]
    assert entry["gap_equal_steps"][0] == pytest.approx(sum(by_hand) / 2)
    assert entry["gap_equal_steps"][1] == pytest.approx(abs(by_hand[0] - by_hand[1]) / 2)  # population std of two values
    assert entry["gap"][0] == pytest.approx((0.25 - 0.15 + 0.29 - 0.13) / 2)
    assert entry["steps"] == {"mixed": [12000], "two-stage": [3500]} and entry["equal_steps"] == [3500]


def test_rows_given_twice_are_counted_once_and_a_twins_settings_are_not_the_trials(tmp_path: Path) -> None:
    """The page is rebuilt from the kept rows plus the new machine's results.json, which holds the
    same rows again: each (trial, seed, strategy) is one row (its training seconds were summed
    twice), the later measurement wins, and a trial that reused another trial's mixed run is
    described by its own two-stage run's settings, the twin named."""
    import json
    import subprocess
    import sys

    def row(trial: str, strategy: str, run: str, ood: float, settings: str, seconds: float) -> dict:
        made = _row(strategy, 0, [(3000, ood)])
        return {**made, "trial": trial, "run": run, "settings": settings, "seconds": seconds}

    mixed = row("long", "mixed", "runs/sweep/long/mixed-s0", 0.30, "mixed 12,000 / 2,000 + 1,500", 100.0)
    kept = [mixed, row("long", "two-stage", "runs/sweep/long/two-stage-s0", 0.15, "mixed 12,000 / 2,000 + 1,500", 10.0),
            {**mixed, "trial": "gentle", "settings": "mixed 12,000 / 2,000 + 1,500"},
            row("gentle", "two-stage", "runs/sweep/gentle/two-stage-s0", 0.11, "mixed 12,000 / 2,000 + 10,000", 40.0)]
    newer = [{**kept[1], "qa_ood": 0.16}]
    first, second = tmp_path / "kept.json", tmp_path / "results.json"
    first.write_text(json.dumps({"rows": kept, "stopped": []}))
    second.write_text(json.dumps({"rows": [*kept, *newer], "stopped": []}))
    page = tmp_path / "page.md"
    script = Path(__file__).parents[1] / "analyses" / "sweep.py"
    done = subprocess.run([sys.executable, str(script), "--table-only", "--root", str(tmp_path / "none"), "--rows", str(first),
                           "--rows", str(second), "--markdown", str(page)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(page.with_suffix(".json").read_text())["rows"]
    assert [(r["trial"], r["strategy"]) for r in rows] == [("long", "mixed"), ("long", "two-stage"), ("gentle", "mixed"), ("gentle", "two-stage")]
    assert rows[1]["qa_ood"] == 0.16
    table = {line.split(" | ")[0].lstrip("| "): line for line in page.read_text().splitlines() if line.startswith("| long") or line.startswith("| gentle")}
    assert table["long"].endswith("| 1 | 110 |") and table["gentle"].endswith("| 1 | 140 |")
    assert " | 14.0 ± 0.0 | " in table["long"] and " | 19.0 ± 0.0 | " in table["gentle"]  # the gaps: 30 − 16, 30 − 11
    lines = page.read_text().splitlines()
    assert "- `long`: mixed 12,000 / 2,000 + 1,500" in lines
    assert "- `gentle`: mixed 12,000 / 2,000 + 10,000; reuses the mixed runs of `long` (the same settings for that strategy)" in lines


def test_the_gap_against_two_stage_at_its_best_kept_evaluation() -> None:
    """Two-stage at lr 3e-5 passes through a QA-OOD peak before QA-ID is fitted and then forgets:
    the conservative gap reads it at its best evaluation that meets QA-ID ≥ 95% and BIO ≥ 90%
    (never one of its BIO stage, never one that fails either precondition)."""
    from mechrecall.sweep import best_kept_qa_ood

    def point(step: int, phase: str, bio: float, qa_id: float, ood: float) -> dict:
        return {"step": step, "phase": phase, "bio": bio, "qa_id": qa_id, "qa_ood": ood}

    two_stage = {**_row("two-stage", 0, [(12000, 0.107)]), "evals": [
        point(2000, "bio", 1.0, 0.089, 0.30),    # BIO stage: not a two-stage model yet
        point(3000, "qa", 0.995, 0.704, 0.213),  # the peak, QA-ID not fitted
        point(6000, "qa", 0.928, 1.0, 0.150),    # the best that keeps both
        point(7000, "qa", 0.95, 0.949, 0.160),   # QA-ID just short
        point(9000, "qa", 0.874, 1.0, 0.110),    # forgot
        point(12000, "qa", 0.856, 1.0, 0.107),
    ]}
    assert best_kept_qa_ood(two_stage) == (0.150, 6000)
    assert best_kept_qa_ood({**two_stage, "evals": two_stage["evals"][:2]}) is None
    assert best_kept_qa_ood({**two_stage, "evals": []}) is None
    tie = {**two_stage, "evals": [point(3000, "qa", 0.95, 1.0, 0.15), point(3500, "qa", 0.95, 1.0, 0.15)]}
    assert best_kept_qa_ood(tie) == (0.15, 3000)  # the earlier of equals
    mixed = [_row("mixed", seed, [(12000, ood)]) for seed, ood in enumerate((0.305, 0.248))]
    other = {**two_stage, "seed": 1, "evals": [point(3000, "qa", 0.95, 1.0, 0.145), point(3500, "qa", 0.945, 1.0, 0.138)]}
    [entry] = summarize([*mixed, two_stage, other])
    gaps = (0.305 - 0.150, 0.248 - 0.145)
    assert entry["gap_best_kept"] == pytest.approx(((gaps[0] + gaps[1]) / 2, abs(gaps[0] - gaps[1]) / 2))
    assert entry["best_kept_steps"] == [3000, 6000]
