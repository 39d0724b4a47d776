"""Hybrid attention/state-space and linear-attention models: the residual stream everywhere, attention points on
attention blocks, ``hook_mixer_out`` on blocks whose token mixer is a state-space model, linear attention or a
convolution.

Which blocks have which points is read off the model, not written per family: a group of points exists in a block
exactly where its modules do (``Family.has_group``), so Jamba's ``self_attn``/``mamba`` blocks need no table of
layer kinds. Only where one module path serves several kinds (NemotronH's ``mixer``, MiniMax's and Kimi-Linear's
``self_attn``, RecurrentGemma's ``temporal_block``) does ``layer_groups`` map ``config.layer_types`` values to
groups, and where kinds of block are laid out differently (OLMo-Hybrid) ``layer_overrides`` gives the delta.

Not points, deliberately: the mixers' internals (SSM states, delta-rule memories, convolution states).
"""

from __future__ import annotations

from dataclasses import replace

from .base import LLAMA, POST_NORM_ONLY, Family

LFM2 = replace(
    LLAMA, name="lfm2", model_types=("lfm2",), o="self_attn.out_proj", ln_final="model.embedding_norm",
    norms={"ln1": "operator_norm", "ln2": "ffn_norm"}, resid_mid="ffn_norm", mixer="conv",
    mlp="feed_forward", mlp_out="feed_forward", mlp_gate="feed_forward.w1", mlp_in="feed_forward.w3",
    mlp_down="feed_forward.w2",
    notes="Convolution blocks (short gated convolution) have hook_mixer_out instead of attention points; q and k "
    "are RMS-normed per head before RoPE (hook_rot_q/k are after both). ln_final is the model's embedding_norm.",
)

LFM3 = replace(
    LFM2, name="lfm3", model_types=("lfm3",), o="self_attn.o_proj",
    norms={"ln1": "operator_norm", "ln1_post": "post_operator_norm", "ln2": "ffn_norm", "ln2_post": "post_ffn_norm"},
    attn_out="post_operator_norm", mixer_out="post_operator_norm", mlp_out="post_ffn_norm",
    notes="Convolution blocks have hook_mixer_out instead of attention points. Sandwich norms (use_sandwich_norm): "
    "hook_attn_out/hook_mixer_out/hook_mlp_out are after ln1_post/ln2_post, what enters the residual. q and k are "
    "RMS-normed per head before RoPE; with use_attention_gate each head's z is multiplied by a sigmoid gate "
    "(g_proj) before the output projection, so hook_z is the gated z.",
)

MAMBA_HYBRID = replace(
    LLAMA, name="bamba", model_types=("bamba",), ln_final="model.final_layernorm",
    norms={"ln1": "input_layernorm", "ln2": "pre_ff_layernorm"}, resid_mid="pre_ff_layernorm", mixer="mamba",
    mlp="feed_forward", mlp_out="feed_forward", mlp_gate="feed_forward.gate_proj", mlp_in="feed_forward.up_proj",
    mlp_down="feed_forward.down_proj",
    notes="Mamba-2 blocks have hook_mixer_out instead of attention points; every block has its MLP.",
)
"""Mamba (or Mamba-2) blocks beside attention blocks, each followed by an MLP: Bamba, and the relative of Jamba,
GraniteMoeHybrid and Falcon-H1."""

QWEN3_NEXT = replace(
    LLAMA, name="qwen3_next", model_types=("qwen3_next",), mixer="linear_attn", q_gated=True, moe=True,
    norm_weight_offset=1.0,
    notes="Gated DeltaNet (linear attention) blocks have hook_mixer_out instead of attention points. Gated "
    "attention: q_proj emits [query | gate] per head; hook_q is the query, hook_z is already multiplied by "
    "sigmoid(gate). q and k are RMS-normed per head before the partial RoPE; hook_rot_q/k are after both.",
)

