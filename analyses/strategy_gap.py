"""The presets' strategy-gap table: both strategies per preset over seeds, mean ± spread.

    python analyses/strategy_gap.py --presets tiny --seeds 0,1,2 [--root runs/strategy-gap] [--markdown gap.md]
    python analyses/strategy_gap.py --study runs/tiny [--markdown gap.md]

Runs (or reuses) every preset × seed × strategy as ordinary run directories under --root and
prints the table the README shows (and writes it as markdown with --markdown). With --study it
trains nothing: it reads the trained runs of a ``mechrecall reproduce`` study folder (e.g. after
``mechrecall reproduce --preset tiny --seeds 3``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def markdown_table(summary: list[dict], seeds: str) -> str:
    lines = [
        "| preset | mixed BIO | mixed QA-ID | mixed QA-OOD | two-stage BIO | two-stage QA-ID | two-stage QA-OOD | gap (points) | training s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict, key: str) -> str:
        return f"{100 * entry[key][0]:.1f} ± {100 * entry[key][1]:.1f}" if key in entry else "·"

    for entry in summary:
        keys = ["mixed/bio", "mixed/qa_id", "mixed/qa_ood", "two-stage/bio", "two-stage/qa_id", "two-stage/qa_ood", "gap"]
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
    parser.add_argument("--study", type=Path, default=None, help="read a `mechrecall reproduce` study folder instead of training")
    args = parser.parse_args()

    import datasets

    from mechrecall.artifacts import write_json_atomic
    from mechrecall.errors import MechrecallError
    from mechrecall.sweep import Trial, run_sweep, study_rows, summarize

    datasets.disable_progress_bars()
    if args.study is not None:
        try:
            rows = study_rows(args.study)
        except MechrecallError as error:
            raise SystemExit(f"error: {error}") from None
        if not rows:
            raise SystemExit(f"error: {args.study} has no trained runs yet: run `mechrecall reproduce --out {args.study}` first")
        summary = summarize(rows)
        seeds = ",".join(str(s) for s in sorted({row["seed"] for row in rows}))
    else:
        trials = [Trial(name=preset, preset=preset) for preset in args.presets.split(",")]
        rows = run_sweep(trials, [int(s) for s in args.seeds.split(",")], args.root, device=args.device, progress=False)
        summary = summarize(rows)
        write_json_atomic(args.root / "summary.json", summary)
        seeds = args.seeds
    table = markdown_table(summary, seeds)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
