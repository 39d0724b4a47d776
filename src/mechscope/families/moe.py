"""Mixture-of-experts families: ``hook_mlp_out`` plus the router's scores and chosen experts.

Nearly every MoE block in transformers 5.x shares one interface: a router module returns
``(router_logits, expert_weights, expert_indices)`` and the experts module is called as
``experts(hidden, expert_indices, expert_weights)``. ``Family.router``/``Family.experts`` name those two modules, and
``mlp.hook_router_logits``/``hook_expert_indices``/``hook_expert_weights`` are read there, so a family is still a
one-line delta. Blocks whose MLP is dense (DeepSeek's ``first_k_dense_replace``, ERNIE's ``moe_layer_start_index``)
keep ``hook_pre``/``hook_post``; MoE blocks do not have them.

Multi-head Latent Attention (DeepSeek-V2/V3, MiniCPM3, GLM-4-MoE-Lite) is the ``latent`` q/k/v layout
(``base.QKVLayout``): ``hook_q`` is the query up-projection, ``hook_k``/``hook_v`` are the per-head parts of the
key/value up-projection of the cached latent, and the rotated, full-width q/k that the scores use are
``hook_rot_q``/``hook_rot_k`` from the attention registry.
"""

from __future__ import annotations

from dataclasses import replace

from .base import LLAMA, MOE, POST_NORM_ONLY, Family

ROUTER = MOE | {"router": "mlp.router"}
"""MoE blocks whose router module is called ``router`` rather than ``gate``."""
GRANITE_MOE = dict(moe=True, mlp="block_sparse_moe", mlp_out="block_sparse_moe",
                   router="block_sparse_moe.router", experts="block_sparse_moe.experts")
MLA = dict(qkv_layout="latent", q="self_attn.q_b_proj|self_attn.q_proj", qkv="self_attn.kv_b_proj")
"""Multi-head Latent Attention, with (``q_lora_rank`` set) or without a low-rank query."""

SHARED = "hook_mlp_out includes the shared experts' output."
QK_NORM = "q and k are RMS-normed per head before RoPE; hook_rot_q/k are after both."
QK_NORM_FULL = ("q and k are RMS-normed over all heads at once (OLMo-style) before RoPE; hook_q/hook_k are the "
                "projections before the norm, hook_rot_q/k are after norm and RoPE.")
GRANITE = (
    "Multipliers (config): hook_embed is the embedding module's output, before embedding_multiplier "
    "(blocks.0.hook_resid_pre is after it); hook_attn_out and hook_mlp_out are the attention and MoE outputs "
    "before residual_multiplier, so resid_mid = resid_pre + residual_multiplier * attn_out and "
    "resid_post = resid_mid + residual_multiplier * mlp_out; attention_multiplier is the score scaling "
    "(inside hook_attn_scores). Logits are divided by logits_scaling after W_U."
)
MLA_NOTE = (
    "Multi-head Latent Attention: hook_q is the output of q_b_proj (q_proj without a low-rank query), per head "
    "[non-rotary | rotary] before RoPE; hook_k and hook_v are the key's non-rotary part and the value, per head, "
    "from kv_b_proj, which up-projects the cached latent, so they span k_pos (cached positions included). The "
    "key's rotary part is one head shared by all heads (from kv_a_proj_with_mqa); hook_rot_k is the full key each "
    "head scores against. hook_z and W_O use d_head_v."
)
DEEPSEEK_ROUTER = ("The router scores experts with a sigmoid (plus a correction bias for the choice only) and picks "
                   "them within the top groups; hook_expert_weights already include routed_scaling_factor.")

