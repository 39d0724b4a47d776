"""The ``Family`` adapter entry and the relatives most families are a delta from (``LLAMA``, ``GPT2``).

A family is described as data, never as code: module paths relative to the model and to a block, how
q/k/v are laid out in fused projections, which norms exist, and how attention is computed. Most families
are a one-line delta from ``LLAMA`` (``dataclasses.replace``), the same way transformers' modular files
describe a new model as the delta from a known one.

Adding a family: find a close relative, ``replace`` what differs, add it to the ``FAMILIES`` tuple of the
table module it belongs to (``core``, ``classic``, ``modern``, ``frontier``, ``moe``, ``hybrid``), and add a tiny config to the
matching ``tests/family_configs/`` module so the exactness suite covers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


QKVLayout = Literal["separate", "split", "interleaved"]
"""How q, k and v come out of the projection(s).

- ``separate``: three modules (``q``, ``k``, ``v``), each ``[..., heads * d_head]``.
- ``split``: one fused module ``qkv`` whose output is ``[q | k | v]`` along the last axis
  (GPT-2 ``c_attn``, Phi-3 ``qkv_proj``, GPTBigCode MQA).
- ``interleaved``: one fused module whose output is ``[groups, 3, heads / groups * d_head]`` per position, the
  three chunks in ``Family.qkv_order``: one group per head in GPT-NeoX and Persimmon ``query_key_value``
  (``[heads, 3, d_head]``), four groups ordered q, v, k in CodeGen's ``qkv_proj``.
