"""Attention heads: per-head scores and rankings, concentration, and head ablation.

Scores per query head (layer, head):

- ``shared``: shared elements of S_k in the head's Q/K/V/O weights and biases (the run's
  exported shared mask); under grouped-query attention a key-value head's K and V counts are
  divided equally among the query heads that use it (``ParameterIndex.head_totals``);
- ``grafted``: the same count for the graft γ;
- ``random``: a seeded random permutation (the control ranking).

Head ablation, three methods:

- ``reset``: the head's weights back to θ_pre (Q and O slices and biases; K and V slices only when
  every query head sharing that key-value head is ablated);
- ``zero``: the head's output ``z`` (``blocks.L.attn.hook_z``) set to 0, the same as zeroing its
  ``W_O`` slice;
- ``mean``: ``z`` replaced by its mean over a reference batch (every position of BIO and QA
  training examples).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.params import ParameterIndex

RANKINGS = ("shared", "grafted", "random")
METHODS = ("reset", "zero", "mean")
Head = tuple[int, int]


def scores_for(run, ranking: str, seed: int = 0) -> Float[Tensor, "layer head"]:
    """Per-head scores of a ranking, from the run's artifacts."""
    spec = run.spec()
    cfg = spec["tl_config"]
    if ranking == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(cfg["n_layers"], cfg["n_heads"], generator=generator, dtype=torch.float64)
    if ranking == "shared":
        if "shared.json" not in run.directory.manifest["files"] or "mask" not in run.directory.read_json("shared.json"):
            raise ArtifactError(f"{run.path} has no exported shared mask: run `mechrecall shared {run.path} --fraction 0.01` first")
        return torch.tensor(run.directory.read_json("shared.json")["mask"]["head_total"], dtype=torch.float64)
    if ranking == "grafted":
        if "graft.json" not in run.directory.manifest["files"]:
            raise ArtifactError(f"{run.path} has no graft: run `mechrecall graft {run.path}` first")
        return torch.tensor(run.directory.read_json("graft.json")["head_total"], dtype=torch.float64)
    raise ConfigError(f"unknown ranking {ranking!r}: choose one of {', '.join(RANKINGS)}")


def rank_heads(scores: Float[Tensor, "layer head"]) -> list[Head]:
    """Heads by descending score; ties to the lower (layer, head)."""
    n_layers, n_heads = scores.shape
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return sorted(heads, key=lambda lh: (-float(scores[lh]), lh))


def concentration(scores: Float[Tensor, "layer head"], share: float = 0.1) -> dict[str, Any]:
    """Share of the total held by the top ``share`` of heads, and the cumulative curve."""
    ordered = sorted(scores.flatten().tolist(), reverse=True)
    total = sum(ordered) or 1.0
    cumulative, running = [], 0.0
    for value in ordered:
        running += value
        cumulative.append(running / total)
    top = max(1, round(share * len(ordered)))
    return {"top_share": share, "top_heads": top, "held_by_top": cumulative[top - 1], "cumulative": cumulative}


