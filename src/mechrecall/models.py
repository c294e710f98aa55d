"""Models as TransformerLens ``HookedTransformer``s: built here from a size, or converted from a
real checkpoint (local directory or the Hugging Face cache, always offline).

This is the one module that touches TransformerLens' loading internals
(``transformer_lens.loading_from_pretrained``); a move to ``TransformerBridge`` is this file's work.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mechrecall.config import MODEL_SIZES, ModelSize
from mechrecall.errors import ConfigError, ModelNotAvailableError
from mechrecall.fused import fuse_norms

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# A model's *spec* is what rebuilds its architecture without the original checkpoint:
# {"source": "built" | "checkpoint", "name": ..., "tl_config": {...}, "frozen": [parameter names],
#  "parameters": [[name, shape], ...] in named_parameters() order}
ModelSpec = dict[str, Any]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}") from None


# ---- models built here -------------------------------------------------------------------------

def build_config(size: ModelSize, d_vocab: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=size.n_layers,
        d_model=size.d_model,
        n_heads=size.n_heads,
        d_head=size.d_head,
        d_mlp=size.d_mlp,
        n_ctx=size.n_ctx,
        d_vocab=d_vocab,
        act_fn=size.act_fn,
        normalization_type=size.normalization_type,
        positional_embedding_type="rotary",
        rotary_dim=size.d_head,
        default_prepend_bos=True,
        dtype=dtype,
        device=device,
        model_name="mechrecall-built",
    )


def build_model(
    size: str | ModelSize, tokenizer: PreTrainedTokenizerBase, seed: int = 0, device: str = "cpu", dtype: str = "float32"
) -> HookedTransformer:
    """A freshly initialised ``HookedTransformer`` of a named size (``MODEL_SIZES``)."""
    if isinstance(size, str):
        if size not in MODEL_SIZES:
            raise ConfigError(f"unknown model size {size!r}: choose one of {', '.join(MODEL_SIZES)} or give a checkpoint")
        size = MODEL_SIZES[size]
    cfg = build_config(size, len(tokenizer), torch_dtype(dtype), device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    if not size.unembed_bias:
        with torch.no_grad():
            model.unembed.b_U.zero_()
        model.unembed.b_U.requires_grad_(False)  # absent, as in GPT-NeoX: neither trained nor traced
    fuse_norms(model)
    return model.to(device, print_details=False)


# ---- checkpoints: locating them offline -------------------------------------------------------

def resolve_checkpoint(name_or_path: str) -> Path:
    """A local directory with ``config.json``, or the snapshot of a hub id in the local HF cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotAvailableError(f"{local} has no config.json: give a directory saved with `save_pretrained`")
        return local
    from huggingface_hub import snapshot_download

    candidates = [name_or_path]
    with contextlib.suppress(ValueError):
        candidates.append(tl_loading.get_official_model_name(name_or_path))
    for candidate in dict.fromkeys(candidates):
        try:
            return Path(snapshot_download(candidate, local_files_only=True))
        except Exception:  # not cached, not a valid id: try the next spelling, then fail clearly
            continue
    raise ModelNotAvailableError(
        f"model {name_or_path!r} is not available offline: pass a local directory saved with `save_pretrained` "
        "(config.json, weights, tokenizer), or put it in the Hugging Face cache (HF_HOME) on a machine with network "
        f"(`hf download {name_or_path}`) and copy the cache here"
    )


