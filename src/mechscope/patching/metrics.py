"""Patching metrics: functions of the logits that say how much of a behaviour a run shows.

The contract every sweep uses: ``metric(logits [B, pos, vocab]) -> 0-d tensor``, differentiable (attribution
patching backpropagates it). The functions here take extra arguments after the logits; bind them with
``functools.partial`` or a lambda: ``metric = partial(logit_diff, answer=" Mary", wrong=" John", model=model)``.

``logit_diff`` is Wang et al.'s IOI measure; ``normalised`` is TransformerLens/ARENA's ``ioi_metric`` (0 = the
corrupted run, 1 = the clean run), which makes patching results comparable across prompts and models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name

Tokens = int | str | Sequence[int] | Sequence[str] | Tensor


def token_ids(tokens: Tokens, model=None, *, what: str = "token") -> Tensor:
    """``tokens`` as a 1-D id tensor: an id, a single-token string (needs ``model``), or one per prompt."""
    if isinstance(tokens, Tensor):
        if tokens.dtype not in (torch.long, torch.int32) or tokens.ndim > 1:
            raise InputTypeError(f"{what} ids must be an int tensor of shape () or (batch,), got {type_name(tokens)}.")
        return tokens.reshape(-1).long()
    items = [tokens] if isinstance(tokens, (int, str)) else tokens
    if not isinstance(items, (list, tuple)) or not items:
        raise InputTypeError(f"{what} must be a token id, a single-token string, or a list of them (one per prompt), "
                             f"got {type_name(tokens)}.")
    ids = []
    for t in items:
        if isinstance(t, str):
            if model is None:
                raise InputError(f"{what} {t!r} is a string; pass model= so it can be turned into a token id, or pass "
                                 "the id.")
            ids.append(model.to_single_token(t))
        elif isinstance(t, int) and not isinstance(t, bool):
            ids.append(t)
        else:
            raise InputTypeError(f"{what} must hold token ids or single-token strings, got {type_name(t)}.")
    return torch.tensor(ids, dtype=torch.long)


def _at(logits: Tensor, position) -> Tensor:
    """``logits [B, pos, vocab]`` at one position per prompt → ``[B, vocab]``; ``position`` an int or ``[B]``."""
    if logits.ndim != 3:
        raise InputError(f"a metric takes logits of shape (batch, pos, vocab), got {tuple(logits.shape)}.")
    if isinstance(position, int) and not isinstance(position, bool):
        if not -logits.shape[1] <= position < logits.shape[1]:
            raise InputError(f"position {position} is outside the {logits.shape[1]} positions of the logits (with "
                             "positions=... only the kept positions are there; use -1).")
        return logits[:, position]
    pos = torch.as_tensor(position, device=logits.device).long().reshape(-1)
    if pos.numel() not in (1, logits.shape[0]):
        raise InputError(f"position must be an int or one per prompt ({logits.shape[0]}), got {pos.numel()} values.")
    return logits[torch.arange(logits.shape[0], device=logits.device), pos.expand(logits.shape[0])]


def _per_prompt(ids: Tensor, b: int, what: str, device) -> Tensor:
    if ids.numel() not in (1, b):
        raise InputError(f"{what} has {ids.numel()} tokens for a batch of {b}; give one, or one per prompt.")
    return ids.to(device).expand(b)


def logit_diff(logits: Tensor, answer: Tokens, wrong: Tokens, position=-1, *, model=None,
               reduce: str = "mean") -> Tensor:
    """``logit[answer] - logit[wrong]`` at ``position`` (default the last), averaged over the batch.

    ``answer``/``wrong``: ids or single-token strings (with ``model``), one for all prompts or one per prompt;
    ``position``: an int or one per prompt (the last real token of right-padded prompts). ``reduce="none"``
    returns ``[B]``."""
    last = _at(logits, position)
    b = last.shape[0]
    a = _per_prompt(token_ids(answer, model, what="answer"), b, "answer", last.device)
    w = _per_prompt(token_ids(wrong, model, what="wrong"), b, "wrong", last.device)
    rows = torch.arange(b, device=last.device)
    diff = last[rows, a] - last[rows, w]
    return _reduce(diff, reduce)


def prob(logits: Tensor, token: Tokens, position=-1, *, model=None, reduce: str = "mean") -> Tensor:
    """Probability of ``token`` (one, or one per prompt) at ``position``, averaged over the batch."""
    last = _at(logits, position).float()
    b = last.shape[0]
    t = _per_prompt(token_ids(token, model), b, "token", last.device)
    p = last.softmax(-1)[torch.arange(b, device=last.device), t]
    return _reduce(p, reduce)


def kl(logits: Tensor, reference: Tensor, position=-1, *, reduce: str = "mean") -> Tensor:
    """``KL(reference ‖ patched)`` of the next-token distributions at ``position`` (None: every position), averaged.
    ``reference``: logits of the same shape as ``logits`` (e.g. the clean run's)."""
    if reference.shape != logits.shape:
        raise InputError(f"reference logits {tuple(reference.shape)} must match the logits {tuple(logits.shape)}; run "
                         "the reference with the same input and positions.")
    if position is None:
        p, q = reference.float(), logits.float()
    else:
        p, q = _at(reference, position).float(), _at(logits, position).float()
    logp, logq = p.log_softmax(-1), q.log_softmax(-1)
    d = (logp.exp() * (logp - logq)).sum(-1)
    return _reduce(d.reshape(d.shape[0], -1).mean(-1), reduce)


def loss(logits: Tensor, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy of ``tokens [B, pos]`` (padding excluded with ``attention_mask``)."""
    from ..model import lm_loss

    if logits.shape[:2] != tokens.shape:
        raise InputError(f"loss needs logits at every position: logits {tuple(logits.shape[:2])} vs tokens "
                         f"{tuple(tokens.shape)} (don't pass positions=... to the engine for this metric).")
    return lm_loss(logits, tokens, attention_mask)


def normalised(metric: Callable[[Tensor], Tensor] | Tensor | float, clean_value: float | Tensor,
               corrupted_value: float | Tensor):
    """``(m - corrupted) / (clean - corrupted)``: 0 = the corrupted run's value, 1 = the clean run's.

    Given a metric function, returns the normalised metric function; given a value, the normalised value."""
    clean, corrupted = float(clean_value), float(corrupted_value)
    if clean == corrupted:
        raise InputError(f"the clean and corrupted metric are equal ({clean:.4g}), so nothing can be normalised "
                         "against them; pick a corruption that changes the behaviour.")
    if callable(metric):
        def normalised_metric(logits: Tensor) -> Tensor:
            return (metric(logits) - corrupted) / (clean - corrupted)

        normalised_metric.__qualname__ = f"normalised({getattr(metric, '__qualname__', 'metric')})"
        return normalised_metric
    return (metric - corrupted) / (clean - corrupted)


normalized = normalised


def _reduce(x: Tensor, reduce: str) -> Tensor:
    if reduce == "mean":
        return x.mean()
    if reduce == "sum":
        return x.sum()
    if reduce == "none":
        return x
    raise InputError(f"reduce must be 'mean', 'sum' or 'none', got {reduce!r}.")