ZAMBA = replace(
    LLAMA, name="zamba", model_types=("zamba",), ln_final="model.final_layernorm",
    attn="shared_transf.self_attn", q="shared_transf.self_attn.q_proj", k="shared_transf.self_attn.k_proj",
    v="shared_transf.self_attn.v_proj", o="shared_transf.self_attn.o_proj", attn_out=None, rotary=False,
    norms={"ln1": "mamba_decoder.input_layernorm"}, resid_mid=None, mixer="mamba_decoder.mamba",
    mlp=None, mlp_out=None, mlp_gate=None, mlp_in=None, mlp_down=None,
    layer_overrides={"linear_attention": dict(norms={"ln1": "input_layernorm"}, mixer="mamba")},
    notes="Every block adds one Mamba output to the residual (hook_mixer_out; ln1 is the pre-Mamba norm). In hybrid "
    "blocks a transformer block with tied weights first reads [resid_pre | embeddings] (2 x d_model wide) and its "
    "output, after an MLP and a linear map, is added to the Mamba block's input, not to the residual: so hybrid "
    "blocks have attention points up to hook_z but no hook_attn_out or MLP points, and ln1's input is resid_pre "
    "plus that output.",
)

FAMILIES: tuple[Family, ...] = (
    LFM2,
    LFM3,
    replace(LFM2, name="lfm2_moe", model_types=("lfm2_moe",), moe=True,
            notes="Convolution blocks have hook_mixer_out instead of attention points; the first num_dense_layers "
            "blocks have a dense MLP, the rest a mixture of experts; q and k are RMS-normed per head before RoPE."),
    MAMBA_HYBRID,
    replace(MAMBA_HYBRID, name="jamba", model_types=("jamba",), moe=True, rotary=False,
            notes="Mamba blocks have hook_mixer_out instead of attention points; every expert_layer_period-th "
            "block's MLP is a mixture of experts. Attention has no positional encoding (no hook_rot_q/k)."),
    replace(
        MAMBA_HYBRID, name="granitemoehybrid", model_types=("granitemoehybrid",), ln_final="model.norm",
        norms={"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}, resid_mid="post_attention_layernorm",
        mlp=None, mlp_out=None, mlp_gate=None, mlp_in=None, mlp_down=None,
        notes="Mamba-2 blocks have hook_mixer_out instead of attention points. Granite multipliers: the residual adds "
        "residual_multiplier x hook_attn_out (or hook_mixer_out) and x the MLP output; blocks.0.hook_resid_pre is "
        "embedding_multiplier x hook_embed; attention scores are scaled by attention_multiplier (in "
        "hook_attn_scores); logits are divided by logits_scaling after W_U. No MLP points: the MLP output is the sum "
        "of the mixture of experts and the shared MLP, computed inline with no module holding it. hook_rot_q/k equal "
        "hook_q/k when position_embedding_type is not 'rope'.",
    ),
    QWEN3_NEXT,
    replace(
        MAMBA_HYBRID, name="falcon_h1", model_types=("falcon_h1",),
        notes="Every block runs attention and Mamba-2 side by side on ln1's output, then an MLP. muP multipliers: "
        "blocks.0.hook_resid_pre is embedding_multiplier x hook_embed; attention reads attention_in_multiplier x "
        "ln1 (hook_q/k/v are projections of that) and k is multiplied by key_multiplier after hook_k (included in "
        "hook_rot_k); the residual adds attention_out_multiplier x hook_attn_out + ssm_out_multiplier x "
        "hook_mixer_out; hook_pre is the gate projection before mlp_multipliers[0], hook_mlp_out includes "
        "mlp_multipliers[1]; logits are multiplied by lm_head_multiplier after W_U.",
    ),
    replace(
        LLAMA, name="minimax", model_types=("minimax",), mixer="self_attn", moe=True, resid_mid_reused=False,
        layer_groups={"mixer": ("linear_attention",)},
        notes="Lightning-attention (linear attention) blocks have hook_mixer_out instead of attention points. "
        "Post-norm residual: the skip branch is the norm's output, not the block input: resid_mid = "
        "alpha x ln1(resid_pre) + beta x hook_attn_out (or hook_mixer_out), resid_post = mlp_alpha x "
        "ln2(resid_mid) + mlp_beta x hook_mlp_out, with alpha/beta = config.*_alpha_factor/*_beta_factor. "
        "Replacing hook_resid_mid reaches both the MLP and the residual through ln2.",
    ),
    replace(
        LLAMA, name="olmo_hybrid", model_types=("olmo_hybrid",), norms=POST_NORM_ONLY, resid_mid="mlp",
        attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm", mixer="linear_attn",
        layer_overrides={"linear_attention": dict(
            norms={"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}, resid_mid="post_attention_layernorm",
            mlp_out="mlp",
        )},
        notes="Attention blocks are OLMo2-style post-norm (no ln1/ln2; hook_attn_out/hook_mlp_out are after "
        "ln1_post/ln2_post, q and k RMS-normed across heads before RoPE); Gated DeltaNet blocks are pre-norm (ln1, "
        "ln2) and have hook_mixer_out instead of attention points.",
    ),
    replace(
        LLAMA, name="bailing_hybrid", model_types=("bailing_hybrid",), k=None, v=None, mixer="self_attn", moe=True,
        layer_groups={"attn": ("full_attention",), "mixer": ("linear_attention",)},
        notes="Linear-attention blocks (Kimi delta attention) have hook_mixer_out instead of attention points. "
        "Full attention is multi-head latent attention: keys and values are expanded from a cached latent, so there "
        "is no hook_k/hook_v (hook_rot_k has them, d_head = qk_nope + qk_rope head dims; hook_z has v_head_dim); "
        "RoPE covers only the last qk_rope_head_dim of each head; each head's z is multiplied by a sigmoid gate "
        "(g_proj) before hook_z.",
    ),
    replace(
        LLAMA, name="kimi_linear", model_types=("kimi_linear",), k=None, v=None, mixer="self_attn", moe=True,
        rotary=False, layer_groups={"attn": ("full_attention",), "mixer": ("linear_attention",)},
        notes="Kimi delta attention (linear) blocks have hook_mixer_out instead of attention points. Full attention "
        "is multi-head latent attention without positional encoding: keys and values are expanded from a cached "
        "latent, so there is no hook_k/hook_v (hook_attn_scores and hook_z have them; hook_z has v_head_dim). "
        "hook_q exists when q is not low-rank (q_lora_rank None).",
    ),
    replace(
        LLAMA, name="recurrent_gemma", model_types=("recurrent_gemma",), ln_final="model.final_norm",
        norm_weight_offset=1.0,
        attn="temporal_block", q="temporal_block.q_proj", k="temporal_block.k_proj", v="temporal_block.v_proj",
        o="temporal_block.o_proj", attn_out="temporal_block", mixer="temporal_block",
        layer_groups={"mixer": ("linear_attention",)},
        norms={"ln1": "temporal_pre_norm", "ln2": "channel_pre_norm"}, resid_mid="channel_pre_norm",
        mlp="mlp_block", mlp_out="mlp_block", mlp_gate="mlp_block.gate_proj", mlp_in="mlp_block.up_proj",
        mlp_down="mlp_block.down_proj",
        notes="Griffin: recurrent blocks (convolution + RG-LRU) have hook_mixer_out instead of attention points; "
        "attention is local (sliding window) with RoPE on the first half of each head. blocks.0.hook_resid_pre is "
        "hook_embed x sqrt(d_model) (rounded to bfloat16); logits are soft-capped (logits_soft_cap).",
    ),
    ZAMBA,
    replace(
        ZAMBA, name="zamba2", model_types=("zamba2",), attn="shared_transformer.self_attn",
        q="shared_transformer.self_attn.q_proj", k="shared_transformer.self_attn.k_proj",
        v="shared_transformer.self_attn.v_proj", o="shared_transformer.self_attn.o_proj", rotary=True,
        notes=ZAMBA.notes + " Zamba2: the transformer blocks cycle through num_mem_blocks weight sets; hook_rot_q/k "
        "equal hook_q/k unless use_mem_rope; with use_shared_attention_adapter, q/k/v add a per-block low-rank "
        "adapter term that hook_q/k/v (the shared projections' outputs) do not include (hook_rot_q/k, hook_attn_scores "
        "and hook_z are computed from the full q/k/v).",
    ),
    Family(
        name="nemotron_h", model_types=("nemotron_h",), embed="model.embeddings", ln_final="model.norm_f",
        attn="mixer", q="mixer.q_proj", k="mixer.k_proj", v="mixer.v_proj", o="mixer.o_proj",
        norms={"ln1": "norm"}, attn_out="mixer", mixer="mixer", mlp="mixer", mlp_out="mixer", resid_mid=None,
        mlp_gate=None, mlp_in="mixer.up_proj", mlp_down="mixer.down_proj", rotary=False, moe=True,
        layer_groups={"attn": ("full_attention",), "mixer": ("linear_attention",), "mlp": ("mlp", "moe")},
        notes="Every block is norm -> one mixer -> residual add, the mixer being Mamba-2 (hook_mixer_out), attention "
        "(attention points, hook_attn_out), an MLP or a mixture of experts (hook_mlp_out), per config.layer_types; "
        "so there is no resid_mid and ln1 is each block's only norm. Attention has no positional encoding.",
    ),
)
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