def check_checkpoint_config(directory: Path) -> None:
    """Refuse, before transformers reads it, a checkpoint whose ``config.json`` is not a model config
    or that asks to run its own code (``auto_map``: custom modelling or tokenizer code shipped with
    the weights). mechrecall never runs code from a checkpoint, and never asks whether to."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelNotAvailableError(f"{directory}/config.json is not a JSON model config: give a directory saved with `save_pretrained`") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelNotAvailableError(f"{directory}/config.json names no model_type: give a directory saved with `save_pretrained`")
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer_config.json")
    if not any((directory / name).is_file() for name in tokenizer_files):
        raise ModelNotAvailableError(
            f"could not load the checkpoint in {directory}: it has weights but no tokenizer files ({', '.join(tokenizer_files[:3])} …); "
            "save the tokenizer beside them (`tokenizer.save_pretrained`)"
        )
    tokenizer_config: object = {}
    if (directory / "tokenizer_config.json").is_file():
        try:
            tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelNotAvailableError(f"{directory}/tokenizer_config.json is not valid JSON: save the tokenizer again") from None
    custom = [name for name, content in (("config.json", config), ("tokenizer_config.json", tokenizer_config))
              if isinstance(content, dict) and "auto_map" in content]
    if custom:
        raise ModelNotAvailableError(
            f"{directory} asks to run its own code ({custom[0]} has auto_map): mechrecall never runs code from a checkpoint; "
            "use a checkpoint of a standard transformers architecture"
        )


def load_hf_checkpoint(name_or_path: str, dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The original Hugging Face model and its tokenizer, offline."""
    directory = resolve_checkpoint(name_or_path)
    check_checkpoint_config(directory)
    transformers.utils.logging.disable_progress_bar()
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=torch_dtype(dtype), local_files_only=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelNotAvailableError(
            f"could not load the checkpoint in {directory} (weights and tokenizer, as `save_pretrained` writes them): {_first_line(error)[:200]}"
        ) from None
    hf_model.eval()
    return hf_model, tokenizer


@contextlib.contextmanager
def _neutral_config_dir(hf_model: PreTrainedModel | None, hf_config: Any = None) -> Iterator[str]:
    # TransformerLens picks some architectures by sniffing the *name* (a path containing "llama"
    # skips reading config.json); a neutrally named folder holding only the config makes it read
    # the real config for every architecture.
    with tempfile.TemporaryDirectory() as folder:
        neutral = Path(folder) / "checkpoint"
        neutral.mkdir()
        config = copy.deepcopy(hf_model.config if hf_model is not None else hf_config)
        if not config.architectures and hf_model is not None:  # a model made in memory, never saved: name its class
            config.architectures = [type(hf_model).__name__]
        config.to_json_file(str(neutral / "config.json"))
        yield str(neutral)


def convert_hf_model(
    hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "checkpoint", device: str = "cpu"
) -> HookedTransformer:
    """Convert a loaded Hugging Face causal LM into a ``HookedTransformer`` with unprocessed weights
    (no layer-norm folding or centering), so its logits equal the original's and each of its
    parameters is the original parameter, re-shaped per head."""
    dtype = next(hf_model.parameters()).dtype
    previous_level = logging.getLogger().level
    with _neutral_config_dir(hf_model) as neutral:
        try:
            logging.getLogger().setLevel(logging.ERROR)
            cfg = tl_loading.get_pretrained_model_config(
                neutral, hf_cfg=hf_model.config.to_dict(), fold_ln=False, device=device, dtype=dtype
            )
            state_dict = tl_loading.get_pretrained_state_dict(neutral, cfg, hf_model, dtype=dtype)
        except (ValueError, KeyError, NotImplementedError) as error:
            raise ModelNotAvailableError(
                f"TransformerLens cannot convert this checkpoint ({type(hf_model).__name__}): {_first_line(error)}"
            ) from None
        finally:
            logging.getLogger().setLevel(previous_level)
    cfg.model_name = name
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    freeze_absent_biases(model, hf_model)
    fuse_norms(model)
    return model.to(device, print_details=False)


