"""Per-architecture adapter table: where each canonical hook point lives in a HuggingFace model.

A family is described as data, never as code: module paths relative to the model and to a block, how
q/k/v are laid out in fused projections, which norms exist, and how attention is computed. Most families
are a one-line delta from ``LLAMA`` (``dataclasses.replace``), the same way transformers' modular files
describe a new model as the delta from a known one.

Adding a family: find a close relative below, ``replace`` what differs, add it to ``FAMILIES``, and add a
tiny config to ``tests/families.py`` so the exactness suite covers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .errors import UnsupportedModelError

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

    attn: str = "self_attn"
    """Attention module; attention internals are computed for it."""
    qkv_layout: QKVLayout = "separate"
    """How the projections are laid out; see ``QKVLayout``."""
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
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

    attention: Literal["registry", "gptj"] = "registry"
    """How attention internals are reached: transformers' attention-function registry, or GPT-J's ``_attn``."""
    softmax: Literal["float32", "native"] = "float32"
    """Eager softmax flavour: in float32 then cast back (most families), or in the native dtype (GPT-2)."""
    rotary: bool = True
    """Whether q and k are rotated (``hook_rot_q``/``hook_rot_k`` exist)."""
    notes: str = ""
    """Family-specific semantics shown by ``mechscope info``."""

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, str):
            return bool(getattr(config, self.parallel, False))
        return self.parallel

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None or self.mlp_gate_up is not None


LLAMA = Family(name="llama", model_types=("llama",))

_POST_NORM_GEMMA = {
    "ln1": "input_layernorm",
    "ln1_post": "post_attention_layernorm",
    "ln2": "pre_feedforward_layernorm",
    "ln2_post": "post_feedforward_layernorm",
}
_POST_NORM_ONLY = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}
_PLAIN_MLP = dict(mlp_gate=None, mlp_in="mlp.up_proj")

GPT2 = Family(
    name="gpt2", model_types=("gpt2",),
    embed="transformer.wte", pos_embed="transformer.wpe", layers="transformer.h", ln_final="transformer.ln_f",
    attn="attn", qkv_layout="split", qkv="attn.c_attn", o="attn.c_proj",
    norms={"ln1": "ln_1", "ln2": "ln_2"}, norm_type="LN", attn_out="attn", resid_mid="ln_2",
    mlp_gate=None, mlp_in="mlp.c_fc", mlp_down="mlp.c_proj", softmax="native", rotary=False,
    notes="hook_embed and hook_pos_embed are summed (then dropout) into blocks.0.hook_resid_pre.",
)

FAMILIES: tuple[Family, ...] = (
    GPT2,
    replace(
        GPT2, name="gpt_bigcode", model_types=("gpt_bigcode",), softmax="float32",
        notes="Multi-query attention: hook_k/hook_v have the key/value head count.",
    ),
    Family(
        name="gpt_neox", model_types=("gpt_neox",),
        embed="gpt_neox.embed_in", layers="gpt_neox.layers", ln_final="gpt_neox.final_layer_norm",
        attn="attention", qkv_layout="interleaved", qkv="attention.query_key_value",
        o="attention.dense", norm_type="LN", attn_out="attention", resid_mid="post_attention_layernorm",
        parallel="use_parallel_residual", mlp_gate=None, mlp_in="mlp.dense_h_to_4h", mlp_down="mlp.dense_4h_to_h",
        notes="Parallel residual (Pythia): ln2 reads resid_pre and there is no resid_mid; "
        "resid_post = (mlp_out + attn_out) + resid_pre. Only part of each head is rotated (rotary_pct).",
    ),
    Family(
        name="gptj", model_types=("gptj",),
        embed="transformer.wte", layers="transformer.h", ln_final="transformer.ln_f",
        attn="attn", q="attn.q_proj", k="attn.k_proj", v="attn.v_proj", o="attn.out_proj",
        norms={"ln1": "ln_1"}, norm_type="LN", attn_out="attn", resid_mid=None, parallel=True,
        mlp_gate=None, mlp_in="mlp.fc_in", mlp_down="mlp.fc_out", attention="gptj",
        notes="Parallel block with one norm: attention and MLP both read ln1; there is no resid_mid.",
    ),
    LLAMA,
    replace(LLAMA, name="mistral", model_types=("mistral", "ministral", "mixtral")),
    replace(LLAMA, name="qwen2", model_types=("qwen2", "qwen2_moe", "seed_oss")),
    replace(LLAMA, name="qwen3", model_types=("qwen3", "qwen3_moe"), notes="q and k are RMS-normed per head before RoPE; hook_rot_q/k are after both."),
    replace(LLAMA, name="gemma", model_types=("gemma",), notes="hook_embed includes the sqrt(d_model) scaling."),
    replace(
        LLAMA, name="gemma2", model_types=("gemma2", "gemma3_text"), norms=_POST_NORM_GEMMA,
        resid_mid="pre_feedforward_layernorm", attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        notes="Sandwich norms: hook_attn_out/hook_mlp_out are after ln1_post/ln2_post (what enters the "
        "residual); hook_result is before ln1_post. hook_attn_scores is after the tanh soft-cap.",
    ),
    replace(
        LLAMA, name="olmo2", model_types=("olmo2", "olmo3", "exaone4"), norms=_POST_NORM_ONLY,
        resid_mid="mlp", attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
        notes="Post-norm blocks (no ln1/ln2): hook_attn_out/hook_mlp_out are after ln1_post/ln2_post.",
    ),
    replace(
        LLAMA, name="phi3", model_types=("phi3",), qkv_layout="split", qkv="self_attn.qkv_proj",
        mlp_gate=None, mlp_in=None, mlp_gate_up="mlp.gate_up_proj",
    ),
    replace(
        LLAMA, name="phi", model_types=("phi",), o="self_attn.dense", norms={"ln1": "input_layernorm"},
        norm_type="LN", resid_mid=None, parallel=True, mlp_gate=None, mlp_in="mlp.fc1", mlp_down="mlp.fc2",
        ln_final="model.final_layernorm", notes="Parallel block with one norm; there is no resid_mid.",
    ),
    replace(
        LLAMA, name="persimmon", model_types=("persimmon",), qkv_layout="interleaved",
        qkv="self_attn.query_key_value", o="self_attn.dense", norm_type="LN", mlp_gate=None,
        mlp_in="mlp.dense_h_to_4h", mlp_down="mlp.dense_4h_to_h", ln_final="model.final_layernorm",
    ),
    replace(
        LLAMA, name="olmo", model_types=("olmo",), norm_type="LN",
        notes="Non-parametric LayerNorm (no weight or bias).",
    ),
    replace(
        LLAMA, name="stablelm", model_types=("stablelm",), norm_type="LN", parallel="use_parallel_residual",
    ),
    replace(
        LLAMA, name="starcoder2", model_types=("starcoder2",), norm_type="LN", mlp_gate=None,
        mlp_in="mlp.c_fc", mlp_down="mlp.c_proj",
    ),
    replace(LLAMA, name="arcee", model_types=("arcee", "nemotron"), **_PLAIN_MLP),
    replace(LLAMA, name="gpt_oss", model_types=("gpt_oss",), notes="Attention sinks: each head's softmax includes a learned sink logit, dropped from hook_pattern (rows sum to less than 1)."),
    replace(LLAMA, name="helium", model_types=("helium", "smollm3")),
    replace(
        LLAMA, name="cohere", model_types=("cohere", "cohere2"), norms={"ln1": "input_layernorm"},
        norm_type="LN", resid_mid=None, parallel=True,
        notes="Parallel block with one norm; logits are multiplied by config.logit_scale after W_U.",
    ),
)

_BY_MODEL_TYPE = {mt: fam for fam in FAMILIES for mt in fam.model_types}

MOE_MODEL_TYPES = frozenset({"mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss"})
"""Mixture-of-experts families: their MLP has no single hidden activation, so only ``hook_mlp_out`` exists."""


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(config) -> Family:
    """The adapter entry for a HuggingFace config, with MoE and config-dependent variants resolved."""
    model_type = getattr(config, "model_type", None)
    fam = _BY_MODEL_TYPE.get(model_type)
    if fam is None:
        raise UnsupportedModelError(
            f"mechscope does not support model_type {model_type!r} "
            f"({type(config).__name__}); supported decoder-only families: {', '.join(supported_model_types())}. "
            "Encoder-only and encoder-decoder models are out of scope. To add a decoder-only family, add a "
            "Family entry to mechscope/families.py (usually a one-line replace() of a close relative) and a "
            "tiny config to tests/families.py."
        )
    if model_type in MOE_MODEL_TYPES:
        fam = replace(fam, mlp_gate=None, mlp_in=None, mlp_gate_up=None, mlp_down=None,
                      notes=(fam.notes + " Mixture-of-experts MLP: only hook_mlp_out exists.").strip())
    if model_type == "gpt_bigcode" and not getattr(config, "multi_query", True):
        fam = replace(fam, qkv_layout="interleaved")
    if fam.is_parallel(config) and fam.resid_mid is not None:
        fam = replace(fam, resid_mid=None)
    return fam
