"""Head rankings, head ablation (hooks against weight slices), attention patterns, patching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import localized_copy, run_analysis
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

import mechrecall as mr
from mechrecall import models
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.errors import ConfigError
from mechrecall.findings.attention import locate, prompts_for
from mechrecall.findings.heads import (
    ablated,
    concentration,
    parse_heads,
    parse_top,
    random_heads,
    rank_heads,
    reset_heads,
)
from mechrecall.findings.patching import (
    answer_logprob,
    answered,
    make_pairs,
    patch_heads,
    patch_heads_nnsight,
)


def test_parse_top_and_heads() -> None:
    assert parse_top("10%", 8) == 1 and parse_top("50%", 8) == 4 and parse_top("100%", 8) == 8 and parse_top("3", 8) == 3
    for bad, fragment in (("0%", "percentage in"), ("150%", "percentage in"), ("0", "must lie in"), ("9", "must lie in"), ("ten", "neither")):
        with pytest.raises(ConfigError, match=fragment):
            parse_top(bad, 8)
    assert parse_heads("0.1, 1.3", 2, 4) == [(0, 1), (1, 3)]
    with pytest.raises(ConfigError, match="outside the model"):
        parse_heads("2.0", 2, 4)
    with pytest.raises(ConfigError, match="not LAYER.HEAD"):
        parse_heads("a.b", 2, 4)


def test_ranking_ties_and_concentration() -> None:
    scores = torch.tensor([[1.0, 5.0, 1.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    assert rank_heads(scores)[:4] == [(0, 1), (1, 1), (0, 0), (0, 2)]
    cumulative = concentration(scores)
    assert cumulative[1] == pytest.approx(8 / 10) and cumulative[-1] == pytest.approx(1.0)
    assert concentration(torch.zeros(2, 3)) is None  # an empty set has no concentration (not 0% or 100%)


def test_random_head_sets_are_drawn_afresh() -> None:
    draws = [random_heads(2, 8, 3, f"heads-0-0-3-{d}") for d in range(10)]
    assert all(len(set(d)) == 3 and d == sorted(d) and all(0 <= l < 2 and 0 <= h < 8 for l, h in d) for d in draws)
    assert len({tuple(d) for d in draws}) > 5  # not one fixed ordering
    assert random_heads(2, 8, 3, "heads-0-0-3-4") == draws[4]  # seeded
    assert (0, 0) not in draws[0] or (0, 0) not in draws[1] or (0, 0) not in draws[2]  # never "always from head 0.0"


def test_zero_ablation_through_hook_z_equals_zeroing_the_output_weights(mixed_run: mr.Run) -> None:
    model = mixed_run.load_model()
    tokens = torch.randint(4, model.cfg.d_vocab, (3, 20))
    heads = [(0, 1)]
    with ablated(model, heads, "zero"):
        through_hooks = model(tokens)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1] = 0.0
        through_weights = model(tokens)
    assert torch.allclose(through_hooks, through_weights, atol=1e-5)


def test_reset_restores_only_the_chosen_slices(mixed_run: mr.Run) -> None:
    model = mixed_run.load_model()
    base = mixed_run.directory.load_tensors("base.safetensors")
    tuned = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ablated(model, [(0, 1)], "reset", base):
        parameters = dict(model.named_parameters())
        for leaf in ("W_Q", "b_Q", "W_K", "W_V", "W_O"):
            assert torch.equal(parameters[f"blocks.0.attn.{leaf}"][1], base[f"blocks.0.attn.{leaf}"][1])
            assert torch.equal(parameters[f"blocks.0.attn.{leaf}"][0], tuned[f"blocks.0.attn.{leaf}"][0])
    assert all(torch.equal(p, tuned[n]) for n, p in model.named_parameters())  # restored afterwards


def test_grouped_query_reset_keeps_shared_key_value_heads_until_the_whole_group_goes(tmp_path: Path) -> None:
    tokenizer = build_world_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = models.load_checkpoint(str(tmp_path))
    base = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    reset_heads(model, base, [(0, 0)])
    attn = dict(model.named_parameters())
    assert attn["blocks.0.attn.W_Q"][0].abs().sum() == 0 and attn["blocks.0.attn._W_K"][0].abs().sum() > 0
    reset_heads(model, base, [(0, 0), (0, 1)])
    assert attn["blocks.0.attn._W_K"][0].abs().sum() == 0 and attn["blocks.0.attn._W_K"][1].abs().sum() > 0


@pytest.fixture(scope="module")
def ranked_run(mixed_run: mr.Run, tmp_path_factory: pytest.TempPathFactory) -> mr.Run:
    return localized_copy(mixed_run, tmp_path_factory.mktemp("heads") / "run", fraction=0.05)


def test_heads_analysis_against_manual_resets(ranked_run: mr.Run) -> None:
    result = run_analysis("heads", ranked_run.path, top="50%", curve=(50.0, 100.0), draws=3, with_graft=False)
    assert result.top_count == 1 and result.n_layers == 1 and result.n_heads == 2  # micro: 1 layer of 2 heads
    assert set(result.scores) == {"shared"} and result.graft_note is None
    assert len(result.headline.random) == 3 and all(len(a.heads) == 1 for a in result.headline.random)
    assert len(result.null_held) == 3 and all(0.5 <= v <= 1.0 for v in result.null_held)  # the top 1 of 2 heads
    order = result.order("shared")
    assert result.headline.ranked["shared"].heads == (order[0],)
    # reference: the chosen head's slices copied from θ_pre by hand, then evaluated
    run = mr.open_run(ranked_run.path)
    model = run.load_model()
    base = run.directory.load_tensors("base.safetensors")
    layer, head = order[0]
    with torch.no_grad():
        for leaf in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O"):
            parameter = dict(model.named_parameters())[f"blocks.{layer}.attn.{leaf}"]
            parameter[head] = base[f"blocks.{layer}.attn.{leaf}"][head]
    by_hand = mr.evaluate(model, model.tokenizer, run.world().dataset)
    assert result.headline.ranked["shared"].accuracy == {m: by_hand[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    every = result.curve[-1]
    assert every.count == 2 and all(set(a.heads) == {(0, 0), (0, 1)} for a in every.random)
    assert type(result).from_json(result.to_json()) == result
    with pytest.raises(ConfigError, match="choose one of shared, grafted"):
        run_analysis("heads", ranked_run.path, rank_by="loudest")
    with pytest.raises(ConfigError, match="must lie in"):
        run_analysis("heads", ranked_run.path, top="3", with_graft=False)
    with pytest.raises(mr.MechrecallError, match="needs the graft"):
        run_analysis("heads", ranked_run.path, rank_by="grafted", with_graft=False)


def test_subject_and_relation_spans_on_hand_made_prompts() -> None:
    tokenizer = build_world_tokenizer()
    name = "Aaron Abel Abbott"

    def spans(text: str, kind: str) -> tuple[list[str], list[str]]:
        prompt = locate(tokenizer, text, name, kind)
        return [prompt.labels[i] for i in prompt.subject], [prompt.labels[i] for i in prompt.relation]

    # full name in every sentence: every occurrence is the subject, the asked sentence's words the relation
    subject, relation = spans(f"{name} was born on May 1, 1990. {name} works for Intel. {name} spent his early years in", "bio")
    assert subject == name.split() * 3 + ["his"] and relation == ["spent", "early", "years"]
    # pronouns after the first sentence: the name and the asked sentence's pronoun
    subject, relation = spans(f"{name} works for Intel. He grew up in", "bio")
    assert subject == [*name.split(), "He"] and relation == ["grew", "up"]
    # the first sentence asked, with a possessive: no "'s", and the query position is not the relation
    subject, relation = spans(f"{name}'s birthplace is", "bio")
    assert subject == name.split() and relation == ["birthplace"]
    # permuted order: the asked sentence is the last one whatever the attribute
    subject, relation = spans(f"{name} majored in Biology. She works for Intel. Her office is in", "bio")
    assert subject == [*name.split(), "Her"] and relation == ["office", "is"]
    # QA: the question's words, not the answer cue
    subject, relation = spans(f"Which company does {name} work for? Answer:", "qa")
    assert subject == name.split() and relation == ["Which", "company", "does", "work", "for"]


def test_attention_analysis_scores_and_its_uniform_control(ranked_run: mr.Run) -> None:
    world = ranked_run.world()
    tokenizer = ranked_run.tokenizer()
    prompts = prompts_for(world, tokenizer, 0, "employer")
    name = world.dataset["people"][0]["full_name"]
    for prompt in prompts.values():
        assert [prompt.labels[i] for i in prompt.subject][:3] == name.split()
    result = run_analysis("attention", ranked_run.path, heads="top:2", example=0, attribute="employer", people=5)
    assert len(result.heads) == 2 and result.people == 5
    for kind in ("bio", "qa"):
        for score in ("subject", "relation"):
            values = torch.tensor(result.scores[kind][score])
            assert values.shape == (1, 2) and bool(((values >= 0) & (values <= 1 + 1e-6)).all())
            assert 0 < result.uniform[kind][score] < 1
    assert type(result).from_json(result.to_json()) == result
    with pytest.raises(ConfigError, match="outside the model"):
        run_analysis("attention", ranked_run.path, heads="3.0")
    with pytest.raises(ConfigError, match="--people must be at least 1"):
        run_analysis("attention", ranked_run.path, heads="0.0", people=0)
    with pytest.raises(ConfigError, match="not a person"):
        run_analysis("attention", ranked_run.path, heads="0.0", example=10_000)


def test_patching_hooked_model_agrees_with_nnsight_on_the_hf_model(world_dir: Path, tmp_path: Path) -> None:
    tokenizer = build_world_tokenizer()
    torch.manual_seed(0)
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128))
    hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    hooked = models.load_checkpoint(str(tmp_path))
    hf_model, _ = models.load_hf_checkpoint(str(tmp_path))
    world = mr.load_world(world_dir)
    for kind in ("bio", "qa"):
        pairs = make_pairs(world, tokenizer, kind, 6)
        assert len(pairs) == 6 and all(len(p.clean) == len(p.corrupt) and p.clean != p.corrupt for p in pairs)
        ours = patch_heads(hooked, pairs)
        theirs = patch_heads_nnsight(hf_model, pairs, 2, 4, 16)
        assert ours.shape == (2, 4) and ours.abs().sum() > 0.1
        assert torch.allclose(ours, theirs, atol=1e-3), (ours, theirs)


def test_patching_is_a_ratio_of_sums_over_pairs_the_model_answers(ranked_run: mr.Run) -> None:
    run = mr.open_run(ranked_run.path)
    model = run.load_model()
    pairs = make_pairs(run.world(), model.tokenizer, "qa", 12)
    kept = [p for p, hit in zip(pairs, answered(model, pairs), strict=True) if hit]
    assert kept, "the micro model answers some of its training QA"
    ours = patch_heads(model, kept)
    # reference: one pair and one head at a time, sums of log-probability differences
    numerator, denominator = torch.zeros(1, 2, dtype=torch.float64), 0.0
    for pair in kept:
        clean, corrupt = torch.tensor([pair.clean]), torch.tensor([pair.corrupt])
        _, cache = model.run_with_cache(clean)
        lp_clean = float(answer_logprob(model(clean), clean, pair.answer_start))
        lp_corrupt = float(answer_logprob(model(corrupt), corrupt, pair.answer_start))
        denominator += lp_clean - lp_corrupt
        for head in range(2):
            def hook(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = cache["blocks.0.attn.hook_z"][:, :, head]
                return z

            patched = model.run_with_hooks(corrupt, fwd_hooks=[("blocks.0.attn.hook_z", hook)])
            numerator[0, head] += float(answer_logprob(patched, corrupt, pair.answer_start)) - lp_corrupt
    assert torch.allclose(ours, numerator / denominator, atol=1e-4)
    result = run_analysis("patch", ranked_run.path, pairs=4)
    assert set(result.restored) == {"bio", "qa"} and all(0 <= result.pairs[k] <= 4 for k in result.pairs)
    assert type(result).from_json(result.to_json()) == result
    with pytest.raises(ConfigError, match="--pairs"):
        run_analysis("patch", ranked_run.path, pairs=0)
