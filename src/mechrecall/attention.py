"""Attention-pattern case studies: the patterns of chosen heads on one person's BIO and QA
inputs (``blocks.L.attn.hook_pattern``), as labelled heatmaps, and per-head scores that name
the patterns, averaged over many people:

- *subject linking*: attention from the position that predicts the answer (the last prompt
  token) to the tokens of the person's full name;
- *relation focusing*: attention from that position to the tokens naming the asked attribute
  (the words of the sentence or question that holds the value, without the subject, pronouns,
  punctuation and the answer cue).
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.data.pools import PRONOUNS
from mechrecall.data.templates import ANSWER_CUE
from mechrecall.encoding import bos_id

PRONOUN_WORDS = {w.lower() for pair in PRONOUNS.values() for w in pair}


@dataclass
class Prompt:
    """A tokenized prompt with the positions of the subject's and the relation's tokens."""

    kind: str  # "bio" or "qa"
    tokens: list[int]
    labels: list[str]
    subject: list[int]
    relation: list[int]


def locate(tokenizer, text: str, name: str, kind: str) -> Prompt:
    """Token ids of ``[BOS] text`` and the subject / relation positions (by character offsets)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    name_start = text.find(name)
    name_span = (name_start, name_start + len(name)) if name_start >= 0 else (-1, -1)
    # the relation lives in the last sentence (BIO) or in the question (QA)
    if kind == "bio":
        sentence_start = text.rfind(". ") + 2 if ". " in text else 0
    else:
        sentence_start = 0
    subject, relation = [], []
    for position, (start, end) in enumerate(offsets, start=1):  # +1: BOS comes first
        piece = text[start:end].strip()
        inside_name = start >= name_span[0] and end <= name_span[1]
        if inside_name:
            subject.append(position)
        elif (
            start >= sentence_start and piece and piece.lower() not in PRONOUN_WORDS
            and not all(c in string.punctuation for c in piece) and piece not in ANSWER_CUE.split(":")
            and piece != "s"  # the possessive 's
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
def pattern_scores(model: HookedTransformer, world, people: int = 100, seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """Mean subject-linking and relation-focusing attention of every head ([layer, head]) from
    the answer-predicting position, over ``people`` people × 6 attributes, for BIO and QA."""
    from mechrecall.data.templates import ATTRIBUTES

    cfg = model.cfg
    ids = random.Random(f"attention-{seed}").sample(range(len(world.dataset["people"])), min(people, len(world.dataset["people"])))
    totals = {kind: {score: torch.zeros(cfg.n_layers, cfg.n_heads) for score in ("subject", "relation")} for kind in ("bio", "qa")}
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
                counts[kind] += 1
    return {kind: {score: value / max(counts[kind], 1) for score, value in scores.items()} for kind, scores in totals.items()}


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


def attention_run(path, heads_spec: str = "top:5", person: int = 0, attribute: str = "birth_city", people: int = 100,
                  device: str | None = None) -> dict[str, Any]:
    """Patterns of chosen heads for one person (figure) and the named-pattern scores of every head."""
    from pathlib import Path

    from mechrecall.data.templates import ATTRIBUTES
    from mechrecall.errors import ConfigError
    from mechrecall.figures import write_figure
    from mechrecall.heads import parse_heads, rank_heads, scores_for
    from mechrecall.runs import resolve_device, open_run

    run = open_run(path)
    device = resolve_device(device)
    model = run.load_model("tuned", device=device)
    world = run.world()
    cfg = model.cfg
    if people < 1:
        raise ConfigError(f"--people must be at least 1, got {people}")
    if attribute not in ATTRIBUTES:
        raise ConfigError(f"unknown attribute {attribute!r}: choose one of {', '.join(ATTRIBUTES)}")
    if not 0 <= person < len(world.dataset["people"]):
        raise ConfigError(f"--example {person} is not a person of this world (0 … {len(world.dataset['people']) - 1})")
    if heads_spec.startswith("top:"):
        ranking_and_count = heads_spec[4:]
        ranking, _, count = ranking_and_count.rpartition(":") if ":" in ranking_and_count else ("shared", "", ranking_and_count)
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(f"--heads {heads_spec!r}: use top:N, top:RANKING:N or L.H,L.H") from None
        if not 0 < n <= cfg.n_layers * cfg.n_heads:
            raise ConfigError(f"--heads top:{n} must lie in [1, {cfg.n_layers * cfg.n_heads}]")
        heads = rank_heads(scores_for(run, ranking or "shared"))[:n]
    else:
        heads = parse_heads(heads_spec, cfg.n_layers, cfg.n_heads)
    prompts = prompts_for(world, model.tokenizer, person, attribute)
    maps = {kind: patterns(model, prompt, heads) for kind, prompt in prompts.items()}
    name = world.dataset["people"][person]["full_name"]
    scores = pattern_scores(model, world, people=people)
    result = {
        "heads": [list(h) for h in heads],
        "person": person, "attribute": attribute, "name": name,
        "scores": {kind: {score: value.tolist() for score, value in s.items()} for kind, s in scores.items()},
        "shared_patterns": shared_pattern_heads(scores),
        "head_scores": {f"{l}.{h}": {f"{kind}_{score}": float(scores[kind][score][l, h]) for kind in ("bio", "qa") for score in ("subject", "relation")} for l, h in heads},
        # enough to redraw the case study without the model (the report does)
        "case": {
            "prompts": {kind: dataclasses.asdict(prompt) for kind, prompt in prompts.items()},
            "maps": {kind: {f"{l}.{h}": value.tolist() for (l, h), value in kind_maps.items()} for kind, kind_maps in maps.items()},
        },
    }
    figures = Path(run.path) / "figures"
    pattern, score = attention_figures(result)
    result["figures"] = [str(write_figure(pattern, figures / f"attention_person{person}.html")), str(write_figure(score, figures / "attention_scores.html"))]
    run.directory.write_json("attention.json", result)
    return result


def attention_figures(result: dict[str, Any]) -> tuple[Any, Any]:
    """The case-study patterns and the named-pattern scores, redrawn from ``attention.json``."""
    heads = [tuple(h) for h in result["heads"]]
    prompts = {kind: Prompt(**values) for kind, values in result["case"]["prompts"].items()}
    maps = {
        kind: {tuple(int(x) for x in key.split(".")): torch.tensor(value) for key, value in kind_maps.items()}
        for kind, kind_maps in result["case"]["maps"].items()
    }
    scores = {kind: {score: torch.tensor(value) for score, value in s.items()} for kind, s in result["scores"].items()}
    pattern = pattern_figure(prompts, maps, heads, f"{result['name']}: {result['attribute']} — BIO and QA patterns")  # type: ignore[arg-type]
    return pattern, score_figure(scores, "Named attention patterns (mean over people)")
