"""Attention heads: per-head scores and rankings, concentration, and head ablation.

Scores per query head (layer, head):

- ``shared``: shared elements of S_k in the head's Q/K/V/O weights and biases (the run's
  exported shared mask); under grouped-query attention a key-value head's K and V counts are
  divided equally among the query heads that use it (``ParameterIndex.head_totals``);
- ``grafted``: the same count for the graft γ (absent, not replaced, when γ holds no attention
  element);
- the control: random head sets, drawn afresh for every curve point and draw (``draws`` of them,
  seeded by the run's training seed, the point and the draw), never one fixed ordering.

Concentration (the share of a ranking's elements held by its top heads) stands beside its null:
the same share for random sets with S's count in every parameter tensor.

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
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.analysis import Analysis, option
from mechrecall.errors import ConfigError
from mechrecall.params import ParameterIndex
from mechrecall.report.table import Groups, Section, every_run_has
from mechrecall.results import Result
from mechrecall.runs import BASE as BASE_FILE
from mechrecall.runs import TUNED as TUNED_FILE

RANKINGS = ("shared", "grafted")
METHODS = ("reset", "zero", "mean")
Head = tuple[int, int]


def rank_heads(scores: Float[Tensor, "layer head"]) -> list[Head]:
    """Heads by descending score; ties to the lower (layer, head)."""
    n_layers, n_heads = scores.shape
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return sorted(heads, key=lambda lh: (-float(scores[lh]), lh))


def concentration(scores: Float[Tensor, "layer head"]) -> list[float] | None:
    """The cumulative share of the total held by the top 1, 2, … heads (None when the total is
    zero: an empty set has no concentration, not 0% or 100%)."""
    ordered = sorted(scores.flatten().tolist(), reverse=True)
    total = sum(ordered)
    if total <= 0:
        return None
    cumulative, running = [], 0.0
    for value in ordered:
        running += value
        cumulative.append(running / total)
    return cumulative


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


@dataclass(frozen=True)
class HeadsConfig:
    top: str = option("10%", "the headline share of heads ablated: a percentage of all heads (10%) or a count (12)")
    curve: tuple[float, ...] = option((5.0, 10.0, 20.0), "percentages of heads for the ablation curve")
    rank_by: str = option("shared", "the headline ranking", choices=RANKINGS)
    method: str = option("reset", "reset (weights back to θ_pre) | zero | mean (of hook_z over a reference batch)", choices=METHODS)
    draws: int = option(10, "random head sets per curve point (the control), drawn afresh")
    with_graft: bool = option(True, "also rank heads by the graft γ (needs `mechrecall graft` first)")
    seed: int = option(0, "seed of the random head sets (with the run's training seed)")

    def validate(self) -> None:
        if self.draws < 1:
            raise ConfigError(f"--draws must be at least 1, got {self.draws}")
        if not self.curve or not all(0 < share <= 100 for share in self.curve):
            raise ConfigError(f"--curve shares must be percentages in (0, 100], got {list(self.curve)}")
        parse_top(self.top, 10**9)  # the form; the count is checked against the model
        if self.rank_by == "grafted" and not self.with_graft:
            raise ConfigError("--rank-by grafted needs the graft: drop --no-with-graft")


@dataclass(frozen=True)
class Ablation:
    heads: tuple[tuple[int, int], ...]
    accuracy: dict[str, float]


@dataclass(frozen=True)
class CurvePoint:
    share: float
    count: int
    ranked: dict[str, Ablation]  # ranking → its top heads ablated
    random: tuple[Ablation, ...]  # random head sets of the same count

    def drop(self, before: dict[str, float], ranking: str, metric: str) -> float | None:
        return before[metric] - self.ranked[ranking].accuracy[metric] if ranking in self.ranked else None

    def random_drops(self, before: dict[str, float], metric: str) -> list[float]:
        return [before[metric] - a.accuracy[metric] for a in self.random]


@dataclass(frozen=True)
class HeadsResult(Result):
    SCHEMA = 2
    n_layers: int
    n_heads: int
    method: str
    top_count: int
    scores: dict[str, list[list[float]]]  # ranking → [layer][head]
    cumulative: dict[str, list[float] | None]  # ranking → cumulative share held by the top 1, 2, … heads
    null_held: tuple[float, ...]  # per draw: share of a random set (S's count per tensor) held by its top heads
    before: dict[str, float]
    headline: CurvePoint  # the top heads of the headline ranking, and the random draws
    rank_by: str
    curve: tuple[CurvePoint, ...]
    graft_note: str | None  # why there is no grafted ranking

    def held_by_top(self, ranking: str) -> float | None:
        cumulative = self.cumulative.get(ranking)
        return None if cumulative is None else cumulative[self.top_count - 1]

    def order(self, ranking: str) -> list[Head]:
        return rank_heads(torch.tensor(self.scores[ranking], dtype=torch.float64))


def random_heads(n_layers: int, n_heads: int, count: int, seed: int | str) -> list[Head]:
    """``count`` distinct heads drawn uniformly (seeded)."""
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return sorted(random.Random(seed).sample(heads, count))


def head_scores(index: ParameterIndex, mask: dict[str, Tensor]) -> Float[Tensor, "layer head"]:
    """Elements of ``mask`` per query head (k, v apportioned under grouped-query attention)."""
    return index.head_totals(index.count_by_head(index.flatten(mask)))


def run(run, config: HeadsConfig, device: str, progress: bool) -> HeadsResult:
    from mechrecall.evaluation import accuracy_evaluator
    from mechrecall.findings.graft import read_graft
    from mechrecall.findings.shared import read_shared_mask
    from mechrecall.masks import random_like
    from mechrecall.runs import BASE

    cfg = run.spec()["tl_config"]
    n_layers, n_heads = cfg["n_layers"], cfg["n_heads"]
    total = n_layers * n_heads
    top_count = parse_top(config.top, total)
    index = ParameterIndex.from_spec(run.spec())
    shared = read_shared_mask(run, index)
    scores = {"shared": head_scores(index, shared)}
    graft_note = None
    if config.with_graft:
        grafted = head_scores(index, read_graft(run, index))
        if float(grafted.sum()) > 0:
            scores["grafted"] = grafted
        else:
            graft_note = "the graft holds no attention element: no grafted ranking"
    if config.rank_by not in scores:
        raise ConfigError(f"--rank-by {config.rank_by}: {graft_note or 'that ranking is not available'}")
    cumulative = {ranking: concentration(values) for ranking, values in scores.items()}
    null_held = []
    for draw in range(config.draws):
        null = concentration(head_scores(index, random_like(shared, config.seed * 1_000 + draw)))
        if null is not None:
            null_held.append(null[top_count - 1])
    model = run.load_model("tuned", device=device)
    base = run.directory.load_tensors(BASE, device=device)
    world = run.world()
    evaluate = accuracy_evaluator(model.tokenizer, world.dataset)
    reference = None
    if config.method == "mean":
        tokens, lengths = _reference_batch(model, world, seed=config.seed)
        reference = mean_z(model, tokens, lengths, [(l, h) for l in range(n_layers) for h in range(n_heads)])
    cache: dict[frozenset, dict[str, float]] = {}

    def ablation(heads: list[Head]) -> Ablation:
        key = frozenset(heads)
        if key not in cache:
            with ablated(model, heads, config.method, base, reference):
                cache[key] = evaluate(model)
        return Ablation(tuple(heads), cache[key])

    before = evaluate(model)
    orders = {ranking: rank_heads(values) for ranking, values in scores.items()}
    run_seed = run.train_config.seed

    def point(share: float | None, count: int) -> CurvePoint:
        draws = tuple(
            ablation(random_heads(n_layers, n_heads, count, f"heads-{config.seed}-{run_seed}-{count}-{draw}"))
            for draw in range(config.draws)
        )
        ranked = {ranking: ablation(order[:count]) for ranking, order in orders.items()}
        return CurvePoint(share if share is not None else 100 * count / total, count, ranked, draws)

    headline = point(None, top_count)
    curve = tuple(point(share, max(1, round(share / 100 * total))) for share in config.curve)
    return HeadsResult(
        n_layers=n_layers, n_heads=n_heads, method=config.method, top_count=top_count,
        scores={ranking: values.tolist() for ranking, values in scores.items()}, cumulative=cumulative,
        null_held=tuple(null_held), before=before, headline=headline, rank_by=config.rank_by, curve=curve, graft_note=graft_note,
    )


# ---- report ------------------------------------------------------------------------------------


def _result(r) -> HeadsResult | None:
    return r.result("heads")


def section(groups: Groups) -> Section | None:
    import statistics

    from mechrecall.report.table import above_chance, estimate, row
    from mechrecall.report.verdicts import against_control, no_claim

    runs = every_run_has(groups, "heads")
    if runs is None:
        return None
    first = _result(runs[0])
    section = Section(
        "heads", "Attention heads",
        f"Head rankings by shared elements (and by grafted elements), their concentration against random sets with S's count per "
        f"tensor, and ablation ({first.method}) of the top heads against random head sets drawn afresh ({len(first.headline.random)} "
        "draws per point; mean ± spread over draws and seeds).",
        finding="shared elements concentrate in a few heads whose ablation destroys recall",
    )
    share = f"{100 * first.top_count / (first.n_layers * first.n_heads):.1f}% ({first.top_count})"
    held = lambda r: _result(r).held_by_top("shared")  # noqa: E731
    null = lambda r: statistics.fmean(_result(r).null_held) if _result(r).null_held else None  # noqa: E731
    null_spread = lambda r: statistics.pstdev(_result(r).null_held) if len(_result(r).null_held) > 1 else 0.0  # noqa: E731
    verdict = no_claim()
    if "mixed" in groups and estimate(groups["mixed"], held) and estimate(groups["mixed"], null, null_spread):
        verdict = against_control(estimate(groups["mixed"], held), estimate(groups["mixed"], null, null_spread), 5e-4)
    section.rows.append(row(groups, f"shared elements held by the top {share} heads (control: random sets)",
                            "over 60% (mixed)", "pct", held, null, verdict, control_within=null_spread))
    section.rows.append(row(groups, f"graft elements held by the top {share} heads", "·", "pct",
                            lambda r: _result(r).held_by_top("grafted"), null, control_within=null_spread))
    for metric in ("qa_ood", "qa_id", "bio"):
        name = {"qa_ood": "QA-OOD", "qa_id": "QA-ID", "bio": "BIO"}[metric]
        drop = lambda r, m=metric: _result(r).headline.drop(_result(r).before, "shared", m)  # noqa: E731
        control = lambda r, m=metric: statistics.fmean(_result(r).headline.random_drops(_result(r).before, m))  # noqa: E731
        spread = lambda r, m=metric: statistics.pstdev(_result(r).headline.random_drops(_result(r).before, m))  # noqa: E731
        verdict = no_claim()
        if metric == "qa_ood" and "mixed" in groups:
            verdict = against_control(estimate(groups["mixed"], drop), estimate(groups["mixed"], control, spread), 5e-4,
                                      preconditions=[above_chance(groups, "mixed")])
        study = "ablating them costs over 90% of recall; random heads do not" if metric == "qa_ood" else "·"
        section.rows.append(row(groups, f"{name} drop (points), top {share} heads by shared (control: random heads)", study,
                                "points", drop, control, verdict, control_within=spread))
    by_shared = lambda r: _result(r).headline.drop(_result(r).before, "shared", "qa_ood")  # noqa: E731
    by_graft = lambda r: _result(r).headline.drop(_result(r).before, "grafted", "qa_ood")  # noqa: E731
    verdict = no_claim()
    if "mixed" in groups and estimate(groups["mixed"], by_graft) is not None:
        graft_ok = all(r.result("graft") is None or r.result("graft").target_met is not False for r in groups["mixed"])
        verdict = against_control(
            estimate(groups["mixed"], by_shared), estimate(groups["mixed"], by_graft), 5e-4,
            preconditions=[above_chance(groups, "mixed"), (graft_ok, "the graft did not recover its target: its ranking is not the study's")],
            paired=estimate(groups["mixed"], lambda r: None if by_graft(r) is None else by_shared(r) - by_graft(r)),
        )
    section.rows.append(row(groups, f"QA-OOD drop (points), top {share} heads by graft (the shared ranking should beat it)",
                            "shared ranking beats grafted and random", "points", by_graft, verdict=verdict))
    for point_index, point in enumerate(first.curve):
        for ranking in ("shared", "grafted"):
            drop = lambda r, i=point_index, k=ranking: _result(r).curve[i].drop(_result(r).before, k, "qa_ood")  # noqa: E731
            control = lambda r, i=point_index: statistics.fmean(_result(r).curve[i].random_drops(_result(r).before, "qa_ood"))  # noqa: E731
            spread = lambda r, i=point_index: statistics.pstdev(_result(r).curve[i].random_drops(_result(r).before, "qa_ood"))  # noqa: E731
            section.rows.append(row(groups, f"QA-OOD drop (points), top {point.share:g}% ({point.count}) heads by {ranking}", "·", "points",
                                    drop, control, control_within=spread))
    section.rows = [r for r in section.rows if r is not None]
    for strategy, rs in groups.items():
        section.figures.append((f"head_curve_{strategy}", curve_figure(_result(rs[0]), f"{strategy} (seed {rs[0].seed}): ablating top heads")))
        section.figures.append((f"concentration_{strategy}", concentration_figure(_result(rs[0]), f"{strategy} (seed {rs[0].seed}): concentration over heads")))
    return section


def curve_figure(result: HeadsResult, title: str):
    """Accuracy against the share of heads ablated: every ranking with its own marker and dash,
    the random control as its mean with the spread over draws as error bars."""
    import statistics

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = ("bio", "qa_id", "qa_ood")
    styles = {"shared": ("#d62728", "circle", "solid"), "grafted": ("#1f77b4", "diamond", "dash"), "random": ("#555555", "x", "dot")}
    figure = make_subplots(rows=1, cols=3, subplot_titles=[f"{m} accuracy" for m in metrics], shared_yaxes=True)
    points = sorted(result.curve, key=lambda p: p.share)
    for column, metric in enumerate(metrics, start=1):
        for ranking in ("shared", "grafted"):
            if ranking not in result.scores:
                continue
            colour, marker, dash = styles[ranking]
            figure.add_trace(go.Scatter(
                x=[0] + [p.share for p in points], y=[100 * result.before[metric]] + [100 * p.ranked[ranking].accuracy[metric] for p in points],
                mode="lines+markers", name=f"top heads by {ranking}", legendgroup=ranking, showlegend=column == 1,
                line={"color": colour, "dash": dash}, marker={"symbol": marker, "size": 9},
            ), row=1, col=column)
        colour, marker, dash = styles["random"]
        means = [100 * statistics.fmean(a.accuracy[metric] for a in p.random) for p in points]
        spreads = [100 * statistics.pstdev([a.accuracy[metric] for a in p.random]) for p in points]
        figure.add_trace(go.Scatter(
            x=[0] + [p.share for p in points], y=[100 * result.before[metric]] + means,
            error_y={"type": "data", "array": [0.0] + spreads, "visible": True},
            mode="lines+markers", name=f"random heads ({len(points[0].random)} draws: mean ± spread)", legendgroup="random",
            showlegend=column == 1, line={"color": colour, "dash": dash}, marker={"symbol": marker, "size": 9},
        ), row=1, col=column)
        figure.update_xaxes(title_text="heads ablated (%)", row=1, col=column)
    figure.update_yaxes(title_text="exact match (%)", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white")
    return figure


def concentration_figure(result: HeadsResult, title: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    for ranking, cumulative in result.cumulative.items():
        if cumulative:
            figure.add_trace(go.Scatter(x=[100 * (i + 1) / len(cumulative) for i in range(len(cumulative))], y=[100 * c for c in cumulative],
                                        mode="lines+markers", name=ranking))
    if result.null_held:
        import statistics

        figure.add_trace(go.Scatter(x=[100 * result.top_count / (result.n_layers * result.n_heads)], y=[100 * statistics.fmean(result.null_held)],
                                    error_y={"type": "data", "array": [100 * statistics.pstdev(result.null_held)]}, mode="markers",
                                    name="random sets (S's count per tensor)", marker={"symbol": "x", "size": 11, "color": "#555555"}))
    figure.update_layout(title=title, xaxis_title="top heads (%)", yaxis_title="share of elements held (%)", template="plotly_white")
    return figure


def describe(result: HeadsResult) -> list[str]:
    import statistics

    lines = []
    for ranking in result.cumulative:
        held = result.held_by_top(ranking)
        lines.append(f"{ranking}: the top {result.top_count} heads hold " + ("no elements" if held is None else f"{100 * held:.1f}%")
                     + (f" (random sets: {100 * statistics.fmean(result.null_held):.1f}%)" if result.null_held else ""))
    if result.graft_note:
        lines.append(result.graft_note)
    headline = result.headline
    for ranking, ablation in headline.ranked.items():
        heads = ", ".join(f"{l}.{h}" for l, h in ablation.heads)
        lines.append(f"top {headline.count} by {ranking} ({heads}): " + "  ".join(
            f"{m} {100 * result.before[m]:.1f} → {100 * ablation.accuracy[m]:.1f}" for m in ("bio", "qa_id", "qa_ood")))
    drops = headline.random_drops(result.before, "qa_ood")
    lines.append(f"random {headline.count} heads ({len(drops)} draws): QA-OOD drop {100 * statistics.fmean(drops):.1f} ± {100 * statistics.pstdev(drops):.1f} points")
    return lines


ANALYSIS = Analysis(
    name="heads",
    summary="Rank heads by shared (and grafted) elements; concentration and ablation of the top heads against random heads.",
    config=HeadsConfig,
    result=HeadsResult,
    reads=lambda config: (BASE_FILE, TUNED_FILE, "shared_mask.safetensors") + (("graft.safetensors",) if config.with_graft else ()),
    run=run,
    section=section,
    from_study=lambda study: HeadsConfig(top=study.analysis.heads_top, curve=study.analysis.heads_curve, draws=study.analysis.head_draws),
    describe=describe,
    example="mechrecall heads runs/mix --top 10% --curve 5,10,20",
)
