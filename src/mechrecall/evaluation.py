"""Greedy exact-match accuracy of the full answer: BIO completion, QA-ID and QA-OOD.

One forward pass per batch: an answer is an exact match when, given the prompt and the answer's
own earlier tokens, the arg-max at every answer position is the answer's next token. That is
exactly what greedy decoding of ``len(answer)`` tokens produces (greedy emits the answer token
by token iff each arg-max is right), without generating: batched and teacher-forced.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import torch
from datasets import DatasetDict
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from mechrecall.encoding import Encoded, collate, encode_pairs, pad_id

# metric name -> dataset split holding its prompt/answer rows
EVAL_SPLITS = {"bio": "bio_eval", "qa_id": "qa_id", "qa_ood": "qa_ood"}


@torch.no_grad()
def exact_match(model: HookedTransformer, encoded: Encoded, pad: int, batch_size: int = 256) -> Bool[Tensor, " examples"]:
    """Whether greedy decoding reproduces each example's whole answer (batched, sorted by length)."""
    device = model.cfg.device or "cpu"
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.ids[i]))
    correct = torch.zeros(len(encoded), dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            tokens, target_mask = collate(encoded.select(indices), pad, device)
            # The blocks see every position; the final norm and the unembedding (most of a small
            # model's cost) only the positions that predict an answer token.
            residual = model(tokens, stop_at_layer=model.cfg.n_layers)
            rows, columns = target_mask[:, 1:].nonzero(as_tuple=True)
            logits = model(residual[rows, columns].unsqueeze(1), start_at_layer=model.cfg.n_layers)
            misses = (logits[:, 0].argmax(-1) != tokens[rows, columns + 1]).long()
            missed = torch.zeros(len(indices), dtype=torch.long, device=misses.device).index_add_(0, rows, misses)
            correct[torch.tensor(indices)] = (missed == 0).cpu()
    finally:
        model.train(was_training)
    return correct


@torch.no_grad()
def greedy_answer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int) -> list[int]:
    """One example at a time, token by token: the reference that ``exact_match`` must agree with."""
    encoded = encode_pairs(tokenizer, [prompt], ["x"])
    ids = encoded.ids[0][: encoded.target_start[0]]
    device = model.cfg.device or "cpu"
    generated: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids + generated], device=device))
        generated.append(int(logits[0, -1].argmax()))
    return generated


def accuracy_evaluator(
    tokenizer: PreTrainedTokenizerBase, dataset: DatasetDict, metrics: tuple[str, ...] = tuple(EVAL_SPLITS), batch_size: int = 256
):
    """A function ``model -> {metric: accuracy}`` over the given splits, encoded once (for
    measuring along training)."""
    pad = pad_id(tokenizer)
    encoded = {}
    for metric in metrics:
        rows = dataset[EVAL_SPLITS[metric]]
        encoded[metric] = encode_pairs(tokenizer, list(rows["prompt"]), list(rows["answer"]))

    def accuracies(model: HookedTransformer) -> dict[str, float]:
        return {m: int(exact_match(model, e, pad, batch_size).sum()) / len(e) if len(e) else 0.0 for m, e in encoded.items()}

    return accuracies


def chance_level(dataset: DatasetDict) -> dict[str, float]:
    """Exact match of always answering an attribute's most frequent value among the people whose QA
    is trained on (what a model that learned no person's facts could best do), per metric."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for attribute, answer in zip(dataset["qa_id"]["attribute"], dataset["qa_id"]["answer"], strict=True):
        counts[attribute][answer] += 1
    majority = {attribute: counter.most_common(1)[0][0] for attribute, counter in counts.items()}
    levels = {}
    for metric, split in EVAL_SPLITS.items():
        rows = dataset[split]
        hits = [majority.get(a) == v for a, v in zip(rows["attribute"], rows["answer"], strict=True)]
        levels[metric] = sum(hits) / max(len(hits), 1)
    return levels


def evaluate(
    model: HookedTransformer,
    tokenizer: PreTrainedTokenizerBase,
    dataset: DatasetDict,
    metrics: tuple[str, ...] = tuple(EVAL_SPLITS),
    batch_size: int = 256,
) -> dict[str, Any]:
    """Accuracy per metric (``bio``, ``qa_id``, ``qa_ood``), overall and per attribute."""
    results: dict[str, Any] = {}
    pad = pad_id(tokenizer)
    for metric in metrics:
        rows = dataset[EVAL_SPLITS[metric]]
        encoded = encode_pairs(tokenizer, list(rows["prompt"]), list(rows["answer"]))
        correct = exact_match(model, encoded, pad, batch_size).tolist()
        by_attribute: dict[str, list[bool]] = defaultdict(list)
        for attribute, hit in zip(rows["attribute"], correct, strict=True):
            by_attribute[attribute].append(hit)
        results[metric] = {
            "accuracy": sum(correct) / max(len(correct), 1),
            "n": len(correct),
            "by_attribute": {a: sum(h) / len(h) for a, h in sorted(by_attribute.items())},
        }
    return results
