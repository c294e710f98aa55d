"""Runs that travel: a run directory opens without mechrecall, in Hugging Face's tokenizer
classes and in plain TransformerLens, exactly as the README's loader shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mechrecall as mr


def test_the_world_tokenizer_opens_with_autotokenizer_and_its_roles(mixed_run: mr.Run) -> None:
    from transformers import AutoTokenizer

    ours = mr.load_world(mixed_run.path).tokenizer
    theirs = AutoTokenizer.from_pretrained(str(mixed_run.path / "data"))
    assert (theirs.bos_token, theirs.eos_token, theirs.pad_token, theirs.unk_token) == ("[BOS]", "[EOS]", "[PAD]", "[UNK]")
    assert theirs.bos_token_id == ours.bos_token_id and theirs.pad_token_id == ours.pad_token_id
    text = "What is the birth city of Aaron Abel Abbott? Answer: Boston"
    assert theirs(text)["input_ids"] == ours(text)["input_ids"] and len(theirs) == len(ours)


def _plain_transformer_lens(run: Path):
    """The README's loader, line for line: no mechrecall import."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    spec = json.loads((run / "model.json").read_text())
    cfg = HookedTransformerConfig(**{**spec["tl_config"], "dtype": getattr(torch, spec["tl_config"]["dtype"])})
    model = HookedTransformer(cfg)
    model.load_state_dict(load_file(run / "model.safetensors"), strict=False)  # buffers are rebuilt, not saved
    return model


def test_a_run_opens_in_plain_transformer_lens_with_the_same_logits(mixed_run: mr.Run) -> None:
    plain = _plain_transformer_lens(mixed_run.path)
    ours = mixed_run.load_model()
    assert set(dict(plain.named_parameters())) == set(dict(ours.named_parameters()))
    tokenizer = mr.load_world(mixed_run.path).tokenizer
    tokens = torch.tensor([[tokenizer.bos_token_id, *tokenizer("Aaron Abel Abbott was born in")["input_ids"]]])
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens), ours(tokens), atol=1e-4, rtol=0)
    # and it is the trained model, not a fresh one: its weights are θ_task's
    from safetensors.torch import load_file

    tuned = load_file(mixed_run.path / "model.safetensors")
    torch.testing.assert_close(plain.blocks[0].attn.W_Q.detach(), tuned["blocks.0.attn.W_Q"])


def test_export_hf_opens_in_transformers_and_nnsight_with_the_runs_logits(mixed_run: mr.Run, tmp_path: Path) -> None:
    """`mechrecall export RUN --format hf OUT`: a GPT-NeoX checkpoint of a model built here, whose
    logits in transformers and under an nnsight trace equal the run's to 1e-4."""
    from nnsight import LanguageModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mechrecall_cli.app import main

    out = tmp_path / "hf"
    try:
        main(["export", str(mixed_run.path), str(out), "--format", "hf"])
    except SystemExit as exit:
        assert exit.code in (0, None)
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt_neox"
    ours = mixed_run.load_model()
    world = mr.load_world(mixed_run.path)
    prompts = [f"{p} {a}" for p, a in zip(world.dataset["qa_ood"]["prompt"][:6], world.dataset["qa_ood"]["answer"][:6], strict=True)]
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    hf_model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    for text in prompts:
        tokens = torch.tensor([tokenizer(text)["input_ids"]])
        assert torch.equal(tokens, ours.to_tokens(text))
        with torch.no_grad():
            expected, theirs = ours(tokens), hf_model(tokens).logits
        assert (expected - theirs).abs().max() <= 1e-4
    lm = LanguageModel(str(out), dispatch=True)
    tokens = ours.to_tokens(prompts[0])
    with lm.trace(tokens):
        traced = lm.lm_head.output.save()
    assert (traced - ours(tokens)).abs().max() <= 1e-4


def test_export_keeps_the_llama_layout_of_a_run_tuned_from_llama(world_dir: Path, tmp_path: Path) -> None:
    """A run fine-tuned from a (tiny, made here) Llama checkpoint with grouped K/V heads, tied
    embeddings and Llama-3 rotary scaling exports as Llama, with the run's logits."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from conftest import FAST_TRAIN
    from mechrecall.export import export_run

    tokenizer = mr.load_world(world_dir).tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, max_position_embeddings=128, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )
    torch.manual_seed(0)
    checkpoint = tmp_path / "llama-checkpoint"
    LlamaForCausalLM(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    run = mr.train_run(world_dir, tmp_path / "tuned", mr.ModelConfig(str(checkpoint)),
                       mr.TrainConfig(strategy="mixed", steps=15, **FAST_TRAIN), device="cpu", progress=False)
    result = export_run(run.path, tmp_path / "hf")
    assert result.layout == "llama" and result.max_logit_difference <= 1e-4
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert exported.config.num_key_value_heads == 2 and exported.config.rope_parameters["rope_type"] == "llama3"
    tokens = run.load_model().to_tokens("What is the birth city of Aaron Abel Abbott? Answer:")
    with torch.no_grad():
        assert (run.load_model()(tokens) - exported(tokens).logits).abs().max() <= 1e-4


def test_export_refuses_what_the_layout_cannot_hold_and_never_overwrites(mixed_run: mr.Run, world_dir: Path, tmp_path: Path) -> None:
    from mechrecall import models
    from mechrecall.errors import ConfigError
    from mechrecall.export import export_hf, export_run

    tokenizer = mr.load_world(world_dir).tokenizer
    with_bias = models.build_model("tiny", tokenizer, seed=0)  # a size that trains b_U
    with torch.no_grad():
        with_bias.unembed.b_U.add_(0.5)
    with pytest.raises(ConfigError, match="unembedding bias"):
        export_hf(with_bias, tokenizer, tmp_path / "never", torch.zeros(1, 4, dtype=torch.long))
    assert not (tmp_path / "never").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists"):
        export_run(mixed_run.path, mine)
    assert (mine / "notes.txt").read_text() == "keep me" and [p.name for p in mine.iterdir()] == ["notes.txt"]
