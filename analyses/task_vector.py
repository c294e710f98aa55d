"""How dense a run's fine-tuning change Δθ = θ_task − θ_pre is, and what grafting its largest
elements recovers (why a graft with α ≤ 5% can or cannot recover the skill).

    python analyses/task_vector.py runs/tiny/s0/mixed [--fractions 0.05,0.2,0.5,0.8]

Prints, over every trainable element: the share left exactly at θ_pre, the share of ‖Δθ‖² held by
the top 1 / 5 / 20 / 50% of elements by |Δθ|, and, for each fraction, the QA-ID accuracy of
θ_pre + top-fraction(Δθ) (the magnitude graft, no learned mask) beside θ_task's. Then, for each part
of the model (token and position embeddings, attention, MLP, layer norms, unembedding): ‖Δθ‖/‖θ_pre‖
over the part, the QA-ID of θ_pre with only that part's change, and that of θ_task with that part
reset to θ_pre. Fine-tuning that is a small, local perturbation has parts that carry the skill on
their own; a rewrite needs every part's change at once, and no sparse graft can recover it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


PARTS = ("embed", "attn", "mlp", "norm", "unembed")


def part(name: str) -> str:
    """The part of a HookedTransformer a parameter belongs to (embed holds pos_embed too)."""
    if name.startswith("unembed."):
        return "unembed"
    if name.startswith(("embed.", "pos_embed.")):
        return "embed"
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "norm"  # blocks.*.ln1/ln2, ln_final


def task_vector(path: Path, fractions: tuple[float, ...]) -> dict:
    import torch

    from mechrecall.errors import MechrecallError
    from mechrecall.evaluation import accuracy_evaluator
    from mechrecall.runs import open_run

    try:
        run = open_run(path)
        tuned, base = run.load_model(), run.load_model("base")
    except MechrecallError as error:
        _fail(f"{path}: {error}")
    evaluate = accuracy_evaluator(run.tokenizer(), run.world().dataset, metrics=("qa_id",))
    start = dict(base.named_parameters())
    deltas = {name: (p - start[name]).detach() for name, p in tuned.named_parameters() if p.requires_grad}
    magnitudes = torch.cat([d.abs().flatten() for d in deltas.values()])
    ordered = magnitudes.sort(descending=True).values
    energy = (ordered**2).sum()
    top_energy = {f: float((ordered[: int(f * len(ordered))] ** 2).sum() / energy) for f in (0.01, 0.05, 0.2, 0.5)}
    grafted = {}
    for fraction in fractions:
        threshold = ordered[max(int(fraction * len(ordered)), 1) - 1]
        model = run.load_model("base")
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in deltas:
                    parameter.add_(deltas[name] * (deltas[name].abs() >= threshold))
        grafted[fraction] = evaluate(model)["qa_id"]

    def graft(keep: Callable[[str], bool]) -> float:
        model = run.load_model("base")
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in deltas and keep(name):
                    parameter.add_(deltas[name])
        return evaluate(model)["qa_id"]

    parts = {}
    for name in PARTS:
        members = [n for n in deltas if part(n) == name]
        if not members:
            continue
        relative = float(torch.cat([deltas[n].flatten() for n in members]).norm() / torch.cat([start[n].detach().flatten() for n in members]).norm())
        parts[name] = {"elements": sum(deltas[n].numel() for n in members), "relative_change": relative,
                       "only": graft(lambda n, name=name: part(n) == name), "all_but": graft(lambda n, name=name: part(n) != name)}
    return {
        "run": str(path), "elements": len(magnitudes), "unchanged": float((magnitudes == 0).float().mean()),
        "top_energy": top_energy, "tuned_qa_id": evaluate(tuned)["qa_id"], "grafted_qa_id": grafted, "parts": parts,
    }


def lines(result: dict) -> list[str]:
    energy = ", ".join(f"top {100 * f:g}%: {100 * v:.1f}%" for f, v in result["top_energy"].items())
    out = [f"{result['run']}: {result['elements']:,} trainable elements, {100 * result['unchanged']:.1f}% exactly at θ_pre",
           f"  share of ‖Δθ‖² by |Δθ|: {energy}"]
    for fraction, accuracy in result["grafted_qa_id"].items():
        out.append(f"  θ_pre + top {100 * fraction:g}% of Δθ: QA-ID {100 * accuracy:.1f}% (θ_task {100 * result['tuned_qa_id']:.1f}%)")
    for name, found in result["parts"].items():
        out.append(f"  {name:<8} {found['elements']:>9,} elements, ‖Δθ‖/‖θ_pre‖ {found['relative_change']:6.2f}: QA-ID with only its change "
                   f"{100 * found['only']:5.1f}%, with all changes but its own {100 * found['all_but']:5.1f}%")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders")
    parser.add_argument("--fractions", default="0.05,0.2,0.5,0.8", help="comma-separated shares of elements to graft")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        _fail(f"--fractions {args.fractions!r}: give comma-separated numbers in (0, 1], e.g. 0.05,0.2")
    if not all(0 < f <= 1 for f in fractions):
        _fail(f"--fractions {args.fractions!r}: every share must lie in (0, 1]")
    for path in args.runs:
        if not (path / "manifest.json").is_file():
            _fail(f"{path} is not a run folder (no manifest.json): give a trained run, e.g. runs/tiny/s0/mixed")
    import torch

    torch.set_num_threads(args.threads)
    for path in args.runs:
        print("\n".join(lines(task_vector(path, fractions))))


if __name__ == "__main__":
    main()
