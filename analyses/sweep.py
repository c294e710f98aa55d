"""Sweep the levers of the strategy gap (issue: presets in which the phenomenon appears).

    python analyses/sweep.py --root runs/sweep --seeds 0 \
        --trial "base" --trial "wd1:weight_decay=1.0" --trial "aug:bio_per_person=3,permute=true,fullname=true" \
        --trial "disjoint:base=disjoint"

Each trial is the preset (--preset, default tiny) plus overrides of world, training or model
settings; both strategies are trained per seed. Prints the table (mean ± spread over seeds) and
writes results.json, summary.json and summary.html under --root. Finished runs are reused, so
an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--trial", action="append", default=[], help="name:key=value,... (repeatable)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--strategies", default="mixed,two-stage", help="which strategies to train (a finished twin is reused either way)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 per process when sweeps run side by side)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --root's results.json, train nothing")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table (and each trial's settings) as markdown, and its rows beside it as .json")
    parser.add_argument("--rows", type=Path, action="append", default=[],
                        help="add the rows of a table written before (the .json beside a --markdown page; repeatable): "
                        "the table outlives the run folders it was measured on")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    import datasets
    from rich.console import Console
    from rich.table import Table

    from mechrecall.artifacts import write_json_atomic
    from mechrecall.errors import MechrecallError
    from mechrecall.figures import write_figure
    from mechrecall.sweep import Trial, run_sweep, summarize, summary_figure

    datasets.disable_progress_bars()
    kept_rows, kept_stopped = [], []
    for path in args.rows:
        try:
            record = json.loads(path.read_text())
            kept_rows += record["rows"]
            kept_stopped += record.get("stopped", [])
            [(r["trial"], r["seed"], r["strategy"], r["run"]) for r in record["rows"]]  # every row names its trial, seed, strategy and run
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            parser.exit(2, f"error: --rows {path}: not the rows of a sweep table ({type(error).__name__}): give the .json written beside a --markdown page\n")
    if args.markdown is not None and args.markdown.with_suffix(".json").exists():  # never overwrite a file that is not a table's rows
        try:
            json.loads(args.markdown.with_suffix(".json").read_text())["rows"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            parser.exit(2, f"error: --markdown {args.markdown}: {args.markdown.with_suffix('.json')} exists and is not a sweep table's rows; "
                        "it was left alone: choose another --markdown path\n")
    if args.table_only:
        if not (args.root / "results.json").is_file() and not args.rows:
            parser.exit(2, f"error: {args.root} holds no results.json: run a sweep there first, or give its --root (or --rows)\n")
        rows = json.loads((args.root / "results.json").read_text()) if (args.root / "results.json").is_file() else []
        trials = []
    else:
        try:
            trials = [Trial.parse(text, args.preset) for text in (args.trial or ["preset"])]
        except MechrecallError as error:
            parser.exit(2, f"error: {error}\n")
        seeds = [int(s) for s in args.seeds.split(",")]
        strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
        if not strategies or any(s not in ("mixed", "two-stage") for s in strategies):
            parser.exit(2, f"error: --strategies {args.strategies!r}: choose from mixed, two-stage\n")
        try:
            rows = run_sweep(trials, seeds, args.root, strategies=strategies, device=args.device, progress=not args.no_progress)
        except MechrecallError as error:
            parser.exit(2, f"error: {error}\n")
        except KeyboardInterrupt:
            parser.exit(130, "interrupted: finished runs and the checkpoint of the one training are kept; run the same command again to resume\n")
    rows = unique_rows([*kept_rows, *rows])
    summary = summarize(rows)
    write_json_atomic(args.root / "summary.json", summary)
    write_figure(summary_figure(summary), args.root / "summary.html")
    table = Table(title=f"strategy gap, {args.preset} preset, seeds {args.seeds} (mean ± spread, %)")
    columns = {
        "mixed BIO": "mixed/bio", "mixed QA-ID": "mixed/qa_id", "mixed QA-OOD": "mixed/qa_ood",
        "2s BIO stage 1": "two-stage/bio_after_stage1", "2s QA-OOD stage 1": "two-stage/qa_ood_after_stage1", "2s BIO": "two-stage/bio", "2s QA-ID": "two-stage/qa_id",
        "2s QA-OOD": "two-stage/qa_ood", "gap": "gap", "gap, equal steps": "gap_equal_steps",
        "gap, 2s at its best kept": "gap_best_kept", "chance": "mixed/chance_qa_ood",
        "mixed ‖Δθ‖/‖θ‖": "mixed/relative_update", "2s ‖Δθ‖/‖θ‖": "two-stage/relative_update",
        "mixed QA-OOD kept, 1% reset": "mixed/reset_survival", "2s QA-OOD kept, 1% reset": "two-stage/reset_survival",
    }
    table.add_column("trial")
    for column in [*columns, "steps mixed / 2s (equal at) [2s best kept at]", "seeds", "train s"]:
        table.add_column(column, justify="right")

    def cell(entry: dict, key: str) -> str:
        return f"{100 * entry[key][0]:.1f} ± {100 * entry[key][1]:.1f}" if key in entry else "·"

    def steps(entry: dict) -> str:
        """Each strategy's training length, and the step the equal-steps gap is read at."""
        lengths = entry.get("steps", {})
        text = " / ".join(",".join(f"{n:,}" for n in lengths[s]) if s in lengths else "·" for s in ("mixed", "two-stage"))
        text += f" ({','.join(f'{n:,}' for n in entry['equal_steps'])})" if entry.get("equal_steps") else ""
        return text + (f" [{','.join(f'{n:,}' for n in entry['best_kept_steps'])}]" if entry.get("best_kept_steps") else "")

    for entry in summary:
        table.add_row(entry["trial"], *[cell(entry, k) for k in columns.values()], steps(entry), str(entry["seeds"]), f"{entry['train_seconds']:.0f}")
    Console(width=260).print(table)
    print(json.dumps({t.name: t.overrides for t in trials}))
    if args.markdown is not None:
        from mechrecall.artifacts import atomic_path

        for row in rows:  # read from the run's manifest while it is here; kept in the row for when it is not
            if (Path(row["run"]) / "manifest.json").is_file():
                row["settings"] = effective_settings(Path(row["run"]))
            if not row.get("qa_ood_by_attribute") and (Path(row["run"]) / "metrics.json").is_file():
                row["qa_ood_by_attribute"] = json.loads((Path(row["run"]) / "metrics.json").read_text())["qa_ood"].get("by_attribute")
        settings = trial_settings(rows)
        lines = ["| trial | " + " | ".join(columns) + " | steps mixed / 2s (equal at) [2s best kept at] | seeds | train s |", "|---" * (len(columns) + 4) + "|"]
        for entry in summary:
            lines.append(f"| {entry['trial']} | " + " | ".join(cell(entry, k) for k in columns.values())
                         + f" | {steps(entry)} | {entry['seeds']} | {entry['train_seconds']:.0f} |")
        lines += ["", "The gap at equal steps reads both strategies at the shorter run's length (each at its last "
                  "evaluation at or before it): the longer run is then mid-schedule, its learning rate not yet "
                  "decayed, so it is the longer run's lower bound, not a run of that length. A trial that trains "
                  "one strategy longer needs it beside the gap; a trial of its own gives the same length to both.",
                  "", "The gap against two-stage at its best kept evaluation takes, for each seed, the two-stage "
                  "model's highest QA-OOD at any evaluation of its QA stage where it still meets the preconditions "
                  "(QA-ID ≥ 95%, BIO ≥ 90%; the step in brackets). It is chosen on the held-out people, so it is "
                  "the strongest two-stage model the run passed through: an upper bound for two-stage, and the "
                  "conservative gap. Its resolution is the evaluation interval (`eval_every`).",
                  "", "The 1% reset columns reset 1% of every tensor's elements, drawn at random (3 draws), to θ_pre: "
                  "a check that θ_pre is not noise. It is not the precondition of the study's report, which "
                  "draws 1% of all elements with as many per tensor as the shared set S has (`mechrecall ablate`, "
                  "from the run's gradient trace, which a sweep run does not record); where S sits in few "
                  "tensors, that reset falls on a larger share of them and can cost more."]
        lines += ["", "Settings of each trial, read from its runs' manifests (θ_pre: the base's own world, model and training):", ""]
        lines += [f"- `{name}`: {values}" for name, values in settings.items()]
        traced = [row for row in rows if row.get("evals")]
        if traced:
            lines += ["", "Trajectories (step: BIO / QA-ID / QA-OOD %, from each run's evaluations along training):", ""]
            for row in traced:
                points = ", ".join(f"{e['step']}: {100 * e['bio']:.1f} / {100 * e['qa_id']:.1f} / {100 * e['qa_ood']:.1f}" for e in row["evals"])
                lines.append(f"- `{row['trial']}` {row['strategy']} s{row['seed']}: {points}")
        by_attribute = [row for row in rows if row.get("qa_ood_by_attribute")]
        if by_attribute:
            from mechrecall.data.templates import ATTRIBUTE_LABELS, ATTRIBUTES

            lines += ["", "QA-OOD by attribute (%, from each run's metrics; a BIO that is not permuted states them in this order):", ""]
            for row in by_attribute:
                shares = row["qa_ood_by_attribute"]
                lines.append(f"- `{row['trial']}` {row['strategy']} s{row['seed']}: "
                             + ", ".join(f"{ATTRIBUTE_LABELS[a]} {100 * shares[a]:.1f}" for a in ATTRIBUTES if a in shares))
        ran = {f"`{r['trial']}/{r['strategy']}-s{r['seed']}`" for r in rows}  # a run stopped then, finished since
        stopped = furthest_per_run([*(line for line in kept_stopped if line.split(" ", 1)[0] not in ran), *unfinished(args.root)])
        if stopped:
            lines += ["", "Trials stopped before their end (their last evaluation, from the checkpoint; kept as measured):", ""]
            lines += [f"- {line}" for line in stopped]
        with atomic_path(args.markdown) as temporary:
            temporary.write_text("\n".join(lines) + "\n")
        write_json_atomic(args.markdown.with_suffix(".json"), {"rows": rows, "stopped": stopped})