"""


@dataclass(frozen=True)
class Family:
    """Where the canonical hook points live in one HuggingFace architecture family.

    Paths with a leading component such as ``model.`` are relative to the ``*ForCausalLM`` module;
    all others are relative to one decoder block.
    """

    name: str
    """Family name shown to users (``llama``)."""
    model_types: tuple[str, ...]
    """``config.model_type`` values served by this entry."""

    embed: str = "model.embed_tokens"
    """Token embedding module; its output is ``hook_embed``."""
    pos_embed: str | None = None
    """Learned positional embedding module (output is ``hook_pos_embed``); None for rotary/ALiBi models."""
    layers: str = "model.layers"
    """The ``ModuleList`` of decoder blocks."""
    ln_final: str | None = "model.norm"
    """Final norm before the unembedding (None: the last block's output is unembedded, e.g. post-LN OpenAI GPT)."""
    unembed: str = "lm_head"
    """Unembedding (``W_U``)."""

    attn: str = "self_attn"
    """Attention module; attention internals are computed for it."""
    qkv_layout: QKVLayout = "separate"
    """How the projections are laid out; see ``QKVLayout``."""
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    qkv: str | None = None
    """Fused projection module (``split``/``interleaved`` layouts)."""
    qkv_groups: int | None = None
    """``interleaved`` layout: number of groups (None: one per head, the NeoX layout)."""
    qkv_order: str = "qkv"
    """``interleaved`` layout: order of the q, k and v chunks inside a group (CodeGen: ``qvk``)."""
    o: str = "self_attn.o_proj"
    """Output projection; its input is ``hook_z``."""

    norms: dict[str, str] = field(default_factory=lambda: {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"})
    """Canonical norm name (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``) → module path in a block."""
    norm_type: Literal["LN", "RMS"] = "RMS"
    """``LN`` (mean-centred LayerNorm) or ``RMS`` (RMSNorm); decides how ``hook_scale`` is computed."""

    attn_out: str = "self_attn"
    """Module whose output is what attention adds to the residual (``hook_attn_out``)."""
    mlp: str | None = "mlp"
    """MLP module."""
    mlp_out: str | None = "mlp"
    """Module whose output is what the MLP adds to the residual (``hook_mlp_out``)."""
    resid_mid: str | None = "post_attention_layernorm"
    """Module whose first input is ``hook_resid_mid`` (None: parallel blocks have no resid_mid)."""
    resid_mid_shared: bool = True
    """HF keeps its own reference to the resid_mid tensor for the residual add after the MLP (pre-norm blocks), so
    a replacement is also added to the block's output. False in post-LN blocks, where resid_mid (attention output +
    block input) is read only by the norm whose output becomes the stream."""
    parallel: bool | str = False
    """Parallel attention and MLP; a string names a boolean config attribute that decides it."""

    mlp_flat: bool = False
    """The block flattens ``(batch, pos)`` into one axis for the MLP half (OPT); those points are shown unflattened."""

    mlp_gate: str | None = "mlp.gate_proj"
    """Gate projection of a gated MLP (``hook_pre``); None for plain MLPs."""
    mlp_in: str | None = "mlp.up_proj"
    """Linear input projection (``hook_pre`` for plain MLPs, ``hook_pre_linear`` for gated ones)."""
    mlp_gate_up: str | None = None
    """Fused ``[gate | up]`` projection (Phi-3)."""
    mlp_down: str | None = "mlp.down_proj"
    """Output projection; its input is ``hook_post``."""

    attention: Literal["registry", "gptj", "gpt_neo", "codegen", "gpt_neox_japanese", "openai", "bloom",
                       "mpt", "xglm", "falcon"] = "registry"
    """How attention internals are reached: transformers' attention-function registry, or (any other value) the
    family's own pattern-computing method, replaced on the instance while hooked (``attention.METHODS``)."""
    softmax: Literal["float32", "native"] = "float32"
    """Eager softmax flavour: in float32 then cast back (most families), or in the native dtype (GPT-2)."""
    rotary: bool = True
    """Whether q and k are rotated (``hook_rot_q``/``hook_rot_k`` exist)."""
    positions: Literal["alibi", "sinusoidal"] | None = None
    """Positional scheme when it is neither learned (``pos_embed``) nor rotary: ALiBi score biases (Bloom, MPT) or
    fixed sinusoids added to the embedding (CTRL, XGLM); ``cfg.positional_embedding_type`` reports it."""
    moe: bool = False
    """Mixture-of-experts MLP: no single hidden activation, so only ``hook_mlp_out`` exists."""
    notes: str = ""
    """Family-specific semantics shown by ``mechscope info``."""
    variants: tuple[tuple[str, object, dict], ...] = ()
    """(config attribute, value, field overrides): applied in order where the config has that value, for
    architectures whose layout is decided by config flags (Falcon's multi_query, parallel_attn, alibi)."""
    mlp_out_copied: bool = False
    """HF adds to the MLP's output in place after the MLP returns (Falcon's parallel block), so hook_mlp_out reads a
    copy: otherwise a cached tensor would silently become mlp_out + attn_out."""
    config_requires: tuple[tuple[str, object], ...] = ()
    """(config attribute, value) pairs the entry's layout assumes; a config that differs is refused with a clear
    error rather than wrapped with points in the wrong places (e.g. OPT-350m's post-LN blocks)."""

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, str):
            return bool(getattr(config, self.parallel, False))
        return self.parallel

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None or self.mlp_gate_up is not None


LLAMA = Family(name="llama", model_types=("llama",))

POST_NORM_GEMMA = {
    "ln1": "input_layernorm",
    "ln1_post": "post_attention_layernorm",
    "ln2": "pre_feedforward_layernorm",
    "ln2_post": "post_feedforward_layernorm",
}
POST_NORM_ONLY = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}
PLAIN_MLP = dict(mlp_gate=None, mlp_in="mlp.up_proj")

GPT2 = Family(
    name="gpt2", model_types=("gpt2",),
    embed="transformer.wte", pos_embed="transformer.wpe", layers="transformer.h", ln_final="transformer.ln_f",
    attn="attn", qkv_layout="split", qkv="attn.c_attn", o="attn.c_proj",
    norms={"ln1": "ln_1", "ln2": "ln_2"}, norm_type="LN", attn_out="attn", resid_mid="ln_2",
    mlp_gate=None, mlp_in="mlp.c_fc", mlp_down="mlp.c_proj", softmax="native", rotary=False,
    notes="hook_embed and hook_pos_embed are summed (then dropout) into blocks.0.hook_resid_pre.",
)
