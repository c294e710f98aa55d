"""How long the README's first command takes, from what a study folder measured.

    python analyses/timing.py --study runs/tiny [--seed 0]

``mechrecall reproduce`` records each step's seconds in ``steps.json`` and each training's own
seconds (summed over resumes) in its run's manifest. This prints each part and their sum as if
the analyses ran one after another after both trainings (base + the slower training + the rest:
an upper bound, and the whole time before analyses ran side by side), so a figure comes from
measurements even when a study was interrupted and resumed (a step's ledger entry then covers
only its last part). Since steps run side by side, ``steps.json`` also records when each step
started: when every step of the seed has that and they ran in one reproduce, it prints the span from the first step's start
to the report's end; and it prints the wall clock of the last ``mechrecall reproduce``, with how
many steps it ran and found cached (a first run on a fresh machine runs all of them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def training_seconds(run: Path) -> float:
    return float(json.loads((run / "manifest.json").read_text())["training"]["seconds"])


def parts(study: Path, seed: int) -> dict[str, float]:
    ledger = json.loads((study / "steps.json").read_text())
    found: dict[str, float] = {}
    if (study / "base" / "manifest.json").exists():
        found["base (pre-training, alone)"] = training_seconds(study / "base")
    trainings = {s: training_seconds(study / f"s{seed}" / s) for s in ("mixed", "two-stage") if (study / f"s{seed}" / s / "manifest.json").exists()}
    for strategy, seconds in trainings.items():
        found[f"{strategy} training"] = seconds
    if trainings:
        found["both trainings, side by side (the slower)"] = max(trainings.values())
    prefix = f"s{seed}/"
    rest = {step: record["seconds"] for step, record in ledger.items()
            if (step.startswith(prefix) and not step.endswith("/train")) or step in ("report", "base/world")}
    found["worlds, analyses and report"] = sum(rest.values())
    for step, seconds in sorted(rest.items(), key=lambda item: -item[1])[:6]:
        found[f"  of which {step}"] = seconds
    found["total, one part after another"] = (found.get("base (pre-training, alone)", 0.0) + found.get("both trainings, side by side (the slower)", 0.0)
                      + found["worlds, analyses and report"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("runs/tiny"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.study / "steps.json").is_file():
        parser.exit(2, f"error: {args.study} is not a study folder (no steps.json): run `mechrecall reproduce --out {args.study}` first\n")
    if not (args.study / f"s{args.seed}" / "mixed" / "manifest.json").is_file():
        parser.exit(2, f"error: {args.study} has no trained seed {args.seed}: give a seed the study ran (--seed)\n")
    for name, seconds in parts(args.study, args.seed).items():
        print(f"{name:<56} {seconds:8.0f} s  {seconds / 60:6.1f} min")
    spanned = span(args.study, args.seed)
    if spanned is not None:
        print(f"{'side by side: first start to the report, steps.json':<56} {spanned:8.0f} s  {spanned / 60:6.1f} min")
    else:
        print("side by side: not measured (the seed's steps, its base and the report did not all run in one reproduce)")
    last = json.loads((args.study / "manifest.json").read_text()).get("last_run") or {}
    if "wall_seconds" in last:
        label = f"last reproduce (ran {len(last['ran'])}, cached {last['cached']})"
        print(f"{label:<56} {last['wall_seconds']:8.0f} s  {last['wall_seconds'] / 60:6.1f} min")


IDLE = 60.0  # seconds with no step running: within one reproduce a step starts as soon as its inputs end


def span(study: Path, seed: int) -> float | None:
    """First start to last end of the base, the seed's steps and the report, when the ledger has
    every start (steps run side by side record it) and they ran in one ``mechrecall reproduce``;
    None otherwise. Steps of one reproduce leave no idle time between them, so a stretch of over
    IDLE seconds with none of them running means they came from different runs (e.g. seed 0 and
    its base yesterday, a report rewritten today by --seeds 3): no span is measured then."""
    ledger = json.loads((study / "steps.json").read_text())
    chosen = [record for step, record in ledger.items() if step.startswith((f"s{seed}/", "base/", "report"))]
    if not chosen or any("started" not in record for record in chosen):
        return None
    chosen.sort(key=lambda r: r["started"])
    end = chosen[0]["started"] + chosen[0]["seconds"]
    for record in chosen[1:]:
        if record["started"] > end + IDLE:
            return None
        end = max(end, record["started"] + record["seconds"])
    return end - chosen[0]["started"]


if __name__ == "__main__":
    main()
