"""Which part of the 1% reset precondition costs the recall: the survival draw split into parts.

    python analyses/reset_parts.py --study runs/tiny [--strategy mixed] [--markdown docs/reset_parts.md]

``ablate``'s survival reset (1% of all elements at random, spread over the tensors as S is) is
drawn again here with ablate's own seeds and split into four disjoint parts:

- ``W_E rows new to θ_pre``: elements of the token embedding in rows of tokens that occur in the
  studied world's training examples (BIO texts and trained QA) but never in the base's. The base
  is pre-trained on population "b", whose last names the studied population "a" never uses, so
  these rows of θ_pre were never trained: resetting them puts back a decayed initialisation, not a
  pre-trained value;
- ``W_E, the other rows``;
- ``tensors reset whole``: tensors the draw covers entirely (it asks for more elements there than
  the tensor holds, e.g. a bias of d_model elements);
- ``everything else``.

Each part is reset alone (the rest of the model keeps θ_task) and QA-OOD is measured, and so is the
draw without the tensors it resets whole; the whole draw is measured too and must give exactly what
``ablate.json`` stored for it (checked: the script stops with an error otherwise). For the embedding it also prints the mean row norm of θ_pre and
θ_task in the new rows and in the others. It reads the study's folders (hash-checked), trains
nothing, and evaluates (QA-OOD only) 6 times per draw and run.
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
PARTS = ("W_E rows new to θ_pre", "W_E, the other rows", "tensors reset whole", "everything else")
WITHOUT_WHOLE = "the draw without the tensors reset whole"


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def training_tokens(run) -> set[int]:
    """Every token id of a run's training examples: its world's BIO texts and trained QA."""
    from mechrecall.encoding import encode_pairs, encode_texts

    tokenizer, dataset = run.tokenizer(), run.world().dataset
    qa = dataset["qa_id"]
    examples = encode_texts(tokenizer, list(dataset["bio"]["text"])).ids
    examples += encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"])).ids
    return {token for ids in examples for token in ids}


def split_draw(draw: dict, new_rows, whole: set[str]) -> dict[str, dict]:
    """The draw's elements in four disjoint masks (PARTS order) whose union is the draw.

    ``new_rows``: a bool vector over the embedding's rows, true for tokens new to θ_pre; ``whole``:
    the tensors the draw covers entirely."""
    import torch

    parts = {part: {} for part in PARTS}
    for name, chosen in draw.items():
        empty = torch.zeros_like(chosen)
        if name == EMBEDDING and name not in whole:
            rows = new_rows.to(chosen.device).unsqueeze(1).expand_as(chosen)
            picks = {PARTS[0]: chosen & rows, PARTS[1]: chosen & ~rows, PARTS[2]: empty, PARTS[3]: empty}
        elif name in whole:
            picks = {PARTS[0]: empty, PARTS[1]: empty, PARTS[2]: chosen, PARTS[3]: empty}
        else:
            picks = {PARTS[0]: empty, PARTS[1]: empty, PARTS[2]: empty, PARTS[3]: chosen}
        for part, mask in picks.items():
            parts[part][name] = mask
    return parts


def measure(run_path: Path, base_path: Path, draws: int | None) -> dict:
    """The survival draws of one run split into parts, each part's QA-OOD with it reset alone."""
    import torch

    import mechrecall as mr
    from mechrecall.analysis import load_result
    from mechrecall.evaluation import accuracy_evaluator
    from mechrecall.findings.ablate import reset_and_evaluate
    from mechrecall.findings.shared import read_shared_mask
    from mechrecall.masks import mask_size, random_scaled
    from mechrecall.params import ParameterIndex
    from mechrecall.registry import get
    from mechrecall.runs import BASE, TUNED

    run = mr.open_run(run_path)
    if Path(run.model_config.name).resolve() != base_path.resolve():
        _fail(f"{run_path} was not fine-tuned from {base_path} (its θ_pre is {run.model_config.name}): give the study folder that holds both")
    ablation = load_result(run, get("ablate"))
    if ablation is None or not ablation.survival:
        _fail(f"{run_path} has no survival reset in ablate.json: run `mechrecall reproduce` on the study first")
    index = ParameterIndex.from_spec(run.spec())
    shared = read_shared_mask(run, index)
    model = run.load_model("tuned")
    base, tuned = run.directory.load_tensors(BASE), run.directory.load_tensors(TUNED)
    new = training_tokens(run) - training_tokens(mr.open_run(base_path))
    vocabulary = tuned[EMBEDDING].shape[0]
    new_rows = torch.tensor([token in new for token in range(vocabulary)])
    evaluate = accuracy_evaluator(model.tokenizer, run.world().dataset, metrics=("qa_ood",))
    reference = ablation.tuned["qa_ood"]
    questions = len(run.world().dataset["qa_ood"])
    seeds = ablation.seeds[: draws or len(ablation.seeds)]
    measured = ("whole draw", *PARTS, WITHOUT_WHOLE)
    drops = {part: [] for part in measured}
    counts = {part: [] for part in (*PARTS, WITHOUT_WHOLE)}
    reset_whole: set[str] = set()
    for d, seed in enumerate(seeds):
        draw = random_scaled(shared, ablation.survival_size, seed)
        whole = {name for name, chosen in draw.items() if bool(chosen.all())}
        parts = split_draw(draw, new_rows, whole)
        kept = {name: chosen & ~parts[PARTS[2]][name] for name, chosen in draw.items()}
        reset_whole |= whole
        accuracies = reset_and_evaluate(model, base, tuned, [draw, *parts.values(), kept], evaluate)
        stored = ablation.survival[d]["qa_ood"]
        if accuracies[0]["qa_ood"] != stored:
            _fail(f"{run_path}: draw {seed} reset whole gives QA-OOD {accuracies[0]['qa_ood']:.4f}, ablate.json stored {stored:.4f}: "
                  "the draw is not ablate's (was the study made by another version?)")
        for part, accuracy in zip(measured, accuracies, strict=True):
            drops[part].append(1 - accuracy["qa_ood"] / reference if reference else 0.0)
        for part in PARTS:
            counts[part].append(mask_size(parts[part]))
        counts[WITHOUT_WHOLE].append(mask_size(kept))
    norm = lambda weights, rows: float(weights[EMBEDDING][rows].norm(dim=1).mean()) if bool(rows.any()) else float("nan")  # noqa: E731
    return {
        "qa_ood": reference, "questions": questions, "draws": len(seeds), "size": ablation.survival_size,
        "drops": {part: sum(v) / len(v) for part, v in drops.items()},
        "counts": {part: sum(v) / len(v) for part, v in counts.items()},
        "new_rows": int(new_rows.sum()), "vocabulary": vocabulary,
        "new_last_names": len(new & {model.tokenizer.convert_tokens_to_ids(n) for n in set(run.world().dataset["people"]["last_name"])}),
        "whole": {name: (float(base[name].norm()), float(tuned[name].norm())) for name in sorted(reset_whole)},
        "relative_update": run.directory.manifest.get("training", {}).get("relative_update"),
        "shared_rows_new": int((shared[EMBEDDING].any(dim=1) & new_rows).sum()) if EMBEDDING in shared else 0,
        "shared_rows": int(shared[EMBEDDING].any(dim=1).sum()) if EMBEDDING in shared else 0,
        "norms": {"new": (norm(base, new_rows), norm(tuned, new_rows)), "other": (norm(base, ~new_rows), norm(tuned, ~new_rows))},
    }


