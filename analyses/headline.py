"""The README's headline figure of a study folder: what each strategy knows, and what resetting the
top heads (ranked by shared elements) to θ_pre costs beside heads drawn at random.

    python analyses/headline.py --study runs/tiny --out docs/headline.png

Left: BIO, QA-ID and QA-OOD accuracy of each strategy at the end of fine-tuning (a dot per seed, a
bar at the mean), with the QA-OOD chance level (always answering an attribute's most frequent value).
Right: QA-OOD accuracy before any reset, after resetting the top heads by shared elements, and after
resetting as many heads drawn at random (mean ± sd of the draws, every seed), per strategy.
Needs matplotlib (``pip install matplotlib``); reads only the study's run folders.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

STRATEGIES = ("mixed", "two-stage")
SPLITS = (("bio", "BIO"), ("qa_id", "QA-ID"), ("qa_ood", "QA-OOD"))
COLORS = {"mixed": "#1f77b4", "two-stage": "#d62728"}


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def collect(study: Path) -> dict[str, dict[str, list]]:
    """Per strategy: accuracies per seed, chance, and the heads ablation (ranked, random draws)."""
    data: dict[str, dict[str, list]] = {s: {"metrics": [], "chance": [], "before": [], "ranked": [], "random": [], "share": []} for s in STRATEGIES}
    seeds = sorted(p for p in study.glob("s[0-9]*") if p.is_dir())
    for seed in seeds:
        for strategy in STRATEGIES:
            run = seed / strategy
            try:
                metrics = json.loads((run / "metrics.json").read_text())
                manifest = json.loads((run / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            entry = data[strategy]
            entry["metrics"].append({split: metrics[split]["accuracy"] for split, _ in SPLITS})
            entry["chance"].append(manifest["training"]["chance"]["qa_ood"])
            try:
                heads = json.loads((run / "heads.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            headline = heads["headline"]
            entry["before"].append(heads["before"]["qa_ood"])
            entry["ranked"].append(headline["ranked"]["shared"]["accuracy"]["qa_ood"])
            entry["random"] += [draw["accuracy"]["qa_ood"] for draw in headline["random"]]
            entry["share"].append(headline["share"])
    if not any(data[s]["metrics"] for s in STRATEGIES):
        _fail(f"{study} holds no trained run (s*/mixed, s*/two-stage): run `mechrecall reproduce` first")
    return data


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "not measured"
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * spread:.1f}% (n={len(values)})"


def summary(data: dict[str, dict[str, list]]) -> list[str]:
    """The plotted numbers, as text (what a note or README may quote)."""
    lines = []
    for strategy in STRATEGIES:
        entry = data[strategy]
        accuracies = ", ".join(f"{name} {_mean_sd([run[split] for run in entry['metrics']])}" for split, name in SPLITS)
        lines.append(f"{strategy}: {accuracies}; QA-OOD chance {_mean_sd(entry['chance'])}")
        lines.append(
            f"{strategy} QA-OOD: before {_mean_sd(entry['before'])}, top heads by shared {_mean_sd(entry['ranked'])}, "
            f"random heads {_mean_sd(entry['random'])}"
        )
    return lines


def draw(data: dict[str, dict[str, list]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    width = 0.38
    for offset, strategy in zip((-width / 2, width / 2), STRATEGIES, strict=True):
        runs = data[strategy]["metrics"]
        if not runs:
            continue
        for index, (split, _) in enumerate(SPLITS):
            values = [100 * run[split] for run in runs]
            left.bar(index + offset, statistics.fmean(values), width, color=COLORS[strategy], alpha=0.35,
                     label=f"{strategy} ({len(runs)} seed{'s' if len(runs) > 1 else ''})" if index == 0 else None)
            left.scatter([index + offset] * len(values), values, color=COLORS[strategy], s=14, zorder=3)
    chance = [100 * c for s in STRATEGIES for c in data[s]["chance"]]
    if chance:
        left.hlines(statistics.fmean(chance), 2 - width, 2 + width, colors="black", linestyles="dashed", label="QA-OOD chance")
    left.set_xticks(range(len(SPLITS)), [name for _, name in SPLITS])
    left.set_ylabel("exact-match accuracy (%)")
    left.set_ylim(0, 105)
    left.set_title("what each strategy knows")
    left.legend(fontsize=8, loc="lower left")

    labels = ("before", "top heads\nby shared", "random heads\n(control)")
    for offset, strategy in zip((-width / 2, width / 2), STRATEGIES, strict=True):
        entry = data[strategy]
        if not entry["ranked"]:
            continue
        groups = (entry["before"], entry["ranked"], entry["random"])
        means = [100 * statistics.fmean(g) for g in groups]
        spreads = [100 * statistics.pstdev(g) if len(g) > 1 else 0.0 for g in groups]
        positions = [i + offset for i in range(len(groups))]
        right.bar(positions, means, width, yerr=spreads, color=COLORS[strategy], alpha=0.6, capsize=3, label=strategy)
    shares = sorted({s for st in STRATEGIES for s in data[st]["share"]})
    right.set_xticks(range(3), labels)
    right.set_ylabel("QA-OOD accuracy (%)")
    right.set_title(f"reset to θ_pre: top {', '.join(f'{s:g}' for s in shares)}% of heads" if shares else "heads reset to θ_pre")
    right.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp.png")
    figure.savefig(temporary)
    temporary.replace(out)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a study folder written by `mechrecall reproduce`")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default=None, help="the figure's title (default: the study's preset and seeds)")
    args = parser.parse_args()
    if not (args.study / "manifest.json").is_file():
        _fail(f"{args.study} is not a study folder (no manifest.json): run `mechrecall reproduce` first")
    if args.out.suffix.lower() != ".png":
        _fail(f"--out {args.out} must end in .png")
    for parent in args.out.parents:
        if parent.exists() and not parent.is_dir():
            _fail(f"--out {args.out}: {parent} is a file, not a folder")
    if args.out.is_dir():
        _fail(f"--out {args.out} is a folder: give the PNG's file name")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _fail("matplotlib is not installed: pip install matplotlib")
    data = collect(args.study)
    manifest = json.loads((args.study / "manifest.json").read_text())
    preset = manifest.get("config", {}).get("reproduce", {}).get("preset", "?")
    seeds = sorted({len(data[s]["metrics"]) for s in STRATEGIES})
    title = args.title or f"mechrecall reproduce --preset {preset}: {max(seeds)} seed(s), {args.study}"
    draw(data, title, args.out)
    for line in summary(data):
        print(line)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
