"""Where the shared set S lies, tensor by tensor, and where the 1% reset precondition puts its elements.

    python analyses/shared_tensors.py --study runs/tiny [--top 6] [--markdown docs/shared_tensors.md]

The precondition "resetting 1% of all elements at random costs mixed QA-OOD at most 25%" draws its
elements with S's count per tensor (``mechrecall.masks.counts_like``, the code ``ablate`` uses): a
tensor holding most of S receives most of the 1% too, and may then lose a large share of its own
elements. Per run of a ``mechrecall reproduce`` study this prints, for the tensors holding most of
S: |S| there, its share of S, the tensor's size, the survival reset's count there and that count
as a share of the tensor; for the token embedding, how many of its rows (tokens) S touches; and
the survival reset's measured QA-OOD relative drop (``ablate.json``). It reads only the study's
run folders (hash-checked), trains and evaluates nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import NoReturn

warnings.filterwarnings("ignore")

STRATEGIES = ("mixed", "two-stage")
EMBEDDING = "embed.W_E"
SHARED_MASK = "shared_mask.safetensors"  # mechrecall.findings.shared.SHARED_MASK (checked in layout)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def layout(run_path: Path, top: int) -> dict:
    """S's per-tensor layout in one run, the survival reset's counts, and its measured drop."""
    import mechrecall as mr
    from mechrecall.analysis import load_result
    from mechrecall.findings import shared
    from mechrecall.masks import counts_like
    from mechrecall.registry import get

    assert shared.SHARED_MASK == SHARED_MASK
    run = mr.open_run(run_path)
    if SHARED_MASK not in run.directory.manifest["files"]:
        _fail(f"{run_path} has no {SHARED_MASK}: run `mechrecall reproduce` on the study first")
    mask = {name: tensor.bool() for name, tensor in run.directory.load_tensors(SHARED_MASK).items()}
    total = sum(m.numel() for m in mask.values())
    size = sum(int(m.sum()) for m in mask.values())
    ablation = load_result(run, get("ablate"))
    survival_size = getattr(ablation, "survival_size", 0) or round(0.01 * total)
    placed = counts_like(mask, survival_size)
    rows = []
    for name, m in sorted(mask.items(), key=lambda item: -int(item[1].sum()))[:top]:
        count = int(m.sum())
        if not count:
            break
        rows.append({"tensor": name, "shared": count, "share_of_s": count / size, "numel": m.numel(),
                     "survival": placed[name], "survival_share_of_tensor": placed[name] / m.numel()})
    embedding_rows = None
    if EMBEDDING in mask and mask[EMBEDDING].dim() == 2:
        embedding_rows = (int(mask[EMBEDDING].any(dim=1).sum()), mask[EMBEDDING].shape[0])
    drop = ablation.survival_relative_drop("qa_ood") if ablation is not None else None
    return {"size": size, "total": total, "survival_size": survival_size, "rows": rows, "embedding_rows": embedding_rows, "survival_drop": drop}


def markdown(study: Path, top: int) -> str:
    seeds = sorted((p for p in study.glob("s[0-9]*") if p.is_dir() and p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if not seeds:
        _fail(f"{study} holds no seed folders (s0, s1, …): give a `mechrecall reproduce` study folder")
    lines = [
        "| seed | strategy | tensor | \\|S\\| there | share of S | tensor size | 1% reset there | share of the tensor reset | 1% reset: QA-OOD relative drop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for seed in seeds:
        for strategy in STRATEGIES:
            path = seed / strategy
            if not (path / "manifest.json").exists():
                continue
            if SHARED_MASK not in json.loads((path / "manifest.json").read_text()).get("files", {}):
                notes.append(f"- seed {seed.name[1:]} {strategy}: no shared set yet (its study is unfinished), left out.")
                continue
            found = layout(path, top)
            drop = "·" if found["survival_drop"] is None else f"{100 * found['survival_drop']:.1f}%"
            for i, row in enumerate(found["rows"]):
                lines.append(
                    f"| {seed.name[1:]} | {strategy} | {row['tensor']} | {row['shared']:,} | {100 * row['share_of_s']:.1f}% | {row['numel']:,} | "
                    f"{row['survival']:,} | {100 * row['survival_share_of_tensor']:.2f}% | {drop if i == 0 else ''} |")
            if found["embedding_rows"] is not None:
                touched, vocabulary = found["embedding_rows"]
                notes.append(f"- seed {seed.name[1:]} {strategy}: |S| = {found['size']:,} of {found['total']:,} elements; "
                             f"S touches {touched} of the {vocabulary} rows (tokens) of {EMBEDDING}; the 1% reset places {found['survival_size']:,} elements.")
    return "\n".join(lines + [""] + notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True, help="a `mechrecall reproduce` study folder (e.g. runs/tiny)")
    parser.add_argument("--top", type=int, default=6, help="tensors per run, those holding most of S first (default 6)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    if not args.study.is_dir():
        _fail(f"--study {args.study} is not a folder: give a `mechrecall reproduce` study folder")
    if args.top < 1:
        _fail(f"--top must be at least 1, got {args.top}")
    from mechrecall.artifacts import check_text_output, emit
    from mechrecall.errors import ArtifactError, RunDirError

    try:
        if args.markdown:
            check_text_output(args.markdown, inputs=(args.study,))
        emit(markdown(args.study, args.top), args.markdown, inputs=(args.study,))
    except (ArtifactError, RunDirError) as error:
        _fail(str(error))


if __name__ == "__main__":
    main()
