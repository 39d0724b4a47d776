"""``Model.cfg``: a summary of the architecture in TransformerLens's vocabulary, read off the HF model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from .families import Family
from .families.base import has_module


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
    """Query heads per layer."""
    n_kv_heads: int
    """Key/value heads per layer (fewer than ``n_heads`` under GQA/MQA)."""
    d_head: int
    """Width of one head."""
    d_mlp: int | None
    """MLP hidden width (None for mixture-of-experts MLPs and models without MLP hidden points)."""
    d_vocab: int
    """Unembedding output size."""
    n_ctx: int | None
    """Maximum context length (``max_position_embeddings``)."""
    normalization: Literal["LN", "RMS"]
    """``LN`` (LayerNorm, mean-centred) or ``RMS`` (RMSNorm)."""
    positional_embedding_type: Literal["standard", "rotary"]
    """``standard``: learned absolute positions added to the embedding; ``rotary``: RoPE on q and k."""
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


def build_config(hf_model: nn.Module, fam: Family, blocks: nn.ModuleList) -> ModelConfig:
    top = hf_model.config
    c = top.get_text_config()  # multimodal wrappers (Gemma3ForConditionalGeneration) keep sizes in text_config
    attn_layers = tuple(l for l, b in enumerate(blocks) if fam.has_group(c, b, l, "attn"))
    attn = blocks[attn_layers[0]].get_submodule(fam.attn) if attn_layers else None
    n_heads = getattr(attn, "num_heads", None) or c.num_attention_heads  # dots3's config refuses a global head count
    d_model = c.hidden_size
    d_head = (getattr(attn, "head_dim", None) or getattr(attn, "qk_head_dim", None) or getattr(c, "head_dim", None)
              or d_model // n_heads)  # qk_head_dim: multi-head latent attention (MLA)
    groups = getattr(attn, "num_key_value_groups", None)  # set by every GQA-capable HF attention
    n_kv = 1 if getattr(c, "multi_query", False) else n_heads // groups if groups else n_heads
    down = next((b.get_submodule(fam.mlp_down) for b in blocks if has_module(b, fam.mlp_down)), None)
    d_mlp = linear_in_out(down)[0] if down is not None else None
    unembed = hf_model.get_submodule(fam.unembed)
    n_ctx = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
    act = getattr(c, "hidden_act", None) or getattr(c, "activation_function", None) or getattr(c, "hidden_activation", None)
    return ModelConfig(
        family=fam.name,
        model_type=top.model_type,
        n_layers=len(blocks),
        attn_layers=attn_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=d_mlp,
        d_vocab=unembed.weight.shape[0],
        n_ctx=n_ctx,
        normalization=fam.norm_type,
        positional_embedding_type="standard" if fam.pos_embed else "rotary",
        parallel_attn_mlp=fam.is_parallel(c),
        gated_mlp=fam.gated and fam.mlp_down is not None,
        post_norms="ln1_post" in fam.norms,
        act_fn=act,
        attn_softcap=getattr(c, "attn_logit_softcapping", None),
        tied_embeddings=unembed.weight is hf_model.get_submodule(fam.embed).weight,
        attn_implementation=top._attn_implementation or "eager",
        dtype=unembed.weight.dtype,
        device=unembed.weight.device,
    )