DBRX = Family(
    name="dbrx", model_types=("dbrx",),
    embed="transformer.wte", layers="transformer.blocks", ln_final="transformer.norm_f",
    attn="norm_attn_norm.attn", qkv_layout="split", qkv="norm_attn_norm.attn.Wqkv", o="norm_attn_norm.attn.out_proj",
    norms={"ln1": "norm_attn_norm.norm_1", "ln2": "norm_attn_norm.norm_2"}, norm_type="LN",
    attn_out="norm_attn_norm.attn", resid_mid="norm_attn_norm.norm_2", mlp="ffn", mlp_out="ffn",
    mlp_gate=None, mlp_in=None, mlp_down=None, moe=True, router="ffn.router", experts="ffn.experts",
    notes="hook_q/hook_k/hook_v are slices of the fused Wqkv output before clip_qkv clamps them (hook_rot_q/k are "
    "after the clamp and RoPE). The router returns only its logits and the block picks the experts from them, so "
    "replacing hook_router_logits changes the routing.",
)

FAMILIES: tuple[Family, ...] = (
    DBRX,
    replace(LLAMA, name="aria_text", model_types=("aria_text",), **ROUTER, notes=SHARED),
    replace(LLAMA, name="olmoe", model_types=("olmoe",), **MOE, notes=QK_NORM_FULL),
    replace(LLAMA, name="flex_olmo", model_types=("flex_olmo",), **MOE, norms=POST_NORM_ONLY, resid_mid="mlp",
            attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
            notes="Post-norm blocks (no ln1/ln2): hook_attn_out/hook_mlp_out are after ln1_post/ln2_post. "
            + QK_NORM_FULL),
    replace(LLAMA, name="phimoe", model_types=("phimoe",), **ROUTER, norm_type="LN",
            notes="Sparse-mixer routing: hook_expert_weights are the mixer's multipliers, not a softmax over "
            "the top-k logits."),
    replace(LLAMA, name="minimax_m2", model_types=("minimax_m2",), **MOE,
            notes=QK_NORM_FULL + " Experts are chosen by sigmoid scores plus a correction bias (choice only)."),
    replace(LLAMA, name="dots1", model_types=("dots1",), **MOE, notes=QK_NORM + " " + SHARED),
    replace(LLAMA, name="ernie4_5_moe", model_types=("ernie4_5_moe",), **MOE, notes=SHARED),
    replace(LLAMA, name="exaone_moe", model_types=("exaone_moe",), **MOE, notes=QK_NORM + " " + SHARED),
    replace(LLAMA, name="glm4_moe", model_types=("glm4_moe",), **MOE,
            notes="Only part of each head is rotated (partial_rotary_factor). " + SHARED + " " + DEEPSEEK_ROUTER),
    replace(LLAMA, name="hunyuan_v1_moe", model_types=("hunyuan_v1_moe",), **MOE,
            notes="q and k are RMS-normed per head after RoPE; hook_rot_q/k are after both. hook_mlp_out includes "
            "the shared MLP."),
    replace(LLAMA, name="cohere2_moe", model_types=("cohere2_moe",), **MOE, norms={"ln1": "input_layernorm"},
            norm_type="LN", resid_mid=None, parallel=True,
            notes="Parallel block with one norm; logits are multiplied by config.logit_scale after W_U."),
    replace(LLAMA, name="granitemoe", model_types=("granitemoe",), **GRANITE_MOE, notes=GRANITE),
    replace(LLAMA, name="granitemoe_swa", model_types=("granitemoe_swa",), **GRANITE_MOE, sinks="output_scale",
            notes=GRANITE + " Attention sinks scale each head's output by sigmoid(logsumexp(scores) - sink) after "
            "the pattern: hook_pattern rows sum to one and hook_z includes the sink scale."),
    replace(LLAMA, name="granitemoeshared", model_types=("granitemoeshared",), **GRANITE_MOE,
            notes=GRANITE + " The shared MLP (shared_mlp) reads the same ln2 output and its output is added to the "
            "MoE output before residual_multiplier: hook_mlp_out is the routed experts' part only."),
    replace(LLAMA, name="afmoe", model_types=("afmoe",), **ROUTER,
            norms={"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm", "ln2": "pre_mlp_layernorm",
                   "ln2_post": "post_mlp_layernorm"},
            resid_mid="pre_mlp_layernorm", attn_out="post_attention_layernorm", mlp_out="post_mlp_layernorm",
            notes="Sandwich norms: hook_attn_out/hook_mlp_out are after ln1_post/ln2_post (what enters the residual). "
            "Gated attention: hook_z is the o_proj input, i.e. the heads' output already multiplied by "
            "sigmoid(gate_proj(x)). Only sliding-window layers use RoPE. " + QK_NORM + " With mup_enabled, "
            "blocks.0.hook_resid_pre is hook_embed * sqrt(d_model). " + SHARED),
    replace(LLAMA, name="mimo_v2_flash", model_types=("mimo_v2_flash",), **MOE, softmax="max_native",
            notes="Value heads are wider than query/key heads (d_head_v). Sliding-window layers have twice the "
            "key/value heads of full layers (hook_k/hook_v shapes vary by layer; cfg.n_kv_heads is layer 0's) and "
            "attention sinks that join each softmax and are dropped (pattern rows sum to less than one). hook_v is "
            "the v_proj output, before attention_value_scale multiplies it. Only part of each head is rotated "
            "(partial_rotary_factor). " + DEEPSEEK_ROUTER),
    replace(LLAMA, name="deepseek_v2", model_types=("deepseek_v2",), **MOE, **MLA,
            notes=MLA_NOTE + " " + SHARED),
    replace(LLAMA, name="deepseek_v3", model_types=("deepseek_v3", "glm4_moe_lite"), **MOE, **MLA,
            notes=MLA_NOTE + " " + SHARED + " " + DEEPSEEK_ROUTER),
    replace(LLAMA, name="deepseek_v32", model_types=("deepseek_v32", "glm_moe_dsa"), **MOE, **MLA,
            notes=MLA_NOTE + " DeepSeek Sparse Attention: a lightning indexer picks each query's top-k keys and the "
            "others are masked, so hook_attn_scores holds finfo.min outside them (GLM-5's shared-indexer layers reuse "
            "the previous layer's choice). " + SHARED + " " + DEEPSEEK_ROUTER),
    replace(LLAMA, name="minicpm3", model_types=("minicpm3",), **MLA,
            notes=MLA_NOTE + " Multipliers (config): hook_embed includes scale_emb; hook_attn_out/hook_mlp_out are "
            "before the residual scale scale_depth / sqrt(n_layers), so resid_mid = resid_pre + scale * attn_out; "
            "ln_final.hook_out is divided by hidden_size / dim_model_base before W_U."),
)
EXCLUDED: dict[str, str] = {
    "deepseek_v4": "Manifold-constrained hyper-connections: the residual is hc_mult parallel streams "
    "[batch, pos, hc_mult, d_model] that each block mixes with input-dependent matrices, and attention/MoE outputs are "
    "spread into them by learned weights rather than added, so resid_pre/resid_mid/resid_post/attn_out/mlp_out have no "
    "exact single-stream counterpart (and the intermediate stream is a local variable, not a module boundary).",
    "jetmoe": "Mixture-of-attention: each token's queries and output projection come from its chosen attention "
    "experts, computed inside JetMoeMoA.map/reduce (methods, not modules) on expert-sorted rows, so there is no "
    "per-position hook_q or hook_z at a module boundary, and its gating returns expert-sorted routing rather than "
    "per-token indices and weights; exposing them would mean reimplementing those methods.",
    "longcat_flash": "Each decoder layer runs two attention+MLP sublayers plus a shortcut MoE that skips into the "
    "second sublayer's sum; the residual between the sublayers lives only in a local variable, so a block's points "
    "(one attention, one resid_mid) cannot describe it and replacing the sublayers' residual cannot be made exact "
    "without reimplementing the layer's forward.",
}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
