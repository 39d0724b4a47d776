"""Attention internals (rotated q/k, scores, pattern) without reimplementing the model.

Transformers 5.x attention modules compute q, k, v (projected, q/k-normed, rotated, concatenated with the KV
cache) and then call a function looked up by name in ``ALL_ATTENTION_FUNCTIONS``. mechscope registers its own
name, ``"mechscope"``, with an eager attention that does exactly what HF's eager functions do, op for op and in
the same order, and fires hooks between the ops. The name is switched on only while a hook or cache asks for an
attention internal; otherwise the model keeps its own implementation (SDPA, flash) untouched.

Traps handled here (see ``shared/notes/hf-internals.md``):
- the name must also be registered in ``AttentionMaskInterface`` or the model silently gets no causal mask;
- ``"eager"`` is not a registry key, so registering it would override eager for every model in the process;
- softmax flavours differ: float32-then-cast (most families) vs native dtype (GPT-2);
- GPT-J does not use the registry: its ``_attn`` method is replaced on the instance while hooked;
- some modelling files test the implementation name (``"eager"``/``"sdpa"``) to decide whether to build a mask:
  for those, mechscope stands in for the file's ``eager_attention_forward`` under the name ``"eager"``.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .hooks import run_entries

ATTN_IMPLEMENTATION = "mechscope"
ATTN_KINDS = ("rot_q", "rot_k", "attn_scores", "pattern")


@dataclass
class AttnState:
    """Per attention module: static facts plus the hooks active on it right now."""

    softmax_native: bool
    n_rep: int
    standing_in: bool = False
    """``attention="eager"`` families: mechscope's attention currently stands in for the modelling file's eager one."""
    entries: dict[str, list] = field(default_factory=dict)
    """kind (one of ``ATTN_KINDS``) → list of hook entries, fired in order."""


_STATE: weakref.WeakKeyDictionary[nn.Module, AttnState] = weakref.WeakKeyDictionary()


def register_module(module: nn.Module, *, softmax_native: bool, n_rep: int) -> AttnState:
    state = _STATE.get(module)
    if state is None:
        state = _STATE[module] = AttnState(softmax_native=softmax_native, n_rep=n_rep)
    return state


def _fire(state: AttnState, kind: str, x: torch.Tensor) -> torch.Tensor:
    entries = state.entries.get(kind)
    return run_entries(entries, x, None)[0] if entries else x


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """HF's ``repeat_kv``: ``[b, kv, s, d]`` → ``[b, kv * n_rep, s, d]``; query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, kv, s, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


def mechscope_attention(
    module: nn.Module,
    query: torch.Tensor,  # (batch, n_heads, q_pos, d_head)
    key: torch.Tensor,  # (batch, n_kv_heads, k_pos, d_head)
    value: torch.Tensor,  # (batch, n_kv_heads, k_pos, d_head)
    attention_mask: torch.Tensor | None,  # (batch, 1, q_pos, k_pos), additive
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with hook points; bit-equal to HF's eager when hooks only read."""
    state = _STATE[module]
    query = _fire(state, "rot_q", query)
    key = _fire(state, "rot_k", key)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    key_states = _repeat_kv(key, state.n_rep)
    value_states = _repeat_kv(value, state.n_rep)

    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = scores / softcap
        scores = torch.tanh(scores)
        scores = scores * softcap
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = _fire(state, "attn_scores", scores)

    sinks = getattr(module, "sinks", None)
    if sinks is not None:  # GPT-OSS: a learned per-head sink logit joins each row's softmax, then is dropped
        sink = sinks.reshape(1, -1, 1, 1).expand(query.shape[0], -1, query.shape[-2], -1)
        combined = torch.cat([scores, sink], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        pattern = F.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
        pattern = _fire(state, "pattern", pattern)
        pattern = F.dropout(pattern, p=dropout, training=module.training).to(value_states.dtype)
        out = torch.matmul(pattern, value_states)
        return out.transpose(1, 2).contiguous(), pattern
    if state.softmax_native:
        pattern = F.softmax(scores, dim=-1).type(value.dtype)
    else:
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pattern = _fire(state, "pattern", pattern)
    pattern = F.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value_states)
    return out.transpose(1, 2).contiguous(), pattern


def gptj_attn(module: nn.Module, query, key, value, attention_mask=None):
    """GPT-J's ``GPTJAttention._attn`` with hook points; query/key arrive rotated, ``[b, h, pos, d_head]``."""
    state = _STATE[module]
    query = _fire(state, "rot_q", query)
    key = _fire(state, "rot_k", key)
    query = query.to(torch.float32)
    key = key.to(torch.float32)
    scores = torch.matmul(query, key.transpose(-1, -2))
    scores = scores / module.scale_attn
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = _fire(state, "attn_scores", scores)
    pattern = F.softmax(scores, dim=-1)
    pattern = pattern.to(value.dtype)
    pattern = _fire(state, "pattern", pattern)
    pattern = module.attn_dropout(pattern)
    return torch.matmul(pattern, value), pattern


_STOOD_IN: dict[ModuleType, tuple[Callable, int]] = {}
"""modelling module → (its own eager_attention_forward, number of attention modules standing in)."""


def stand_in_for_eager(modules: list[nn.Module], on: bool) -> None:
    """Run mechscope's attention for ``modules`` under the implementation name ``"eager"``.

    Some modelling files test the implementation *name* (MiniMax-M3 and dots3 build their sparse-attention masks
    only ``if config._attn_implementation in ("eager", "sdpa")``), so under the name ``"mechscope"`` they would
    silently drop a mask. For them the model keeps the name ``"eager"`` while hooked, and the modelling module's
    ``eager_attention_forward`` (looked up at each call) is replaced by a dispatcher that runs mechscope's attention
    for these modules only and the original for every other module; the original is restored when the last one
    stands down."""
    for m in modules:
        modeling = sys.modules[type(m).__module__]
        original, users = _STOOD_IN.get(modeling, (None, 0))
        if on:
            if users == 0:
                original = modeling.eager_attention_forward
                modeling.eager_attention_forward = _dispatcher(original)
            _STOOD_IN[modeling] = (original, users + 1)
        else:
            if users == 1:
                modeling.eager_attention_forward = original
                del _STOOD_IN[modeling]
            else:
                _STOOD_IN[modeling] = (original, users - 1)
        _STATE[m].standing_in = on


def _dispatcher(original: Callable) -> Callable:
    def eager_attention_forward(module, *args, **kwargs):
        state = _STATE.get(module)
        if state is not None and state.standing_in:
            return mechscope_attention(module, *args, **kwargs)
        return original(module, *args, **kwargs)

    return eager_attention_forward


AttentionInterface.register(ATTN_IMPLEMENTATION, mechscope_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
