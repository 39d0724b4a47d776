"""The newest generations (Gemma 3n/4, Qwen 3.5/4, Llama 4, dots3, MiniMax-M3 text) and the text models inside their
multimodal wrappers.

A multimodal ``*ForConditionalGeneration`` in the causal-LM mapping keeps its text decoder one level down
(``model.language_model``); its entry is the text family with the model-level paths moved there (``nested``).
Only text inputs are in scope for those wrappers: images and audio run through towers mechscope does not hook.
"""

from __future__ import annotations

from dataclasses import replace

from . import core
from .base import LLAMA, Family

_MODEL_PATHS = ("embed", "layers", "ln_final")
"""Family fields that are relative to the ``*ForCausalLM`` module (the others are relative to a block)."""


def nested(fam: Family, text_model: str, **changes) -> Family:
    """``fam`` with its model-level paths (``model.…``) moved under ``text_model`` (``model.language_model``)."""
    moved = {f: text_model + getattr(fam, f).removeprefix("model") for f in _MODEL_PATHS}
    return replace(fam, **{**moved, **changes})


def _core(name: str) -> Family:
    return next(f for f in core.FAMILIES if f.name == name)


WRAPPER_NOTE = "Multimodal wrapper: its text decoder is wrapped for text-only inputs; images and audio are out of scope."

GEMMA3 = nested(
    _core("gemma2"), "model.language_model", name="gemma3", model_types=("gemma3",),
    notes=_core("gemma2").notes + " " + WRAPPER_NOTE,
)

LLAMA4 = replace(
    LLAMA, name="llama4", model_types=("llama4", "llama4_text"), mlp="feed_forward", mlp_out="feed_forward",
    mlp_gate="feed_forward.gate_proj", mlp_in="feed_forward.up_proj", mlp_down="feed_forward.down_proj",
    mlp_out_flat=True, moe=True, softmax="native",
    notes="MoE blocks (shared expert + routed experts) and dense blocks interleave; both expose hook_mlp_out, dense "
    "blocks also mlp.hook_pre/hook_pre_linear/hook_post. "
    "NoPE layers (every no_rope_layer_interval-th) do not rotate q/k: their hook_rot_q/hook_rot_k are the query "
    "after attention-temperature scaling and the plain key; on RoPE layers they are after RoPE and the L2 qk-norm. "
    "Chunked-attention layers mask keys outside the query's chunk (finfo.min in hook_attn_scores).",
)

QWEN3_5 = replace(
    LLAMA, name="qwen3_5", model_types=("qwen3_5", "qwen3_5_text"), q_gated=True, mixer="linear_attn",
    norm_weight_offset=1.0,
    notes="Hybrid: gated-DeltaNet (linear attention) blocks have hook_mixer_out instead of attention points; "
    "full-attention blocks have gated attention: q_proj gives [query | gate] per head (hook_q is the query), "
    "hook_z is the input of o_proj, i.e. the weighted values already multiplied by sigmoid(gate). q and k are "
    "RMS-normed per head before (partial) RoPE; hook_rot_q/k are after both.",
)

GEMMA4 = replace(
    _core("gemma2"), name="gemma4", model_types=("gemma4_text",), norm_weight_offset=0.0,
    notes="Sandwich norms as in Gemma 2/3 (hook_attn_out/hook_mlp_out are after ln1_post/ln2_post). After the MLP, "
    "a per-layer-input branch (per_layer_input_gate → per_layer_projection → post_per_layer_input_norm) adds to the "
    "residual and the block's output is multiplied by layer_scalar, so hook_resid_post = (hook_resid_mid + "
    "hook_mlp_out + per-layer term) * layer_scalar. Full-attention blocks may have wider heads and fewer kv heads "
    "than sliding ones (shapes are per block); with attention_k_eq_v they have no v_proj (values are the key "
    "projection, so there is no hook_v); KV-sharing blocks have no k_proj/v_proj (no hook_k/hook_v; hook_rot_k is "
    "the shared key). hook_v is before the scale-free v-norm. With enable_moe_block, hook_mlp_out includes the "
    "experts (post_feedforward_layernorm of dense MLP + experts) while mlp.* points are the dense MLP's, and "
    "replacing hook_resid_mid does not reach the router, the experts, the per-layer branch or layer_scalar: edit "
    "hook_resid_pre/hook_resid_post for exact residual edits there.",
)

GEMMA4_UNIFIED = replace(
    GEMMA4, name="gemma4_unified", model_types=("gemma4_unified_text",),
    notes=GEMMA4.notes + " Gemma 4 unified has neither the per-layer-input branch nor the MoE block.",
)

MINIMAX_M3 = replace(
    LLAMA, name="minimax_m3", model_types=("minimax_m3_vl_text",), moe=True, attention="eager", norm_weight_offset=1.0,
    notes="Dense and MoE blocks interleave (mlp_layer_types); both expose hook_mlp_out. Sparse-attention blocks "
    "keep, per query, the key blocks a lightning indexer selects: the others are masked (finfo.min) in "
    "hook_attn_scores and get zero pattern. q and k are RMS-normed per head before partial RoPE.",
)

