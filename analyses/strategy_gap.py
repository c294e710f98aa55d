"""The presets' strategy-gap table: both strategies per preset over seeds, mean ± spread.

    python analyses/strategy_gap.py --presets tiny --seeds 0,1,2 [--root runs/strategy-gap] [--markdown gap.md]

Runs (or reuses) every preset × seed × strategy as ordinary run directories under --root and
prints the table the README shows (and writes it as markdown with --markdown).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def markdown_table(summary: list[dict], seeds: str) -> str:
    lines = [
        "| preset | mixed QA-ID | mixed QA-OOD | two-stage QA-ID | two-stage QA-OOD | gap (points) | training s |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict, key: str) -> str:
        return f"{100 * entry[key][0]:.1f} ± {100 * entry[key][1]:.1f}" if key in entry else "·"

    for entry in summary:
        keys = ["mixed/qa_id", "mixed/qa_ood", "two-stage/qa_id", "two-stage/qa_ood", "gap"]
        lines.append(f"| {entry['trial']} | " + " | ".join(cell(entry, k) for k in keys) + f" | {entry['train_seconds']:.0f} |")
    lines.append(f"\nMean ± spread (population std) over seeds {seeds}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("runs/strategy-gap"))
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import datasets

    from mechrecall.artifacts import write_json_atomic
    from mechrecall.sweep import Trial, run_sweep, summarize

    datasets.disable_progress_bars()
    trials = [Trial(name=preset, preset=preset) for preset in args.presets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = run_sweep(trials, seeds, args.root, device=args.device, progress=False)
    summary = summarize(rows)
    write_json_atomic(args.root / "summary.json", summary)
    table = markdown_table(summary, args.seeds)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
