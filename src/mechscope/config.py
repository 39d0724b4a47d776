"""``Model.cfg``: a summary of the architecture in TransformerLens's vocabulary, read off the HF model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from .families import Family
from .devices import execution_device
from .families.base import has_module, resolve


@dataclass(frozen=True)
class ModelConfig:
    """Architecture summary. Read-only: it describes the wrapped HF model, it does not configure it."""

    family: str
    """Adapter family (``llama``, ``gpt2``, ...); see ``mechscope.families``."""
    model_type: str
    """HF ``config.model_type``."""
    n_layers: int
    """Number of decoder blocks."""
    attn_layers: tuple[int, ...]
    """Blocks with attention points (every block, except in hybrids whose other blocks mix with a state-space model,
    linear attention or a convolution: those have ``hook_mixer_out`` instead)."""
    d_model: int
    """Residual stream width."""
    n_heads: int
    """Query heads per layer (block 0's where layer kinds differ in head geometry, as in Inkling)."""
    n_kv_heads: int
    """Key/value heads per layer (fewer than ``n_heads`` under GQA/MQA)."""
    d_head: int
    """Width of one query/key head (Multi-head Latent Attention: non-rotary plus rotary part)."""
    d_head_v: int
    """Width of one value head, i.e. of ``hook_v``/``hook_z`` per head: ``d_head`` except in Multi-head Latent
    Attention (DeepSeek-V2/V3, MiniCPM3) and a few families with wider values (MiMo-V2-Flash)."""
    d_mlp: int | None
    """MLP hidden width of the dense blocks (None when every block is mixture-of-experts)."""
    n_experts: int | None
    """Routed experts per mixture-of-experts block (TransformerLens's ``num_experts``); None for dense models."""
    experts_per_token: int | None
    """Experts chosen per token (top-k): the last axis of ``hook_expert_indices``/``hook_expert_weights``."""
    d_vocab: int
    """Unembedding output size."""
    n_ctx: int | None
    """Maximum context length (``max_position_embeddings``)."""
    normalization: Literal["LN", "RMS"]
    """``LN`` (LayerNorm, mean-centred) or ``RMS`` (RMSNorm)."""
    positional_embedding_type: Literal["standard", "rotary", "alibi", "sinusoidal", "none"]
    """``standard``: learned absolute positions added to the embedding; ``rotary``: RoPE on q and k; ``alibi``:
    linear per-head biases on the scores; ``sinusoidal``: fixed sinusoids added to the embedding; ``none``: no
    positional encoding in attention (hybrids whose recurrent blocks carry position, e.g. Jamba)."""
    parallel_attn_mlp: bool
    """Attention and MLP read the same residual (GPT-NeoX/Pythia, GPT-J, Phi, Cohere)."""
    gated_mlp: bool
    """``act(gate(x)) * up(x)`` MLPs (SwiGLU/GeGLU)."""
    post_norms: bool
    """Norms after attention/MLP outputs, before they enter the residual (Gemma2/3, OLMo2)."""
    act_fn: str | None
    """Activation function name from the HF config."""
    attn_softcap: float | None
    """Attention-logit soft-cap (Gemma2)."""
    tied_embeddings: bool
    """Whether W_U is W_E transposed."""
    attn_implementation: str
    """Attention implementation the model was loaded with (used whenever no attention internal is hooked)."""
    dtype: torch.dtype
    device: torch.device

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dtype"], d["device"] = str(self.dtype), str(self.device)
        return d


def linear_in_out(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` or GPT-2's ``Conv1D`` (weight stored ``[in, out]``)."""
    w = module.weight
    if type(module).__name__ == "Conv1D":
        return w.shape[0], w.shape[1]
    return w.shape[1], w.shape[0]


N_EXPERTS_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_total")
"""HF config attributes that hold the number of routed experts, by family."""
TOP_K_ATTRS = ("num_experts_per_tok", "moe_topk", "moe_k", "moe_top_k", "top_k", "num_selected_experts")
"""HF config attributes that hold the number of experts chosen per token."""


SUB_CONFIGS = ("ffn_config",)
"""Nested configs also searched for those attributes (DBRX keeps its MoE settings in ``ffn_config``)."""


def _first_attr(c, names: tuple[str, ...]) -> int | None:
    configs = [c, *(getattr(c, s) for s in SUB_CONFIGS if getattr(c, s, None) is not None)]
    for n, cc in ((n, cc) for cc in configs for n in names):
        v = getattr(cc, n, None)
        if isinstance(v, (list, tuple)):  # per-layer values (HunYuan): the first
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def build_config(hf_model: nn.Module, fam: Family, blocks: nn.ModuleList) -> ModelConfig:
    c = hf_model.config.get_text_config()  # multimodal wrappers (Gemma3ForConditionalGeneration): text_config
    per_layer = [fam.at_layer(c, l).for_block(b) for l, b in enumerate(blocks)]
    attn_layers = tuple(l for l, b in enumerate(blocks) if per_layer[l].has_group(c, b, l, "attn"))
    attn = blocks[attn_layers[0]].get_submodule(per_layer[attn_layers[0]].attn) if attn_layers else None
    n_heads = getattr(attn, "num_heads", None) or c.num_attention_heads  # the first attention block's (dots3's
    d_model = c.hidden_size                                               # config refuses a global head count)
    d_head = (getattr(attn, "qk_head_dim", None) or getattr(attn, "head_dim", None) or getattr(c, "head_dim", None)
              or d_model // n_heads)
    first = per_layer[attn_layers[0]] if attn_layers else None
    o_in = linear_in_out(resolve(blocks[attn_layers[0]], first.o))[0] if attn_layers else None
    groups = getattr(attn, "num_key_value_groups", None)  # set by every GQA-capable HF attention
    n_kv = (n_heads // groups if groups else getattr(attn, "num_kv_heads", None)  # Falcon
            or (1 if getattr(c, "multi_query", False) else n_heads))
    dense = next((b for b in blocks if has_module(b, fam.mlp_down)), None)
    d_mlp = linear_in_out(resolve(dense, fam.mlp_down))[0] if dense is not None else None
    moe = fam.moe
    unembed = hf_model.get_submodule(fam.unembed)
    n_ctx = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
    act = getattr(c, "hidden_act", None) or getattr(c, "activation_function", None) or getattr(c, "hidden_activation", None)
    return ModelConfig(
        family=fam.name,
        model_type=hf_model.config.model_type,
        n_layers=len(blocks),
        attn_layers=attn_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_head_v=getattr(attn, "v_head_dim", None) or (o_in // n_heads if o_in else d_head),
        d_mlp=d_mlp,
        n_experts=_first_attr(c, N_EXPERTS_ATTRS) if moe else None,
        experts_per_token=_first_attr(c, TOP_K_ATTRS) if moe else None,
        d_vocab=unembed.weight.shape[0],
        n_ctx=n_ctx,
        normalization=fam.norm_type,
        positional_embedding_type=fam.positions or ("standard" if fam.pos_embed else "rotary" if fam.rotary else "none"),
        parallel_attn_mlp=fam.is_parallel(c),
        gated_mlp=fam.gated and dense is not None,
        post_norms=any(has_module(b, f.norms.get("ln1_post")) for b, f in zip(blocks, per_layer)),
        act_fn=act,
        attn_softcap=getattr(c, "attn_logit_softcapping", None),
        tied_embeddings=unembed.weight is hf_model.get_submodule(fam.embed).weight,
        attn_implementation=hf_model.config._attn_implementation or "eager",
        dtype=unembed.weight.dtype,
        device=execution_device(unembed) or unembed.weight.device,  # not meta where accelerate offloaded it
    )