def furthest_per_run(lines: list[str]) -> list[str]:
    """One line per stopped run (a line starts with the run's name): the one stopped at the latest
    step, so a run listed when it stopped early and again later is shown once, as far as it got."""
    import re

    def step(line: str) -> int:
        found = re.search(r"stopped at step (\d+)", line)
        return int(found.group(1)) if found else -1

    best: dict[str, str] = {}
    for line in lines:
        name = line.split(" ", 1)[0]
        if name not in best or step(line) >= step(best[name]):
            best[name] = line
    return list(best.values())


def unfinished(root: Path) -> list[str]:
    """Runs under ``root`` that stopped before their last step: their last evaluation."""
    from safetensors import safe_open

    found = []
    if not root.is_dir():
        return found
    for checkpoint in sorted(root.glob("*/*-s*/checkpoint.safetensors")):
        with safe_open(str(checkpoint), framework="pt") as handle:
            state = json.loads(handle.metadata()["state"])
        evals = state.get("evals") or []
        run = checkpoint.parent
        last = evals[-1] if evals else None
        measured = (f"step {last['step']}: BIO {100 * last['bio']:.1f}, QA-ID {100 * last['qa_id']:.1f}, QA-OOD {100 * last['qa_ood']:.1f}"
                    if last else "no evaluation yet")
        found.append(f"`{run.parent.name}/{run.name}` (stopped at step {state['step']}; {measured}); settings: {effective_settings(run)}")
    return found