def build_like(hf_config: Any, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> HookedTransformer:
    """A randomly initialised ``HookedTransformer`` with the architecture of a Hugging Face config
    (shapes, rotary, parallel blocks, GQA), without its weights: benchmarks of a real model's shape
    (e.g. Pythia-2.8B) need no checkpoint. ``hf_config.architectures`` must name the model class."""
    if not getattr(hf_config, "architectures", None):
        raise ConfigError("the config names no architecture: set architectures, e.g. ['GPTNeoXForCausalLM']")
    with _neutral_config_dir(None, hf_config) as neutral:
        try:
            cfg = tl_loading.get_pretrained_model_config(neutral, hf_cfg=hf_config.to_dict(), fold_ln=False, device=device, dtype=torch_dtype(dtype))
        except (ValueError, KeyError, NotImplementedError) as error:
            raise ModelNotAvailableError(f"TransformerLens cannot build this architecture: {_first_line(error)}") from None
    cfg.seed = seed
    cfg.init_weights = True  # a pretrained model's config leaves the weights to its checkpoint
    cfg.tokenizer_name = None  # no checkpoint, no tokenizer: set one with ``model.set_tokenizer``
    cfg.model_name = f"random-{hf_config.architectures[0]}"
    with torch.random.fork_rng(devices=[]), torch.device(device):  # parameters made on the device: no host copy
        torch.manual_seed(seed)
        model = HookedTransformer(cfg, move_to_device=False)
    fuse_norms(model)
    return model


_ATTENTION_BIASES = ("attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O", "attn._b_K", "attn._b_V")
_MLP_BIASES = ("mlp.b_in", "mlp.b_gate", "mlp.b_out")


def freeze_absent_biases(model: HookedTransformer, hf_model: PreTrainedModel) -> list[str]:
    """Freeze the biases the conversion filled with zeros because the original model has none
    (Llama's attention and MLP biases, an unembedding without bias): they are not parameters of
    the original, so they are neither trained nor traced. Read from the HF model and its config
    (``attention_bias``, ``mlp_bias``), not guessed from values. Returns their names."""
    absent: list[str] = []
    output_embeddings = hf_model.get_output_embeddings()
    if output_embeddings is not None and getattr(output_embeddings, "bias", None) is None:
        absent.append("unembed.b_U")
    if getattr(hf_model.config, "attention_bias", True) is False:
        absent += [n for n, _ in model.named_parameters() if n.endswith(_ATTENTION_BIASES)]
    if getattr(hf_model.config, "mlp_bias", True) is False:
        absent += [n for n, _ in model.named_parameters() if n.endswith(_MLP_BIASES)]
    parameters = dict(model.named_parameters())
    frozen = [name for name in absent if name in parameters]
    for name in frozen:
        parameters[name].requires_grad_(False)
    return frozen


def load_checkpoint(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> HookedTransformer:
    """A real checkpoint (e.g. ``EleutherAI/pythia-2.8b`` or ``meta-llama/Llama-3.2-3B`` from the
    cache, or a local directory) as a ``HookedTransformer`` with the checkpoint's tokenizer."""
    hf_model, tokenizer = load_hf_checkpoint(name_or_path, dtype)
    model = convert_hf_model(hf_model, tokenizer, name=str(name_or_path), device=device)
    del hf_model
    return model


# ---- specs: rebuilding an architecture from a run ---------------------------------------------

def model_spec(model: HookedTransformer, source: str, name: str) -> ModelSpec:
    config = {key: value for key, value in model.cfg.to_dict().items()}
    config["dtype"] = str(model.cfg.dtype).removeprefix("torch.")
    config.pop("device", None)
    config.pop("n_params", None)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    parameters = [[n, list(p.shape)] for n, p in model.named_parameters()]
    return {"source": source, "name": name, "tl_config": _jsonable(config), "frozen": frozen, "parameters": parameters}


def model_from_spec(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, device: str = "cpu") -> HookedTransformer:
    """The architecture of a spec with uninitialised-but-allocated weights (load a state dict next);
    a spec TransformerLens cannot build is one error naming it, not TL's own assertion."""
    from mechrecall.errors import ArtifactError

    try:
        config = dict(spec["tl_config"])
        config["dtype"] = torch_dtype(config["dtype"])
        config["device"] = device
        config["init_weights"] = False
        cfg = HookedTransformerConfig.from_dict(config)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        frozen = set(spec["frozen"])
    except (KeyError, TypeError, ValueError, AssertionError, NotImplementedError, AttributeError, ConfigError) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise ArtifactError(f"model.json does not describe a model TransformerLens can build ({detail}): make the run again") from None
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    fuse_norms(model)
    return model.to(device, print_details=False)


def trainable_state(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """The model's parameters by name (buffers excluded): what is saved as θ_pre and θ_task."""
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


def load_parameters(model: HookedTransformer, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved parameters into a model, refusing a mismatch in names or shapes."""
    own = dict(model.named_parameters())
    missing, unexpected = set(own) - set(tensors), set(tensors) - set(own)
    if missing or unexpected:
        raise ConfigError(
            f"saved weights do not fit this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}): "
            "they belong to another architecture"
        )
    with torch.no_grad():
        for name, parameter in own.items():
            if tuple(tensors[name].shape) != tuple(parameter.shape):
                raise ConfigError(f"saved weight {name} has shape {tuple(tensors[name].shape)}, the model {tuple(parameter.shape)}")
            parameter.copy_(tensors[name].to(parameter.dtype))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return str(value)


def count_parameters(model: HookedTransformer, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
