"""A run's model as a Hugging Face checkpoint, so tools that take ``transformers`` models (nnsight,
lm-eval, vLLM, the Hub) can open it: ``mechrecall export RUN --format hf OUT``.

The layout is the one the run came from — GPT-NeoX (Pythia) or Llama for a run fine-tuned from
such a checkpoint, GPT-NeoX for a model built here — and the weights are the inverse of
TransformerLens' own conversion of that layout (``convert_neox_weights`` /
``convert_llama_weights``): pure re-shapes, nothing folded or centred. Every export is checked
before it is published: the written checkpoint is loaded back with ``AutoModelForCausalLM`` and its
logits on the run's own texts must equal the run's to ``TOLERANCE``; the folder appears only then.

A model whose structure the layout cannot hold (a trained unembedding bias — GPT-NeoX and Llama
have none —, gated MLPs in GPT-NeoX, another positional scheme) is refused with the reason, never
exported approximately.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM, GPTNeoXConfig, PreTrainedModel, PreTrainedTokenizerBase

from mechrecall.errors import ConfigError, ModelNotAvailableError

TOLERANCE = 1e-4  # largest |logit difference| allowed between the run and its export (float32)
LAYOUTS = ("gpt_neox", "llama")
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "relu": "relu", "silu": "silu"}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    layout: str
    max_logit_difference: float
    parameters: int

    def __repr__(self) -> str:
        return f"ExportResult({self.layout} at {self.path}, max |Δlogit| {self.max_logit_difference:.2e}, {self.parameters:,} parameters)"


def _refuse(reason: str) -> ConfigError:
    return ConfigError(f"cannot export this model to Hugging Face format exactly: {reason}")


def _check_unembedding(model: HookedTransformer) -> None:
    bias = model.unembed.b_U.detach()
    if bool(bias.abs().max() > 0):
        raise _refuse(
            f"its unembedding bias b_U was trained (max |b_U| = {float(bias.abs().max()):.3g}) and GPT-NeoX and Llama have none; "
            "models of sizes built with `unembed_bias=False` (e.g. micro, small) or fine-tuned from a checkpoint export"
        )


# ---- GPT-NeoX ----------------------------------------------------------------------------------


def neox_config(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase) -> GPTNeoXConfig:
    """The GPT-NeoX config of a ``HookedTransformer`` built here (or converted from GPT-NeoX)."""
    cfg = model.cfg
    if cfg.normalization_type not in ("LN",):
        raise _refuse(f"GPT-NeoX needs LayerNorm with weights, the model has {cfg.normalization_type}")
    if cfg.positional_embedding_type != "rotary" or cfg.rotary_adjacent_pairs:
        raise _refuse(f"GPT-NeoX needs rotary embeddings on split halves, the model has {cfg.positional_embedding_type}")
    if cfg.gated_mlp or cfg.n_key_value_heads not in (None, cfg.n_heads):
        raise _refuse("GPT-NeoX has neither gated MLPs nor grouped-query attention")
    if cfg.act_fn not in _ACTIVATIONS:
        raise _refuse(f"GPT-NeoX has no activation {cfg.act_fn!r}")
    if cfg.d_model != cfg.n_heads * cfg.d_head:
        raise _refuse("GPT-NeoX needs d_model = n_heads × d_head")
    if not cfg.use_attn_scale or not math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)):
        raise _refuse("GPT-NeoX scales attention scores by 1/√d_head")
    rotary_dim = cfg.rotary_dim or cfg.d_head
    return GPTNeoXConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_mlp, hidden_act=_ACTIVATIONS[cfg.act_fn], max_position_embeddings=cfg.n_ctx,
        layer_norm_eps=cfg.eps, use_parallel_residual=bool(cfg.parallel_attn_mlp), tie_word_embeddings=False, attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rotary_base), "partial_rotary_factor": rotary_dim / cfg.d_head},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        architectures=["GPTNeoXForCausalLM"],
    )


def neox_state(model: HookedTransformer) -> dict[str, Tensor]:
    """The inverse of TransformerLens' ``convert_neox_weights``: Q, K and V interleaved per head."""
    state = {"gpt_neox.embed_in.weight": model.embed.W_E}
    for layer, block in enumerate(model.blocks):
        prefix = f"gpt_neox.layers.{layer}"
        attn = block.attn
        state[f"{prefix}.input_layernorm.weight"], state[f"{prefix}.input_layernorm.bias"] = block.ln1.w, block.ln1.b
        state[f"{prefix}.post_attention_layernorm.weight"], state[f"{prefix}.post_attention_layernorm.bias"] = block.ln2.w, block.ln2.b
        qkv = torch.stack([attn.W_Q, attn.W_K, attn.W_V])
        state[f"{prefix}.attention.query_key_value.weight"] = einops.rearrange(qkv, "qkv head model d_head -> (head qkv d_head) model")
        qkv_bias = torch.stack([attn.b_Q, attn.b_K, attn.b_V])
        state[f"{prefix}.attention.query_key_value.bias"] = einops.rearrange(qkv_bias, "qkv head d_head -> (head qkv d_head)")
        state[f"{prefix}.attention.dense.weight"] = einops.rearrange(attn.W_O, "head d_head model -> model (head d_head)")
        state[f"{prefix}.attention.dense.bias"] = attn.b_O
        state[f"{prefix}.mlp.dense_h_to_4h.weight"], state[f"{prefix}.mlp.dense_h_to_4h.bias"] = block.mlp.W_in.T, block.mlp.b_in
        state[f"{prefix}.mlp.dense_4h_to_h.weight"], state[f"{prefix}.mlp.dense_4h_to_h.bias"] = block.mlp.W_out.T, block.mlp.b_out
    state["gpt_neox.final_layer_norm.weight"], state["gpt_neox.final_layer_norm.bias"] = model.ln_final.w, model.ln_final.b
    state["lm_head.weight"] = model.unembed.W_U.T
    return state


