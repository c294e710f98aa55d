"""Fused norms compute what TransformerLens' norms compute, and step aside whenever a hook
point would see the intermediate values."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformerConfig
from transformer_lens.components import LayerNorm, RMSNorm

import mechrecall as mr
from mechrecall import models
from mechrecall.fused import FusedLayerNorm, FusedRMSNorm, fuse_norms


def _norm(kind: str, dtype: torch.dtype) -> torch.nn.Module:
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=8, d_head=4, act_fn="gelu", dtype=dtype)
    norm = (LayerNorm if kind == "ln" else RMSNorm)(cfg)
    with torch.no_grad():
        norm.w.copy_(torch.linspace(0.5, 1.5, 16))
        if kind == "ln":
            norm.b.copy_(torch.linspace(-0.2, 0.3, 16))
    return norm.to(dtype)


@pytest.mark.parametrize("kind", ["ln", "rms"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norm_matches_transformer_lens_values_and_gradients(kind: str, dtype: torch.dtype) -> None:
    reference = _norm(kind, dtype)
    fused = _norm(kind, dtype)
    assert fuse_norms(fused) == 1
    assert type(fused) is (FusedLayerNorm if kind == "ln" else FusedRMSNorm)
    x = (torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1).to(dtype)
    x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_fused = reference(x_ref), fused(x_fused)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    assert out_fused.dtype == out_ref.dtype == dtype
    torch.testing.assert_close(out_fused, out_ref, **tolerance)
    weights = torch.randn(out_ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (out_ref * weights).float().sum().backward()
    (out_fused * weights).float().sum().backward()
    torch.testing.assert_close(x_fused.grad, x_ref.grad, **tolerance)
    torch.testing.assert_close(fused.w.grad, reference.w.grad, **tolerance)


def test_models_get_fused_norms_and_hooks_still_see_the_norms() -> None:
    world = mr.create_world(mr.WorldConfig(people=4, seed=0))
    model = models.build_model("micro", world.tokenizer, seed=0)
    n_norms = sum(isinstance(m, (LayerNorm, RMSNorm)) for m in model.modules())
    assert n_norms == 2 * model.cfg.n_layers + 1
    assert all(type(m) in (FusedLayerNorm, FusedRMSNorm) for m in model.modules() if isinstance(m, (LayerNorm, RMSNorm)))
    tokens = torch.tensor([[1, 5, 6, 7, 8]])

    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(model(tokens), logits)
    # the cached intermediate values are the norm's own: scale = RMS of the centred input
    resid = cache["blocks.0.hook_resid_pre"]
    centred = resid - resid.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    torch.testing.assert_close(cache["blocks.0.ln1.hook_scale"], scale)
    torch.testing.assert_close(cache["blocks.0.ln1.hook_normalized"], centred / scale)

    # a hook that edits the normalised value changes the output: the hook point ran
    def zero(value: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.zeros_like(value)

    edited = model.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_normalized", zero)])
    expected = model.unembed(model.ln_final.b.expand(1, 5, -1))
    torch.testing.assert_close(edited, expected)
    # and with the hook gone the fused path is back, with the same logits as before
    torch.testing.assert_close(model(tokens), logits)


def test_a_wrapped_forward_or_raw_torch_hook_counts_as_observed() -> None:
    norm = _norm("ln", torch.float32)
    fuse_norms(norm)
    seen: list[torch.Tensor] = []
    handle = norm.hook_normalized.register_forward_hook(lambda module, args, output: seen.append(output))
    norm(torch.randn(2, 3, 16))
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (2, 3, 16)

    original = norm.hook_scale.forward
    calls: list[int] = []

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return original(x)

    norm.hook_scale.forward = wrapped
    norm(torch.randn(2, 3, 16))
    assert calls == [1]
