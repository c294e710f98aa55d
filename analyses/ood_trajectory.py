"""QA-ID and QA-OOD accuracy along one training run: when does recall of unseen people appear?

    python analyses/ood_trajectory.py --preset tiny --strategy mixed --set steps=12000 --every 1000 --threads 1

Trains one model of the preset (with ``--set`` overrides, as ``mechrecall reproduce`` takes them)
through ``mechrecall.training.train`` and evaluates greedy exact match on QA-ID and QA-OOD every
``--every`` steps; ``--max-steps`` stops early without changing the learning-rate schedule. Prints a
line per evaluation and the table at the end; writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--strategy", default="mixed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import dataclasses

    import datasets
    import torch

    from mechrecall import models
    from mechrecall.artifacts import write_json_atomic
    from mechrecall.config import get_preset, override_study, parse_overrides
    from mechrecall.data import create_world
    from mechrecall.encoding import encode_pairs, encode_texts, pad_id
    from mechrecall.evaluation import exact_match
    from mechrecall.training import train

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    study = override_study(get_preset(args.preset), parse_overrides(args.overrides))
    world = create_world(dataclasses.replace(study.world, seed=args.seed))
    config = dataclasses.replace(study.train, strategy=args.strategy, seed=args.seed, max_steps=args.max_steps)
    config.validate()
    model = models.build_model(study.model.name, world.tokenizer, seed=args.seed, device=args.device, dtype=study.model.dtype)
    tokenizer, pad = world.tokenizer, pad_id(world.tokenizer)
    qa = world.dataset["qa_id"]
    examples = {"bio": encode_texts(tokenizer, list(world.dataset["bio"]["text"])), "qa": encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"]))}
    held = {split: encode_pairs(tokenizer, list(world.dataset[split]["prompt"]), list(world.dataset[split]["answer"])) for split in ("qa_id", "qa_ood")}
    points: list[dict[str, float]] = []
    started = time.perf_counter()

    def on_step(state) -> None:
        if state.step % args.every and state.step != config.total_steps:
            return
        model.eval()
        with torch.no_grad():
            accuracy = {split: float(exact_match(model, encoded, pad).float().mean()) for split, encoded in held.items()}
        model.train()
        points.append({"step": state.step, **accuracy, "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(points[-1]), flush=True)

    train(model, examples, config, pad, progress=False, on_step=on_step)
    print(f"{args.preset} {args.strategy} seed {args.seed}, {torch.get_num_threads()} threads; overrides {parse_overrides(args.overrides)}")
    print("| step | " + " | ".join(f"{p['step']:,}" for p in points) + " |")
    print("|---|" + "---|" * len(points))
    for split in ("qa_ood", "qa_id"):
        print(f"| {split} % | " + " | ".join(f"{100 * p[split]:.1f}" for p in points) + " |")
    if args.json:
        write_json_atomic(args.json, points)


if __name__ == "__main__":
    main()
