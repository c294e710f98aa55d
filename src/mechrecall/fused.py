"""Fused normalisation for ``HookedTransformer``s while nothing observes its hook points.

TransformerLens writes LayerNorm and RMSNorm out as elementwise steps so that ``hook_scale`` and
``hook_normalized`` can see the intermediate values. On a CPU those steps (and their backward) are
about a tenth of a small model's training step. ``fuse_norms`` swaps each norm for a subclass
that calls ``torch.nn.functional.layer_norm`` / ``rms_norm`` when neither hook point has a hook
(TransformerLens hooks, raw torch hooks, or a wrapped ``forward``), and TransformerLens' own
forward otherwise, so ``run_with_cache``, ``run_with_hooks`` and hook-based patching see exactly
what they saw before. Both paths compute the same function: the norm in float32 (or float64),
then the model's dtype, then the gain and bias; they agree to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedTransformer
from transformer_lens.components import LayerNorm, RMSNorm

_EXACT_DTYPES = (torch.float32, torch.float64)


def _observed(point: nn.Module) -> bool:
    """Whether anything would see this hook point's value if its forward ran."""
    # TransformerLens' own hooks are torch hooks underneath, so the torch registries cover them
    if point._forward_hooks or point._forward_pre_hooks or point._backward_hooks or point._backward_pre_hooks:
        return True
    if "forward" in vars(point):  # a tracer (e.g. nnsight) wrapped this instance's forward
        return True
    hooks = torch.nn.modules.module
    return bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks)


class FusedLayerNorm(LayerNorm):
    """TransformerLens' ``LayerNorm`` with a fused kernel while its hook points are unobserved."""

    def forward(self, x: Float[Tensor, "... length"]) -> Float[Tensor, "... length"]:
        if _observed(self.hook_scale) or _observed(self.hook_normalized):
            return super().forward(x)
        if self.cfg.dtype in _EXACT_DTYPES:
            return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)
        normalized = F.layer_norm(x.to(torch.float32), (self.length,), eps=self.eps).to(self.cfg.dtype)
        return normalized * self.w + self.b


class FusedRMSNorm(RMSNorm):
    """TransformerLens' ``RMSNorm`` with a fused kernel while its hook points are unobserved."""

    def forward(self, x: Float[Tensor, "... length"]) -> Float[Tensor, "... length"]:
        if _observed(self.hook_scale) or _observed(self.hook_normalized):
            return super().forward(x)
        if self.cfg.dtype in _EXACT_DTYPES:
            return F.rms_norm(x, (self.length,), self.w, self.eps)
        normalized = F.rms_norm(x.to(torch.float32), (self.length,), eps=self.eps).to(self.cfg.dtype)
        return normalized * self.w


_FUSED = {LayerNorm: FusedLayerNorm, RMSNorm: FusedRMSNorm}


def fuse_norms(model: HookedTransformer) -> int:
    """Give every LayerNorm / RMSNorm of ``model`` the fused forward (in place; parameters, hook
    points and state-dict names unchanged). Returns how many norms were swapped."""
    swapped = 0
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
            swapped += 1
    return swapped
