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
from typing import NoReturn

warnings.filterwarnings("ignore")


def markdown_table(summary: list[dict], seeds: str) -> str:
    lines = [
        "| preset | mixed BIO | mixed QA-ID | mixed QA-OOD | two-stage BIO after stage 1 | two-stage QA-OOD after stage 1 (no QA yet) | two-stage BIO | two-stage QA-ID | two-stage QA-OOD | gap (points) | QA-OOD chance | training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict, key: str) -> str:
        return f"{100 * entry[key][0]:.1f} ± {100 * entry[key][1]:.1f}" if key in entry else "·"

    for entry in summary:
        keys = ["mixed/bio", "mixed/qa_id", "mixed/qa_ood", "two-stage/bio_after_stage1", "two-stage/qa_ood_after_stage1",
                "two-stage/bio", "two-stage/qa_id", "two-stage/qa_ood", "gap", "mixed/chance_qa_ood"]
        lines.append(f"| {entry['trial']} | " + " | ".join(cell(entry, k) for k in keys) + f" | {entry['train_seconds']:.0f} |")
    lines.append(f"\nMean ± spread (population std) over seeds {seeds}.")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int] | None:
    """``"0,1,2"`` → ``[0, 1, 2]``; ``None`` unless the seeds are distinct integers ≥ 0."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        return None
    return seeds if all(seed >= 0 for seed in seeds) and len(set(seeds)) == len(seeds) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=None, help="comma-separated presets to train (default: tiny)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--root", type=Path, default=Path("runs/strategy-gap"))
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--study", type=Path, default=None, help="read a `mechrecall reproduce` study folder instead of training")
    args = parser.parse_args()

    def fail(message: str) -> NoReturn:
        parser.exit(2, f"error: {message}\n")

    if args.study is not None and (args.presets is not None or args.seeds is not None):
        fail("--study reads the presets and seeds of its study folder: give either --study or --presets/--seeds")

    import datasets

    from mechrecall.artifacts import atomic_path, write_json_atomic
    from mechrecall.config import PRESETS
    from mechrecall.errors import MechrecallError
    from mechrecall.sweep import Trial, run_sweep, study_rows, summarize

    datasets.disable_progress_bars()
    try:
        if args.study is not None:
            rows = study_rows(args.study)
            if not rows:
                fail(f"{args.study} has no trained runs yet: run `mechrecall reproduce --out {args.study}` first")
            summary = summarize(rows)
            by_strategy = {}
            for row in rows:
                by_strategy.setdefault(row["strategy"], set()).add(row["seed"])
            seeds = "; ".join(f"{strategy} {','.join(map(str, sorted(found)))}" for strategy, found in sorted(by_strategy.items()))
            if len({frozenset(found) for found in by_strategy.values()}) > 1:
                seeds += " (the gap: seeds with both)"
        else:
            presets = (args.presets or "tiny").split(",")
            unknown = [p for p in presets if p not in PRESETS]
            if unknown:
                fail(f"unknown preset {unknown[0]!r}: choose from {', '.join(PRESETS)}")
            seed_list = parse_seeds(args.seeds or "0,1,2")
            if seed_list is None:
                fail(f"--seeds {args.seeds!r}: give distinct integers >= 0 separated by commas, e.g. 0,1,2")
            rows = run_sweep([Trial(name=p, preset=p) for p in presets], seed_list, args.root, device=args.device, progress=False)
            summary = summarize(rows)
            write_json_atomic(args.root / "summary.json", summary)
            seeds = ",".join(map(str, seed_list))
    except MechrecallError as error:
        fail(str(error))
    table = markdown_table(summary, seeds)
    print(table)
    if args.markdown is not None:
        with atomic_path(args.markdown) as temporary:
            temporary.write_text(table + "\n")


if __name__ == "__main__":
    main()
