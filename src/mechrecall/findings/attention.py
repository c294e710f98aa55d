"""Attention-pattern case studies: the patterns of chosen heads on one person's BIO and QA
inputs (``blocks.L.attn.hook_pattern``), as labelled heatmaps, and per-head scores that name
the patterns, averaged over many people:

- *subject linking*: attention from the position that predicts the answer (the last prompt
  token) to the subject: every occurrence of the person's full name (with full names in every
  sentence there are several), and the pronouns of the asked sentence (with pronouns after the
  first sentence, the asked sentence names the person only so);
- *relation focusing*: attention from that position to the words naming the asked attribute
  (the asked sentence, or the question), without the subject, the query position itself,
  punctuation, the possessive 's and the answer cue.

The control of each score is a head that attends uniformly to the visible positions: the share
a span gets by its size alone.
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.analysis import Analysis, option
from mechrecall.data.pools import PRONOUNS
from mechrecall.data.templates import ANSWER_CUE, ATTRIBUTES
from mechrecall.encoding import bos_id
from mechrecall.errors import ConfigError
from mechrecall.results import Result

PRONOUN_WORDS = {w.lower() for pair in PRONOUNS.values() for w in pair}
CUE_WORDS = {w.lower() for w in ANSWER_CUE.replace(":", " ").split()}


@dataclass
class Prompt:
    """A tokenized prompt with the positions of the subject's and the relation's tokens.

    Positions count the leading BOS as 0. The *query* is the last position (it predicts the
    answer). *Subject*: every token of every occurrence of the person's full name, and the
    pronouns and possessives (he, his, she, her) of the asked sentence, which refer to the person.
    *Relation*: the other words of the asked sentence (BIO: the last, unfinished sentence) or of
    the question (QA), without the query position itself, punctuation, the possessive ``'s`` and
    the answer cue.
    """

    kind: str  # "bio" or "qa"
    tokens: list[int]
    labels: list[str]
    subject: list[int]
    relation: list[int]


def _occurrences(text: str, name: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(name)
    while start >= 0:
        spans.append((start, start + len(name)))
        start = text.find(name, start + len(name))
    return spans


def locate(tokenizer, text: str, name: str, kind: str) -> Prompt:
    """Token ids of ``[BOS] text`` and the subject / relation positions (by character offsets)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    names = _occurrences(text, name)
    asked_from = text.rfind(". ") + 2 if kind == "bio" and ". " in text else 0
    query = len(offsets)  # the last position (BOS is 0)
    subject, relation = [], []
    for position, (start, end) in enumerate(offsets, start=1):
        piece = text[start:end].strip()
        in_name = any(a <= start and end <= b for a, b in names)
        asked = start >= asked_from
        if in_name or (asked and piece.lower() in PRONOUN_WORDS):
            subject.append(position)
        elif (
            asked and position != query and piece and not all(c in string.punctuation for c in piece)
            and piece.lower() not in CUE_WORDS and not (piece == "s" and text[start - 1 : start] == "'")
        ):
            relation.append(position)
    labels = ["[BOS]"] + [text[s:e] for s, e in offsets]
    return Prompt(kind, [bos_id(tokenizer), *ids], labels, subject, relation)


def prompts_for(world, tokenizer, person_id: int, attribute: str) -> dict[str, Prompt]:
    """The BIO-completion and QA prompts of one person and attribute."""
    people = world.dataset["people"]
    name = people[person_id]["full_name"]
    split = "qa_id" if people[person_id]["split"] == "id" else "qa_ood"
    bio = next(r for r in world.dataset["bio_eval"] if r["person_id"] == person_id and r["attribute"] == attribute)
    qa = next(r for r in world.dataset[split] if r["person_id"] == person_id and r["attribute"] == attribute)
    return {"bio": locate(tokenizer, bio["prompt"], name, "bio"), "qa": locate(tokenizer, qa["prompt"], name, "qa")}


@torch.no_grad()
def patterns(model: HookedTransformer, prompt: Prompt, heads: list[tuple[int, int]]) -> dict[tuple[int, int], Tensor]:
    """Each head's attention pattern ``[query pos, key pos]`` on a prompt."""
    layers = {layer for layer, _ in heads}
    tokens = torch.tensor([prompt.tokens], device=model.cfg.device or "cpu")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern") and int(n.split(".")[1]) in layers)
    return {(layer, head): cache[f"blocks.{layer}.attn.hook_pattern"][0, head].cpu() for layer, head in heads}


