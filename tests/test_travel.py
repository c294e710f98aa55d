"""Runs that travel: a run directory opens without mechrecall, in Hugging Face's tokenizer
classes and in plain TransformerLens, exactly as the README's loader shows."""

from __future__ import annotations

import json
from pathlib import Path

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
