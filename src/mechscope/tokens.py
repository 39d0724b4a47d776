"""Text ↔ tokens, with batches of prompts of different lengths padded and masked correctly.

Everything a user passes as a prompt, token ids or attention mask is checked here, before it reaches torch:
an id outside the embedding would otherwise surface as ``IndexError: index out of range in self`` (on CUDA, as a
device-side assert that poisons the process), and a mask of the wrong shape as a broadcasting error deep in HF.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .errors import InputError, InputTypeError, TokenIdError, type_name

Input = str | list[str] | Tensor

_ID_DTYPES = (torch.long, torch.int32)  # what nn.Embedding accepts
_INPUT_HINT = "pass a string, a non-empty list of strings, or token ids of shape (batch, pos) from model.to_tokens()"


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


def token_strings(tokenizer, ids: Tensor) -> list:
    """Each id as its token string (``#id`` when there is no tokenizer), for labels and views: ``(pos,)`` → a list,
    ``(batch, pos)`` → a list per row."""
    if ids.ndim == 2:
        return [token_strings(tokenizer, row) for row in ids]
    if tokenizer is None:
        return [f"#{int(t)}" for t in ids]
    return [tokenizer.decode([int(t)]) for t in ids]


def check_token_ids(tokens: Tensor, d_vocab: int | None, what: str = "token input") -> None:
    """Refuse ids outside ``[0, d_vocab)``: one ``aminmax`` over the ids (a few µs), nothing per position."""
    if d_vocab is None or tokens.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(tokens))
    if lo < 0 or hi >= d_vocab:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in (tokens == bad).nonzero()[0])
        raise TokenIdError(
            f"{what} contains token id {bad} (at index {where}), outside the model's vocabulary of {d_vocab} "
            f"ids (0 to {d_vocab - 1}); pass ids from this model's tokenizer (model.to_tokens(text))."
        )


def as_token_tensor(input: Tensor, what: str = "token input") -> Tensor:
    """A ``(batch, pos)`` integer view of ``input`` (a ``(pos,)`` tensor becomes one row), or a clear error."""
    if input.dtype not in _ID_DTYPES:
        raise InputTypeError(
            f"{what} must hold integer token ids, got dtype {input.dtype}; {_INPUT_HINT} (e.g. ids.long())."
        )
    if input.ndim not in (1, 2):
        raise InputError(
            f"{what} must have shape (batch, pos) or (pos,), got {tuple(input.shape)}; "
            + ("flatten the extra axes into the batch (ids.flatten(0, -2))." if input.ndim > 2 else _INPUT_HINT + ".")
        )
    tokens = input if input.ndim == 2 else input.unsqueeze(0)
    if tokens.shape[0] == 0:
        raise InputError(f"{what} is an empty batch (shape {tuple(tokens.shape)}); pass at least one sequence.")
    if tokens.shape[1] == 0:
        raise InputError(f"{what} is empty (0 positions, shape {tuple(tokens.shape)}); pass at least one token.")
    if tokens.is_meta:
        raise InputError(f"{what} is on the meta device and holds no values; pass token ids on a real device.")
    return tokens


def to_batch(tok, input: Input, *, prepend_bos: bool, padding_side: Literal["left", "right"],
             n_ctx: int | None, device=None, d_vocab: int | None = None) -> Batch:
    """Tokenise a prompt, a list of prompts, or pass a token tensor through (with validation).

    Token tensors are moved to ``device`` (the model's), as TransformerLens does; ids are checked against
    ``d_vocab`` (the embedding's rows) whether they come from the user or from the tokenizer."""
    if isinstance(input, Tensor):
        tokens = as_token_tensor(input)
        _check_len(tokens.shape[-1], n_ctx)
        check_token_ids(tokens, d_vocab)
        return Batch(tokens.to(device) if device is not None else tokens, None)
    if isinstance(input, str):
        texts = [input]
    elif isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
        texts = list(input)
    else:
        raise _bad_input(input)
    if tok is None:
        raise InputError("this model has no tokenizer, so it cannot read text; pass token ids, or wrap it with "
                         "Model.from_hf(hf_model, tokenizer).")
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    seqs = [_encode_one(tok, t, prepend_bos) for t in texts]
    for t, s in zip(texts, seqs):
        if not s:
            raise InputError(f"prompt {t!r} is empty after tokenisation; pass some text (or prepend_bos=True).")
        _check_len(len(s), n_ctx)
    if d_vocab is not None:
        top = max(max(s) for s in seqs)
        if top >= d_vocab:
            raise TokenIdError(
                f"the tokenizer produced token id {top}, but the model's embedding has only {d_vocab} rows: the "
                "tokenizer does not belong to this model; load them together (mechscope.load) or pass the "
                "model's own tokenizer to Model.from_hf."
            )
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


def _bad_input(input) -> InputError:
    if isinstance(input, (list, tuple)):
        if not input:
            return InputError(f"the input is an empty {type(input).__name__}; {_INPUT_HINT}.")
        odd = next(t for t in input if not isinstance(t, str))
        if all(isinstance(t, int) for t in input) or all(isinstance(t, (list, tuple)) for t in input):
            return InputTypeError(
                f"the input is a {type(input).__name__} of token ids, but a list must hold strings (one prompt each); "
                "pass ids as a tensor, torch.tensor(ids), of shape (pos,) or (batch, pos)."
            )
        return InputTypeError(
            f"the input list holds {type_name(odd)}; a list must hold only strings (one prompt each)."
        )
    return InputTypeError(f"cannot run on {type_name(input)}; {_INPUT_HINT}.")


def check_attention_mask(mask, tokens: Tensor) -> Tensor:
    """A user's ``attention_mask``: same ``(batch, pos)`` as the tokens, 0/1 (integer, bool or float), moved to
    the tokens' device. Values other than 0 and 1 are refused: HF reads any non-zero as 'attend', but mechscope
    derives position ids from the mask's running sum."""
    if not isinstance(mask, Tensor):
        raise InputTypeError(f"attention_mask must be a tensor of shape {tuple(tokens.shape)}, got {type_name(mask)}.")
    if mask.shape != tokens.shape:
        raise InputError(
            f"attention_mask has shape {tuple(mask.shape)} but the tokens are {tuple(tokens.shape)} (batch, pos); "
            "pass one 0/1 entry per token (the mask from the same tokenizer call as the ids)."
        )
    if mask.dtype.is_complex or mask.is_meta:
        raise InputTypeError(f"attention_mask must be an integer, bool or float 0/1 tensor, got {mask.dtype}.")
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise InputError("attention_mask must hold only 0 (padding) and 1 (real token); convert it with (mask > 0).long().")
    return mask.to(tokens.device)


def check_position_ids(position_ids, tokens: Tensor) -> None:
    """A user's ``position_ids``: integer, ``(batch, pos)`` or ``(1, pos)`` like the tokens."""
    ok = isinstance(position_ids, Tensor) and position_ids.ndim == 2 and not position_ids.is_floating_point() \
        and position_ids.shape[1] == tokens.shape[1] and position_ids.shape[0] in (1, tokens.shape[0])
    if not ok:
        raise InputError(f"position_ids must be an integer tensor of shape {tuple(tokens.shape)} or "
                         f"(1, {tokens.shape[1]}) like the tokens, got {type_name(position_ids)}.")


def _check_len(n: int, n_ctx: int | None) -> None:
    if n_ctx is not None and n > n_ctx:
        raise InputError(
            f"the prompt is {n} tokens long but the model's context is {n_ctx} tokens; shorten it or split it "
            "into windows."
        )


def position_ids(attention_mask: Tensor) -> Tensor:
    """(batch, pos) positions counting only real tokens, as HF's ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
