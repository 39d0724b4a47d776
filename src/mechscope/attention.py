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
- GPT-J does not use the registry: its ``_attn`` method is replaced on the instance while hooked.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

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
    sinks: str | None = None
    """Attention-sink flavour (``Family.sinks``); None: ``column`` if the module has ``sinks``, else no sinks."""
    max_subtract: bool = False
    """Subtract each row's max before a native-dtype softmax, on every layer (MiMo-V2-Flash's eager)."""
    entries: dict[str, list] = field(default_factory=dict)
    """kind (one of ``ATTN_KINDS``) → list of hook entries, fired in order."""


_STATE: weakref.WeakKeyDictionary[nn.Module, AttnState] = weakref.WeakKeyDictionary()


def register_module(module: nn.Module, *, softmax_native: bool, n_rep: int, sinks: str | None = None,
                    max_subtract: bool = False) -> AttnState:
    state = _STATE.get(module)
    if state is None:
        if sinks is None and getattr(module, "sinks", None) is not None:
            sinks = "column"
        state = _STATE[module] = AttnState(softmax_native=softmax_native, n_rep=n_rep, sinks=sinks,
                                           max_subtract=max_subtract)
    return state


def _fire(state: AttnState, kind: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run the hooks on one internal; ``mask`` (the additive attention mask) lets scores show masked positions."""
    entries = state.entries.get(kind)
    return run_entries(entries, x, mask)[0] if entries else x


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
    indices: torch.Tensor | None = None,  # (batch, q_pos, top_k) key positions each query may attend to
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with hook points; bit-equal to HF's eager when hooks only read.

    ``indices`` is DeepSeek Sparse Attention's per-query top-k of keys (DeepSeek-V3.2, GLM-5): HF applies it as a mask
    only under ``eager``/``sdpa`` and passes it here otherwise, so it is turned into the same mask, the same way."""
    state = _STATE[module]
    if indices is not None and attention_mask is not None:
        index_mask = (indices.new_ones((query.shape[0], query.shape[2], key.shape[2]), dtype=torch.bool)
                      .scatter(-1, indices.long(), False).unsqueeze(1))
        attention_mask = attention_mask.masked_fill(index_mask, torch.finfo(query.dtype).min)
    query = _fire(state, "rot_q", query)
    key = _fire(state, "rot_k", key)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    key_states = _repeat_kv(key, state.n_rep)
    value_states = _repeat_kv(value, state.n_rep)
    indices = kwargs.get("indices")
    if indices is not None and attention_mask is not None:
        # Indexer-selected sparse attention (A.X-K2): HF masks the keys outside each query's top-k itself only for
        # "eager"/"sdpa" and otherwise hands the indices to the kernel; mask them exactly as its eager branch does.
        index_mask = (
            indices.new_ones((query.shape[0], query.shape[2], key_states.shape[2]), dtype=torch.bool)
            .scatter(-1, indices.long(), False)
            .unsqueeze(1)
        )
        attention_mask = attention_mask.masked_fill(index_mask, torch.finfo(query.dtype).min)

    if state.sinks == "column_fp32":  # Flint: scores and softmax stay in float32, even under autocast
        with torch.autocast(device_type=query.device.type, enabled=False):
            scores = torch.matmul(query.float(), key_states.float().transpose(2, 3)) * scaling
    else:
        scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:  # additive relative-position logits (Inkling), before the mask as in its eager
        scores = scores + position_bias
    if softcap is not None:
        scores = scores / softcap
        scores = torch.tanh(scores)
        scores = scores * softcap
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = _fire(state, "attn_scores", scores, attention_mask)

    sink_logits = kwargs.get("sinks")
    if sink_logits is not None:  # per-query sink logits computed by the model (Inkling2): an extra column, dropped
        pattern = F.softmax(torch.cat([scores, sink_logits], dim=-1).float(), dim=-1)[..., :-1].to(query.dtype)
        pattern = _fire(state, "pattern", pattern)
        pattern = F.dropout(pattern, p=dropout, training=module.training)
        out = torch.matmul(pattern, value_states)
        return out.transpose(1, 2).contiguous(), pattern
    if state.sinks == "column":  # GPT-OSS: a learned per-head sink logit joins each row's softmax, then is dropped
        sink = module.sinks.reshape(1, -1, 1, 1).expand(query.shape[0], -1, query.shape[-2], -1)
        combined = torch.cat([scores, sink], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        pattern = F.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
        pattern = _fire(state, "pattern", pattern)
        pattern = F.dropout(pattern, p=dropout, training=module.training).to(value_states.dtype)
        out = torch.matmul(pattern, value_states)
        return out.transpose(1, 2).contiguous(), pattern
    if state.sinks == "column_fp32":
        sink = module.sinks.reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        pattern = F.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1].to(value_states.dtype)
        pattern = _fire(state, "pattern", pattern)
        pattern = F.dropout(pattern, p=dropout, training=module.training)
        out = torch.matmul(pattern, value_states)
        return out.transpose(1, 2).contiguous(), pattern
    if state.sinks == "output_scale":  # Granite-SWA: the sink shrinks each head's output instead of the pattern
        lse = torch.logsumexp(scores, dim=-1)
        sink_scale = (lse - module.sinks.view(1, -1, 1)).to(torch.float32).sigmoid()
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        pattern = _fire(state, "pattern", pattern)
        pattern = F.dropout(pattern, p=dropout, training=module.training)
        out = torch.matmul(pattern, value_states)
        out = out * sink_scale.unsqueeze(-1).to(out.dtype)
        return out.transpose(1, 2).contiguous(), pattern
    if state.max_subtract:
        shifted = scores - scores.max(dim=-1, keepdim=True).values
        pattern = F.softmax(shifted, dim=-1, dtype=shifted.dtype)
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
    scores = _fire(state, "attn_scores", scores, attention_mask)
    pattern = F.softmax(scores, dim=-1)
    pattern = pattern.to(value.dtype)
    pattern = _fire(state, "pattern", pattern)
    pattern = module.attn_dropout(pattern)
    return torch.matmul(pattern, value), pattern


AttentionInterface.register(ATTN_IMPLEMENTATION, mechscope_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
