"""Tiny configs for the core families (``mechscope.families.core``)."""

CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=96),
    "gpt_bigcode": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=96, multi_query=True),
    "gpt_neox": dict(num_key_value_heads=None, rotary_pct=0.25, use_parallel_residual=True),
    "gpt_neox_sequential": dict(num_key_value_heads=None, rotary_pct=0.25, use_parallel_residual=False),
    "gptj": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=96, rotary_dim=8),
    "llama": {},
    "mistral": dict(sliding_window=4),
    "qwen2": {},
    "qwen3": {},
    "gemma": {},
    "gemma2": dict(sliding_window=4, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "gemma3_text": dict(sliding_window=4, query_pre_attn_scalar=16),
    "phi3": {},
    "olmo2": {},
    "olmo": {},
    "olmo3": dict(sliding_window=4),
    "stablelm": dict(num_key_value_heads=4),
    "starcoder2": {},
    "arcee": {},
    "nemotron": {},
    "helium": {},
    "smollm3": {},
    "seed_oss": {},
    "exaone4": {},
    "ministral": {},
    "phi": dict(num_key_value_heads=4),
    "persimmon": dict(num_key_value_heads=4),
    "cohere": {},
    "cohere2": dict(sliding_window=4),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=4),
}

EAGER_ONLY: set[str] = {"gemma2", "gptj", "gpt_oss"}
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {"gpt_neox_sequential": "gpt_neox"}
"""variant key → model_type, for a second config of one model type."""