def markdown(study: Path, strategies: tuple[str, ...], draws: int | None) -> str:
    seeds = sorted((p for p in study.glob("s[0-9]*") if p.is_dir() and p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if not seeds:
        _fail(f"{study} holds no seed folders (s0, s1, …): give a `mechrecall reproduce` study folder")
    base_path = study / "base"
    if not (base_path / "manifest.json").is_file():
        _fail(f"{study} has no pre-trained base (base/): the split needs the tokens θ_pre was trained on")
    lines = [
        "| seed | strategy | QA-OOD | whole draw: relative drop | " + " | ".join(f"{p}: elements, drop" for p in PARTS) + f" | {WITHOUT_WHOLE}: elements, drop |",
        "|---|---|---|---|" + "---|" * (len(PARTS) + 1),
    ]
    notes = []
    for seed in seeds:
        for strategy in strategies:
            path = seed / strategy
            manifest = path / "manifest.json"
            if not manifest.exists() or "ablate.json" not in json.loads(manifest.read_text()).get("files", {}):
                notes.append(f"- seed {seed.name[1:]} {strategy}: no ablation yet (its study is unfinished), left out.")
                continue
            found = measure(path, base_path, draws)
            cells = " | ".join(f"{found['counts'][p]:,.0f}, {100 * found['drops'][p]:.1f}%" for p in (*PARTS, WITHOUT_WHOLE))
            lines.append(f"| {seed.name[1:]} | {strategy} | {100 * found['qa_ood']:.1f}% | {100 * found['drops']['whole draw']:.1f}% | {cells} |")
            (pre_new, task_new), (pre_other, task_other) = found["norms"]["new"], found["norms"]["other"]
            notes.append(
                f"- seed {seed.name[1:]} {strategy}: {found['draws']} draws of {found['size']:,} elements (means shown); one question of the "
                f"{found['questions']:,} of QA-OOD is {100 / max(found['qa_ood'] * found['questions'], 1):.1f}% of its accuracy; "
                f"{found['new_rows']} of the {found['vocabulary']} tokens occur in this world's training examples and never in the base's "
                f"({found['new_last_names']} of them last names), "
                f"and {found['shared_rows_new']} of the {found['shared_rows']} embedding rows S touches are theirs; "
                f"mean row norm of {EMBEDDING}, θ_pre → θ_task: new rows {pre_new:.3f} → {task_new:.3f}, the others {pre_other:.3f} → {task_other:.3f}; "
                + "tensors some draw resets whole, norm θ_pre → θ_task: " + (", ".join(f"{n} {a:.3f} → {b:.3f}" for n, (a, b) in found["whole"].items()) or "none")
                + ("" if found["relative_update"] is None else f"; ‖θ_task − θ_pre‖/‖θ_pre‖ {found['relative_update']:.3f}") + ".")
    return "\n".join(lines + [""] + notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True, help="a `mechrecall reproduce` study folder (e.g. runs/tiny)")
    parser.add_argument("--strategy", choices=(*STRATEGIES, "both"), default="both", help="which runs (default both)")
    parser.add_argument("--draws", type=int, help="only the first N of ablate's draws (default: all of them)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    if not args.study.is_dir():
        _fail(f"--study {args.study} is not a folder: give a `mechrecall reproduce` study folder")
    if args.draws is not None and args.draws < 1:
        _fail(f"--draws must be at least 1, got {args.draws}")
    from mechrecall.artifacts import check_text_output, emit
    from mechrecall.errors import ArtifactError, RunDirError

    strategies = STRATEGIES if args.strategy == "both" else (args.strategy,)
    try:
        if args.markdown:
            check_text_output(args.markdown, inputs=(args.study,))
        emit(markdown(args.study, strategies, args.draws), args.markdown, inputs=(args.study,))
    except (ArtifactError, RunDirError) as error:
        _fail(str(error))


if __name__ == "__main__":
    main()
