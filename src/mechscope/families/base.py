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

from torch import nn


QKVLayout = Literal["separate", "split", "interleaved"]
"""How q, k and v come out of the projection(s).

- ``separate``: three modules (``q``, ``k``, ``v``), each ``[..., heads * d_head]``.
- ``split``: one fused module ``qkv`` whose output is ``[q | k | v]`` along the last axis
  (GPT-2 ``c_attn``, Phi-3 ``qkv_proj``, GPTBigCode MQA).
- ``interleaved``: one fused module whose output is ``[heads, 3, d_head]`` per position
  (GPT-NeoX and Persimmon ``query_key_value``).
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
    ln_final: str = "model.norm"
    """Final norm before the unembedding."""
    unembed: str = "lm_head"
    """Unembedding (``W_U``)."""

    attn: str | None = "self_attn"
    """Attention module; attention internals are computed for it. None: no attention points at all (e.g. a
    hybrid whose attention block is shared between layers)."""
    qkv_layout: QKVLayout = "separate"
    """How the projections are laid out; see ``QKVLayout``."""
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    q_gated: bool = False
    """Gated attention (Qwen3.5, Qwen3-Next): ``q`` emits ``[query | gate]`` per head, ``[heads, 2, d_head]``;
    ``hook_q`` is the query half, and ``hook_z`` (the input of ``o``) is already multiplied by ``sigmoid(gate)``."""
    qkv: str | None = None
    """Fused projection module (``split``/``interleaved`` layouts)."""
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
    hyper_streams: str | None = None
    """Config attribute with the number of hyper-connection residual streams concatenated along the residual's last
    axis (Qwen4-exp's ``hc_count``): ``hook_resid_*`` are then ``[batch, pos, streams * d_model]``."""
    resid_mid_reused: bool = True
    """Pre-norm blocks add the ``resid_mid`` tensor itself to the MLP output, so a replacement there is also applied
    to the block's output (``hooks.ResidMid``). False where the residual continues from what the ``resid_mid``
    module returns (Qwen4-exp's hyper-connection returns its input), so replacing its input already reaches both."""
    ln_final_scale: bool = True
    """False where ``ln_final`` is not a plain norm (Qwen4-exp's hyper-connection mixer): only
    ``ln_final.hook_normalized`` exists."""
    resid_stream: int | None = None
    """Blocks pass several residual streams stacked on axis 0 (Gemma 3n's AltUp); ``hook_resid_pre``/``post`` show
    this one, the stream attention and the MLP read and write."""
    mlp_out_flat: bool = False
    """The ``mlp_out`` module returns token rows ``[batch * pos, d_model]`` (Llama 4's MoE); ``hook_mlp_out`` shows
    them as ``[batch, pos, d_model]``."""
    resid_mid: str | None = "post_attention_layernorm"
    """Module whose first input is ``hook_resid_mid`` (None: parallel blocks have no resid_mid)."""
    parallel: bool | str = False
    """Parallel attention and MLP; a string names a boolean config attribute that decides it."""

    mlp_gate: str | None = "mlp.gate_proj"
    """Gate projection of a gated MLP (``hook_pre``); None for plain MLPs."""
    mlp_in: str | None = "mlp.up_proj"
    """Linear input projection (``hook_pre`` for plain MLPs, ``hook_pre_linear`` for gated ones)."""
    mlp_gate_up: str | None = None
    """Fused ``[gate | up]`` projection (Phi-3)."""
    mlp_down: str | None = "mlp.down_proj"
    """Output projection; its input is ``hook_post``."""

    attention: Literal["registry", "gptj", "eager"] = "registry"
    """How attention internals are reached: transformers' attention-function registry, GPT-J's ``_attn``, or
    (``eager``) standing in for the modelling file's ``eager_attention_forward`` under the name ``"eager"``, for
    modelling code that builds masks only when the implementation is named ``"eager"``/``"sdpa"``."""
    softmax: Literal["float32", "native"] = "float32"
    """Eager softmax flavour: in float32 then cast back (most families), or in the native dtype (GPT-2)."""
    rotary: bool = True
    """Whether q and k are rotated (``hook_rot_q``/``hook_rot_k`` exist)."""
    mixer: str | None = None
    """Hybrids: the token mixer of blocks that mix without softmax attention (Mamba, linear attention, short
    convolution, RG-LRU); its output is ``hook_mixer_out``."""
    layer_groups: dict[str, tuple[str, ...]] | None = None
    """Hybrids whose blocks differ: point group (``attn``, ``mixer``, ``mlp``) → the ``config.layer_types`` values
    of the blocks that have it. Needed only where one module path serves several kinds (NemotronH's ``mixer`` is
    Mamba, attention, MLP or MoE); otherwise a group exists in a block exactly where its modules do (see
    ``has_group``), which already covers hybrids like Jamba (``self_attn`` or ``mamba``)."""
    moe: bool = False
    """Mixture-of-experts MLP: no single hidden activation, so only ``hook_mlp_out`` exists."""
    notes: str = ""
    """Family-specific semantics shown by ``mechscope info``."""

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, str):
            return bool(getattr(config, self.parallel, False))
        return self.parallel

    def has_group(self, config, block: nn.Module, layer: int, group: str) -> bool:
        """Whether block ``layer`` has the points of ``group``: ``attn`` (probed by the output projection),
        ``mixer`` or ``mlp`` (probed by the module whose output is the point), restricted by ``layer_groups``."""
        probe = {"attn": self.o if self.attn else None, "mixer": self.mixer, "mlp": self.mlp_out}[group]
        if not has_module(block, probe):
            return False
        if self.layer_groups is None:
            return True
        return config.layer_types[layer] in self.layer_groups.get(group, ())

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None or self.mlp_gate_up is not None


def has_module(root: nn.Module, path: str | None) -> bool:
    """Whether ``path`` names a submodule of ``root`` (hybrid blocks differ in which modules they have)."""
    if path is None:
        return False
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True


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
