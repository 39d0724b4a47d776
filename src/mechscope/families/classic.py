"""Classic architectures (GPT-Neo, OPT, Bloom, Falcon, CodeGen, MPT, ...), including those whose attention does not
go through transformers' attention registry (ALiBi, custom ``_attn``): those get the treatment GPT-J got (the method
that computes the pattern is replaced on the instance while an attention internal is hooked, op for op equal to HF),
never a reimplemented model."""

from __future__ import annotations

from dataclasses import replace

from .base import GPT2, LLAMA, Family

FAMILIES: tuple[Family, ...] = (
    replace(
        GPT2, name="gpt_neo", model_types=("gpt_neo",), softmax="float32",
        attn="attn.attention", qkv_layout="separate", q="attn.attention.q_proj", k="attn.attention.k_proj",
        v="attn.attention.v_proj", o="attn.attention.out_proj", attention="gpt_neo",
        notes="Scores are not scaled by 1/sqrt(d_head). Layers alternate global and local (sliding-window, "
        "config.window_size) attention; the window lives in each attention's causal-mask buffer, so masked "
        "scores are finfo.min in both. " + GPT2.notes,
    ),
    Family(
        name="codegen", model_types=("codegen",),
        embed="transformer.wte", layers="transformer.h", ln_final="transformer.ln_f",
        attn="attn", qkv_layout="interleaved", qkv="attn.qkv_proj", qkv_groups=4, qkv_order="qvk",
        o="attn.out_proj", norms={"ln1": "ln_1"}, norm_type="LN", attn_out="attn", resid_mid=None, parallel=True,
        mlp_gate=None, mlp_in="mlp.fc_in", mlp_down="mlp.fc_out", attention="codegen",
        notes="Parallel block with one norm (like GPT-J): attention and MLP both read ln1; there is no resid_mid. "
        "qkv_proj is laid out for 4 model-parallel shards, each [q | v | k]. Only the first rotary_dim dims of each "
        "head are rotated. hook_attn_scores is (q.k + mask) / sqrt(d_head): HF adds the mask before scaling.",
    ),
    Family(
        name="gpt_neox_japanese", model_types=("gpt_neox_japanese",),
        embed="gpt_neox_japanese.embed_in", layers="gpt_neox_japanese.layers",
        ln_final="gpt_neox_japanese.final_layer_norm", unembed="embed_out",
        attn="attention", qkv_layout="interleaved", qkv="attention.query_key_value", o="attention.dense",
        norm_type="LN", attn_out="attention", mlp_gate=None, mlp_in="mlp.dense_h_to_4h",
        mlp_down="mlp.dense_4h_to_h", attention="gpt_neox_japanese",
        notes="Sequential residual. In the last block HF adds the attention's dense_bias outside the attention "
        "module, so that block's hook_attn_out is attention's output without that bias (resid_mid includes it). "
        "Only part of each head is rotated (partial_rotary_factor).",
    ),
    Family(
        name="openai_gpt", model_types=("openai-gpt",),
        embed="transformer.tokens_embed", pos_embed="transformer.positions_embed", layers="transformer.h",
        ln_final=None, attn="attn", qkv_layout="split", qkv="attn.c_attn", o="attn.c_proj",
        norms={"ln1": "ln_1", "ln2": "ln_2"}, norm_type="LN", attn_out="attn", resid_mid="ln_1",
        resid_mid_reused=False, mlp_gate=None, mlp_in="mlp.c_fc", mlp_down="mlp.c_proj", attention="openai",
        rotary=False,
        notes="Post-LN blocks (the original GPT): resid_mid = resid_pre + attn_out is the input of ln1, whose output "
        "is what the MLP reads and adds to; ln2 normalises (that + mlp_out) into resid_post. There is no final "
        "norm: the last resid_post is unembedded. Masked scores are -1e4 (HF's w * b - 1e4 * (1 - b)), plus the "
        "padding mask. hook_embed and hook_pos_embed are summed (then dropout) into blocks.0.hook_resid_pre.",
    ),
    replace(GPT2, name="gpt_sw3", model_types=("gpt-sw3",),
            notes="GPT-SW3 checkpoints are GPT-2 models (their config says model_type 'gpt2'). " + GPT2.notes),
    Family(
        name="biogpt", model_types=("biogpt",),
        embed="biogpt.embed_tokens", pos_embed="biogpt.embed_positions", layers="biogpt.layers",
        ln_final="biogpt.layer_norm", unembed="output_projection", attn="self_attn", o="self_attn.out_proj",
        norms={"ln1": "self_attn_layer_norm", "ln2": "final_layer_norm"}, norm_type="LN", attn_out="self_attn",
        resid_mid="final_layer_norm", mlp=None, mlp_out="fc2", mlp_gate=None, mlp_in="fc1", mlp_down="fc2",
        softmax="native", rotary=False,
        notes="hook_embed includes the sqrt(d_model) scaling (scale_embedding); hook_embed and hook_pos_embed are "
        "summed (then dropout) into blocks.0.hook_resid_pre. The MLP is inline in the block: hook_mlp_out is "
        "fc2's output (before the residual dropout, a no-op in eval).",
    ),
    Family(
        name="ctrl", model_types=("ctrl",),
        embed="transformer.w", layers="transformer.h", ln_final="transformer.layernorm",
        attn="multi_head_attention", q="multi_head_attention.Wq", k="multi_head_attention.Wk",
        v="multi_head_attention.Wv", o="multi_head_attention.dense",
        norms={"ln1": "layernorm1", "ln2": "layernorm2"}, norm_type="LN", attn_out="multi_head_attention",
        resid_mid="layernorm2", mlp="ffn", mlp_out="ffn", mlp_gate=None, mlp_in="ffn.0", mlp_down="ffn.2",
        softmax="native", rotary=False, positions="sinusoidal", embed_copied=True,
        notes="hook_embed is the raw token embedding: the model multiplies it by sqrt(d_model) (in place, so the "
        "point reads a copy) and adds fixed "
        "sinusoidal positions (a buffer, so there is no hook_pos_embed) to form blocks.0.hook_resid_pre.",
    ),
    Family(
        name="bloom", model_types=("bloom",),
        embed="transformer.word_embeddings", layers="transformer.h", ln_final="transformer.ln_f",
        attn="self_attention", qkv_layout="interleaved", qkv="self_attention.query_key_value",
        o="self_attention.dense", norm_type="LN", attn_out="self_attention.dense",
        mlp_gate=None, mlp_in="mlp.dense_h_to_4h", mlp_down="mlp.dense_4h_to_h", mlp_out="mlp.dense_4h_to_h",
        attention="bloom", rotary=False, positions="alibi",
        notes="ALiBi: hook_attn_scores includes the per-head linear position bias. The embedding is LayerNormed "
        "(word_embeddings_layernorm) before blocks.0.hook_resid_pre. HF's attention and MLP modules add the "
        "residual themselves, so hook_attn_out/hook_mlp_out are the dense projections' outputs (what is added). "
        "With apply_residual_connection_post_layernorm=True the residual is the norm's output, not resid_pre/mid. "
        "slow_but_exact=True (tensor-parallel slices that bypass the dense modules) is refused.",
        config_requires=(("slow_but_exact", False),),
    ),
    Family(
        name="mpt", model_types=("mpt",),
        embed="transformer.wte", layers="transformer.blocks", ln_final="transformer.norm_f",
        attn="attn", qkv_layout="split", qkv="attn.Wqkv", o="attn.out_proj",
        norms={"ln1": "norm_1", "ln2": "norm_2"}, norm_type="LN", attn_out="attn", resid_mid="norm_2",
        mlp="ffn", mlp_gate=None, mlp_in="ffn.up_proj", mlp_down="ffn.down_proj", mlp_out="ffn.down_proj",
        attention="mpt", rotary=False, positions="alibi",
        notes="ALiBi: hook_attn_scores includes the position bias. hook_q/k/v are Wqkv's output, before the "
        "clip_qkv clamp that attention applies when configured. HF's MLP adds the residual itself, so "
        "hook_mlp_out is down_proj's output.",
    ),
    Family(
        name="xglm", model_types=("xglm",),
        embed="model.embed_tokens", pos_embed="model.embed_positions", layers="model.layers",
        ln_final="model.layer_norm", attn="self_attn", o="self_attn.out_proj",
        norms={"ln1": "self_attn_layer_norm", "ln2": "final_layer_norm"}, norm_type="LN", attn_out="self_attn",
        resid_mid="final_layer_norm", mlp=None, mlp_out="fc2", mlp_gate=None, mlp_in="fc1", mlp_down="fc2",
        attention="xglm", rotary=False, positions="sinusoidal",
        notes="hook_embed includes the sqrt(d_model) scaling; hook_pos_embed is the fixed sinusoidal embedding "
        "(offset by 2, as in fairseq); they are summed (then dropout) into blocks.0.hook_resid_pre. hook_q is q_proj's "
        "output before the 1/sqrt(d_head) scaling HF applies to it. The MLP is inline in the block: hook_mlp_out is "
        "fc2's output.",
    ),
    Family(
        name="opt", model_types=("opt",),
        embed="model.decoder.embed_tokens", pos_embed="model.decoder.embed_positions", layers="model.decoder.layers",
        ln_final="model.decoder.final_layer_norm", attn="self_attn", o="self_attn.out_proj",
        norms={"ln1": "self_attn_layer_norm", "ln2": "final_layer_norm"}, norm_type="LN", attn_out="self_attn",
        resid_mid="final_layer_norm", mlp=None, mlp_out="fc2", mlp_flat=True, mlp_gate=None, mlp_in="fc1",
        mlp_down="fc2",
        notes="hook_embed and hook_pos_embed (learned, offset by 2) are summed into blocks.0.hook_resid_pre. The MLP "
        "is inline in the block, which flattens (batch, pos) around it; mechscope shows those points as "
        "[batch, pos, ...]. hook_mlp_out is fc2's output. Post-LN OPT (do_layer_norm_before=False, OPT-350m, "
        "which also projects embeddings) is refused.",
        config_requires=(("do_layer_norm_before", True),),
    ),
    Family(
        name="falcon", model_types=("falcon",),
        embed="transformer.word_embeddings", layers="transformer.h", ln_final="transformer.ln_f",
        attn="self_attention", qkv_layout="interleaved", qkv="self_attention.query_key_value",
        o="self_attention.dense", norms={"ln1": "input_layernorm"}, norm_type="LN", attn_out="self_attention",
        parallel="parallel_attn", mlp_gate=None, mlp_in="mlp.dense_h_to_4h", mlp_down="mlp.dense_4h_to_h",
        mlp_out_copied=True, attention="falcon",
        variants=(
            ("multi_query", True, dict(qkv_layout="split")),
            ("parallel_attn", False, dict(norms={"ln1": "input_layernorm", "ln2": "post_attention_layernorm"})),
            ("alibi", True, dict(rotary=False, positions="alibi")),
        ),
        config_requires=(("new_decoder_architecture", False),),
        notes="Layout follows the config: multi_query (Falcon-7B) fuses [q | k | v] with one key/value head, else "
        "q/k/v are interleaved per head; parallel_attn blocks read ln1 for both branches (no resid_mid); alibi "
        "replaces rotary (hook_attn_scores then includes the bias; softmax in the native dtype). hook_mlp_out is a "
        "copy in parallel blocks (HF adds attention's output into the MLP's in place). The new decoder "
        "architecture (Falcon-40B/180B: grouped kv heads broadcast before the cache, two norms) is refused.",
    ),
    replace(
        LLAMA, name="emu3", model_types=("emu3", "emu3_text_model"),
        notes="Emu3's causal LM is a Llama-style decoder over text and VQ image tokens; AutoModelForCausalLM builds it "
        "from the text sub-config (model_type 'emu3_text_model'). Its images are only token ids here.",
    ),
    replace(LLAMA, name="jais2", model_types=("jais2",), norm_type="LN", mlp_gate=None),
    replace(
        LLAMA, name="diffllama", model_types=("diffllama",),
        notes="Differential attention: each layer calls attention twice with the same q/k (values split in two "
        "halves), so rot_q/rot_k/attn_scores/pattern fire twice per layer with identical values and a replacement "
        "applies to both calls. hook_z is the input of o_proj after the differential combination "
        "(out1 - lambda * out2) and the per-head group norm; seen as [head, d_head], differential head j (query "
        "heads j and j + n_heads/2) occupies z heads 2j and 2j+1.",
    ),
    replace(
        LLAMA, name="modernbert_decoder", model_types=("modernbert-decoder",),
        embed="model.embeddings.tok_embeddings", ln_final="model.final_norm", unembed="decoder",
        attn="attn", q="attn.q_proj", k="attn.k_proj", v="attn.v_proj", o="attn.Wo", attn_out="attn",
        norms={"ln1": "attn_norm", "ln2": "mlp_norm"}, norm_type="LN", resid_mid="mlp_norm",
        mlp_gate=None, mlp_in=None, mlp_gate_up="mlp.Wi", mlp_down="mlp.Wo",
        notes="The embedding is LayerNormed (model.embeddings.norm) before blocks.0.hook_resid_pre; block 0 has no "
        "ln1 (HF uses an Identity). After ln_final a prediction head (dense, activation, LayerNorm: lm_head) runs "
        "before W_U (the 'decoder' linear), so logits are not ln_final.hook_out @ W_U. "
        "Fused Wi is [act input | gate]: hook_pre is the half that goes through the activation.",
    ),
)
EXCLUDED: dict[str, str] = {
    "blt": "Byte Latent Transformer: bytes go through a local encoder, are pooled into patches by cross-attention, "
           "run through a global transformer and are decoded by a local decoder with cross-attention back to bytes, "
           "so there is no single stack of blocks with one residual stream to name blocks.{l} after.",
    "hrm_text": "Hierarchical Reasoning Model: its two weight-shared block stacks run H_cycles x (L_cycles + 1) times "
                "per forward in a recurrence, so each block module fires many times per token and blocks.{l} has "
                "no single activation to name.",
    "cpmant": "not wrapped yet: CPM-Ant prepends learned prompt positions inside the model, so its residual stream is "
              "longer than the input; its forward takes no attention_mask (padding is inferred from token id 0) and "
              "computes attention inline. Wrapping it needs sites that crop those positions; until then it is refused "
              "rather than given points in the wrong places.",
}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
