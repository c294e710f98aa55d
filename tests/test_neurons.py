"""The example analysis: MLP neurons reset against a by-hand reference and random neurons."""

from __future__ import annotations

import pytest
import torch
from conftest import localized_copy, run_analysis

import mechrecall as mr
from mechrecall.errors import ConfigError


def test_top_neurons_reset_equals_copying_their_slices_by_hand(mixed_run: mr.Run, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = localized_copy(mixed_run, tmp_path_factory.mktemp("neurons") / "run", fraction=0.05)
    result = run_analysis("neurons", run.path, top=10.0, draws=2)
    assert len(result.neurons) == round(0.1 * 64) and len(result.random) == 2  # micro: 1 layer of 64 neurons
    model = run.load_model()
    base = run.directory.load_tensors("base.safetensors")
    with torch.no_grad():
        for layer, i in result.neurons:
            model.blocks[layer].mlp.W_in[:, i] = base[f"blocks.{layer}.mlp.W_in"][:, i]
            model.blocks[layer].mlp.b_in[i] = base[f"blocks.{layer}.mlp.b_in"][i]
            model.blocks[layer].mlp.W_out[i, :] = base[f"blocks.{layer}.mlp.W_out"][i, :]
    by_hand = mr.evaluate(model, model.tokenizer, run.world().dataset)
    assert result.after == {m: by_hand[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    assert type(result).from_json(result.to_json()) == result
    with pytest.raises(ConfigError, match="--top must be a percentage"):
        run_analysis("neurons", run.path, top=0.0)