@torch.no_grad()
def pattern_scores(
    model: HookedTransformer, world, people: int = 100, seed: int = 0
) -> tuple[dict[str, dict[str, Float[Tensor, "layer head"]]], dict[str, dict[str, float]]]:
    """Mean subject-linking and relation-focusing attention of every head ([layer, head]) from
    the answer-predicting position, over ``people`` people × 6 attributes, for BIO and QA; and the
    same scores of a head that attends uniformly to every visible position (the control: how
    much a span gets by its size alone)."""
    from mechrecall.data.templates import ATTRIBUTES

    cfg = model.cfg
    ids = random.Random(f"attention-{seed}").sample(range(len(world.dataset["people"])), min(people, len(world.dataset["people"])))
    totals = {kind: {score: torch.zeros(cfg.n_layers, cfg.n_heads) for score in ("subject", "relation")} for kind in ("bio", "qa")}
    uniform = {kind: {"subject": 0.0, "relation": 0.0} for kind in ("bio", "qa")}
    counts = {"bio": 0, "qa": 0}
    for person_id in ids:
        for attribute in ATTRIBUTES:
            for kind, prompt in prompts_for(world, model.tokenizer, person_id, attribute).items():
                tokens = torch.tensor([prompt.tokens], device=cfg.device or "cpu")
                _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
                for layer in range(cfg.n_layers):
                    last = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, :].cpu()  # [head, key]
                    totals[kind]["subject"][layer] += last[:, prompt.subject].sum(-1)
                    totals[kind]["relation"][layer] += last[:, prompt.relation].sum(-1)
                uniform[kind]["subject"] += len(prompt.subject) / len(prompt.tokens)
                uniform[kind]["relation"] += len(prompt.relation) / len(prompt.tokens)
                counts[kind] += 1
    means = {kind: {score: value / max(counts[kind], 1) for score, value in scores.items()} for kind, scores in totals.items()}
    baselines = {kind: {score: value / max(counts[kind], 1) for score, value in scores.items()} for kind, scores in uniform.items()}
    return means, baselines


def shared_pattern_heads(scores: dict[str, dict[str, Tensor]], threshold: float = 0.3) -> dict[str, list[list[int]]]:
    """Heads whose mean score is at least ``threshold`` on both BIO and QA, per pattern."""
    result = {}
    for score in ("subject", "relation"):
        both = (scores["bio"][score] >= threshold) & (scores["qa"][score] >= threshold)
        result[score] = [[int(l), int(h)] for l, h in torch.nonzero(both).tolist()]
    return result


