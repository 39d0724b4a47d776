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


QKVLayout = Literal["separate", "split", "interleaved", "latent"]
"""How q, k and v come out of the projection(s).

- ``separate``: three modules (``q``, ``k``, ``v``), each ``[..., heads * d_head]``.
- ``split``: one fused module ``qkv`` whose output is ``[q | k | v]`` along the last axis
  (GPT-2 ``c_attn``, Phi-3 ``qkv_proj``, GPTBigCode MQA).
- ``interleaved``: one fused module whose output is ``[groups, 3, heads / groups * d_head]`` per position, the
  three chunks in ``Family.qkv_order``: one group per head in GPT-NeoX and Persimmon ``query_key_value``
  (``[heads, 3, d_head]``), four groups ordered q, v, k in CodeGen's ``qkv_proj``.
- ``latent``: Multi-head Latent Attention (DeepSeek-V2/V3, MiniCPM3, GLM-4-MoE-Lite). ``q`` is the query
  (up-)projection, ``[..., heads * d_head]`` with each head ``[non-rotary | rotary]``; ``qkv`` is the key/value
  up-projection of the compressed latent, ``[..., heads * (d_head_nope + d_head_v)]`` with each head
  ``[key's non-rotary part | value]``. The key's rotary part is one head shared by all heads, projected
  separately; it exists per head only inside attention (``hook_rot_k``). The up-projection runs on the cached
  latents, so ``hook_k``/``hook_v`` span the key positions (``k_pos``), cached ones included.
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
    ln_embed: bool = False
    """The final-norm module is also applied to the embeddings before block 0 (nanochat): the ``ln_final`` points
    and ``stop_at_layer=n_layers`` then refer to its call after the last block."""
    unembed: str = "lm_head"
    """Unembedding (``W_U``)."""

    attn: str | None = "self_attn"
    """Attention module; attention internals are computed for it. None: no attention points at all (e.g. a
    hybrid whose attention block is shared between layers)."""
    qkv_layout: QKVLayout = "separate"
    """How the projections are laid out; see ``QKVLayout``."""
    q: str = "self_attn.q_proj"
    """Query projection (``separate``/``latent``). Any path may list alternatives, ``"a|b"``: the first that exists
    is used (DeepSeek's low-rank ``q_b_proj`` or, when ``q_lora_rank`` is None, the full ``q_proj``)."""
    k: str | None = "self_attn.k_proj"
    v: str | None = "self_attn.v_proj"
    """None (multi-head latent attention without a per-head up-projection): keys and values are expanded from a
    cached latent inside attention, so no module holds this call's per-head k or v; ``hook_rot_k`` and ``hook_z``
    still exist."""
    q_gated: bool = False
    """Gated attention (Qwen3-Next): ``q`` emits ``[query | gate]`` per head, ``[heads, 2, d_head]``; ``hook_q`` is
    the query half, and ``hook_z`` (the input of ``o``) is already multiplied by ``sigmoid(gate)``."""
    qkv: str | None = None
    """Fused projection module (``split``/``interleaved`` layouts)."""
    qkv_groups: int | None = None
    """``interleaved`` layout: number of groups (None: one per head, the NeoX layout)."""
    qkv_order: str = "qkv"
    """``interleaved`` layout: order of the q, k and v chunks inside a group (CodeGen: ``qvk``)."""
    o: str = "self_attn.o_proj"
    """Output projection; its input is ``hook_z`` unless ``z`` names another module."""
    z: str | None = None
    """Module whose input is ``hook_z`` when a norm sits between the weighted values and ``o`` (BitNet's
    ``attn_sub_norm``); None: ``o``."""

    norms: dict[str, str] = field(default_factory=lambda: {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"})
    """Canonical norm name (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``) → module path in a block."""
    norm_type: Literal["LN", "RMS"] = "RMS"
    """``LN`` (mean-centred LayerNorm) or ``RMS`` (RMSNorm); decides how ``hook_scale`` is computed."""
    norm_weight_offset: float = 0.0
    """The norms multiply by ``norm_weight_offset + weight``: 1.0 for Gemma's and Nemotron's ``(1 + weight)`` norms.
    Needed to write a replaced ``hook_normalized`` into the norm's output."""

    attn_out: str | None = "self_attn"
    """Module whose output is what attention adds to the residual (``hook_attn_out``); None where attention's output
    does not enter the residual directly (Zamba's shared transformer feeds the Mamba block's input)."""
    mlp: str | None = "mlp"
    """MLP module."""
    mlp_out: str | None = "mlp"
    """Module whose output is what the MLP adds to the residual (``hook_mlp_out``)."""
    hyper_streams: str | None = None
    """Config attribute with the number of hyper-connection residual streams concatenated along the residual's last
    axis (Qwen4-exp's ``hc_count``): ``hook_resid_*`` are then ``[batch, pos, streams * d_model]``."""
    ln_final_scale: bool = True
    """False where ``ln_final`` is not a plain norm (Qwen4-exp's hyper-connection mixer): only
    ``ln_final.hook_out`` (its output) exists."""
    resid_stream: int | None = None
    """Blocks pass several residual streams stacked on axis 0 (Gemma 3n's AltUp); ``hook_resid_pre``/``post`` show
    this one, the stream attention and the MLP read and write."""
    mlp_out_flat: bool = False
    """The ``mlp_out`` module returns token rows ``[batch * pos, d_model]`` (Llama 4's MoE); ``hook_mlp_out`` shows
    them as ``[batch, pos, d_model]``."""
    resid_mid: str | None = "post_attention_layernorm"
    """Module whose first input is ``hook_resid_mid`` (None: parallel blocks have no resid_mid)."""
    layer_overrides: dict[str, dict] | None = None
    """Hybrids whose kinds of block are laid out differently: ``config.layer_types`` value → the fields that differ
    in such blocks (OLMo-Hybrid: post-norm attention blocks, pre-norm linear-attention blocks). See ``at_layer``."""
    resid_mid_reused: bool = True
    """Pre-norm blocks add the ``resid_mid`` tensor itself to the MLP output, so a replacement there is also applied
    to the block's output (``hooks.ResidMid``). False where the residual continues from the norm's output instead
    (MiniMax's post-norm blocks; Qwen4-exp's hyper-connection returns its input), so replacing the norm's input
    already reaches both."""
    resid_mid_at: Literal["in", "out"] = "in"
    """``in``: ``hook_resid_mid`` is the first input of ``resid_mid`` (HF keeps its own reference for the residual add,
    so a replacement is also added to the block's output); ``out``: it is the output of ``resid_mid``, a module that
    computes the residual stream itself (Zaya's ``post_attention_residual_scale``)."""
    resid_streams: str | None = None
    """Config attribute giving the number of parallel residual streams (hyper-connections, HY-V4): the residual
    points are then ``[batch, pos, stream, d_model]``; None: one stream, ``[batch, pos, d_model]``."""
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
    """Output projection; its input is ``hook_post`` unless ``mlp_post`` names another module."""
    mlp_post: str | None = None
    """Module whose input is ``hook_post`` when a norm sits between the hidden activation and ``mlp_down`` (BitNet's
    ``ffn_sub_norm``); None: ``mlp_down``."""

    attention: Literal["registry", "eager", "gptj", "gpt_neo", "codegen", "gpt_neox_japanese", "openai", "bloom",
                       "mpt", "xglm", "falcon"] = "registry"
    """How attention internals are reached: transformers' attention-function registry; ``eager``: standing in for the
    modelling file's ``eager_attention_forward`` under the name ``"eager"``, for modelling code that builds masks
    only when the implementation is named ``"eager"``/``"sdpa"`` (MiniMax-M3, dots3); any other value: the
    family's own pattern-computing method, replaced on the instance while hooked (``attention.METHODS``)."""
    softmax: Literal["float32", "native", "max_native"] = "float32"
    """Eager softmax flavour: in float32 then cast back (most families), in the native dtype (GPT-2), or in the native
    dtype after subtracting each row's max, on every layer (``max_native``: MiMo-V2-Flash)."""
    sinks: Literal["column", "column_fp32", "output_scale"] | None = None
    """How learned per-head attention sinks (``attn.sinks``) enter the eager attention: ``column``, an extra softmax
    logit after subtracting the row max, dropped from the pattern (GPT-OSS; also assumed when the module has sinks and
    this is None); ``column_fp32``, scores computed in float32 and the sink column softmaxed without the max
    subtraction (Flint); ``output_scale``, a plain softmax pattern whose output z is scaled by
    ``sigmoid(logsumexp(scores) - sink)`` (Granite-SWA)."""
    rotary: bool = True
    """Whether q and k are rotated (``hook_rot_q``/``hook_rot_k`` exist)."""
    mixer: str | None = None
    """Hybrids: the token mixer of blocks that mix without softmax attention (Mamba, linear attention, short
    convolution, RG-LRU); it marks the blocks that have ``hook_mixer_out``."""
    mixer_out: str | None = None
    """Module whose output is ``hook_mixer_out``, what the mixer adds to the residual (None: ``mixer`` itself;
    sandwich-norm hybrids: the post-mixer norm)."""
    layer_groups: dict[str, tuple[str, ...]] | None = None
    """Hybrids: point group (``attn``, ``mixer``, ``mlp``) → the ``config.layer_types`` values of the blocks that
    have it. Needed only where one module path serves several kinds of block (NemotronH's ``mixer`` is Mamba,
    attention, MLP or MoE; MiniMax's ``self_attn`` is softmax or lightning attention); a group not listed exists
    exactly where its modules do (``has_group``), which already tells Jamba's ``self_attn`` and ``mamba`` apart."""
    positions: Literal["alibi", "sinusoidal"] | None = None
    """Positional scheme when it is neither learned (``pos_embed``) nor rotary: ALiBi score biases (Bloom, MPT) or
    fixed sinusoids added to the embedding (CTRL, XGLM); ``cfg.positional_embedding_type`` reports it."""
    moe: bool = False
    """Mixture-of-experts MLP: no single hidden activation, so ``hook_mlp_out`` (and the router points) replace
    ``hook_pre``/``hook_post`` in its MoE blocks; blocks with a dense MLP (DeepSeek's first layers) keep them."""
    router: str | None = None
    """MoE router module in a block. Its output (first element of a tuple) is the router logits,
    ``[tokens, n_experts]``: ``mlp.hook_router_logits``. Blocks without this module have no router points."""
    experts: str | None = None
    """MoE experts module, called ``experts(hidden, expert_indices, expert_weights)`` (transformers' common MoE
    interface): its second and third inputs are ``mlp.hook_expert_indices`` and ``mlp.hook_expert_weights``."""
    block_overrides: dict[str, dict] = field(default_factory=dict)
    """Decoder-block class name → fields that differ in blocks of that class, for models that mix block kinds with
    different module names (Inkling2's full-attention blocks normalize q, k and v inputs separately)."""
    notes: str = ""
    """Family-specific semantics shown by ``mechscope info``."""
    variants: tuple[tuple[str, object, dict], ...] = ()
    """(config attribute, value, field overrides): applied in order where the config has that value, for
    architectures whose layout is decided by config flags (Falcon's multi_query, parallel_attn, alibi)."""
    mlp_out_copied: bool = False
    """HF adds to the MLP's output in place after the MLP returns (Falcon's parallel block), so hook_mlp_out reads a
    copy: otherwise a cached tensor would silently become mlp_out + attn_out."""
    embed_copied: bool = False
    """HF scales the embedding module's output in place after the module returns (CTRL), so hook_embed reads a copy:
    otherwise a cached hook_embed would silently hold the scaled tensor."""
    config_requires: tuple[tuple[str, object], ...] = ()
    """(config attribute, value) pairs the entry's layout assumes; a config that differs is refused with a clear
    error rather than wrapped with points in the wrong places (e.g. OPT-350m's post-LN blocks)."""

    def for_block(self, block) -> Family:
        """This entry with ``block_overrides`` for the block's class applied."""
        over = self.block_overrides.get(type(block).__name__)
        return replace(self, **over) if over else self

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, str):
            return bool(getattr(config, self.parallel, False))
        return self.parallel

    def at_layer(self, config, layer: int) -> Family:
        """This entry as it applies to block ``layer`` (``layer_overrides`` resolved)."""
        if not self.layer_overrides:
            return self
        delta = self.layer_overrides.get(config.layer_types[layer])
        return replace(self, layer_overrides=None, **delta) if delta else self

    def has_group(self, config, block: nn.Module, layer: int, group: str) -> bool:
        """Whether block ``layer`` has the points of ``group``: ``attn`` (probed by the output projection),
        ``mixer`` or ``mlp`` (probed by the module itself), restricted by ``layer_groups``."""
        probe = {"attn": self.o if self.attn else None, "mixer": self.mixer, "mlp": self.mlp or self.mlp_out or self.mlp_down}[group]
        if not has_module(block, probe):
            return False
        if self.layer_groups is None or group not in self.layer_groups:
            return True
        return config.layer_types[layer] in self.layer_groups[group]

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None or self.mlp_gate_up is not None


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def has_module(root: nn.Module, path: str | None) -> bool:
    """Whether ``path`` (or one of its ``"a|b"`` alternatives) names a submodule of ``root`` (hybrid blocks differ in
    which modules they have). An ``nn.Identity`` placeholder (a norm switched off by the config) counts as absent."""
    if path is None:
        return False
    return any(m is not None and not isinstance(m, nn.Identity) for m in (_get(root, p) for p in path.split("|")))


def resolve(module: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``; ``"a|b"`` lists alternatives, the first that exists is used."""
    for p in path.split("|"):
        sub = _get(module, p)
        if sub is not None:
            return sub
    raise AttributeError(f"{type(module).__name__} has none of the submodules {path.split('|')}")


LLAMA = Family(name="llama", model_types=("llama",))

POST_NORM_GEMMA = {
    "ln1": "input_layernorm",
    "ln1_post": "post_attention_layernorm",
    "ln2": "pre_feedforward_layernorm",
    "ln2_post": "post_feedforward_layernorm",
}
POST_NORM_ONLY = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}
PLAIN_MLP = dict(mlp_gate=None, mlp_in="mlp.up_proj")
MOE = dict(moe=True, router="mlp.gate", experts="mlp.experts")
"""transformers' common MoE block: ``mlp.gate`` returns ``(logits, weights, indices)``, ``mlp.experts`` takes them."""

GPT2 = Family(
    name="gpt2", model_types=("gpt2",),
    embed="transformer.wte", pos_embed="transformer.wpe", layers="transformer.h", ln_final="transformer.ln_f",
    attn="attn", qkv_layout="split", qkv="attn.c_attn", o="attn.c_proj",
    norms={"ln1": "ln_1", "ln2": "ln_2"}, norm_type="LN", attn_out="attn", resid_mid="ln_2",
    mlp_gate=None, mlp_in="mlp.c_fc", mlp_down="mlp.c_proj", softmax="native", rotary=False,
    notes="hook_embed and hook_pos_embed are summed (then dropout) into blocks.0.hook_resid_pre.",
)
