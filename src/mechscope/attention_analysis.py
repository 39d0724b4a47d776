"""Statistics of attention patterns, per head: entropy, attention to the first token, and the batched pass that
reduces every layer's ``hook_pattern`` to per-head sums as the model runs.

Why a reducing pass rather than ``run_with_cache``: a full pattern cache is ``n_layers × batch × head × pos²``
floats (SmolLM2-135M at 8 × 101 tokens: 88 MB; at 8 × 1024: 9 GB), while every statistic here is a sum over
queries. :func:`pattern_sums` hooks each attention block's pattern, reduces it to ``(head, ...)`` sums at once and
drops it, batch by batch, and stops the forward after the last attention block (the unembedding is never run).
Every function also takes an existing ``cache`` holding the patterns instead.

Conventions, shared by :mod:`mechscope.detectors`:
- patterns are ``(batch, head, q_pos, k_pos)`` (``blocks.{l}.attn.hook_pattern``), reduced in float32;
- padded positions (``attention_mask == 0``) are never counted as queries;
- blocks without softmax attention (hybrids: not in ``model.cfg.attn_layers``) get NaN rows; so do head slots a
  block lacks when blocks differ in head count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import InputError, InputTypeError, type_name
from .tokens import Batch


class Chunk(NamedTuple):
    """One batch of rows as a statistic sees it."""

    tokens: Tensor
    """(batch, pos) token ids of these rows."""
    valid: Tensor
    """(batch, pos) bool: real tokens (False at padding)."""
    rows: slice
    """Which rows of the whole input these are."""


Stat = Callable[[Tensor, Chunk], Tensor]
"""``stat(pattern (batch, head, q_pos, k_pos) float32, chunk) -> (head, ...)``: a sum over the chunk's rows."""


def as_batch(model, input) -> Batch:
    """Text, a list of texts or ``(batch, pos)`` token ids as a :class:`~mechscope.tokens.Batch` (tokens + mask)."""
    if isinstance(input, Batch):
        return input
    if isinstance(input, Tensor) and input.ndim == 1:
        input = input[None]
    return model._batch(input, None, None)


def valid_mask(batch: Batch) -> Tensor:
    """(batch, pos) bool: True at real tokens, False at padding."""
    if batch.attention_mask is None:
        return torch.ones(batch.tokens.shape, dtype=torch.bool, device=batch.tokens.device)
    return batch.attention_mask.bool()


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputTypeError(f"batch_size must be a positive int, got {type_name(batch_size)}.")
    return batch_size


def _pattern_of(cache, layer: int) -> Tensor:
    p = cache["pattern", layer]
    if not getattr(cache, "has_batch_dim", True) or p.ndim == 3:
        p = p[None]  # a cache without its batch axis (remove_batch_dim=True, as TransformerLens's detect_head uses)
    return p


def pattern_sums(model, input, stats: dict[str, Stat], *, cache=None, batch_size: int = 8) -> dict[str, Tensor]:
    """Run each statistic on every attention block's pattern and sum it over all rows of ``input``.

    Returns ``{name: (n_layers, n_heads, ...)}`` float32 on the CPU; NaN rows for blocks without attention.
    ``input`` is text, a list of texts or ``(batch, pos)`` token ids (a :class:`Batch` keeps its mask); ``cache``:
    patterns already recorded for exactly that input (then the model is not run)."""
    batch = as_batch(model, input)
    valid = valid_mask(batch)
    acc: dict[str, dict[int, Tensor]] = {name: {} for name in stats}

    def reduce(layer: int, pattern: Tensor, rows: slice) -> None:
        chunk = Chunk(batch.tokens[rows].to(pattern.device), valid[rows].to(pattern.device), rows)
        p = pattern.float()
        for name, stat in stats.items():
            s = stat(p, chunk).float()
            acc[name][layer] = s if layer not in acc[name] else acc[name][layer] + s

    layers = list(model.cfg.attn_layers)
    if cache is not None:
        for layer in layers:
            p = _pattern_of(cache, layer)
            if p.shape[0] != batch.tokens.shape[0] or p.shape[-1] != batch.tokens.shape[1]:
                raise InputError(f"the cache's patterns are {tuple(p.shape)} (batch, head, q_pos, k_pos) but the input "
                                 f"is {tuple(batch.tokens.shape)} (batch, pos); pass the tokens the cache was run on.")
            reduce(layer, p, slice(0, p.shape[0]))
    elif layers:
        step = _check_batch_size(batch_size)

        def hook_for(layer: int, rows: slice):
            def hook(pattern, hook):
                reduce(layer, pattern.detach(), rows)

            return hook

        for start in range(0, batch.tokens.shape[0], step):
            rows = slice(start, start + step)
            mask = batch.attention_mask[rows] if batch.attention_mask is not None else None
            hooks = [(f"blocks.{layer}.attn.hook_pattern", hook_for(layer, rows)) for layer in layers]
            with torch.no_grad():
                model.run_with_hooks(Batch(batch.tokens[rows], mask), fwd_hooks=hooks, stop_at_layer=layers[-1] + 1)
    return {name: _assemble(model.cfg, per_layer) for name, per_layer in acc.items()}


