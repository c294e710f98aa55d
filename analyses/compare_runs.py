"""Two trainings of one config side by side: where their losses part and how far their end
accuracies differ (e.g. the same base pre-trained on a CPU and on a GPU).

    python analyses/compare_runs.py runs/sweep/bases/85b103cc2b70 docs/gpu-2026-11-22/tiny-base

Reads each folder's manifest.json (its config), train_log.json and metrics.json; nothing else (the
weights are not needed). Prints where the configs differ (a two-stage setting such as qa_steps does not act on a mixed
phase), the relative difference of
the logged losses at a few steps (the first step where it exceeds 1e-4, the middle, the end) and
the end accuracies of each, as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read(folder: Path, name: str) -> object:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        _fail(f"{path} does not exist: give a finished run folder (it holds manifest.json, train_log.json, metrics.json)")
    except json.JSONDecodeError as error:
        _fail(f"{path} is not valid JSON ({error.msg}): the run was not written completely; train it again")
    raise AssertionError


def config_differences(a: object, b: object, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where the two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += config_differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return found
    return [] if a == b else [(prefix, a, b)]


def loss_gaps(log_a: list[dict], log_b: list[dict]) -> list[tuple[int, str, float]]:
    """(step, loss name, relative difference) for every loss logged at the same step by both."""
    by_step = {entry["step"]: entry for entry in log_b}
    gaps = []
    for entry in log_a:
        other = by_step.get(entry["step"])
        if other is None:
            continue
        for key, value in entry.items():
            if key.startswith("loss") and isinstance(value, float) and isinstance(other.get(key), float):
                scale = max(abs(value), abs(other[key]), 1e-12)
                gaps.append((entry["step"], key, abs(value - other[key]) / scale))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    manifests = [_read(folder, "manifest.json") for folder in (args.a, args.b)]
    configs = [m.get("config") for m in manifests]  # type: ignore[union-attr]
    differences = config_differences(configs[0], configs[1])
    print("same config" if not differences else "configs differ: " + "; ".join(f"{key} {a} vs {b}" for key, a, b in differences))
    for folder, manifest in zip((args.a, args.b), manifests):
        versions = manifest.get("versions", {})  # type: ignore[union-attr]
        training = manifest.get("training", {})  # type: ignore[union-attr]
        print(f"- {folder}: device {training.get('device', '?')}, {training.get('seconds', '?')} s, torch {versions.get('torch', '?')}")
    gaps = loss_gaps(_read(args.a, "train_log.json"), _read(args.b, "train_log.json"))  # type: ignore[arg-type]
    if not gaps:
        _fail("the two training logs share no logged step: compare runs of the same config")
    steps = sorted({step for step, _, _ in gaps})
    first = next((step for step, _, gap in gaps if gap > 1e-4), None)
    shown = sorted({steps[0], steps[len(steps) // 2], steps[-1], *([first] if first is not None else [])})
    print(f"\nlosses part (relative difference > 1e-4) at step {first if first is not None else 'never'}\n")
    print("| step | loss | relative difference |\n| ---: | --- | ---: |")
    for step, key, gap in gaps:
        if step in shown:
            print(f"| {step} | {key} | {gap:.2e} |")
    metrics = [_read(folder, "metrics.json") for folder in (args.a, args.b)]
    print(f"\n| accuracy (%) | {args.a.name} | {args.b.name} | difference |\n| --- | ---: | ---: | ---: |")
    for split in ("bio", "qa_id", "qa_ood"):
        values = [m.get(split, {}).get("accuracy") for m in metrics]  # type: ignore[union-attr]
        if None in values:
            continue
        print(f"| {split} | {100 * values[0]:.2f} | {100 * values[1]:.2f} | {100 * (values[1] - values[0]):+.2f} |")


if __name__ == "__main__":
    main()