def unique_rows(rows: list[dict]) -> list[dict]:
    """One row per (trial, seed, strategy), the last one given winning (the rows measured here
    over the kept ones, a later --rows file over an earlier one), in the order first seen."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[(row["trial"], row["seed"], row["strategy"])] = row
    return list(latest.values())


def reused_from(row: dict) -> str | None:
    """The trial whose sweep made this row's run, where that is another trial (a twin reused:
    trained with the same settings where they apply to its strategy); None for its own run."""
    run = Path(row["run"])
    sweep_run = run.name == f"{row['strategy']}-s{row['seed']}"
    return run.parent.name if sweep_run and run.parent.name != row["trial"] else None


def trial_settings(rows: list[dict]) -> dict[str, str]:
    """Each trial's settings, read from a run the trial made itself: a reused twin was made with
    its own trial's settings of the other strategy, so it is named, not described."""
    own: dict[str, str] = {}
    other: dict[str, str] = {}
    twins: dict[str, set[str]] = {}
    for row in rows:
        made_by = reused_from(row)
        (other if made_by else own).setdefault(row["trial"], row.get("settings", "not recorded"))
        if made_by:
            twins.setdefault(row["trial"], set()).add(f"{row['strategy']} runs of `{made_by}`")
    settings = {}
    for trial in dict.fromkeys(row["trial"] for row in rows):
        settings[trial] = own.get(trial, other.get(trial, "not recorded"))
        if trial in twins:
            settings[trial] += f"; reuses the {', '.join(sorted(twins[trial]))} (the same settings for that strategy)"
    return settings


def effective_settings(run: Path) -> str:
    """What a trial's run was made with, from its manifest (and its base's): independent of what
    the preset says today."""
    config = json.loads((run / "manifest.json").read_text())["config"]
    world, train, model = config["world"], config["train"], config["model"]["name"]
    shape = f"{world['people']:,} people × {world['bio_per_person']} BIO" + (", permuted" if world["permute"] else "") + (
        ", full name" if world["fullname"] else ", pronouns") + (
        f", QA of {world['qa_id_fraction']:.0%} of people trained" if world.get("qa_id_fraction", 0.5) != 0.5 else "")
    base_manifest = Path(model) / "manifest.json"
    if base_manifest.exists():
        base = json.loads(base_manifest.read_text())["config"]
        bt = base["train"]
        theta = f"θ_pre {base['model']['name']} pre-trained ({bt['strategy']}, {bt['steps']:,} steps, lr {bt['lr']:g}, wd {bt['weight_decay']:g})"
    else:
        theta = f"θ_pre {model} (random initialisation)"
    qa = "" if train.get("qa_lr") is None else f", QA stage lr {train['qa_lr']:g}"
    qa += "" if train.get("qa_weight_decay") is None else f" wd {train['qa_weight_decay']:g}"
    return (f"{shape}; {theta}; fine-tuning {train['steps']:,} steps mixed / {train['bio_steps']:,} + {train['qa_steps']:,} two-stage, "
            f"lr {train['lr']:g}, wd {train['weight_decay']:g}" + (f" toward {train['decay_to']}" if train.get("decay_to", "zero") != "zero" else "")
            + (f", ℓ1 toward θ_pre {train['l1_to_base']:g}" if train.get("l1_to_base", 0.0) else "")
            + f"{qa}, batch {train['batch_size']}, QA share {train['qa_share']:g}")


if __name__ == "__main__":
    main()
