"""How long the README's first command takes, from what a study folder measured.

    python analyses/timing.py --study runs/tiny [--seed 0]

``mechrecall reproduce`` records each step's seconds in ``steps.json`` and each training's own
seconds (summed over resumes) in its run's manifest. The first command on a fresh machine runs
the base alone, then the seed's two trainings side by side, then every analysis and the report one
after another: its wall time is base + the slower of the two trainings + the rest. This prints
each part and that sum, so the README's figure comes from measurements even when a study was
interrupted and resumed (a step's ledger entry then covers only its last part).
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
    found["total"] = (found.get("base (pre-training, alone)", 0.0) + found.get("both trainings, side by side (the slower)", 0.0)
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
        print(f"{name:<48} {seconds:8.0f} s  {seconds / 60:6.1f} min")


if __name__ == "__main__":
    main()
