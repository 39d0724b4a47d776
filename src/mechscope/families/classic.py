"""Classic architectures (GPT-Neo, OPT, Bloom, Falcon, CodeGen, MPT, ...), including those whose attention does not
go through transformers' attention registry (ALiBi, custom ``_attn``): those get the treatment GPT-J got (the method
that computes the pattern is replaced on the instance while an attention internal is hooked, op for op equal to HF),
never a reimplemented model."""

from __future__ import annotations

from dataclasses import replace

from .base import GPT2, LLAMA, Family

FAMILIES: tuple[Family, ...] = (
    replace(GPT2, name="gpt_sw3", model_types=("gpt-sw3",),
            notes="GPT-SW3 checkpoints are GPT-2 models (their config says model_type 'gpt2'). " + GPT2.notes),
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
        "before W_U (the 'decoder' linear), so logits are not ln_final.hook_normalized @ W_U. "
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
}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
