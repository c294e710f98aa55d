"""Where a graft's QA-ID recovery comes from: the people it was fit on and the held-out ones.

    python analyses/graft_parts.py RUN[@FRACTION] [RUN[@FRACTION] ...] [--seed 0] [--markdown F]

``mechrecall graft`` keeps a part of the QA-ID people (``--heldout-fraction``, 0.1 by default) out
of the gradient that grows γ and scores each rounded mask on both; its target, "90% of θ_task's
QA-ID accuracy", is measured over every QA-ID person. This script loads a run's kept mask
(``graft.safetensors``), splits the QA-ID people exactly as the graft did (``FRACTION``: the
``--heldout-fraction`` the graft ran with, 0.1 when left out; ``--seed``: its ``--seed``) and
prints θ_task's and the graft's exact-match accuracy on each part, and the pooled share the
graft could reach if the fit people were answered perfectly. It checks the split against the graft:
the fit and held-out accuracies must sum to the score ``graft.json`` logged for the kept mask (a
wrong FRACTION or seed stops it). From the mask's ``history`` it also prints how fast recovery
grew near the end (points of QA-ID per 1% of the parameters, over the last quarter of the scored
masks) and, on that line, the share of parameters the target would take. It trains nothing; each
run costs two passes over its QA-ID.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import NoReturn

warnings.filterwarnings("ignore")

HEADER = ("run", "held-out fraction", "\\|γ\\|₀ share", "QA-ID recovered (pooled)", "fit people: θ_task, graft",
          "held-out people: θ_task, graft", "ceiling (fit people all answered)",
          "growth near the end (points per 1% of parameters)", "share the target would take, on that line")


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse(argument: str) -> tuple[Path, float]:
    path, _, fraction = argument.partition("@")
    if not fraction:
        return Path(path), 0.1
    try:
        value = float(fraction)
    except ValueError:
        _fail(f"{argument}: the part after @ must be the graft's --heldout-fraction, a number in (0, 1)")
    if not 0.0 < value < 1.0:
        _fail(f"{argument}: the held-out fraction must lie strictly between 0 and 1")
    return Path(path), value


def measure(path: Path, fraction: float, seed: int) -> dict:
    import mechrecall as mr
    from mechrecall.encoding import pad_id
    from mechrecall.errors import MechrecallError
    from mechrecall.evaluation import exact_match
    from mechrecall.findings.graft import PRECONDITION_BUDGET, PRECONDITION_RECOVERY, graft_examples, read_graft
    from mechrecall.masks import mask_size, set_weights
    from mechrecall.params import ParameterIndex
    from mechrecall.runs import BASE, TUNED

    from mechrecall.analysis import load_result
    from mechrecall.registry import get

    if not (path / "graft.safetensors").is_file():
        _fail(f"{path} has no graft.safetensors: run `mechrecall graft {path}` first")
    try:
        run = mr.open_run(path)
        index = ParameterIndex.from_spec(run.spec())
        mask = read_graft(run, index)
        result = load_result(run, get("graft"))
        if result is None:
            _fail(f"{path} has no graft.json: run `mechrecall graft {path}` again")
        model = run.load_model("tuned")
        base, tuned = run.directory.load_tensors(BASE), run.directory.load_tensors(TUNED)
        fit, heldout = graft_examples(run.world(), model.tokenizer, fraction, seed)
    except MechrecallError as error:
        _fail(f"{path}: {error}")
    pad = pad_id(model.tokenizer)

    def score() -> tuple[float, float]:
        return float(exact_match(model, fit, pad).float().mean()), float(exact_match(model, heldout, pad).float().mean())

    tuned_fit, tuned_held = score()  # the model holds θ_task as loaded
    set_weights(model, base, tuned, mask)
    graft_fit, graft_held = score()
    kept = next(h for h in result.history if h["step"] == result.best_step)
    if abs(graft_fit + graft_held - kept["score"]) > 1e-6:
        _fail(f"{path}: the held-out fraction {fraction:g} and seed {seed} do not give the split the graft scored "
              f"(fit + held-out {graft_fit + graft_held:.6f}, graft.json {kept['score']:.6f}): give its --heldout-fraction as RUN@F and its --seed")
    n_fit, n_held = len(fit), len(heldout)
    pooled = lambda f, h: (f * n_fit + h * n_held) / (n_fit + n_held)  # noqa: E731
    reference = max(pooled(tuned_fit, tuned_held), 1e-12)
    recovered = pooled(graft_fit, graft_held) / reference
    within = [h for h in result.history if h["size"] <= round(PRECONDITION_BUDGET * index.numel)]
    tail = within[-max(2, len(within) // 4):]
    slope = ((tail[-1]["qa_id"] - tail[0]["qa_id"]) / reference) / max((tail[-1]["size"] - tail[0]["size"]) / index.numel, 1e-12)
    target = result.target or PRECONDITION_RECOVERY
    return {
        "run": str(path), "fraction": fraction, "share": mask_size(mask) / index.numel, "recovered": recovered,
        "tuned": (tuned_fit, tuned_held), "graft": (graft_fit, graft_held), "examples": (n_fit, n_held),
        "ceiling": pooled(tuned_fit, graft_held) / reference, "slope": slope,
        "needed": None if slope <= 0 else mask_size(mask) / index.numel + max(target - recovered, 0.0) / slope,
    }


def row(m: dict) -> list[str]:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    return [m["run"], f"{m['fraction']:g} ({m['examples'][1]:,} of {sum(m['examples']):,} QA)", f"{100 * m['share']:.2f}%",
            pct(m["recovered"]), f"{pct(m['tuned'][0])}, {pct(m['graft'][0])}", f"{pct(m['tuned'][1])}, {pct(m['graft'][1])}",
            pct(m["ceiling"]), f"{m['slope']:.1f}", "not growing" if m["needed"] is None else pct(m["needed"])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding graft.safetensors, each optionally @ its --heldout-fraction")
    parser.add_argument("--seed", type=int, default=0, help="the graft's --seed (it draws the held-out people)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    runs = [parse(argument) for argument in args.runs]
    for path, _ in runs:
        if not path.is_dir():
            _fail(f"{path} is not a run folder: give the folder `mechrecall train` or `reproduce` wrote")
    from mechrecall.artifacts import check_text_output, emit
    from mechrecall.errors import RunDirError

    if args.markdown:
        try:
            check_text_output(args.markdown, inputs=tuple(path for path, _ in runs))
        except RunDirError as error:
            _fail(str(error))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for path, fraction in runs:
        lines.append("| " + " | ".join(row(measure(path, fraction, args.seed))) + " |")
    try:
        emit("\n".join(lines) + "\n", args.markdown, inputs=tuple(path for path, _ in runs))
    except RunDirError as error:
        _fail(str(error))


if __name__ == "__main__":
    main()