DOTS3 = replace(
    LLAMA, name="dots3_note", model_types=("dots3_note", "dots3_note_text"), q="self_attn.q_b_proj", k=None, v=None,
    moe=True, attention="eager",
    notes="Multi-head latent attention (MLA): hook_q is the up-projected query (q_b_proj, per head [nope | rope], "
    "before rotary); keys and values are expanded per head from a shared latent, so there is no hook_k/hook_v: "
    "hook_rot_k holds the keys ([nope | rotated rope], one per query head). hook_z is narrower (v_head_dim) and is "
    "the input of o_proj, i.e. the weighted values already multiplied by the per-head sigmoid gate (g_proj). "
    "Indexed-attention (DSA) blocks keep only the keys the indexer selects (others masked with finfo.min); sliding "
    "blocks may have fewer, differently sized heads (shapes are per block). Dense and MoE blocks interleave; both "
    "expose hook_mlp_out.",
)

GEMMA3N = replace(
    _core("gemma2"), name="gemma3n", model_types=("gemma3n_text",), resid_stream=0, resid_mid=None,
    norm_weight_offset=0.0,
    notes="AltUp: blocks carry altup_num_inputs residual streams ([streams, batch, pos, d_model]); hook_resid_pre/"
    "hook_resid_post are the active stream (altup_active_idx = 0), the one attention and the MLP read and write and "
    "the final norm's average starts from. Inside a block ln1 reads AltUp's prediction of that stream (not "
    "hook_resid_pre itself); hook_attn_out (after ln1_post) is added to it, averaged with the LAuReL branch "
    "((prediction + attn_out + laurel) / sqrt 2) into the mid-block residual that ln2 reads, and hook_mlp_out (after "
    "ln2_post) is added to that; AltUp's correction then writes the result into every stream, and the per-layer "
    "input branch adds to the other streams. There is no hook_resid_mid: replacing the mid-block residual could "
    "not reach the correction; ln2.hook_out reads it normalized. mlp.hook_pre is the gate projection "
    "before activation sparsity (the Gaussian top-k of sparse layers). KV-sharing blocks have no hook_k/hook_v "
    "(hook_rot_k is the shared key). ln_final reads the mean of the streams.",
)

QWEN4_EXP = replace(
    QWEN3_5, name="qwen4_exp", model_types=("qwen4_exp", "qwen4_exp_text"), norms={},
    ln_final="model.hyper_connection_mixer", ln_final_scale=False, resid_mid="mlp_hyper_connection",
    resid_mid_reused=False, hyper_streams="hc_count", moe=True,
    notes="Hyper-connections: the residual is hc_count streams concatenated on the last axis, so hook_resid_pre/"
    "mid/post are [batch, pos, hc_count * d_model]. Each mixer and MoE reads a learned, gated mix of the RMS-normed "
    "streams (attn_hyper_connection / mlp_hyper_connection, there are no ln1/ln2 points) and its output "
    "(hook_attn_out, hook_mixer_out, hook_mlp_out: [batch, pos, d_model]) is added to every stream scaled by "
    "per-stream injection weights. Blocks listed in ple_layer_ids first add hashed n-gram features (PLE) to the "
    "streams. ln_final.hook_out is the final mixer's output (what lm_head reads); it has no hook_scale or hook_normalized. "
    "Attention blocks are gated (q_proj gives [query | gate] per head; hook_z is after the gate) and attend only "
    "to the key blocks the QSA indexer selects (others masked with finfo.min); gated-DeltaNet blocks have "
    "hook_mixer_out instead of attention points.",
)

FAMILIES: tuple[Family, ...] = (
    GEMMA3,
    LLAMA4,
    GEMMA3N,
    nested(GEMMA3N, "model.language_model", name="gemma3n_mm", model_types=("gemma3n",),
           notes=GEMMA3N.notes + " " + WRAPPER_NOTE),
    GEMMA4,
    nested(GEMMA4, "model.language_model", name="gemma4_mm", model_types=("gemma4",),
           notes=GEMMA4.notes + " " + WRAPPER_NOTE),
    GEMMA4_UNIFIED,
    nested(GEMMA4_UNIFIED, "model.language_model", name="gemma4_unified_mm", model_types=("gemma4_unified",),
           notes=GEMMA4_UNIFIED.notes + " " + WRAPPER_NOTE),
    MINIMAX_M3,
    DOTS3,
    QWEN3_5,
    replace(QWEN3_5, name="qwen3_5_moe", model_types=("qwen3_5_moe", "qwen3_5_moe_text"), moe=True),
    QWEN4_EXP,
)
_DRAFTER = ("A multi-token-prediction drafter for assisted decoding: its forward needs the target model's hidden "
            "states and shared KV states, not token ids, so it is not a standalone language model; wrap the target "
            "Gemma 4 model instead.")
EXCLUDED: dict[str, str] = {"gemma4_assistant": _DRAFTER, "gemma4_unified_assistant": _DRAFTER}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
