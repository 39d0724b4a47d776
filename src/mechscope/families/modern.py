"""Newer decoder-only families (2024-2026): Llama-likes, GLM, Granite, MLA models, gated and sink attention, MoE.

Most are a one-line delta from ``LLAMA``; the rest use generic ``Family`` fields rather than code: ``latent`` q/k/v
(MLA, Zaya), ``sinks`` flavours, ``z``/``mlp_post`` before sub-norms (BitNet), ``resid_streams`` (hyper-connections),
``resid_mid_at``, ``ln_embed`` (nanochat) and ``block_overrides`` (Inkling2). Where a family scales a branch on its
way into the residual (Granite's ``residual_multiplier``, ``embedding_multiplier``, ``logits_scaling``), the scaling
happens inline in HF's forward, outside any module, so the points sit on the module outputs and each ``notes`` says
where the multiplier applies. Families that mix dense and MoE MLP layers are ``moe=True``: only ``hook_mlp_out``.
"""

from __future__ import annotations

from dataclasses import replace

from .base import LLAMA, POST_NORM_GEMMA, Family

GLM4_NORMS = {
    "ln1": "input_layernorm",
    "ln1_post": "post_self_attn_layernorm",
    "ln2": "post_attention_layernorm",
    "ln2_post": "post_mlp_layernorm",
}
"""GLM-4's sandwich norms: the pre-MLP norm keeps Llama's name ``post_attention_layernorm``."""
GLM4_SANDWICH = dict(
    norms=GLM4_NORMS, resid_mid="post_attention_layernorm", attn_out="post_self_attn_layernorm",
    mlp_out="post_mlp_layernorm",
)
FUSED_GATE_UP = dict(mlp_gate=None, mlp_in=None, mlp_gate_up="mlp.gate_up_proj")
SANDWICH_NOTE = ("Sandwich norms: hook_attn_out/hook_mlp_out are after ln1_post/ln2_post (what enters the "
                 "residual); hook_result is before ln1_post.")
QK_NORM_NOTE = "q and k are RMS-normed per head before RoPE; hook_rot_q/k are after both."
GRANITE_NOTE = (
    "Multipliers (config): hook_embed is the embedding module's output, before embedding_multiplier "
    "(blocks.0.hook_resid_pre is after it); hook_attn_out and hook_mlp_out are the attention and MLP outputs "
    "before residual_multiplier, so resid_mid = resid_pre + residual_multiplier * attn_out and "
    "resid_post = resid_mid + residual_multiplier * mlp_out; attention_multiplier is the score scaling "
    "(inside hook_attn_scores)."
)

MLA = dict(qkv_layout="latent", q="self_attn.q_b_proj", qkv="self_attn.kv_b_proj", k=None, v=None)
MLA_NOTE = ("Multi-head latent attention: hook_q is the query up-projection (qk_head_dim wide, cfg.d_head, before "
            "RoPE on its last qk_rope_head_dim dims); hook_k (the keys' non-rotary part) and hook_v are the per-head "
            "parts of kv_b_proj, which up-projects the cached latent, so they span k_pos; the full rotated keys are "
            "at hook_rot_k; hook_z heads are v_head_dim wide (cfg.d_head_v).")

