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
- families that do not use the registry (GPT-J, GPT-Neo, CodeGen, ...) get their pattern-computing method
  replaced on the instance while hooked (``METHODS``), by a copy that does the same ops and fires the hooks.
- some modelling files test the implementation name (``"eager"``/``"sdpa"``) to decide whether to build a mask:
  for those, mechscope stands in for the file's ``eager_attention_forward`` under the name ``"eager"``.
"""

from __future__ import annotations

import math
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
    sinks: str | None = None
    """Attention-sink flavour (``Family.sinks``); None: ``column`` if the module has ``sinks``, else no sinks."""
    max_subtract: bool = False
    """Subtract each row's max before a native-dtype softmax, on every layer (MiMo-V2-Flash's eager)."""
    standing_in: bool = False
    """``attention="eager"`` families: mechscope's attention currently stands in for the modelling file's eager one."""
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

    ``indices`` is a sparse-attention indexer's per-query top-k of keys (DeepSeek-V3.2, GLM-5, A.X-K2): HF applies it as a mask
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


def _softmax_dropout_values(state: AttnState, module: nn.Module, scores: torch.Tensor, value: torch.Tensor):
    """The tail GPT-J's, GPT-Neo's and CodeGen's ``_attn`` share: softmax in the scores' dtype (float32), cast to the
    values' dtype, ``hook_pattern``, the module's dropout, then the pattern-weighted sum of values."""
    pattern = F.softmax(scores, dim=-1).to(value.dtype)
    pattern = _fire(state, "pattern", pattern)
    pattern = module.attn_dropout(pattern)
    return torch.matmul(pattern, value), pattern


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
    return _softmax_dropout_values(state, module, scores, value)


def gpt_neo_attn(module: nn.Module, query, key, value, attention_mask=None):
    """GPT-Neo's ``GPTNeoSelfAttention._attn`` with hook points: no 1/sqrt(d_head) scaling; the causal (and, in local
    layers, sliding-window) mask is the module's ``bias`` buffer, applied with ``where`` before the additive mask."""
    state = _STATE[module]
    query = query.to(torch.float32)
    key = key.to(torch.float32)
    scores = torch.matmul(query, key.transpose(-1, -2))
    query_length, key_length = query.size(-2), key.size(-2)
    causal_mask = module.bias[:, :, key_length - query_length : key_length, :key_length]
    mask_value = torch.finfo(scores.dtype).min
    mask_value = torch.tensor(mask_value, dtype=scores.dtype, device=scores.device)
    scores = torch.where(causal_mask, scores, mask_value)
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = _fire(state, "attn_scores", scores)
    return _softmax_dropout_values(state, module, scores, value)


def codegen_attn(module: nn.Module, query, key, value, attention_mask=None):
    """CodeGen's ``CodeGenAttention._attn`` with hook points: the mask is added *before* dividing by sqrt(d_head)."""
    state = _STATE[module]
    query = _fire(state, "rot_q", query)
    key = _fire(state, "rot_k", key)
    query = query.to(torch.float32)
    key = key.to(torch.float32)
    scores = torch.matmul(query, key.transpose(-1, -2))
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = scores / module.scale_attn
    scores = _fire(state, "attn_scores", scores)
    return _softmax_dropout_values(state, module, scores, value)


def neox_japanese_attn(module: nn.Module, query, key, value, attention_mask=None):
    """GPT-NeoX-Japanese's ``_attn`` with hook points: scaled scores from one ``baddbmm``, softmax in the native
    dtype, dropout before the cast to the value dtype."""
    state = _STATE[module]
    query = _fire(state, "rot_q", query)
    key = _fire(state, "rot_k", key)
    batch_size, num_attention_heads, query_length, attn_head_size = query.size()
    key_length = key.size(-2)
    query = query.reshape(batch_size * num_attention_heads, query_length, attn_head_size)
    key = key.reshape(batch_size * num_attention_heads, key_length, attn_head_size)
    zeros = torch.zeros(batch_size * num_attention_heads, query_length, key_length, dtype=query.dtype,
                        device=key.device)
    scores = torch.baddbmm(zeros, query, key.transpose(1, 2), beta=1.0, alpha=1.0 / module.norm_factor)
    scores = scores.view(batch_size, num_attention_heads, query_length, -1)
    if attention_mask is not None:
        scores = scores + attention_mask
    scores = _fire(state, "attn_scores", scores)
    pattern = F.softmax(scores, dim=-1)
    pattern = _fire(state, "pattern", pattern)
    pattern = module.attention_dropout(pattern)
    pattern = pattern.to(value.dtype)
    return torch.matmul(pattern, value), pattern


