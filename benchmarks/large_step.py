"""A real model's shape on one accelerator: fine-tuning step with the during-training trace on,
tokens/s and peak memory, and whether trace plus grafting fit.

    python benchmarks/large_step.py --shape pythia-2.8b --device cuda --dtype bfloat16   # the GPU figure
    python benchmarks/large_step.py --shape pythia-14m --device cpu --dtype float32      # a check anywhere

The model is a ``HookedTransformer`` with the architecture of the named shape and random weights
(``mechrecall.models.build_like``: no checkpoint needed). Each step trains on a batch of random
token sequences; with the trace, ``--traced`` rows of the batch get their own backward pass whose
|gradient| is added to fp32 BIO and QA accumulators (exactly as ``mechrecall train
--trace-individuals`` does). Then the graft of ``mechrecall graft`` is learned for two updates
on the same weights (θ_pre = the weights before the steps). Prints a table: seconds per step,
tokens/s and peak memory for plain and traced steps, and the grafting peak.
"""

from __future__ import annotations

import argparse
import time
import warnings

warnings.filterwarnings("ignore")

SHAPES = {
    # GPT-NeoX configs of the Pythia suite (vocabulary padded to 50,304 as in the checkpoints)
    "pythia-14m": dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512),
    "pythia-160m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "pythia-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, intermediate_size=8192),
    "pythia-2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="pythia-2.8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--traced", type=int, default=2, help="rows of each batch traced (their own backward pass)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-graft", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import GPTNeoXConfig

    from mechrecall import models
    from mechrecall.influence import InfluenceAccumulator

    cuda = args.device.startswith("cuda")
    config = GPTNeoXConfig(
        vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True,
        architectures=["GPTNeoXForCausalLM"], **SHAPES[args.shape],
    )
    started = time.perf_counter()
    model = models.build_like(config, device=args.device, dtype=args.dtype, seed=0)
    built = time.perf_counter() - started
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    count = sum(p.numel() for p in parameters.values())
    base = {n: p.detach().clone() for n, p in parameters.items()}
    optimizer = torch.optim.AdamW(parameters.values(), lr=1e-5, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)

    def batch() -> torch.Tensor:
        return torch.randint(0, 50304, (args.batch, args.seq), generator=generator).to(args.device)

    def loss_of(tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens)
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_reset() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    accumulator = None
    results = {}
    for label in ("plain", "trace"):
        if label == "trace":
            accumulator = InfluenceAccumulator(model, "lr-grad")  # the study's trace
        times = []
        peak_reset()
        for step in range(args.steps + 1):  # the first is a warm-up
            tokens = batch()
            sync()
            begun = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            rest = tokens
            traced_gradients = None
            if accumulator is not None:
                traced, rest = tokens[: args.traced], tokens[args.traced :]
                traced_gradients = torch.autograd.grad(loss_of(traced) * args.traced, list(parameters.values()))
                accumulator.add("qa" if step % 2 else "bio", traced_gradients, args.traced, lr=1e-5)
            (loss_of(rest) * len(rest) / args.batch).backward()
            if traced_gradients is not None:
                with torch.no_grad():
                    for parameter, gradient in zip(parameters.values(), traced_gradients, strict=True):
                        parameter.grad += gradient / args.batch
                del traced_gradients
            torch.nn.utils.clip_grad_norm_(list(parameters.values()), 1.0)
            optimizer.step()
            sync()
            if step:
                times.append(time.perf_counter() - begun)
        seconds = sorted(times)[len(times) // 2]
        results[label] = (seconds, args.batch * args.seq / seconds, peak())

    graft_peak = graft_seconds = None
    if not args.no_graft:
        from mechrecall.config import WorldConfig
        from mechrecall.data import create_world
        from mechrecall.encoding import encode_pairs
        from mechrecall.findings.graft import GraftConfig, learn_graft
        from mechrecall.params import ParameterIndex

        del optimizer, accumulator
        if cuda:
            torch.cuda.empty_cache()
        world = create_world(WorldConfig(people=64))
        model.tokenizer = world.tokenizer  # word-level ids (< 2,000) are valid ids of the 50,304 vocabulary
        qa = world.dataset["qa_id"]
        encoded = encode_pairs(world.tokenizer, list(qa["prompt"]), list(qa["answer"]))
        fit, heldout = encoded.select(range(0, 96)), encoded.select(range(96, 128))
        tuned = {n: p.detach().clone() for n, p in parameters.items()}
        index = ParameterIndex.from_spec(models.model_spec(model, "built", args.shape))
        peak_reset()
        sync()
        begun = time.perf_counter()
        learn_graft(model, index, base, tuned, fit, heldout, GraftConfig(sparsity=1e-3, steps=2, batch_size=8))
        sync()
        graft_seconds, graft_peak = time.perf_counter() - begun, peak()

    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{args.shape}-shaped HookedTransformer, {count / 1e9:.2f}B trainable parameters, {args.dtype}, {name}; built in {built:.0f} s")
    print(f"batch {args.batch} x {args.seq} tokens, {args.traced} traced rows per step, AdamW, median of {args.steps} steps")
    print(f"{'step':<28}{'s/step':>10}{'tokens/s':>12}{'peak GiB':>10}")
    for label, (seconds, rate, memory) in results.items():
        print(f"{label:<28}{seconds:>10.3f}{rate:>12.0f}{memory:>10.1f}")
    print(f"trace overhead: {results['trace'][0] / results['plain'][0]:.2f}x")
    if graft_peak is not None:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else float("nan")
        print(f"{'grafting (2 mask updates)':<28}{graft_seconds:>10.1f}{'':>12}{graft_peak:>10.1f}   (device holds {total:.0f} GiB)")


if __name__ == "__main__":
    main()
