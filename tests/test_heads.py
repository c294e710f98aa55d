"""Head rankings, head ablation (hooks against weight slices), attention patterns, patching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

import mechrecall as mr
from conftest import localized_copy
from mechrecall import models
from mechrecall.attention import attention_run, prompts_for
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.errors import ConfigError
from mechrecall.heads import ablate_heads_run, ablated, concentration, parse_heads, parse_top, rank_heads, reset_heads
from mechrecall.patching import make_pairs, patch_heads, patch_heads_nnsight, patching_run


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
    c = concentration(scores, share=0.34)  # 2 of 6 heads
    assert c["top_heads"] == 2 and c["held_by_top"] == pytest.approx(8 / 10) and c["cumulative"][-1] == pytest.approx(1.0)


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


def test_ablate_heads_with_curve(ranked_run: mr.Run) -> None:
    result = ablate_heads_run(ranked_run.path, top="50%", rank_by="shared", curve=[50, 100], device="cpu")
    assert result["count"] == 1 and len(result["heads"]) == 1  # micro: 1 layer of 2 heads
    assert result["heads"][0] == result["rankings"]["shared"]["order"][0]
    assert set(result["curve"]) == {"shared", "random"}  # no graft yet: no grafted ranking
    for metric in ("bio", "qa_id", "qa_ood"):
        assert result["drop"][metric] == pytest.approx(result["before"][metric] - result["after"][metric])
    every = result["curve"]["shared"][-1]
    assert every["count"] == 2 and every["qa_id"] <= result["before"]["qa_id"]
    mean = ablate_heads_run(ranked_run.path, top="1", rank_by="random", method="mean", device="cpu")
    assert mean["method"] == "mean" and len(mean["heads"]) == 1
    with pytest.raises(ConfigError, match="unknown ranking"):
        ablate_heads_run(ranked_run.path, rank_by="loudest", device="cpu")
    with pytest.raises(ConfigError, match="must lie in"):
        ablate_heads_run(ranked_run.path, top="3", device="cpu")
    with pytest.raises(mr.MechrecallError, match="no graft"):
        ablate_heads_run(ranked_run.path, rank_by="grafted", device="cpu")


def test_attention_positions_patterns_and_scores(ranked_run: mr.Run) -> None:
    world = ranked_run.world()
    tokenizer = ranked_run.tokenizer()
    prompts = prompts_for(world, tokenizer, 0, "employer")
    name = world.dataset["people"][0]["full_name"]
    for prompt in prompts.values():
        assert [prompt.labels[i] for i in prompt.subject] == name.split()
        assert not {prompt.labels[i].lower() for i in prompt.relation} & {"he", "she", "his", "her", "answer", ":", "."}
    assert [prompts["qa"].labels[i] for i in prompts["qa"].relation] == ["Which", "company", "does", "work", "for"]
    result = attention_run(ranked_run.path, "top:2", person=0, attribute="employer", people=5, device="cpu")
    assert len(result["heads"]) == 2 and all(Path(f).exists() for f in result["figures"])
    for kind in ("bio", "qa"):
        for score in ("subject", "relation"):
            values = torch.tensor(result["scores"][kind][score])
            assert values.shape == (1, 2) and bool(((values >= 0) & (values <= 1 + 1e-6)).all())
    with pytest.raises(ConfigError, match="outside the model"):
        attention_run(ranked_run.path, "3.0", device="cpu")
    with pytest.raises(ConfigError, match="--people must be at least 1"):
        attention_run(ranked_run.path, "0.0", people=0, device="cpu")
    with pytest.raises(ConfigError, match="not a person"):
        attention_run(ranked_run.path, "0.0", person=10_000, device="cpu")


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


def test_patching_run_writes_its_heatmaps(ranked_run: mr.Run) -> None:
    result = patching_run(ranked_run.path, pairs=4, device="cpu")
    assert set(result["restored"]) == {"bio", "qa"} and Path(result["figure"]).exists()
    with pytest.raises(ConfigError, match="--pairs"):
        patching_run(ranked_run.path, pairs=0, device="cpu")
