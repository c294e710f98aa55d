"""During-training trace overhead: training step time with the trace at every step against
without it, same model, world, batches and process.

    python benchmarks/trace_step.py [--preset tiny] [--people N] [--individuals 20] [--steps 60] [--device cpu]

Prints the mean step time of each and their ratio (target <= 1.3x). ``--all`` traces every
training example instead of the chosen people (each pool's gradient from its own backward pass).
"""

from __future__ import annotations

import argparse
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--people", type=int, default=None)
    parser.add_argument("--individuals", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--all", action="store_true", help="trace every training example")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import datasets
    import torch

    import mechrecall as mr
    from mechrecall import models
    from mechrecall.config import with_overrides
    from mechrecall.encoding import encode_pairs, encode_texts, pad_id
    from mechrecall.influence import InfluenceAccumulator, choose_individuals
    from mechrecall.training import TrainingTracer, train

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    study = mr.get_preset(args.preset)
    world = mr.create_world(with_overrides(study.world, people=args.people))
    config = with_overrides(study.train, steps=args.steps, warmup_steps=5)
    bio = world.dataset["bio"]
    qa = world.dataset["qa_id"]
    examples = {
        "bio": encode_texts(world.tokenizer, list(bio["text"])),
        "qa": encode_pairs(world.tokenizer, list(qa["prompt"]), list(qa["answer"])),
    }
    people = set(choose_individuals(world, "qa_id", args.individuals, 0))
    results = {}
    for label in ("without trace", "with trace", "without trace (again)"):
        model = models.build_model(study.model.name, world.tokenizer, seed=0, device=args.device)
        tracer = None
        if label == "with trace":
            tracer = TrainingTracer(
                InfluenceAccumulator(model, "lr-grad"),
                None if args.all else {
                    "bio": {i for i, p in enumerate(bio["person_id"]) if p in people},
                    "qa": {i for i, p in enumerate(qa["person_id"]) if p in people},
                },
            )
        state = train(model, examples, config, pad_id(world.tokenizer), progress=False, tracer=tracer)
        results[label] = state.seconds / state.step
        if tracer is not None:
            traced_rows = sum(tracer.accumulator.examples.values())
    baseline = (results["without trace"] + results["without trace (again)"]) / 2
    print(
        f"{args.preset} model ({study.model.name}), {len(world.dataset['people']):,} people, batch {config.batch_size}, "
        f"{args.steps} steps, {'every example' if args.all else f'{args.individuals} traced people'} ({traced_rows} traced rows in all), {torch.get_num_threads()} threads, {args.device}"
    )
    for label, seconds in results.items():
        print(f"{label:<24}{1000 * seconds:>8.1f} ms/step")
    print(f"ratio with/without: {results['with trace'] / baseline:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
