"""Token ids for BIO texts and for prompt/answer pairs, and right-padded batches.

A BIO example is ``[BOS] text`` with the loss on every text token. A prompt/answer example
(QA, or a BIO-completion prompt) is ``[BOS] prompt answer`` with the loss on the answer tokens
only; the answer is tokenized on its own with a leading space, so its token boundary is the same
for every tokenizer (word-level or BPE) and exact match compares whole answer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Encoded:
    """Examples as id lists; ``target_start[i]`` is the first position whose token is a target."""

    ids: list[list[int]]
    target_start: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices: Sequence[int]) -> Encoded:
        return Encoded([self.ids[i] for i in indices], [self.target_start[i] for i in indices])


def bos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The sequence-start token: BOS, or EOS for tokenizers without one (GPT-NeoX's <|endoftext|>)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start sequences with")
    return int(token)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(token if token is not None else 0)


def _encode_many(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> Encoded:
    """BIO texts: the loss covers every token after BOS."""
    start = bos_id(tokenizer)
    ids = [[start, *tokens] for tokens in _encode_many(tokenizer, texts)]
    return Encoded(ids=ids, target_start=[1] * len(ids))


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], answers: list[str]) -> Encoded:
    """Prompt/answer pairs: the loss (and exact match) covers the answer tokens only."""
    start = bos_id(tokenizer)
    prompt_ids = _encode_many(tokenizer, prompts)
    answer_ids = _encode_many(tokenizer, [" " + answer.strip() for answer in answers])
    ids, target_start = [], []
    for prompt, answer in zip(prompt_ids, answer_ids, strict=True):
        if not answer:
            raise ValueError("an answer encodes to no tokens")
        ids.append([start, *prompt, *answer])
        target_start.append(1 + len(prompt))
    return Encoded(ids=ids, target_start=target_start)


def collate(
    examples: Encoded, pad: int, device: str | torch.device = "cpu"
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-pad a batch. ``target_mask[b, t]`` is true where token ``t`` of example ``b`` is a
    target (predicted from position ``t - 1``); padding is never a target."""
    length = max(len(ids) for ids in examples.ids)
    tokens = torch.full((len(examples), length), pad, dtype=torch.long)
    target_mask = torch.zeros((len(examples), length), dtype=torch.bool)
    for row, (ids, start) in enumerate(zip(examples.ids, examples.target_start, strict=True)):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        target_mask[row, start : len(ids)] = True
    return tokens.to(device), target_mask.to(device)


def per_example_loss(
    logits: Tensor, tokens: Int[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"]
) -> Tensor:
    """Mean next-token cross-entropy over each example's targets: shape ``[batch]``."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = tokens[:, 1:]
    mask = target_mask[:, 1:].to(log_probs.dtype)
    token_loss = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_loss * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