def openai_attn(module: nn.Module, q, k, v, attention_mask=None, output_attentions=False):
    """OpenAI GPT's ``Attention._attn`` with hook points; ``k`` arrives transposed, ``[b, h, d_head, pos]``. The
    causal mask is ``w * b - 1e4 * (1 - b)`` from the ``bias`` buffer, so masked scores are -1e4, not finfo.min."""
    state = _STATE[module]
    w = torch.matmul(q, k)
    if module.scale:
        w = w / math.sqrt(v.size(-1))
    b = module.bias[:, :, : w.size(-2), : w.size(-1)]
    w = w * b + -1e4 * (1 - b)
    allowed = b.bool()  # for hook_attn_scores: masked positions read -inf (the model itself uses -1e4 there)
    if attention_mask is not None:
        w = w + attention_mask
        allowed = allowed & (attention_mask == 0)
    w = _fire(state, "attn_scores", w, allowed)
    w = F.softmax(w, dim=-1)
    w = _fire(state, "pattern", w)
    p = module.attn_dropout(w)
    outputs = [torch.matmul(p, v)]
    if output_attentions:
        outputs.append(p)
    return outputs


def bloom_forward(module: nn.Module, hidden_states, residual, alibi, attention_mask, layer_past=None,
                  use_cache=False, output_attentions=False, **kwargs):
    """``BloomAttention.forward`` with hook points (the ALiBi scores are computed inline, in one ``baddbmm``):
    scores = alibi + q.k / sqrt(d_head), plus the mask; softmax in float32. Like HF, it returns the attention
    output *plus the residual*; mechscope's ``hook_attn_out`` reads the ``dense`` projection instead."""
    from transformers.models.bloom.modeling_bloom import dropout_add

    state = _STATE[module]
    batch_size, q_length, _ = hidden_states.shape
    fused_qkv = module.query_key_value(hidden_states)
    query_layer, key_layer, value_layer = module._reshape(fused_qkv)
    if layer_past is not None:
        key_layer, value_layer = layer_past.update(key_layer, value_layer, module.layer_idx)
    query_layer = query_layer.reshape(batch_size * module.num_heads, -1, module.head_dim)
    key_layer = key_layer.reshape(batch_size * module.num_heads, -1, module.head_dim).transpose(-1, -2)
    value_layer = value_layer.reshape(batch_size * module.num_heads, -1, module.head_dim)
    attention_scores = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=module.beta,
                                     alpha=module.inv_norm_factor)
    attn_weights = attention_scores.view(batch_size, module.num_heads, q_length, -1)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = _fire(state, "attn_scores", attn_weights)
    attention_probs = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_layer.dtype)
    attention_probs = _fire(state, "pattern", attention_probs)
    attention_probs = module.attention_dropout(attention_probs)
    attention_probs_reshaped = attention_probs.reshape(batch_size * module.num_heads, q_length, -1)
    context_layer = torch.bmm(attention_probs_reshaped, value_layer)
    context_layer = module._merge_heads(context_layer)
    if module.pretraining_tp > 1 and module.slow_but_exact:
        slices = module.hidden_size / module.pretraining_tp
        output_tensor = torch.zeros_like(context_layer)
        for i in range(module.pretraining_tp):
            output_tensor = output_tensor + F.linear(
                context_layer[:, :, int(i * slices) : int((i + 1) * slices)],
                module.dense.weight[:, int(i * slices) : int((i + 1) * slices)],
            )
    else:
        output_tensor = module.dense(context_layer)
    output_tensor = dropout_add(output_tensor, residual, module.hidden_dropout, module.training)
    return output_tensor, attention_probs