def parse_top(text: str, n_heads_total: int) -> int:
    """``"10%"`` (of all heads, at least one) or ``"12"`` (a count)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100:
                raise ConfigError(f"--top {text} must be a percentage in (0, 100]")
            return max(1, round(percent / 100 * n_heads_total))
        count = int(text)
    except ValueError:
        raise ConfigError(f"--top {text!r} is neither a percentage (10%) nor a count (12)") from None
    if not 0 < count <= n_heads_total:
        raise ConfigError(f"--top {count} must lie in [1, {n_heads_total}] (the model has {n_heads_total} heads)")
    return count


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[Head]:
    """``"0.3,1.2"`` (layer.head list)."""
    heads = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(\d+)\.(\d+)", item)
        if not match:
            raise ConfigError(f"head {item!r} is not LAYER.HEAD (e.g. 1.3)")
        layer, head = int(match[1]), int(match[2])
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ConfigError(f"head {item} is outside the model ({n_layers} layers of {n_heads} heads)")
        heads.append((layer, head))
    if not heads:
        raise ConfigError("no heads given")
    return heads


# ---- ablation ----------------------------------------------------------------------------------

@torch.no_grad()
def reset_heads(model: HookedTransformer, base: dict[str, Tensor], heads: list[Head]) -> None:
    """Per-head weight slices back to θ_pre (see the module doc for grouped-query attention)."""
    parameters = dict(model.named_parameters())
    index = ParameterIndex.of(model)
    chosen = set(heads)
    for layer, head in heads:
        for leaf in ("W_Q", "b_Q", "W_O"):
            name = f"blocks.{layer}.attn.{leaf}"
            if name in parameters:
                parameters[name][head] = base[name][head].to(parameters[name].device)
    for layer in {layer for layer, _ in heads}:
        for kv_head in range(index.n_kv_heads):
            group = range(kv_head * index.group_size, (kv_head + 1) * index.group_size)
            if all((layer, h) in chosen for h in group):
                for leaf in ("W_K", "W_V", "b_K", "b_V", "_W_K", "_W_V", "_b_K", "_b_V"):
                    name = f"blocks.{layer}.attn.{leaf}"
                    if name in parameters:
                        parameters[name][kv_head] = base[name][kv_head].to(parameters[name].device)


def z_hooks(heads: list[Head], replacement: dict[Head, Tensor] | None = None) -> list[tuple[str, Any]]:
    """Forward hooks on ``blocks.L.attn.hook_z`` ([batch, pos, head, d_head]) that set the chosen
    heads' outputs to zero, or to a replacement vector per head."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, chosen: list[int]):
        def hook(z: Tensor, hook) -> Tensor:
            z = z.clone()
            for head in chosen:
                z[:, :, head, :] = 0.0 if replacement is None else replacement[(layer, head)].to(z.dtype)
            return z

        return hook

    return [(f"blocks.{layer}.attn.hook_z", make(layer, chosen)) for layer, chosen in by_layer.items()]


@torch.no_grad()
def mean_z(model: HookedTransformer, tokens: Tensor, lengths: list[int], heads: list[Head]) -> dict[Head, Tensor]:
    """Each head's mean output over every real (non-padding) position of a reference batch."""
    names = {f"blocks.{layer}.attn.hook_z" for layer, _ in heads}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    valid = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    for row, length in enumerate(lengths):
        valid[row, :length] = True
    return {(layer, head): cache[f"blocks.{layer}.attn.hook_z"][:, :, head, :][valid].mean(0) for layer, head in heads}


@contextmanager
def ablated(model: HookedTransformer, heads: list[Head], method: str, base: dict[str, Tensor] | None = None,
            reference: dict[Head, Tensor] | None = None) -> Iterator[HookedTransformer]:
    """The model with ``heads`` ablated inside the block (weights are restored after ``reset``)."""
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "reset":
        if base is None:
            raise ValueError("reset needs θ_pre")
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        reset_heads(model, base, heads)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(saved[n])
        return
    hooks = z_hooks(heads, None if method == "zero" else reference)
    with model.hooks(fwd_hooks=hooks):
        yield model


# ---- run level ---------------------------------------------------------------------------------

