"""Text ↔ tokens, with batches of prompts of different lengths padded and masked correctly."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .errors import InputError

Input = str | list[str] | Tensor


class Batch(NamedTuple):
    tokens: Tensor
    """(batch, pos) token ids."""
    attention_mask: Tensor | None
    """(batch, pos) 1 for real tokens, 0 for padding; None when nothing is padded."""


def _encode_one(tok, text: str, prepend_bos: bool) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if prepend_bos:
        if tok.bos_token_id is None:
            raise InputError(
                "prepend_bos=True, but the tokenizer has no BOS token; pass prepend_bos=False."
            )
        ids = [tok.bos_token_id, *ids]
    return ids


def to_batch(tok, input: Input, *, prepend_bos: bool, padding_side: Literal["left", "right"],
             n_ctx: int | None, device=None) -> Batch:
    """Tokenise a prompt, a list of prompts, or pass a token tensor through (with validation)."""
    if isinstance(input, Tensor):
        tokens = input if input.ndim == 2 else input.unsqueeze(0)
        if tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise InputError(
                f"token input must be an integer tensor of shape (batch, pos) or (pos,), got {tuple(input.shape)} "
                f"{input.dtype}; pass text, or token ids from model.to_tokens()."
            )
        if tokens.shape[-1] == 0:
            raise InputError("the token tensor is empty (0 positions); pass at least one token.")
        _check_len(tokens.shape[-1], n_ctx)
        return Batch(tokens.to(device) if device is not None else tokens, None)
    texts = [input] if isinstance(input, str) else list(input)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError("input must be a string, a non-empty list of strings, or a tensor of token ids.")
    seqs = [_encode_one(tok, t, prepend_bos) for t in texts]
    for t, s in zip(texts, seqs):
        if not s:
            raise InputError(f"prompt {t!r} is empty after tokenisation; pass some text (or prepend_bos=True).")
        _check_len(len(s), n_ctx)
    longest = max(len(s) for s in seqs)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    tokens = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(longest - len(s), longest) if padding_side == "left" else slice(0, len(s))
        tokens[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    padded = bool((mask == 0).any())
    if device is not None:
        tokens, mask = tokens.to(device), mask.to(device)
    return Batch(tokens, mask if padded else None)


def _check_len(n: int, n_ctx: int | None) -> None:
    if n_ctx is not None and n > n_ctx:
        raise InputError(
            f"the prompt is {n} tokens long but the model's context is {n_ctx} tokens; shorten it or split it "
            "into windows."
        )


def position_ids(attention_mask: Tensor) -> Tensor:
    """(batch, pos) positions counting only real tokens, as HF's ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
