"""Tiny configs for ``mechscope.families.classic``: model_type (or variant key) → overrides of ``families.COMMON``."""

CONFIGS: dict[str, dict] = {
    "gpt_neo": dict(num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4),
    "codegen": dict(n_embd=64, n_layer=2, num_attention_heads=8, n_positions=64, n_inner=96, rotary_dim=4),
    "gpt_neox_japanese": dict(intermediate_multiple_size=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
    "openai-gpt": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64),
    "gpt-sw3": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=96),
    "jais2": {},
    "emu3": dict(text_config=dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)),
    "falcon": dict(num_kv_heads=None, head_dim=None, multi_query=True, parallel_attn=True),
    "falcon_interleaved_sequential": dict(num_kv_heads=None, head_dim=None, multi_query=False, parallel_attn=False),
    "falcon_alibi": dict(num_kv_heads=None, head_dim=None, multi_query=True, parallel_attn=True, alibi=True),
    "falcon_alibi_sequential": dict(num_kv_heads=None, head_dim=None, multi_query=False, parallel_attn=False, alibi=True),
    "opt": dict(ffn_dim=96),
    "xglm": dict(d_model=64, num_layers=2, attention_heads=4, ffn_dim=96),
    "bloom": dict(n_layer=2, n_head=4),
    "mpt": dict(d_model=64, n_heads=4, n_layers=2, max_seq_len=64, expansion_ratio=2),
    "biogpt": dict(num_key_value_heads=None),
    "ctrl": dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, dff=96),
    "diffllama": dict(num_key_value_heads=4),
    "modernbert-decoder": dict(global_attn_every_n_layers=2, local_attention=4, num_hidden_layers=3),
}
EAGER_ONLY: set[str] = {"gpt_neo", "codegen", "gpt_neox_japanese", "openai-gpt", "bloom", "mpt", "xglm"}
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {
    "falcon_interleaved_sequential": "falcon", "falcon_alibi": "falcon", "falcon_alibi_sequential": "falcon",
}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
