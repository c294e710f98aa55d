"""Word-level tokenizer for models built here (the ``tokenizers`` library).

Its vocabulary is every word and punctuation mark the world's pools and templates can produce,
so it depends on neither the seed nor the population: one tokenizer serves every world. Every
name part, month, number and value word is one token.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechrecall.data import pools
from mechrecall.data.templates import ANSWER_CUE, BIO_TEMPLATES, QA_TEMPLATES

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def _world_strings() -> list[str]:
    pieces: list[str] = []
    pieces += pools.FIRST_NAMES_MALE + pools.FIRST_NAMES_FEMALE + pools.MIDDLE_NAMES + pools.LAST_NAMES
    pieces += pools.CITIES + pools.UNIVERSITIES + pools.MAJORS
    pieces += list(pools.EMPLOYERS) + list(pools.EMPLOYERS.values())
    pieces += pools.MONTHS + [str(d) for d in pools.DAYS] + [str(y) for y in pools.YEARS]
    pieces += [word for pair in pools.PRONOUNS.values() for word in pair] + [w.lower() for p in pools.PRONOUNS.values() for w in p]
    for templates in BIO_TEMPLATES.values():
        pieces += [t.replace("{S}", "").replace("{P_lower}", "").replace("{P}", "").replace("{V}", "") for t in templates]
    pieces += [t.replace("{N}", "") for t in QA_TEMPLATES.values()]
    pieces += [ANSWER_CUE, "'s", string.punctuation]
    return pieces


def world_vocabulary() -> list[str]:
    """The sorted word-level vocabulary (special tokens excluded)."""
    splitter = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for piece in _world_strings():
        words.update(token for token, _ in splitter.pre_tokenize_str(piece))
    words.update(string.punctuation)  # each mark alone, whatever it stands next to
    return sorted(words)


def build_world_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *world_vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return wrap_tokenizer(core)


def wrap_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    # TransformerLens re-loads a tokenizer by ``name_or_path`` unless it says it adds BOS itself;
    # this one lives in memory and mechrecall (or TransformerLens' ``prepend_bos``) adds BOS
    # explicitly, so record that instead of letting it look for a hub id.
    tokenizer.init_kwargs.update(name_or_path="mechrecall-world", add_bos_token=True)
    return tokenizer


def save_world_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write the tokenizer into ``folder`` as Hugging Face does (``save_pretrained``):
    ``tokenizer.json`` (the ``tokenizers`` format, what mechrecall reads back) and
    ``tokenizer_config.json`` with its BOS, EOS, PAD and UNK roles, so that
    ``AutoTokenizer.from_pretrained(folder)`` — and TransformerLens or nnsight through it — opens
    it without mechrecall."""
    tokenizer.save_pretrained(str(folder))


def load_world_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    return wrap_tokenizer(Tokenizer.from_str(path.read_text()))