def _reference_batch(model: HookedTransformer, world, size: int = 128, seed: int = 0) -> tuple[Tensor, list[int]]:
    from mechrecall.encoding import Encoded, collate, encode_pairs, encode_texts, pad_id

    rng = random.Random(f"mean-{seed}")
    bio_rows = world.dataset["bio"].select(sorted(rng.sample(range(len(world.dataset["bio"])), min(size // 2, len(world.dataset["bio"])))))
    qa_rows = world.dataset["qa_id"].select(sorted(rng.sample(range(len(world.dataset["qa_id"])), min(size // 2, len(world.dataset["qa_id"])))))
    bio = encode_texts(model.tokenizer, list(bio_rows["text"]))
    qa = encode_pairs(model.tokenizer, list(qa_rows["prompt"]), list(qa_rows["answer"]))
    both = Encoded(bio.ids + qa.ids, bio.target_start + qa.target_start)
    tokens, _ = collate(both, pad_id(model.tokenizer), model.cfg.device or "cpu")
    return tokens, [len(ids) for ids in both.ids]


def head_rankings(run, seed: int = 0) -> dict[str, Any]:
    """Every available ranking with its scores, order and concentration."""
    result = {}
    for ranking in RANKINGS:
        try:
            scores = scores_for(run, ranking, seed)
        except ArtifactError:
            continue
        result[ranking] = {
            "scores": scores.tolist(),
            "order": [list(h) for h in rank_heads(scores)],
            "concentration": concentration(scores) if ranking != "random" else None,
        }
    return result


def ablate_heads_run(
    path, top: str = "10%", rank_by: str = "shared", method: str = "reset", curve: list[float] | None = None,
    seed: int = 0, device: str | None = None,
) -> dict[str, Any]:
    """Ablate the top heads of a ranking and evaluate; with ``curve`` (percentages of heads), the
    accuracy at each share for every available ranking. Writes ``heads.json``."""
    from mechrecall.evaluation import evaluate
    from mechrecall.runs import BASE, resolve_device, open_run

    if rank_by not in RANKINGS:
        raise ConfigError(f"unknown ranking {rank_by!r}: choose one of {', '.join(RANKINGS)}")
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    run = open_run(path)
    if not run.is_trained:
        raise ArtifactError(f"{run.path} has no fine-tuned model: finish `mechrecall train` for it first")
    device = resolve_device(device)
    cfg = run.spec()["tl_config"]
    total = cfg["n_layers"] * cfg["n_heads"]
    count = parse_top(top, total)
    for share in curve or []:
        if not 0 < share <= 100:
            raise ConfigError(f"--curve share {share:g} must be a percentage in (0, 100]")
    model = run.load_model("tuned", device=device)
    base = run.directory.load_tensors(BASE, device=device)
    world = run.world()
    rankings = head_rankings(run, seed)
    if rank_by not in rankings:
        scores_for(run, rank_by, seed)  # raises the error that says what to run first
    reference = None
    if method == "mean":
        tokens, lengths = _reference_batch(model, world, seed=seed)
        reference = mean_z(model, tokens, lengths, [(l, h) for l in range(cfg["n_layers"]) for h in range(cfg["n_heads"])])

    def accuracy_without(heads: list[Head]) -> dict[str, float]:
        with ablated(model, heads, method, base, reference):
            metrics = evaluate(model, model.tokenizer, world.dataset)
        return {m: metrics[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}

    before = {m: run.metrics()[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    heads = [tuple(h) for h in rankings[rank_by]["order"][:count]]
    after = accuracy_without(heads)  # type: ignore[arg-type]
    result: dict[str, Any] = {
        "rank_by": rank_by, "method": method, "top": top, "count": count, "heads": [list(h) for h in heads],
        "before": before, "after": after, "drop": {m: before[m] - after[m] for m in before},
        "rankings": rankings,
    }
    if curve:
        curves = {}
        for ranking, info in rankings.items():
            points = []
            for share in curve:
                n = max(1, round(share / 100 * total))
                chosen = [tuple(h) for h in info["order"][:n]]
                points.append({"share": share, "count": n, **accuracy_without(chosen)})  # type: ignore[arg-type]
            curves[ranking] = points
        result["curve"] = curves
    run.directory.write_json("heads.json", result)
    return result


def curve_figure(curves: dict[str, list[dict[str, float]]], before: dict[str, float], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = ("bio", "qa_id", "qa_ood")
    figure = make_subplots(rows=1, cols=3, subplot_titles=[f"{m} accuracy" for m in metrics], shared_yaxes=True)
    colours = {"shared": "#d62728", "grafted": "#1f77b4", "random": "#7f7f7f"}
    for column, metric in enumerate(metrics, start=1):
        for ranking, points in curves.items():
            figure.add_trace(
                go.Scatter(
                    x=[0] + [p["share"] for p in points], y=[100 * before[metric]] + [100 * p[metric] for p in points],
                    mode="lines+markers", name=ranking, legendgroup=ranking, showlegend=column == 1,
                    line={"color": colours.get(ranking)},
                ),
                row=1, col=column,
            )
        figure.update_xaxes(title_text="heads ablated (%)", row=1, col=column)
    figure.update_yaxes(title_text="exact match (%)", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white")
    return figure


def concentration_figure(rankings: dict[str, Any], title: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    for ranking, info in rankings.items():
        if info["concentration"]:
            cumulative = info["concentration"]["cumulative"]
            figure.add_trace(go.Scatter(x=[100 * (i + 1) / len(cumulative) for i in range(len(cumulative))], y=[100 * c for c in cumulative], mode="lines+markers", name=ranking))
    figure.add_vline(x=10, line_dash="dash", line_color="grey")
    figure.update_layout(title=title, xaxis_title="top heads (%)", yaxis_title="share of elements held (%)", template="plotly_white")
    return figure