FAMILIES: tuple[Family, ...] = (
    replace(LLAMA, name="llama_like", model_types=("internlm3", "iquestcoder", "ernie4_5", "cwm"),
            notes="Llama's blocks under another name (InternLM3 and IQuest-Coder use LlamaForCausalLM itself)."),
    replace(LLAMA, name="ministral3", model_types=("ministral3",),
            notes="hook_rot_q includes the Llama-4 position-dependent query scaling applied after RoPE."),
    replace(LLAMA, name="hy_v3", model_types=("hy_v3",), moe=True,
            notes=QK_NORM_NOTE + " Dense and sparse MLP layers (mlp_layer_types) are mixed, so only hook_mlp_out "
            "is exposed on every layer; it includes the shared experts."),
    replace(LLAMA, name="hunyuan_v1_dense", model_types=("hunyuan_v1_dense",),
            notes="q and k are RMS-normed per head after RoPE; hook_rot_q/k are after both."),
    replace(LLAMA, name="glm", model_types=("glm",), **FUSED_GATE_UP,
            notes="Fused [gate | up] MLP projection; only part of each head is rotated (partial_rotary_factor)."),
    replace(LLAMA, name="glm4", model_types=("glm4",), **FUSED_GATE_UP, **GLM4_SANDWICH,
            notes="Fused [gate | up] MLP projection. " + SANDWICH_NOTE),
    replace(LLAMA, name="apertus", model_types=("apertus",),
            norms={"ln1": "attention_layernorm", "ln2": "feedforward_layernorm"}, resid_mid="feedforward_layernorm",
            mlp_gate=None, mlp_in="mlp.up_proj",
            notes="Ungated MLP with the xIELU activation; " + QK_NORM_NOTE),
    replace(LLAMA, name="granite", model_types=("granite",),
            notes=GRANITE_NOTE + " Logits are divided by logits_scaling after W_U."),
    replace(LLAMA, name="granite_swa", model_types=("granite_swa",), sinks="output_scale",
            notes=GRANITE_NOTE + " Logits are divided by logits_scaling after W_U. Attention sinks scale each head's "
            "output by sigmoid(logsumexp(scores) - sink) after the pattern: hook_pattern rows sum to one and hook_z "
            "includes the sink scale. Layers whose layer_rope_theta is 0 use no RoPE (hook_rot_q/k equal q/k)."),
    replace(LLAMA, name="flint", model_types=("flint",), moe=True, sinks="column_fp32",
            notes=QK_NORM_NOTE + " Attention scores are computed in float32 (hook_attn_scores is float32); a learned "
            "per-head sink logit joins each softmax and is dropped, so hook_pattern rows sum to less than one. "
            "Full-attention layers use no RoPE (hook_rot_q/k are the q/k-normed projections). Dense and sparse MLP "
            "layers (mlp_only_layers, decoder_sparse_step) can be mixed, so only hook_mlp_out is exposed."),
    replace(LLAMA, name="bitnet", model_types=("bitnet",), z="self_attn.attn_sub_norm", mlp_post="mlp.ffn_sub_norm",
            notes="Sub-norms before both output projections: hook_z and hook_post are their inputs (before "
            "attn_sub_norm / ffn_sub_norm); hook_result is computed from the normed z that o_proj reads."),
    replace(LLAMA, name="youtu", model_types=("youtu",), **MLA,
            notes=MLA_NOTE),
    replace(LLAMA, name="axk1", model_types=("axk1",), **MLA, moe=True,
            notes=MLA_NOTE + " Dense and sparse MLP layers (mlp_layer_types) are mixed, so only hook_mlp_out is "
            "exposed; on sparse layers it is after the MoE's own post_mlp_layernorm and includes the shared experts."),
    replace(LLAMA, name="cohere_compass_text", model_types=("cohere_compass_text",), norms={"ln1": "input_layernorm"},
            norm_type="LN", resid_mid=None, parallel=True,
            notes="Parallel block with one LayerNorm (no bias); there is no resid_mid. Multimodal RoPE sections; "
            "layers whose rope_parameters entry is None use no RoPE (hook_rot_q/k equal q/k). Logits are multiplied "
            "by config.logit_scale after W_U."),
    replace(LLAMA, name="doge", model_types=("doge",),
            notes=QK_NORM_NOTE + " Dynamic mask attention: the mask added in hook_attn_scores is per head (causal plus "
            "the learned dynamic mask from dt_proj over the values). Learned residual scales: resid_mid = "
            "input_residual * resid_pre + attn_out, resid_post = post_attention_residual * resid_mid + mlp_out. "
            "With is_moe=True the MLP points are its shared expert's, and hook_mlp_out adds the retrieval experts."),
    replace(LLAMA, name="beam", model_types=("beam",), moe=True, norms=POST_NORM_GEMMA,
            resid_mid="pre_feedforward_layernorm", attn_out="post_attention_layernorm",
            mlp_out="post_feedforward_layernorm",
            notes=QK_NORM_NOTE + " " + SANDWICH_NOTE + " Depth-scaled residual: resid_mid = attn_out / sqrt(2l+2) + "
            "resid_pre * sqrt((2l+1)/(2l+2)) and resid_post = mlp_out / sqrt(2l+3) + resid_mid * "
            "sqrt((2l+2)/(2l+3)) for block l. Gated attention: hook_z is the input of o_proj, i.e. the weighted "
            "values already multiplied by sigmoid(gate_proj(x) + gate_bias). hook_rot_q includes the position-"
            "dependent attention scaling; full-attention layers use no RoPE. Dense and sparse MLP layers "
            "(mlp_layer_types) are mixed, so only hook_mlp_out is exposed. Logits are soft-capped after W_U."),
    replace(LLAMA, name="zaya", model_types=("zaya",), qkv_layout="latent", q=None, k=None, v=None, moe=True,
            resid_mid="post_attention_residual_scale", resid_mid_at="out",
            notes="Convolutional compressed attention (CCA): queries, keys and values are built inside attention from "
            "convolutions over q_proj/k_proj and a current+delayed value projection, so there is no hook_q/hook_k/"
            "hook_v; read them at hook_rot_q/hook_rot_k (after the L2 qk-norm and RoPE). The residual stream is "
            "float32 and scaled: blocks.0.hook_resid_pre is (embed + bias) * scale; resid_mid = (attn_out + b) * s + "
            "(resid_pre + b') * s' (the output of post_attention_residual_scale), and likewise resid_post from "
            "mlp_out and resid_mid. hook_mlp_out is the MoE output before that scaling."),
    replace(LLAMA, name="axk2", model_types=("axk2",), qkv_layout="latent", q=None, k=None, v=None, moe=True,
            norms={"ln1": "input_layernorm.norm"},
            notes="Multi-head latent attention with a fused per-head [query | gate] projection, so there is no "
            "hook_q/hook_k/hook_v (read queries and keys at hook_rot_q/hook_rot_k; hook_z heads are v_head_dim "
            "wide). An indexer keeps each query's top index_topk keys: the others are masked in hook_attn_scores. "
            "Gated attention: hook_z is the input of o_proj, already multiplied by the sigmoid gate. Gated "
            "RMSNorms: ln1 is the RMSNorm inside input_layernorm, whose output is then multiplied by a sigmoid "
            "gate before attention; the pre-MLP norm is gated only on sparse layers, so it has no ln2 points. Dense "
            "and sparse MLP layers (mlp_layer_types) are mixed, so only hook_mlp_out is exposed."),
    replace(LLAMA, name="inkling_text", model_types=("inkling_text",), moe=True, attn_out="attn_sconv",
            mlp_out="mlp_sconv",
            notes="No RoPE: learned relative-position logits are added to the scores (inside hook_attn_scores). "
            "hook_k/hook_v are the k_proj/v_proj outputs, before their causal short convolutions; hook_rot_q/"
            "hook_rot_k are the queries and keys attention uses (after the convolution and per-head RMSNorm, and "
            "on full layers the query's log-length scaling). Sliding layers may have their own head counts and "
            "widths (swa_*): their points have those shapes, and cfg's head counts and d_head are block 0's. "
            "hook_attn_out/hook_mlp_out are after the short convolutions that follow attention and the MLP (each "
            "includes its own skip). Dense and sparse MLP layers (mlp_layer_types) are mixed, so only "
            "hook_mlp_out is exposed. The final norm's output (ln_final.hook_out) is divided by "
            "logits_mup_width_multiplier before W_U."),
    replace(LLAMA, name="hy_v4", model_types=("hy_v4",), **MLA, moe=True, resid_streams="hc_mult",
            resid_mid="ffn_hc",
            notes=MLA_NOTE + " Hyper-connections: the residual stream is hc_mult parallel streams, so hook_resid_pre/"
            "mid/post are [batch, pos, stream, d_model]; blocks.0.hook_resid_pre is hook_embed copied to every "
            "stream. Each sublayer reads a learned mix of the streams (input of ln1/ln2) and its output "
            "(hook_attn_out/hook_mlp_out, [batch, pos, d_model]) is added to each stream with a learned per-stream "
            "weight. ln_final reads the streams merged by model.hc_head. Attention: an indexer keeps each query's "
            "top index_topk keys (the others are masked in hook_attn_scores); a learned per-head sink logit joins "
            "each softmax and is dropped (pattern rows sum to less than one); hook_z is the input of o_proj, already "
            "multiplied by the sigmoid gate. Dense and sparse MLP layers are mixed, so only hook_mlp_out is exposed."),
    replace(LLAMA, name="nanochat", model_types=("nanochat",), ln_embed=True, mlp_gate=None, mlp_in="mlp.fc1",
            mlp_down="mlp.fc2",
            notes="Parameter-free RMSNorms everywhere. The final norm module is also applied to the embeddings: "
            "blocks.0.hook_resid_pre is norm(hook_embed), and the ln_final points are its call after the last block. "
            "q and k are RMS-normed per head after RoPE; hook_rot_q/k are after both. ReLU-squared MLP; logits are "
            "soft-capped after W_U (final_logit_softcapping)."),
    replace(LLAMA, name="inkling2_text", model_types=("inkling2_text",), moe=True, resid_mid=None,
            attn_out="post_attention_convolution", mlp_out="post_mlp_convolution",
            block_overrides={"Inkling2FullDecoderLayer": {"norms": {"ln2": "post_attention_layernorm"}}},
            notes="Block attention residuals: there is no running residual sum. Each sublayer reads a learned "
            "softmax mix (over depth) of earlier attention-residual blocks' outputs and the running partial sum, so "
            "ln1/ln2 read that mix, not hook_resid_pre; at a block boundary (every n_layers_per_attn_res_block "
            "layers) the partial sum restarts from hook_attn_out. There is no hook_resid_mid. Full-attention layers "
            "normalize separate query/key/value mixes (q/k/v_input_layernorm), so they have no ln1 points. "
            "hook_attn_out/hook_mlp_out are after the short convolutions that follow attention and the MoE. "
            "Attention: no RoPE (learned relative-position logits inside hook_attn_scores); L2-clipped q/k "
            "(hook_rot_q/hook_rot_k, full layers with the log-length scaling); per-query sink logits from "
            "sink_proj join each softmax and are dropped (pattern rows sum to less than one); hook_z is the input "
            "of o_proj, already multiplied by the sigmoid gate; hook_k/hook_v are the projections before their "
            "short convolutions. Embeddings are RMS-normed inside the embedding module (hook_embed is after it); "
            "ln_final reads a final depth mix; logits are soft-capped after W_U. Sliding layers may have their own "
            "head counts and widths (swa_*): their points have those shapes, and cfg's are block 0's."),
    replace(LLAMA, name="hyperclovax", model_types=("hyperclovax",),
            norms={"ln1": "input_layernorm", "ln1_post": "post_norm1", "ln2": "post_attention_layernorm",
                   "ln2_post": "post_norm2"},
            resid_mid="post_attention_layernorm", attn_out="post_norm1", mlp_out="post_norm2",
            notes=SANDWICH_NOTE + " " + GRANITE_NOTE.replace("attention and MLP outputs", "ln1_post and ln2_post "
                  "outputs") + " Logits are multiplied by logits_scaling after W_U."),
    replace(LLAMA, name="vaultgemma", model_types=("vaultgemma",), norm_weight_offset=1.0,
            norms={"ln1": "input_layernorm", "ln2": "pre_feedforward_layernorm"}, resid_mid="pre_feedforward_layernorm",
            notes="RMSNorms scale by (1 + weight); hook_attn_scores is after the tanh soft-cap; logits are "
            "soft-capped after W_U (final_logit_softcapping)."),
    replace(LLAMA, name="laguna", model_types=("laguna",), moe=True,
            notes=QK_NORM_NOTE + " Gated attention: hook_z is the input of o_proj, i.e. the per-head weighted "
            "values already multiplied by softplus(g_proj(x)) per head. Dense and sparse MLP layers "
            "(mlp_layer_types) are mixed, so only hook_mlp_out is exposed on every layer."),
    replace(LLAMA, name="mellum", model_types=("mellum",), moe=True,
            notes=QK_NORM_NOTE + " Dense and sparse MLP layers (mlp_layer_types) are mixed, so only hook_mlp_out "
            "is exposed on every layer."),
    replace(LLAMA, name="solar_open", model_types=("solar_open",), moe=True,
            notes="hook_mlp_out includes the shared experts."),
    replace(LLAMA, name="kolibri1", model_types=("kolibri1",), moe=True, **GLM4_SANDWICH,
            notes=QK_NORM_NOTE + " " + SANDWICH_NOTE + " hook_mlp_out (after ln2_post) includes the shared experts."),
)
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
