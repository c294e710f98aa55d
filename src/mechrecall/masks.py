"""Element masks over a model's trainable parameters, and models grafted or ablated with them.

A mask is a dict ``{parameter name: bool tensor of its shape}`` (stored as uint8 safetensors);
``ParameterIndex.flatten`` turns it into the flat order shared with the trace.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.params import ParameterIndex

Mask = dict[str, Bool[Tensor, "..."]]


def mask_size(mask: Mask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def empty_mask(index: ParameterIndex) -> Mask:
    return {slot.name: torch.zeros(slot.shape, dtype=torch.bool) for slot in index.slots}


def full_mask(index: ParameterIndex) -> Mask:
    return {slot.name: torch.ones(slot.shape, dtype=torch.bool) for slot in index.slots}


def to_stored(mask: Mask) -> dict[str, Tensor]:
    return {name: m.to(torch.uint8) for name, m in mask.items()}


def from_stored(tensors: dict[str, Tensor], index: ParameterIndex) -> Mask:
    expected = {slot.name: slot.shape for slot in index.slots}
    if {name: tuple(t.shape) for name, t in tensors.items()} != expected:
        raise ValueError("the mask does not fit this model's parameters")
    return {name: t.bool() for name, t in tensors.items()}


def difference(mask: Mask, remove: Mask) -> Mask:
    return {name: m & ~remove[name] for name, m in mask.items()}


def overlap(mask: Mask, other: Mask) -> int:
    return int(sum(int((m & other[name]).sum()) for name, m in mask.items()))


def random_like(mask: Mask, seed: int) -> Mask:
    """A random mask with exactly the same number of elements in every parameter tensor."""
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, m in mask.items():
        chosen = torch.zeros(m.numel(), dtype=torch.bool)
        count = int(m.sum())
        if count:
            chosen[torch.randperm(m.numel(), generator=generator)[:count]] = True
        result[name] = chosen.reshape(m.shape)
    return result


def counts_like(mask: Mask, total: int) -> dict[str, int]:
    """``total`` elements shared out over ``mask``'s tensors in proportion to its count in each
    (largest remainders), no tensor given more than it holds: what a tensor cannot take goes to the
    others in the same proportions. A tensor ``mask`` leaves empty gets none."""
    sizes = {name: m.numel() for name, m in mask.items()}
    weights = {name: int(m.sum()) for name, m in mask.items()}
    room = sum(sizes[name] for name, weight in weights.items() if weight)
    if total < 0 or total > room:
        raise ValueError(f"cannot place {total:,} elements in the {room:,} of the tensors the mask uses")
    counts = dict.fromkeys(mask, 0)
    left = total
    while left:
        open_ = {name: w for name, w in weights.items() if w and counts[name] < sizes[name]}
        weight = sum(open_.values())
        shares = {name: left * w / weight for name, w in open_.items()}
        given = {name: min(int(share), sizes[name] - counts[name]) for name, share in shares.items()}
        # the remainder, one element each, to the largest fractional parts (ties: mask order)
        rest = left - sum(given.values())
        for name in sorted(open_, key=lambda n: shares[n] - int(shares[n]), reverse=True):
            if rest and given[name] < sizes[name] - counts[name]:
                given[name] += 1
                rest -= 1
        for name, count in given.items():
            counts[name] += count
        left = total - sum(counts.values())
    return counts


def random_scaled(mask: Mask, total: int, seed: int) -> Mask:
    """A random mask of exactly ``total`` elements spread over the tensors as ``mask`` is
    (:func:`counts_like`): the control of "reset this many elements where S lies", at any size."""
    counts = counts_like(mask, total)
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, m in mask.items():
        chosen = torch.zeros(m.numel(), dtype=torch.bool)
        if counts[name]:
            chosen[torch.randperm(m.numel(), generator=generator)[: counts[name]]] = True
        result[name] = chosen.reshape(m.shape)
    return result


def random_global(index: ParameterIndex, size: int, seed: int) -> Mask:
    """A random mask of exactly ``size`` elements drawn uniformly over all parameters."""
    generator = torch.Generator().manual_seed(seed)
    flat = torch.zeros(index.numel, dtype=torch.bool)
    flat[torch.randperm(index.numel, generator=generator)[:size]] = True
    return {name: t.clone() for name, t in index.unflatten(flat).items()}


@torch.no_grad()
def set_weights(model: HookedTransformer, base: dict[str, Tensor], tuned: dict[str, Tensor], take_tuned: Mask) -> None:
    """Load θ = θ_tuned where ``take_tuned`` else θ_base (elementwise selection: exact values).

    Grafting is ``take_tuned = γ``; ablating a set ``A`` is ``take_tuned = ¬A``. Parameters
    outside the mask (frozen ones) take θ_tuned (they equal θ_base: never trained)."""
    for name, parameter in model.named_parameters():
        if name in take_tuned:
            parameter.copy_(torch.where(take_tuned[name].to(parameter.device), tuned[name].to(parameter.device), base[name].to(parameter.device)))
        else:
            parameter.copy_(tuned[name])


def read_run_mask(run, index: ParameterIndex, artifact: str, command: str) -> Mask:
    """A stored mask of a run (``shared_mask.safetensors``, ``graft.safetensors``), checked to fit
    the run's model; ``command`` is the analysis that makes it (named in the errors)."""
    from mechrecall.errors import ArtifactError

    if artifact not in run.directory.manifest["files"]:
        raise ArtifactError(f"{run.path} has no {artifact}: run `mechrecall {command} {run.path}` first")
    try:
        return from_stored(run.directory.load_tensors(artifact), index)
    except ValueError:
        raise ArtifactError(f"{run.path / artifact} is a mask of another model: run `mechrecall {command} {run.path}` again") from None
