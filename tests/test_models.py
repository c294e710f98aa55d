"""Models built here and real architectures converted offline, checked against Hugging Face."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

import mechrecall as mr
from mechrecall import models
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.errors import ConfigError, ModelNotAvailableError

TOKENIZER = build_world_tokenizer()
VOCAB = len(TOKENIZER)


def _neox() -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=128, rotary_pct=0.25,
    )
    return GPTNeoXForCausalLM(config)


def _llama() -> LlamaForCausalLM:
    # grouped-query attention (4 query heads, 2 key-value heads), tied embeddings and Llama-3 rope
    # scaling, as in Llama-3.2
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=128, tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
        },
    )
    return LlamaForCausalLM(config)


def _randomize(model: torch.nn.Module) -> None:
    # HF initialises biases and norm gains to constants; random values make the comparison bite
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(scope="module", params=["neox", "llama"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    hf_model = _neox() if request.param == "neox" else _llama()
    _randomize(hf_model)
    # a folder whose name contains "llama": TransformerLens must still read the real config
    path = tmp_path_factory.mktemp("checkpoints") / f"tiny-llama-like-{request.param}"
    hf_model.save_pretrained(path)
    TOKENIZER.save_pretrained(path)
    return path


def test_converted_logits_match_hugging_face(checkpoint: Path) -> None:
    hooked = models.load_checkpoint(str(checkpoint))
    hf_model, _ = models.load_hf_checkpoint(str(checkpoint))
    tokens = torch.randint(0, VOCAB, (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(tokens).logits
        actual = hooked(tokens)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-4


def test_converted_model_keeps_per_head_weights_and_the_original_parameters(checkpoint: Path) -> None:
    hooked = models.load_checkpoint(str(checkpoint))
    hf_model, _ = models.load_hf_checkpoint(str(checkpoint))
    parameters = dict(hooked.named_parameters())
    if "neox" in checkpoint.name:
        assert parameters["blocks.0.attn.W_Q"].shape == (4, 64, 16)
        assert [n for n, p in parameters.items() if not p.requires_grad] == ["unembed.b_U"]
        assert models.count_parameters(hooked) == sum(p.numel() for p in hf_model.parameters())
    else:
        assert parameters["blocks.0.attn._W_K"].shape == (2, 64, 16)  # key-value heads, not query heads
        frozen = {n for n, p in parameters.items() if not p.requires_grad}
        assert "blocks.1.attn.b_Q" in frozen and "blocks.1.mlp.b_in" in frozen and "unembed.b_U" in frozen
        # the hooked model unties the embeddings: one extra d_vocab x d_model matrix
        assert models.count_parameters(hooked) == sum(p.numel() for p in hf_model.parameters()) + VOCAB * 64


def test_spec_rebuilds_the_architecture_exactly(checkpoint: Path) -> None:
    hooked = models.load_checkpoint(str(checkpoint))
    rebuilt = models.model_from_spec(models.model_spec(hooked, "checkpoint", str(checkpoint)), hooked.tokenizer)
    models.load_parameters(rebuilt, models.trainable_state(hooked))
    tokens = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), hooked(tokens))
    assert {n for n, p in rebuilt.named_parameters() if not p.requires_grad} == {
        n for n, p in hooked.named_parameters() if not p.requires_grad
    }


def test_hub_id_resolves_from_the_local_cache_offline(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-model" / "snapshots" / ("a" * 40)
    shutil.copytree(checkpoint, snapshot)
    (cache / "models--acme--tiny-model" / "refs").mkdir()
    (cache / "models--acme--tiny-model" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert models.resolve_checkpoint("acme/tiny-model") == snapshot
    hooked = mr.load_model("acme/tiny-model")
    assert hooked.cfg.d_model == 64


def test_missing_checkpoint_is_a_clear_error() -> None:
    with pytest.raises(ModelNotAvailableError, match="not available offline"):
        models.load_checkpoint("EleutherAI/pythia-2.8b-that-is-not-here")


def test_directory_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        models.resolve_checkpoint(str(tmp_path))


def test_built_models_are_seeded_and_sized() -> None:
    first = models.build_model("micro", TOKENIZER, seed=5)
    again = models.build_model("micro", TOKENIZER, seed=5)
    other = models.build_model("micro", TOKENIZER, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not torch.equal(first.W_E, other.W_E)
    assert first.cfg.d_vocab == VOCAB and first.cfg.n_layers == 1
    with pytest.raises(ConfigError, match="unknown model size"):
        models.build_model("enormous", TOKENIZER)


def test_load_parameters_refuses_another_architecture() -> None:
    micro = models.build_model("micro", TOKENIZER)
    tiny = models.build_model("tiny", TOKENIZER)
    with pytest.raises(ConfigError, match="do not fit"):
        models.load_parameters(micro, models.trainable_state(tiny))


def test_a_model_made_in_memory_converts_too() -> None:
    torch.manual_seed(3)
    hf_model = _neox().eval()  # never saved: its config names no architecture
    hooked = models.convert_hf_model(hf_model, TOKENIZER)
    tokens = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        assert (hooked(tokens) - hf_model(tokens).logits).abs().max() <= 1e-4
    assert hf_model.config.architectures is None  # the caller's config is left as it was


def test_build_like_has_the_converted_architecture_with_random_weights() -> None:
    """A real model's shape without its weights (the large-model benchmark uses it)."""
    config = GPTNeoXConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, architectures=["GPTNeoXForCausalLM"],
    )
    built = models.build_like(config, seed=1)
    converted = models.convert_hf_model(GPTNeoXForCausalLM(config), build_world_tokenizer())
    for field in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "rotary_dim", "parallel_attn_mlp", "positional_embedding_type"):
        assert getattr(built.cfg, field) == getattr(converted.cfg, field), field
    shapes = {n: p.shape for n, p in built.named_parameters()}
    assert shapes == {n: p.shape for n, p in converted.named_parameters()}
    again = models.build_like(config, seed=1)
    assert torch.equal(built.W_Q, again.W_Q) and not torch.equal(built.W_Q, models.build_like(config, seed=2).W_Q)
    assert built(torch.tensor([[1, 2, 3]])).shape == (1, 3, 96)
    config.architectures = None
    with pytest.raises(ConfigError, match="names no architecture"):
        models.build_like(config)
    config.architectures = ["NoSuchModelForCausalLM"]
    with pytest.raises(ModelNotAvailableError, match="cannot build this architecture"):
        models.build_like(config)


def test_checkpoints_that_are_not_plain_model_directories_are_refused_in_one_line(checkpoint: Path, tmp_path: Path) -> None:
    import json
    import shutil

    def variant(name: str, change) -> str:
        copy = tmp_path / name
        shutil.copytree(checkpoint, copy)
        change(copy)
        return str(copy)

    def remote_code(folder: Path) -> None:  # custom modelling code shipped with the weights
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "modeling_evil.py").write_text("open('PWNED', 'w').write('ran')\n")

    cases = {
        "remote": (remote_code, "never runs code from a checkpoint"),
        "empty": (lambda f: (f / "config.json").write_text(""), "not a JSON model config"),
        "untyped": (lambda f: (f / "config.json").write_text("{}"), "names no model_type"),
        "no-tokenizer": (lambda f: [p.unlink() for p in f.iterdir() if "token" in p.name or p.name == "vocab.json"], "could not load"),
    }
    for name, (change, fragment) in cases.items():
        with pytest.raises(ModelNotAvailableError, match=fragment):
            models.load_checkpoint(variant(name, change))
    assert not Path("PWNED").exists() and not (tmp_path / "remote" / "PWNED").exists()