# ---- Llama -------------------------------------------------------------------------------------


def llama_state(model: HookedTransformer) -> dict[str, Tensor]:
    """The inverse of TransformerLens' ``convert_llama_weights`` (grouped K/V heads kept grouped)."""
    state = {"model.embed_tokens.weight": model.embed.W_E}
    for layer, block in enumerate(model.blocks):
        prefix = f"model.layers.{layer}"
        attn = block.attn
        state[f"{prefix}.input_layernorm.weight"] = block.ln1.w
        state[f"{prefix}.post_attention_layernorm.weight"] = block.ln2.w
        keys = attn._W_K if hasattr(attn, "_W_K") else attn.W_K
        values = attn._W_V if hasattr(attn, "_W_V") else attn.W_V
        state[f"{prefix}.self_attn.q_proj.weight"] = einops.rearrange(attn.W_Q, "head model d_head -> (head d_head) model")
        state[f"{prefix}.self_attn.k_proj.weight"] = einops.rearrange(keys, "head model d_head -> (head d_head) model")
        state[f"{prefix}.self_attn.v_proj.weight"] = einops.rearrange(values, "head model d_head -> (head d_head) model")
        state[f"{prefix}.self_attn.o_proj.weight"] = einops.rearrange(attn.W_O, "head d_head model -> model (head d_head)")
        state[f"{prefix}.mlp.gate_proj.weight"] = block.mlp.W_gate.T
        state[f"{prefix}.mlp.up_proj.weight"] = block.mlp.W_in.T
        state[f"{prefix}.mlp.down_proj.weight"] = block.mlp.W_out.T
    state["model.norm.weight"] = model.ln_final.w
    state["lm_head.weight"] = model.unembed.W_U.T
    return state


def _check_llama_biases(model: HookedTransformer) -> None:
    for name, parameter in model.named_parameters():
        if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_gate")) and bool(parameter.detach().abs().max() > 0):
            raise _refuse(f"{name} is non-zero and this Llama layout has no biases")


# ---- export ------------------------------------------------------------------------------------


def hf_model_of(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, source_config: Any = None) -> PreTrainedModel:
    """A Hugging Face model holding the ``HookedTransformer``'s weights. ``source_config`` is the
    original checkpoint's config for a run fine-tuned from one (its layout is kept), None for a
    model built here (GPT-NeoX)."""
    _check_unembedding(model)
    if source_config is None:
        config = neox_config(model, tokenizer)
        layout = "gpt_neox"
    else:
        config = source_config
        layout = config.model_type
        if layout not in LAYOUTS:
            raise _refuse(f"the run comes from a {layout} checkpoint; export writes {' or '.join(LAYOUTS)}")
        config.tie_word_embeddings = False  # the run's W_E and W_U were fine-tuned apart
    if layout == "llama":
        _check_llama_biases(model)
        state = llama_state(model)
    else:
        state = neox_state(model)
    hf_model = AutoModelForCausalLM.from_config(config, dtype=model.cfg.dtype)
    expected = {name for name, _ in hf_model.named_parameters()}
    if expected != set(state):
        raise _refuse(f"the {layout} layout's parameters do not match ({sorted(expected ^ set(state))[:3]})")
    with torch.no_grad():
        for name, parameter in hf_model.named_parameters():
            parameter.copy_(state[name].detach())
    hf_model.eval()
    return hf_model


