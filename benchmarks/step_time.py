"""Fine-tuning step time of the HookedTransformer against the same architecture and weights in
Hugging Face transformers (GPT-NeoX), and evaluation throughput of batched exact match against
one-example-at-a-time greedy generation. Side by side, one process.

    python benchmarks/step_time.py [--steps 20] [--batch 64] [--hidden 128] [--layers 2] [--device cpu]

Prints a table: seconds per step of each and their ratio (target <= 1.15x), and examples per
second of each evaluation and their ratio (target >= 10x).
"""

from __future__ import annotations

import argparse
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also print each step's most expensive operators (torch.profiler)")
    parser.add_argument("--eval-examples", type=int, default=512)
    parser.add_argument("--generate-examples", type=int, default=48)
    args = parser.parse_args()

    import datasets
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    import mechrecall as mr
    from mechrecall import models
    from mechrecall.encoding import (
        collate,
        encode_pairs,
        encode_texts,
        pad_id,
        per_example_loss,
    )
    from mechrecall.evaluation import exact_match, greedy_answer

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = mr.create_world(mr.WorldConfig(people=1000))
    tokenizer = world.tokenizer
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position_embeddings=256, rotary_pct=1.0,
    )
    hf_model = GPTNeoXForCausalLM(config).to(args.device).train()
    hooked = models.convert_hf_model(hf_model, tokenizer, device=args.device).train()
    examples = encode_texts(tokenizer, list(world.dataset["bio"]["text"])[: args.batch])
    tokens, mask = collate(examples, pad_id(tokenizer), args.device)

    def hf_step(optimizer) -> None:
        logits = hf_model(tokens).logits
        loss = per_example_loss(logits, tokens, mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def hooked_step(optimizer) -> None:
        loss = per_example_loss(hooked(tokens), tokens, mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    optimizers = {
        "hf": torch.optim.AdamW(hf_model.parameters(), lr=1e-4),
        "hooked": torch.optim.AdamW([p for p in hooked.parameters() if p.requires_grad], lr=1e-4),
    }
    steps = {"hf": hf_step, "hooked": hooked_step}
    times = {"hf": [], "hooked": []}
    for name in ("hf", "hooked"):  # warm-up
        steps[name](optimizers[name])
    for _ in range(args.steps):  # alternate, so drift in the machine's speed hits both
        for name in ("hf", "hooked"):
            started = time.perf_counter()
            steps[name](optimizers[name])
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in ("hf", "hooked"):
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(5):
                    steps[name](optimizers[name])
            print(f"{name}: operators by self CPU time over 5 steps")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    hf_seconds = sorted(times["hf"])[len(times["hf"]) // 2]
    hooked_seconds = sorted(times["hooked"])[len(times["hooked"]) // 2]

    hooked.eval()
    qa = world.dataset["qa_id"].select(range(args.eval_examples))
    encoded = encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"]))
    started = time.perf_counter()
    exact_match(hooked, encoded, pad_id(tokenizer), batch_size=256)
    batched_rate = len(encoded) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(args.generate_examples):
        answer = encoded.ids[i][encoded.target_start[i]:]
        greedy_answer(hooked, tokenizer, qa[i]["prompt"], len(answer))
    single_rate = args.generate_examples / (time.perf_counter() - started)

    print(
        f"GPT-NeoX architecture: {args.layers} layers, d_model {args.hidden}, {args.heads} heads; batch {args.batch} x {tokens.shape[1]} tokens; "
        f"{torch.get_num_threads()} threads, {args.device}; median of {args.steps} steps"
    )
    print(f"{'fine-tuning step':<44}{'seconds':>10}")
    print(f"{'Hugging Face transformers':<44}{hf_seconds:>10.4f}")
    print(f"{'HookedTransformer (mechrecall)':<44}{hooked_seconds:>10.4f}")
    print(f"ratio hooked / HF: {hooked_seconds / hf_seconds:.2f}x (target <= 1.15x)")
    print(f"{'evaluation':<44}{'examples/s':>10}")
    print(f"{'batched exact match (mechrecall)':<44}{batched_rate:>10.1f}")
    print(f"{'one example at a time, greedy generation':<44}{single_rate:>10.1f}")
    print(f"ratio: {batched_rate / single_rate:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