def mpt_forward(module: nn.Module, hidden_states, position_bias, past_key_values=None, attention_mask=None,
                **kwargs):
    """``MptAttention.forward`` with hook points: scores = q.k * softmax_scale + ALiBi bias, then the boolean mask
    fills finfo.min; softmax in float32."""
    state = _STATE[module]
    batch_size, seq_length = hidden_states.shape[:2]
    mixed_qkv = module.Wqkv(hidden_states)
    if module.clip_qkv:
        mixed_qkv = mixed_qkv.clamp(min=-module.clip_qkv, max=module.clip_qkv)
    query_states, key_states, value_states = mixed_qkv.chunk(3, dim=2)
    query_states = query_states.reshape(batch_size, seq_length, module.n_heads, module.head_dim).transpose(1, 2)
    key_states = key_states.reshape(batch_size, seq_length, module.n_heads, module.head_dim).transpose(1, 2)
    value_states = value_states.reshape(batch_size, seq_length, module.n_heads, module.head_dim).transpose(1, 2)
    if past_key_values is not None:
        key_states, value_states = past_key_values.update(key_states, value_states, module.layer_idx)
    attention_scores = torch.matmul(query_states, key_states.transpose(-1, -2)) * module.softmax_scale
    query_length = seq_length if past_key_values is None else seq_length + past_key_values.get_seq_length()
    if position_bias is not None:
        if len(position_bias.shape) != 3:
            raise ValueError(f"Expecting position_bias shape to be 3 dimensions, got {len(position_bias.shape)}")
        key_length = key_states.shape[-2]
        position_bias_query_index = max(0, position_bias.size(1) - query_length)
        position_bias_key_index = max(0, position_bias.size(2) - key_length)
        position_bias = position_bias[:, position_bias_query_index:, position_bias_key_index:]
        attention_scores = attention_scores + position_bias
    if attention_mask is not None:
        attention_scores = attention_scores.masked_fill(attention_mask, torch.finfo(query_states.dtype).min)
    attention_scores = _fire(state, "attn_scores", attention_scores)
    attn_weights = F.softmax(attention_scores.float(), dim=-1).to(value_states.dtype)
    attn_weights = _fire(state, "pattern", attn_weights)
    attn_weights = F.dropout(attn_weights, p=module.attn_dropout_p, training=module.training)
    context_states = torch.matmul(attn_weights, value_states)
    context_states = context_states.permute(0, 2, 1, 3).contiguous().view(batch_size, seq_length, -1)
    attn_output = module.out_proj(context_states)
    return attn_output, attn_weights


def xglm_forward(module: nn.Module, hidden_states, key_value_states=None, past_key_values=None,
                 attention_mask=None, **kwargs):
    """``XGLMAttention.forward`` (self-attention path) with hook points: q is scaled before q.k, the mask is added
    and clamped at finfo.min, softmax in the native dtype (float32 for float16)."""
    if key_value_states is not None:  # cross-attention is not a self-attention hook point: run HF's own code
        return type(module).forward(module, hidden_states, key_value_states, past_key_values, attention_mask, **kwargs)
    from transformers.cache_utils import EncoderDecoderCache

    state = _STATE[module]
    bsz, tgt_len, _ = hidden_states.size()
    src_len = tgt_len
    query_states = module.q_proj(hidden_states) * module.scaling
    curr_past_key_values = past_key_values
    if isinstance(past_key_values, EncoderDecoderCache):
        curr_past_key_values = past_key_values.self_attention_cache
    key_states = module.k_proj(hidden_states)
    value_states = module.v_proj(hidden_states)
    key_states = key_states.view(bsz, src_len, -1, module.head_dim).transpose(1, 2)
    value_states = value_states.view(bsz, src_len, -1, module.head_dim).transpose(1, 2)
    if past_key_values is not None:
        key_states, value_states = curr_past_key_values.update(key_states, value_states, module.layer_idx)
    proj_shape = (bsz * module.num_heads, -1, module.head_dim)
    query_states = query_states.view(bsz, tgt_len, module.num_heads, module.head_dim).transpose(1, 2)
    query_states = query_states.reshape(*proj_shape)
    key_states = key_states.reshape(*proj_shape)
    value_states = value_states.reshape(*proj_shape)
    src_len = key_states.size(1)
    attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
    attn_weights = attn_weights.view(bsz, module.num_heads, tgt_len, src_len)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
        attn_weights = torch.max(
            attn_weights, torch.full((), torch.finfo(attn_weights.dtype).min, device=attn_weights.device)
        )
    attn_weights = _fire(state, "attn_scores", attn_weights)
    attn_weights = attn_weights.reshape(bsz * module.num_heads, tgt_len, src_len)
    if attn_weights.dtype == torch.float16:
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(torch.float16)
    else:
        attn_weights = F.softmax(attn_weights, dim=-1)
    attn_weights_reshaped = _fire(state, "pattern", attn_weights.view(bsz, module.num_heads, tgt_len, src_len))
    attn_weights = attn_weights_reshaped.reshape(bsz * module.num_heads, tgt_len, src_len)
    attn_probs = F.dropout(attn_weights, p=module.dropout, training=module.training)
    attn_output = torch.bmm(attn_probs, value_states)
    attn_output = attn_output.view(bsz, module.num_heads, tgt_len, module.head_dim)
    attn_output = attn_output.transpose(1, 2)
    attn_output = attn_output.reshape(bsz, tgt_len, module.embed_dim)
    attn_output = module.out_proj(attn_output)
    return attn_output, attn_weights_reshaped