def pattern_figure(prompts: dict[str, Prompt], maps: dict[str, dict[tuple[int, int], Tensor]], heads: list[tuple[int, int]], title: str):
    """One row per head: its BIO and QA patterns side by side, with token labels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = [f"{kind.upper()} · head {l}.{h}" for (l, h) in heads for kind in ("bio", "qa")]
    figure = make_subplots(rows=len(heads), cols=2, subplot_titles=titles, horizontal_spacing=0.12, vertical_spacing=0.3 / max(len(heads), 1))
    for row, head in enumerate(heads, start=1):
        for column, kind in enumerate(("bio", "qa"), start=1):
            labels = [f"{i}:{t}" for i, t in enumerate(prompts[kind].labels)]
            figure.add_trace(
                go.Heatmap(
                    z=maps[kind][head].tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, showscale=row == 1 and column == 2,
                    hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.2f}<extra></extra>",
                ),
                row=row, col=column,
            )
            figure.update_yaxes(autorange="reversed", row=row, col=column)
    figure.update_layout(title=title, template="plotly_white", height=480 * len(heads), width=1300)
    return figure


def score_figure(scores: dict[str, dict[str, Tensor]], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [(kind, score) for score in ("subject", "relation") for kind in ("bio", "qa")]
    figure = make_subplots(rows=1, cols=4, subplot_titles=[f"{score} · {kind.upper()}" for kind, score in panels])
    for column, (kind, score) in enumerate(panels, start=1):
        figure.add_trace(go.Heatmap(z=scores[kind][score].tolist(), zmin=0, zmax=1, colorscale="Viridis", showscale=column == 4), row=1, col=column)
        figure.update_xaxes(title_text="head", row=1, col=column)
    figure.update_yaxes(title_text="layer", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white")
    return figure


@dataclass(frozen=True)
class AttentionConfig:
    heads: str = option("top:shared:3", "top:N or top:RANKING:N (shared | grafted), or a list L.H,L.H")
    example: int = option(0, "the person whose BIO and QA patterns are drawn")
    attribute: str = option("birth_city", "the attribute asked", choices=ATTRIBUTES)
    people: int = option(100, "people averaged in the named-pattern scores (× 6 attributes)")
    threshold: float = option(0.3, "a head has a pattern on a format when its mean score reaches this")
    seed: int = option(0, "seed of the people averaged")

    def validate(self) -> None:
        if self.people < 1:
            raise ConfigError(f"--people must be at least 1, got {self.people}")
        if self.example < 0:
            raise ConfigError(f"--example must be a person id (0 or more), got {self.example}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"--threshold must lie in (0, 1], got {self.threshold}")

    def ranking(self) -> str | None:
        if not self.heads.startswith("top:"):
            return None
        body = self.heads[4:]
        return body.rpartition(":")[0] if ":" in body else "shared"


@dataclass(frozen=True)
class AttentionResult(Result):
    SCHEMA = 2
    heads: tuple[tuple[int, int], ...]
    person: int
    attribute: str
    name: str
    people: int
    threshold: float
    scores: dict[str, dict[str, list[list[float]]]]  # kind → score → [layer][head]
    uniform: dict[str, dict[str, float]]  # kind → score → a uniform head's score (the control)
    case: dict[str, Any]  # prompts and maps of the drawn person (to redraw the figure)

    def score(self, kind: str, score: str, head: tuple[int, int]) -> float:
        return self.scores[kind][score][head[0]][head[1]]

    def both(self, score: str, head: tuple[int, int]) -> float:
        """The weaker of a head's BIO and QA scores: a pattern shared by both formats."""
        return min(self.score("bio", score, head), self.score("qa", score, head))

    def shared_patterns(self, score: str) -> list[tuple[int, int]]:
        layers, heads = len(self.scores["bio"][score]), len(self.scores["bio"][score][0])
        return [(l, h) for l in range(layers) for h in range(heads) if self.both(score, (l, h)) >= self.threshold]


