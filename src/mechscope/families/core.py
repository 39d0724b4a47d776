"""The first families mechscope covered: GPT-2 and its relatives, GPT-NeoX, GPT-J, Llama and the Llama-likes."""

from __future__ import annotations

from dataclasses import replace

from .base import GPT2, LLAMA, MOE, Family, PLAIN_MLP, POST_NORM_GEMMA, POST_NORM_ONLY

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
    replace(LLAMA, name="mistral", model_types=("mistral", "ministral")),
    replace(LLAMA, name="mixtral", model_types=("mixtral",), **MOE),
    replace(LLAMA, name="qwen2", model_types=("qwen2", "seed_oss")),
    replace(LLAMA, name="qwen2_moe", model_types=("qwen2_moe",), **MOE, notes="hook_mlp_out includes the sigmoid-gated shared expert."),
    replace(LLAMA, name="qwen3", model_types=("qwen3",), notes="q and k are RMS-normed per head before RoPE; hook_rot_q/k are after both."),
    replace(LLAMA, name="qwen3_moe", model_types=("qwen3_moe",), **MOE, notes="q and k are RMS-normed per head before RoPE; hook_rot_q/k are after both."),
    replace(LLAMA, name="gemma", model_types=("gemma",), norm_weight_offset=1.0, notes="hook_embed includes the sqrt(d_model) scaling."),
    replace(
        LLAMA, name="gemma2", model_types=("gemma2", "gemma3_text"), norms=POST_NORM_GEMMA, norm_weight_offset=1.0,
        resid_mid="pre_feedforward_layernorm", attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        notes="Sandwich norms: hook_attn_out/hook_mlp_out are after ln1_post/ln2_post (what enters the "
        "residual); hook_result is before ln1_post. hook_attn_scores is after the tanh soft-cap.",
    ),
    replace(
        LLAMA, name="olmo2", model_types=("olmo2", "olmo3", "exaone4"), norms=POST_NORM_ONLY,
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
    replace(LLAMA, name="arcee", model_types=("arcee",), **PLAIN_MLP),
    replace(LLAMA, name="nemotron", model_types=("nemotron",), norm_type="LN", norm_weight_offset=1.0, **PLAIN_MLP,
            notes="LayerNorm with (1 + weight) and a bias."),
    replace(LLAMA, name="gpt_oss", model_types=("gpt_oss",), **MOE | {"router": "mlp.router"}, notes="Attention sinks: each head's softmax includes a learned sink logit, dropped from hook_pattern (rows sum to less than 1)."),
    replace(LLAMA, name="helium", model_types=("helium", "smollm3")),
    replace(
        LLAMA, name="cohere", model_types=("cohere", "cohere2"), norms={"ln1": "input_layernorm"},
        norm_type="LN", resid_mid=None, parallel=True,
        notes="Parallel block with one norm; logits are multiplied by config.logit_scale after W_U.",
    ),
)