def falcon_forward(module: nn.Module, hidden_states, alibi, attention_mask, position_ids=None, layer_past=None,
                   use_cache=False, output_attentions=False, position_embeddings=None, **kwargs):
    """``FalconAttention.forward`` (eager paths) with hook points. Rotary: scores = q.k / sqrt(d_head) (in place, as
    HF) + mask, softmax in the native dtype, no dropout. ALiBi: (q.k, upcast to float32 for half dtypes, + alibi)
    * 1/sqrt(d_head) + mask, softmax in the native dtype, dropout."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    state = _STATE[module]
    fused_qkv = module.query_key_value(hidden_states)
    num_kv_heads = module.num_heads if module.new_decoder_architecture else module.num_kv_heads
    (query_layer, key_layer, value_layer) = module._split_heads(fused_qkv)
    batch_size, query_length, _, _ = query_layer.shape
    query_layer = query_layer.transpose(1, 2).reshape(batch_size, module.num_heads, query_length, module.head_dim)
    key_layer = key_layer.transpose(1, 2).reshape(batch_size, num_kv_heads, query_length, module.head_dim)
    value_layer = value_layer.transpose(1, 2).reshape(batch_size, num_kv_heads, query_length, module.head_dim)
    if alibi is None:
        cos, sin = position_embeddings
        query_layer, key_layer = apply_rotary_pos_emb(query_layer, key_layer, cos, sin)
    if layer_past is not None:
        key_layer, value_layer = layer_past.update(key_layer, value_layer, module.layer_idx)
    query_layer = _fire(state, "rot_q", query_layer)
    key_layer = _fire(state, "rot_k", key_layer)
    kv_length = key_layer.shape[-2]
    if alibi is None:
        attention_scores = query_layer @ key_layer.transpose(-1, -2)
        attention_scores /= math.sqrt(module.head_dim)
        attention_scores = _fire(state, "attn_scores", attention_scores + attention_mask)
        attention_scores = F.softmax(attention_scores, dim=-1, dtype=hidden_states.dtype)
        attention_scores = _fire(state, "pattern", attention_scores)
        attn_output = attention_scores @ value_layer
        attn_output = attn_output.view(batch_size, module.num_heads, query_length, module.head_dim)
        attn_output = attn_output.permute(0, 2, 1, 3)
        attn_output = attn_output.reshape(batch_size, query_length, module.num_heads * module.head_dim)
        attn_output = module.dense(attn_output)
        return attn_output, attention_scores
    matmul_result = query_layer @ key_layer.transpose(-1, -2)
    attention_scores = matmul_result.view(batch_size, module.num_heads, query_length, kv_length)
    input_dtype = attention_scores.dtype
    if input_dtype == torch.float16 or input_dtype == torch.bfloat16:
        attention_scores = attention_scores.to(torch.float32)
    attention_logits = attention_scores + alibi.view(batch_size, module.num_heads, 1, -1)
    attention_logits *= module.inv_norm_factor
    attention_logits = _fire(state, "attn_scores", attention_logits + attention_mask)
    attention_probs = F.softmax(attention_logits, dim=-1, dtype=hidden_states.dtype)
    attention_probs = _fire(state, "pattern", attention_probs)
    attention_probs = module.attention_dropout(attention_probs)
    attention_probs_reshaped = attention_probs.view(batch_size, module.num_heads, query_length, kv_length)
    attn_output = (attention_probs_reshaped @ value_layer).flatten(0, 1)
    attn_output = module._merge_heads(attn_output)
    attn_output = module.dense(attn_output)
    return attn_output, attention_probs


METHODS = {
    "gptj": ("_attn", gptj_attn),
    "gpt_neo": ("_attn", gpt_neo_attn),
    "codegen": ("_attn", codegen_attn),
    "gpt_neox_japanese": ("_attn", neox_japanese_attn),
    "openai": ("_attn", openai_attn),
    "bloom": ("forward", bloom_forward),
    "mpt": ("forward", mpt_forward),
    "xglm": ("forward", xglm_forward),
    "falcon": ("forward", falcon_forward),
}
"""``Family.attention`` → (method of the attention module that computes the pattern, its hooked replacement).
While an attention internal is hooked the replacement is bound on the instance (``module.<method>``), shadowing
the class's method; removing the instance attribute restores HF's code."""


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
