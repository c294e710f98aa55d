"""What bit-for-bit repeatable training costs: a fine-tuning step of the default preset's model with
torch's deterministic algorithms on (as ``mechrecall train`` runs) against the same step with them
off. Side by side in one process, steps alternating, so drift in the machine's speed hits both.

    python benchmarks/determinism.py [--model tiny-h16] [--steps 30] [--batch 64] [--threads 2]

Each step is AdamW on a batch of the default world's BIO texts and QA pairs (the mixed recipe's
QA share), through the HookedTransformer. Prints seconds per step (median) of each, their ratio
(target <= 1.10x), and whether two deterministic steps from the same weights agree bit for bit.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-h16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--qa-share", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the race is in multi-threaded backward)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import datasets
    import torch

    import mechrecall as mr
    from mechrecall import models
    from mechrecall.determinism import deterministic
    from mechrecall.encoding import collate, encode_pairs, encode_texts, pad_id, per_example_loss

    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    world = mr.create_world(mr.WorldConfig(people=1000))
    tokenizer = world.tokenizer
    qa_count = round(args.batch * args.qa_share)
    qa = world.dataset["qa_id"].select(range(qa_count))
    bio = encode_texts(tokenizer, list(world.dataset["bio"]["text"])[: args.batch - qa_count])
    pairs = encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"]))
    batches = [collate(part, pad_id(tokenizer), args.device) for part in (bio, pairs)]
    start = models.build_model(args.model, tokenizer, seed=0, device=args.device)
    start.train()

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(start)
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = [per_example_loss(model(tokens), tokens, mask) for tokens, mask in batches]
        (torch.cat(losses).sum() / args.batch).backward()
        optimizer.step()

    def timed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, repeatable: bool) -> float:
        started = time.perf_counter()
        if repeatable:
            with deterministic():
                step(model, optimizer)
        else:
            step(model, optimizer)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    runs = {True: fresh(), False: fresh()}
    times: dict[bool, list[float]] = {True: [], False: []}
    for repeatable in (True, False):  # warm-up
        timed(*runs[repeatable], repeatable)
    for _ in range(args.steps):
        for repeatable in (True, False):
            times[repeatable].append(timed(*runs[repeatable], repeatable))
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}

    twins = [fresh(), fresh()]
    for model, optimizer in twins:
        with deterministic():
            step(model, optimizer)
    same = all(torch.equal(a, b) for a, b in zip(twins[0][0].parameters(), twins[1][0].parameters(), strict=True))

    tokens = sum(int(t.numel()) for t, _ in batches)
    print(f"{args.model}: batch {args.batch} ({qa_count} QA, {args.batch - qa_count} BIO; {tokens:,} token slots); "
          f"{torch.get_num_threads()} threads, {args.device}; median of {args.steps} steps each")
    print(f"{'fine-tuning step':<44}{'seconds':>10}")
    print(f"{'deterministic algorithms off':<44}{median[False]:>10.4f}")
    print(f"{'deterministic algorithms on (mechrecall)':<44}{median[True]:>10.4f}")
    print(f"ratio on / off: {median[True] / median[False]:.2f}x (target <= 1.10x)")
    print(f"two deterministic steps from the same weights agree bit for bit: {same}")


if __name__ == "__main__":
    main()