def starting_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer as the run used it: every sequence it trained on starts with the
    sequence-start token (mechrecall.encoding), so the exported tokenizer prepends it too, and
    ``tokenizer(text)`` in transformers or nnsight gives the run's tokens."""
    import copy

    from tokenizers.processors import TemplateProcessing

    from mechrecall.encoding import bos_id

    start = bos_id(tokenizer)
    if tokenizer("a")["input_ids"][:1] == [start] or not getattr(tokenizer, "is_fast", False):
        return tokenizer
    exported = copy.deepcopy(tokenizer)
    token = exported.convert_ids_to_tokens(start)
    exported.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A {token} $B:1", special_tokens=[(token, start)]
    )
    return exported


def logit_difference(
    model: HookedTransformer, hf_model: PreTrainedModel, tokens: Float[Tensor, "batch pos"]
) -> float:
    """max |logits(run) − logits(export)| over ``tokens``."""
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf_model(tokens).logits
    return float((ours.float() - theirs.float()).abs().max())


def export_hf(
    model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, out: Path | str, probe: Float[Tensor, "batch pos"],
    source_config: Any = None,
) -> ExportResult:
    """Write ``model`` as a Hugging Face checkpoint (weights as safetensors, config, tokenizer) in
    ``out`` — a new folder —, checked by loading it back: its logits on ``probe`` must match."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists: choose a new folder for the export (nothing is overwritten)")
    hf_model = hf_model_of(model, tokenizer, source_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_model.save_pretrained(str(staging), safe_serialization=True)
        starting_tokenizer(tokenizer).save_pretrained(str(staging))
        try:
            loaded = AutoModelForCausalLM.from_pretrained(str(staging), local_files_only=True, trust_remote_code=False, dtype=model.cfg.dtype)
        except (OSError, ValueError) as error:
            raise ModelNotAvailableError(f"the written checkpoint does not load: {str(error).splitlines()[0][:200]}") from None
        difference = logit_difference(model, loaded.eval(), probe.to(model.cfg.device or "cpu"))
        if not difference <= TOLERANCE:
            raise _refuse(f"the exported logits differ from the run's by {difference:.3g} (> {TOLERANCE:g})")
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    parameters = sum(p.numel() for p in loaded.parameters())
    return ExportResult(out, hf_model.config.model_type, difference, parameters)


def _source_config(spec: dict[str, Any]) -> Any:
    """The original checkpoint's config where the layout needs it (Llama: rotary scaling, grouped
    heads), found through the run's chain of bases; None where the model's own config suffices."""
    from transformers import AutoConfig

    from mechrecall.models import resolve_checkpoint

    architecture = spec.get("tl_config", {}).get("original_architecture")
    if architecture in (None, "GPTNeoXForCausalLM"):
        return None
    if architecture != "LlamaForCausalLM":
        raise _refuse(f"the run comes from a {architecture} checkpoint; export writes GPT-NeoX or Llama")
    name = spec.get("name", "")
    seen: set[str] = set()
    while spec.get("source") == "run" and name not in seen:  # a base that is itself a run: follow it to its checkpoint
        seen.add(name)
        from mechrecall.runs import open_run

        spec = open_run(name).spec()
        name = spec.get("name", "")
    try:
        return AutoConfig.from_pretrained(str(resolve_checkpoint(name)), local_files_only=True, trust_remote_code=False)
    except (ModelNotAvailableError, OSError, ValueError) as error:
        raise ModelNotAvailableError(
            f"the Llama export needs the config of the checkpoint the run came from ({name}): make it available offline ({str(error)[:120]})"
        ) from None


def probe_tokens(run: Any, examples: int = 8) -> Tensor:
    """A batch of the run's own BIO texts (cut to the shortest), the export's check input."""
    tokenizer = run.tokenizer()
    texts = list(run.world().dataset["bio"]["text"][:examples])
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    length = min(len(ids) for ids in encoded)
    return torch.tensor([ids[:length] for ids in encoded])


def export_run(path: Path | str, out: Path | str, which: str = "tuned") -> ExportResult:
    """``mechrecall export``: a run's θ_task (or θ_pre) as a Hugging Face checkpoint in ``out``."""
    import transformers

    from mechrecall.artifacts import check_output_path
    from mechrecall.runs import open_run

    out = Path(out)
    check_output_path(out)
    if out.exists():
        raise ConfigError(f"{out} exists: choose a new folder for the export (nothing is overwritten)")
    run = open_run(path)
    spec = run.spec()
    source_config = _source_config(spec)
    model = run.load_model(which)
    transformers.utils.logging.disable_progress_bar()
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        return export_hf(model, model.tokenizer or run.tokenizer(), out, probe_tokens(run), source_config)
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