def choose_heads(run, config: AttentionConfig, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    from mechrecall.findings.heads import head_scores, parse_heads, rank_heads

    if not config.heads.startswith("top:"):
        return parse_heads(config.heads, n_layers, n_heads)
    count = config.heads[4:].rpartition(":")[2]
    try:
        n = int(count)
    except ValueError:
        raise ConfigError(f"--heads {config.heads!r}: use top:N, top:RANKING:N or L.H,L.H") from None
    if not 0 < n <= n_layers * n_heads:
        raise ConfigError(f"--heads top:{n} must lie in [1, {n_layers * n_heads}]")
    from mechrecall.params import ParameterIndex

    index = ParameterIndex.from_spec(run.spec())
    ranking = config.ranking()
    if ranking == "shared":
        from mechrecall.findings.shared import read_shared_mask

        mask = read_shared_mask(run, index)
    elif ranking == "grafted":
        from mechrecall.findings.graft import read_graft

        mask = read_graft(run, index)
    else:
        raise ConfigError(f"--heads {config.heads!r}: the ranking is shared or grafted")
    return rank_heads(head_scores(index, mask))[:n]


def run(run, config: AttentionConfig, device: str, progress: bool) -> AttentionResult:
    model = run.load_model("tuned", device=device)
    world = run.world()
    cfg = model.cfg
    if config.example >= len(world.dataset["people"]):
        raise ConfigError(f"--example {config.example} is not a person of this world (0 … {len(world.dataset['people']) - 1})")
    heads = choose_heads(run, config, cfg.n_layers, cfg.n_heads)
    prompts = prompts_for(world, model.tokenizer, config.example, config.attribute)
    maps = {kind: patterns(model, prompt, heads) for kind, prompt in prompts.items()}
    scores, uniform = pattern_scores(model, world, people=config.people, seed=config.seed)
    return AttentionResult(
        heads=tuple(heads), person=config.example, attribute=config.attribute, name=world.dataset["people"][config.example]["full_name"],
        people=min(config.people, len(world.dataset["people"])), threshold=config.threshold,
        scores={kind: {score: value.tolist() for score, value in s.items()} for kind, s in scores.items()}, uniform=uniform,
        case={
            "prompts": {kind: dataclasses.asdict(prompt) for kind, prompt in prompts.items()},
            "maps": {kind: {f"{l}.{h}": value.tolist() for (l, h), value in kind_maps.items()} for kind, kind_maps in maps.items()},
        },
    )


def attention_figures(result: AttentionResult) -> tuple[Any, Any]:
    """The case-study patterns and the named-pattern scores, redrawn from the result."""
    heads = [tuple(h) for h in result.heads]
    prompts = {kind: Prompt(**values) for kind, values in result.case["prompts"].items()}
    maps = {
        kind: {tuple(int(x) for x in key.split(".")): torch.tensor(value) for key, value in kind_maps.items()}
        for kind, kind_maps in result.case["maps"].items()
    }
    scores = {kind: {score: torch.tensor(value) for score, value in s.items()} for kind, s in result.scores.items()}
    pattern = pattern_figure(prompts, maps, heads, f"{result.name}: {result.attribute} — BIO and QA patterns")  # type: ignore[arg-type]
    return pattern, score_figure(scores, "Named attention patterns (mean over people)")


# ---- report ------------------------------------------------------------------------------------


def _result(r) -> AttentionResult | None:
    return r.result("attention")


def section(groups):
    from mechrecall.report.table import Section, estimate, every_run_has, row
    from mechrecall.report.verdicts import compare_strategies, no_claim

    runs = every_run_has(groups, "attention")
    if runs is None:
        return None
    section = Section(
        "attention", "Attention patterns",
        "Attention from the answer-predicting position to the subject (every occurrence of the name, and the asked sentence's "
        "pronouns) and to the relation's words (the asked sentence or question), mean over people; for each head the weaker of "
        "its BIO and QA scores (a pattern both formats share). Control: a head attending uniformly to every visible position.",
        finding="critical heads link the subject in both BIO and QA",
    )
    for score, name in (("subject", "subject linking"), ("relation", "relation focusing")):
        top = lambda r, s=score: max(_result(r).both(s, h) for h in _result(r).heads)  # noqa: E731
        uniform = lambda r, s=score: min(_result(r).uniform["bio"][s], _result(r).uniform["qa"][s])  # noqa: E731
        excess = lambda r, s=score: top(r, s) - uniform(r, s)  # noqa: E731
        verdict = no_claim()
        if "mixed" in groups and "two-stage" in groups:
            verdict = compare_strategies(estimate(groups["mixed"], excess), estimate(groups["two-stage"], excess), 5e-3)
        section.rows.append(row(groups, f"{name}: best of the top shared heads, weaker of BIO and QA (control: uniform attention)",
                                "mixed heads share the pattern across BIO and QA", "score", top, uniform, verdict))
        section.rows.append(row(groups, f"heads with {name} ≥ threshold on both BIO and QA", "·", "count",
                                lambda r, s=score: float(len(_result(r).shared_patterns(s)))))
    section.rows = [r for r in section.rows if r is not None]
    for strategy, rs in groups.items():
        pattern, scores = attention_figures(_result(rs[0]))
        section.figures += [(f"attention_case_{strategy}", pattern), (f"attention_scores_{strategy}", scores)]
    return section


def describe(result: AttentionResult) -> list[str]:
    lines = [f"{len(result.heads)} heads on {result.name}'s {result.attribute}; scores over {result.people} people (uniform head: "
             + ", ".join(f"{k} {s} {v:.2f}" for k, scores in result.uniform.items() for s, v in scores.items()) + ")"]
    for head in result.heads:
        lines.append(f"  {head[0]}.{head[1]}: " + "  ".join(f"{kind} {score} {result.score(kind, score, head):.2f}"
                                                         for kind in ("bio", "qa") for score in ("subject", "relation")))
    for score in ("subject", "relation"):
        found = result.shared_patterns(score)
        lines.append(f"{score} on both BIO and QA (≥ {result.threshold:g}): " + (", ".join(f"{l}.{h}" for l, h in found) or "none"))
    return lines


def _reads(config: AttentionConfig) -> tuple[str, ...]:
    ranking = config.ranking()
    extra = {"shared": ("shared_mask.safetensors",), "grafted": ("graft.safetensors",)}.get(ranking or "", ())
    return ("model.safetensors", *extra)


ANALYSIS = Analysis(
    name="attention",
    summary="Attention patterns of chosen heads on one person's BIO and QA, and subject/relation scores over people.",
    config=AttentionConfig,
    result=AttentionResult,
    reads=_reads,
    run=run,
    section=section,
    from_study=lambda study: AttentionConfig(heads=f"top:shared:{study.analysis.attention_heads}", people=study.analysis.attention_people),
    describe=describe,
    example="mechrecall attention runs/mix --heads top:shared:3 --example 0",
)
