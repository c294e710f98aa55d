"""Activation patching of attention-head outputs between a clean and a corrupted prompt.

The clean prompt asks about person A; the corrupted prompt is the same prompt with another
person's full name (B, chosen with the same number of prompt tokens). For every head (layer,
head), its output ``z`` at every position is copied from the clean run into the corrupted run
(``blocks.L.attn.hook_z``), and the log-probability of A's whole answer (teacher-forced) is
measured. Only pairs whose clean prompt the model answers correctly (greedy, the whole answer)
are used, and the score is a ratio of sums over them, ``Σ (lp_patched − lp_corrupt) / Σ (lp_clean
− lp_corrupt)``: one pair whose corruption barely moves the answer cannot dominate, as a mean of
per-pair ratios lets it. The pair count is part of the result.

For checkpoints converted from Hugging Face, ``patch_heads_nnsight`` does the same on the
original HF model with nnsight (a head's output is its slice of the input of the attention
output projection), as a cross-check of the hooked model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.analysis import Analysis, option
from mechrecall.encoding import bos_id
from mechrecall.errors import ConfigError
from mechrecall.results import Result

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
def answered(model: HookedTransformer, pairs: list[PatchPair]) -> list[bool]:
    """Whether the model's greedy answer to each pair's clean prompt is the whole answer."""
    device = model.cfg.device or "cpu"
    result = {}
    for (_, answer_start), group in _batches(pairs).items():
        clean = torch.tensor([p.clean for p in group], device=device)
        predicted = model(clean)[:, answer_start - 1 : -1].argmax(-1)
        for pair, hit in zip(group, (predicted == clean[:, answer_start:]).all(-1).tolist(), strict=True):
            result[id(pair)] = hit
    return [result[id(pair)] for pair in pairs]


@torch.no_grad()
def patch_heads(model: HookedTransformer, pairs: list[PatchPair]) -> Float[Tensor, "layer head"]:
    """Restored share per head ``[layer, head]`` (TransformerLens hooks): a ratio of sums over
    the pairs."""
    cfg = model.cfg
    device = cfg.device or "cpu"
    restored = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    gap = 0.0
    for (_, answer_start), group in _batches(pairs).items():
        clean = torch.tensor([p.clean for p in group], device=device)
        corrupt = torch.tensor([p.corrupt for p in group], device=device)
        clean_logits, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
        lp_clean = answer_logprob(clean_logits, clean, answer_start)
        lp_corrupt = answer_logprob(model(corrupt), corrupt, answer_start)
        gap += float((lp_clean - lp_corrupt).double().sum())
        for layer in range(cfg.n_layers):
            clean_z = cache[f"blocks.{layer}.attn.hook_z"]
            for head in range(cfg.n_heads):
                def hook(z: Tensor, hook, head: int = head, clean_z: Tensor = clean_z) -> Tensor:
                    z = z.clone()
                    z[:, :, head] = clean_z[:, :, head]
                    return z

                logits = model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
                restored[layer, head] += float((answer_logprob(logits, corrupt, answer_start) - lp_corrupt).double().sum())
    return restored / gap if abs(gap) > 1e-9 else restored * float("nan")


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
    restored = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    gap = 0.0
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
        gap += float((lp_clean - lp_corrupt).double().sum())
        for layer in range(n_layers):
            for head in range(n_heads):
                columns = slice(head * d_head, (head + 1) * d_head)
                with torch.no_grad():
                    with wrapped.trace(corrupt):
                        envoys[layer].input[:, :, columns] = clean_inputs[layer][:, :, columns]
                        logits = wrapped.output.logits.save()
                restored[layer, head] += float((answer_logprob(logits, corrupt, answer_start) - lp_corrupt).double().sum())
    return restored / gap if abs(gap) > 1e-9 else restored * float("nan")


def patching_figure(maps: dict[str, Tensor], counts: dict[str, int], title: str):
    """One heatmap per format, each with its own colour scale (centred on 0, symmetric about its
    own largest magnitude) and colour bar, integer layer and head ticks."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = list(maps)
    figure = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"{k.upper()} ({counts.get(k, 0)} pairs)" for k in kinds],
                           horizontal_spacing=0.15)
    for column, kind in enumerate(kinds, start=1):
        values = maps[kind]
        finite = values[torch.isfinite(values)]
        bound = float(finite.abs().max()) if finite.numel() and float(finite.abs().max()) > 0 else 1.0
        width = 1.0 / len(kinds)
        figure.add_trace(
            go.Heatmap(
                z=values.tolist(), colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound,
                colorbar={"x": width * column - 0.02, "len": 0.9, "thickness": 12},
                hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1, col=column,
        )
        figure.update_xaxes(title_text="head", tickmode="linear", dtick=1, row=1, col=column)
        figure.update_yaxes(title_text="layer", tickmode="linear", dtick=1, autorange="reversed", row=1, col=column)
    figure.update_layout(title=title, template="plotly_white")
    return figure


@dataclass(frozen=True)
class PatchingConfig:
    pairs: int = option(32, "clean/corrupted pairs per format that the model answers correctly when clean")
    seed: int = option(0, "seed of the pairs")

    def validate(self) -> None:
        if self.pairs < 1:
            raise ConfigError(f"--pairs must be at least 1, got {self.pairs}")


@dataclass(frozen=True)
class PatchingResult(Result):
    SCHEMA = 2
    restored: dict[str, list[list[float]]]  # kind → [layer][head]: Σ restored / Σ (clean − corrupt)
    pairs: dict[str, int]  # kind → pairs used (clean answered correctly)
    tried: dict[str, int]  # kind → pairs drawn

    def best(self, kind: str) -> tuple[float, tuple[int, int]] | None:
        cells = [(v, (l, h)) for l, row in enumerate(self.restored[kind]) for h, v in enumerate(row) if v == v]
        return max(cells) if cells else None


def run(run, config: PatchingConfig, device: str, progress: bool) -> PatchingResult:
    model = run.load_model("tuned", device=device)
    world = run.world()
    restored, used, tried = {}, {}, {}
    for kind in KINDS:
        candidates = make_pairs(world, model.tokenizer, kind, 4 * config.pairs, config.seed)
        correct = [pair for pair, hit in zip(candidates, answered(model, candidates), strict=True) if hit][: config.pairs]
        tried[kind], used[kind] = len(candidates), len(correct)
        cfg = model.cfg
        restored[kind] = patch_heads(model, correct).tolist() if correct else [[float("nan")] * cfg.n_heads for _ in range(cfg.n_layers)]
    return PatchingResult(restored=restored, pairs=used, tried=tried)


def _result(r) -> PatchingResult | None:
    return r.result("patch")


def section(groups):
    from mechrecall.report.table import Section, every_run_has, row

    runs = every_run_has(groups, "patch")
    if runs is None:
        return None
    section = Section(
        "patching", "Activation patching",
        "Share of the clean answer's log-probability restored by patching one head's output from a clean run into a run with "
        "another person's name: a ratio of sums over the pairs the model answers correctly when clean (pair count beside it). "
        "The study gives no number; this is context for the attention and head findings.",
    )
    for kind in KINDS:
        section.rows.append(row(groups, f"{kind.upper()}: largest restoration by one head", "·", "score",
                                lambda r, k=kind: None if _result(r).best(k) is None else _result(r).best(k)[0]))
        section.rows.append(row(groups, f"{kind.upper()}: pairs used (clean answered correctly)", "·", "count",
                                lambda r, k=kind: float(_result(r).pairs[k])))
    section.rows = [r for r in section.rows if r is not None]
    for strategy, rs in groups.items():
        result = _result(rs[0])
        maps = {kind: torch.tensor(values) for kind, values in result.restored.items()}
        section.figures.append((f"patching_{strategy}", patching_figure(maps, result.pairs, f"{strategy} (seed {rs[0].seed}): restored answer log-probability by patched head")))
    return section


def describe(result: PatchingResult) -> list[str]:
    lines = []
    for kind, values in result.restored.items():
        flat = sorted(((v, l, h) for l, row in enumerate(values) for h, v in enumerate(row) if v == v), reverse=True)[:5]
        lines.append(f"{kind} ({result.pairs[kind]} of {result.tried[kind]} pairs answered when clean): most restoring heads "
                     + (", ".join(f"{l}.{h} ({v:.2f})" for v, l, h in flat) or "none"))
    return lines


ANALYSIS = Analysis(
    name="patch",
    summary="Activation patching of head outputs from a clean prompt into one with another person's name, BIO and QA.",
    config=PatchingConfig,
    result=PatchingResult,
    reads=lambda config: ("model.safetensors",),
    run=run,
    section=section,
    from_study=lambda study: PatchingConfig(pairs=study.analysis.patch_pairs),
    describe=describe,
    example="mechrecall patch runs/mix --pairs 32",
)