def _assemble(cfg, per_layer: dict[int, Tensor]) -> Tensor:
    if not per_layer:
        return torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    rest = next(iter(per_layer.values())).shape[1:]
    n_heads = max(cfg.n_heads, *(s.shape[0] for s in per_layer.values()))
    out = torch.full((cfg.n_layers, n_heads, *rest), float("nan"))
    for layer, s in per_layer.items():
        out[layer, : s.shape[0]] = s.cpu()
    return out


def first_positions(valid: Tensor) -> Tensor:
    """(batch,) index of each row's first real token (BOS when the tokenizer adds one; later under left padding)."""
    return valid.int().argmax(-1)


def entropy_stat(per_position: bool) -> Stat:
    """Summed attention entropy (nats) over real queries: ``(head,)``, or ``(head, q_pos)`` with ``per_position``."""
    def stat(p: Tensor, chunk: Chunk) -> Tensor:
        h = torch.special.entr(p).sum(-1) * chunk.valid[:, None]  # (batch, head, q): nats
        return h.sum(0) if per_position else h.sum((0, 2))

    return stat


def bos_stat(per_position: bool) -> Stat:
    """Summed attention on each row's first real token, over real queries but that one: ``(head,)`` or
    ``(head, q_pos)``."""
    def stat(p: Tensor, chunk: Chunk) -> Tensor:
        first = first_positions(chunk.valid)  # (batch,)
        to_first = p[torch.arange(p.shape[0], device=p.device), :, :, first]  # (batch, head, q)
        q = torch.arange(p.shape[2], device=p.device)
        counted = chunk.valid & (q[None] != first[:, None])  # the first token attends only to itself: left out
        a = to_first * counted[:, None]
        return a.sum(0) if per_position else a.sum((0, 2))

    return stat


def mean_over(sums: Tensor, counts: Tensor, per_position: bool) -> Tensor:
    """``sums / counts``; per position, NaN where no row counted a query."""
    if per_position:  # counts (pos,): rows with a counted query at each position
        return sums / counts.clamp(min=1) * torch.where(counts > 0, 1.0, float("nan"))
    if counts == 0:
        raise InputError("no query position was counted (every row is a single token or padding); pass longer input.")
    return sums / counts


def attention_entropy(model, input, *, cache=None, per_position: bool = False, batch_size: int = 8) -> Tensor:
    """Entropy (nats) of each head's attention distribution, averaged over queries.

    ``(n_layers, n_heads)``, or ``(n_layers, n_heads, pos)`` averaged over the batch with ``per_position``. Low
    entropy: the head attends to few positions (a previous-token or BOS-sink head reads ~0); high: it spreads out
    (query ``q`` can reach at most ``ln(q + 1)``). Padding queries are not counted; the first query, which can only
    attend to itself, counts as 0."""
    batch = as_batch(model, input)
    valid = valid_mask(batch)
    sums = pattern_sums(model, batch, {"h": entropy_stat(per_position)}, cache=cache, batch_size=batch_size)["h"]
    return mean_over(sums, valid.sum(0) if per_position else valid.sum(), per_position)


def bos_attention(model, input, *, cache=None, per_position: bool = False, batch_size: int = 8) -> Tensor:
    """Mean attention each head puts on the first token (BOS when there is one), ``(n_layers, n_heads)`` or
    ``(n_layers, n_heads, pos)`` with ``per_position``.

    Heads with nothing to do park their attention on the first token ("attention sinks", Xiao et al. 2023), so a
    high value often marks a head that is idle on this input. The first query itself is left out (it can only attend
    to itself); under left padding, each row's first real token is used."""
    batch = as_batch(model, input)
    valid = valid_mask(batch)
    counted = valid.clone()
    counted[torch.arange(valid.shape[0]), first_positions(valid)] = False
    sums = pattern_sums(model, batch, {"b": bos_stat(per_position)}, cache=cache, batch_size=batch_size)["b"]
    return mean_over(sums, counted.sum(0) if per_position else counted.sum(), per_position)
