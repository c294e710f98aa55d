"""Parameter addressing: flat index ↔ (parameter name, position) ↔ (layer, head, component).

The *flat* order is the model's trainable parameters in ``named_parameters()`` order, each
flattened row-major; every per-element quantity (influence, shared and graft masks) uses it.

Where an element belongs to one, it is addressed as an attention head component or an MLP neuron:

============================  ===============================  ====================
parameter (TransformerLens)   shape                            unit
============================  ===============================  ====================
``blocks.L.attn.W_Q``         ``[head, d_model, d_head]``      (L, head, "q")
``blocks.L.attn.b_Q``         ``[head, d_head]``               (L, head, "q")
``blocks.L.attn.W_K|W_V``     ``[head, d_model, d_head]``      (L, head, "k"|"v")
``blocks.L.attn._W_K|_W_V``   ``[kv_head, d_model, d_head]``   (L, kv_head, "k"|"v")  grouped-query attention
``blocks.L.attn.b_K|b_V``     ``[head or kv_head, d_head]``    (L, ..., "k"|"v")
``blocks.L.attn.W_O``         ``[head, d_head, d_model]``      (L, head, "o")
``blocks.L.mlp.W_in|W_gate``  ``[d_model, d_mlp]``             (L, neuron) on dim 1
``blocks.L.mlp.b_in``         ``[d_mlp]``                      (L, neuron)
``blocks.L.mlp.W_out``        ``[d_mlp, d_model]``             (L, neuron) on dim 0
============================  ===============================  ====================

Embeddings, norms, ``attn.b_O`` and ``mlp.b_out`` belong to no head or neuron.
With grouped-query attention, K and V elements belong to their key-value head and are reported
under it (``kv_head``); query head ``h`` uses key-value head ``h // (n_heads // n_kv_heads)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

COMPONENTS = ("q", "k", "v", "o")
_ATTENTION = re.compile(r"^blocks\.(\d+)\.attn\.(_?)(W|b)_(Q|K|V|O)$")
_MLP = re.compile(r"^blocks\.(\d+)\.mlp\.(W_in|W_gate|b_in|W_out)$")


@dataclass(frozen=True)
class ParameterSlot:
    """Where one parameter tensor lives in the flat order, and what its elements belong to."""

    name: str
    shape: tuple[int, ...]
    offset: int  # flat index of its first element
    layer: int | None = None
    component: str | None = None  # q, k, v, o for a head's parameter; "mlp" for a neuron's
    unit_dim: int | None = None  # the dimension that indexes heads (or kv heads, or neurons)

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n


def _slot(name: str, shape: tuple[int, ...], offset: int) -> ParameterSlot:
    attention = _ATTENTION.match(name)
    if attention:
        layer, _, kind, letter = attention.groups()
        component = letter.lower()
        if kind == "b" and component == "o":
            return ParameterSlot(name, shape, offset)  # b_O: shared by all heads
        return ParameterSlot(name, shape, offset, int(layer), component, 0)
    mlp = _MLP.match(name)
    if mlp:
        layer, which = mlp.groups()
        return ParameterSlot(name, shape, offset, int(layer), "mlp", 1 if which in ("W_in", "W_gate") else 0)
    return ParameterSlot(name, shape, offset)


@dataclass(frozen=True)
class ParameterIndex:
    """The flat layout of a model's trainable parameters and their head / neuron addresses."""

    slots: tuple[ParameterSlot, ...]
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_mlp: int

    @classmethod
    def of(cls, model: HookedTransformer) -> ParameterIndex:
        shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad]
        cfg = model.cfg
        return cls.from_shapes(shapes, cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads, cfg.d_mlp or 0)

    @classmethod
    def from_spec(cls, spec: dict) -> ParameterIndex:
        """From a run's model spec, without building the model (cheap for billions of parameters)."""
        frozen = set(spec["frozen"])
        shapes = [(name, tuple(shape)) for name, shape in spec["parameters"] if name not in frozen]
        cfg = spec["tl_config"]
        return cls.from_shapes(shapes, cfg["n_layers"], cfg["n_heads"], cfg.get("n_key_value_heads") or cfg["n_heads"], cfg.get("d_mlp") or 0)

    @classmethod
    def from_shapes(
        cls, shapes: list[tuple[str, tuple[int, ...]]], n_layers: int, n_heads: int, n_kv_heads: int, d_mlp: int
    ) -> ParameterIndex:
        slots, offset = [], 0
        for name, shape in shapes:
            slot = _slot(name, shape, offset)
            slots.append(slot)
            offset += slot.numel
        return cls(tuple(slots), n_layers, n_heads, n_kv_heads, d_mlp)

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    @property
    def numel(self) -> int:
        return self.slots[-1].offset + self.slots[-1].numel if self.slots else 0

    def slot(self, name: str) -> ParameterSlot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise KeyError(f"no trainable parameter named {name!r}")

    @property
    def group_size(self) -> int:
        """Query heads per key-value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    # ---- flat <-> named -----------------------------------------------------------------
    def flatten(self, tensors: dict[str, Tensor]) -> Float[Tensor, " n"]:
        return torch.cat([tensors[slot.name].reshape(-1) for slot in self.slots])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        if flat.numel() != self.numel:
            raise ValueError(f"a flat tensor of {flat.numel()} elements does not fit {self.numel} parameters")
        return {slot.name: flat[slot.offset : slot.offset + slot.numel].reshape(slot.shape) for slot in self.slots}

    def locate(self, flat_index: int) -> tuple[str, tuple[int, ...]]:
        """(parameter name, position) of a flat index."""
        if not 0 <= flat_index < self.numel:
            raise IndexError(f"flat index {flat_index} outside [0, {self.numel})")
        for slot in self.slots:
            if flat_index < slot.offset + slot.numel:
                position = torch.unravel_index(torch.tensor(flat_index - slot.offset), slot.shape)
                return slot.name, tuple(int(p) for p in position)
        raise AssertionError("unreachable")

    def flat_index(self, name: str, position: tuple[int, ...]) -> int:
        slot = self.slot(name)
        index = 0
        for size, coordinate in zip(slot.shape, position, strict=True):
            if not 0 <= coordinate < size:
                raise IndexError(f"position {position} outside {name} of shape {slot.shape}")
            index = index * size + coordinate
        return slot.offset + index

    def unit_of(self, flat_index: int) -> tuple[int, int, str] | None:
        """(layer, head, component) for an attention element (head = kv head for k/v under
        grouped-query attention), (layer, neuron, "mlp") for an MLP neuron's, else None."""
        name, position = self.locate(flat_index)
        slot = self.slot(name)
        if slot.component is None or slot.layer is None or slot.unit_dim is None:
            return None
        return slot.layer, position[slot.unit_dim], slot.component

    # ---- counts per unit ------------------------------------------------------------------
    def count_by_head(self, mask: Bool[Tensor, " n"]) -> dict[str, Int[Tensor, "layer head"]]:
        """Selected elements per (layer, head) for each component. ``q`` and ``o`` are indexed by
        query head; ``k`` and ``v`` by key-value head (the same thing without grouped-query attention)."""
        counts = {
            "q": torch.zeros(self.n_layers, self.n_heads, dtype=torch.long),
            "k": torch.zeros(self.n_layers, self.n_kv_heads, dtype=torch.long),
            "v": torch.zeros(self.n_layers, self.n_kv_heads, dtype=torch.long),
            "o": torch.zeros(self.n_layers, self.n_heads, dtype=torch.long),
        }
        for slot in self.slots:
            if slot.component in COMPONENTS and slot.layer is not None:
                selected = mask[slot.offset : slot.offset + slot.numel].reshape(slot.shape).long()
                counts[slot.component][slot.layer] += einops.reduce(selected, "head ... -> head", "sum")
        return counts

    def count_by_neuron(self, mask: Bool[Tensor, " n"]) -> Int[Tensor, "layer neuron"]:
        counts = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.long)
        for slot in self.slots:
            if slot.component == "mlp" and slot.layer is not None and slot.unit_dim is not None:
                selected = mask[slot.offset : slot.offset + slot.numel].reshape(slot.shape).long()
                pattern = {0: "neuron ... -> neuron", 1: "d_model neuron -> neuron"}[slot.unit_dim]
                counts[slot.layer] += einops.reduce(selected, pattern, "sum")
        return counts

    def unit_counts(self, mask: Bool[Tensor, " n"]) -> dict:
        """Selected elements per head component (``by_head``), per query head (``head_total``, k/v
        apportioned under grouped-query attention) and per MLP neuron (``neurons``), as lists."""
        by_head = self.count_by_head(mask)
        return {
            "by_head": {component: counts.tolist() for component, counts in by_head.items()},
            "head_total": self.head_totals(by_head).tolist(),
            "neurons": self.count_by_neuron(mask).tolist(),
        }

    def head_totals(self, by_head: dict[str, Tensor]) -> Float[Tensor, "layer head"]:
        """Per query head: its q and o counts plus its key-value head's k and v counts divided
        equally among the query heads that share it (the rule for grouped-query attention; without
        it the total is simply q + k + v + o)."""
        shared_kv = (by_head["k"] + by_head["v"]).double() / self.group_size
        return by_head["q"].double() + by_head["o"].double() + shared_kv.repeat_interleave(self.group_size, dim=1)
