"""Activation patching of attention-head outputs between a clean and a corrupted prompt.

The clean prompt asks about person A; the corrupted prompt is the same prompt with another
person's full name (B, chosen with the same number of prompt tokens). For every head (layer,
head), its output ``z`` at every position is copied from the clean run into the corrupted run
(``blocks.L.attn.hook_z``), and the log-probability of A's whole answer (teacher-forced) is
measured. The score is the restored share ``(lp_patched − lp_corrupt) / (lp_clean − lp_corrupt)``
averaged over pairs (pairs whose clean and corrupt log-probabilities differ by less than 1e-6
are skipped).

For checkpoints converted from Hugging Face, ``patch_heads_nnsight`` does the same on the
original HF model with nnsight (a head's output is its slice of the input of the attention
output projection), as a cross-check of the hooked model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.encoding import bos_id

KINDS = ("bio", "qa")


@dataclass
class PatchPair:
    clean: list[int]  # [BOS] prompt(A) answer(A)
    corrupt: list[int]  # [BOS] prompt(B in A's place) answer(A)
    answer_start: int


def make_pairs(world, tokenizer, kind: str, count: int, seed: int = 0) -> list[PatchPair]:
    """Clean/corrupted pairs of equal length, from BIO-completion or QA prompts."""
    rng = random.Random(f"patch-{kind}-{seed}")
    people = world.dataset["people"]
    names = list(people["full_name"])
    rows = world.dataset["bio_eval"] if kind == "bio" else world.dataset["qa_id"]
    order = list(range(len(rows)))
    rng.shuffle(order)
    start = bos_id(tokenizer)
    pairs = []
    for i in order:
        row = rows[i]
        name = names[row["person_id"]]
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"]
        for _ in range(20):  # find another person whose name keeps the prompt's length
            other = names[rng.randrange(len(names))]
            if other == name:
                continue
            corrupt_ids = tokenizer(row["prompt"].replace(name, other), add_special_tokens=False)["input_ids"]
            if len(corrupt_ids) == len(prompt_ids):
                pairs.append(PatchPair([start, *prompt_ids, *answer_ids], [start, *corrupt_ids, *answer_ids], 1 + len(prompt_ids)))
                break
        if len(pairs) == count:
            break
    return pairs


def answer_logprob(logits: Tensor, tokens: Tensor, answer_start: int) -> Tensor:
    """Sum over answer tokens of log p(token | prefix): shape [batch]."""
    log_probs = torch.log_softmax(logits[:, answer_start - 1 : -1].float(), dim=-1)
    return log_probs.gather(-1, tokens[:, answer_start:].unsqueeze(-1)).squeeze(-1).sum(-1)


def _batches(pairs: list[PatchPair]) -> dict[tuple[int, int], list[PatchPair]]:
    grouped: dict[tuple[int, int], list[PatchPair]] = {}
    for pair in pairs:
        grouped.setdefault((len(pair.clean), pair.answer_start), []).append(pair)
    return grouped


@torch.no_grad()
def patch_heads(model: HookedTransformer, pairs: list[PatchPair]) -> Tensor:
    """Restored share per head ``[layer, head]`` (TransformerLens hooks)."""
    cfg = model.cfg
    device = cfg.device or "cpu"
    total = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    used = 0
    for (_, answer_start), group in _batches(pairs).items():
        clean = torch.tensor([p.clean for p in group], device=device)
        corrupt = torch.tensor([p.corrupt for p in group], device=device)
        clean_logits, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
        lp_clean = answer_logprob(clean_logits, clean, answer_start)
        lp_corrupt = answer_logprob(model(corrupt), corrupt, answer_start)
        keep = (lp_clean - lp_corrupt).abs() > 1e-6
        if not keep.any():
            continue
        for layer in range(cfg.n_layers):
            clean_z = cache[f"blocks.{layer}.attn.hook_z"]
            for head in range(cfg.n_heads):
                def hook(z: Tensor, hook, head: int = head, clean_z: Tensor = clean_z) -> Tensor:
                    z = z.clone()
                    z[:, :, head] = clean_z[:, :, head]
                    return z

                logits = model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
                restored = (answer_logprob(logits, corrupt, answer_start) - lp_corrupt) / (lp_clean - lp_corrupt)
                total[layer, head] += restored[keep].double().sum()
        used += int(keep.sum())
    return total / max(used, 1)


def _attention_output_projection(hf_model, layer: int):
    """The module whose input is the concatenated per-head outputs, for the architectures we convert."""
    if hasattr(hf_model, "gpt_neox"):
        return hf_model.gpt_neox.layers[layer].attention.dense
    if hasattr(hf_model, "model") and hasattr(hf_model.model, "layers"):
        return hf_model.model.layers[layer].self_attn.o_proj
    raise ValueError(f"no nnsight patching path for {type(hf_model).__name__}")


def patch_heads_nnsight(hf_model, pairs: list[PatchPair], n_layers: int, n_heads: int, d_head: int) -> Tensor:
    """The same restored shares, patched on the original Hugging Face model with nnsight."""
    from nnsight import NNsight

    wrapped = NNsight(hf_model)
    device = next(hf_model.parameters()).device
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    used = 0
    envoys = [_attention_output_projection(wrapped, layer) for layer in range(n_layers)]
    for (_, answer_start), group in _batches(pairs).items():
        clean = torch.tensor([p.clean for p in group], device=device)
        corrupt = torch.tensor([p.corrupt for p in group], device=device)
        clean_inputs: list[Tensor] = []  # filled inside the trace (nnsight runs the block's own source)
        with torch.no_grad():
            with wrapped.trace(clean):
                for envoy in envoys:
                    clean_inputs.append(envoy.input.save())
                clean_logits = wrapped.output.logits.save()
            with wrapped.trace(corrupt):
                corrupt_logits = wrapped.output.logits.save()
        lp_clean = answer_logprob(clean_logits, clean, answer_start)
        lp_corrupt = answer_logprob(corrupt_logits, corrupt, answer_start)
        keep = (lp_clean - lp_corrupt).abs() > 1e-6
        if not keep.any():
            continue
        for layer in range(n_layers):
            for head in range(n_heads):
                columns = slice(head * d_head, (head + 1) * d_head)
                with torch.no_grad():
                    with wrapped.trace(corrupt):
                        envoys[layer].input[:, :, columns] = clean_inputs[layer][:, :, columns]
                        logits = wrapped.output.logits.save()
                restored = (answer_logprob(logits, corrupt, answer_start) - lp_corrupt) / (lp_clean - lp_corrupt)
                total[layer, head] += restored[keep].double().sum()
        used += int(keep.sum())
    return total / max(used, 1)


def patching_figure(maps: dict[str, Tensor], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(maps), subplot_titles=[kind.upper() for kind in maps])
    for column, (kind, values) in enumerate(maps.items(), start=1):
        figure.add_trace(
            go.Heatmap(z=values.tolist(), colorscale="RdBu", zmid=0, showscale=column == len(maps),
                       hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"),
            row=1, col=column,
        )
        figure.update_xaxes(title_text="head", row=1, col=column)
    figure.update_yaxes(title_text="layer", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white")
    return figure


def patching_run(path, pairs: int = 64, seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Patching heatmaps of a run for BIO and QA prompts; writes ``patching.json`` and a figure."""
    from pathlib import Path

    from mechrecall.errors import ConfigError
    from mechrecall.figures import write_figure
    from mechrecall.runs import resolve_device, open_run

    if pairs < 1:
        raise ConfigError(f"--pairs must be at least 1, got {pairs}")
    run = open_run(path)
    device = resolve_device(device)
    model = run.load_model("tuned", device=device)
    world = run.world()
    maps = {kind: patch_heads(model, make_pairs(world, model.tokenizer, kind, pairs, seed)) for kind in KINDS}
    figure = write_figure(patching_figure(maps, f"{run.path}: restored answer log-probability by patched head"), Path(run.path) / "figures" / "patching.html")
    result = {"pairs": pairs, "restored": {kind: values.tolist() for kind, values in maps.items()}, "figure": str(figure)}
    run.directory.write_json("patching.json", result)
    return result
