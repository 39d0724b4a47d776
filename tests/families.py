"""Tiny random-initialised configs, one per supported model_type, for the exactness suites."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(
    vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=96, max_position_embeddings=64, head_dim=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False,
)

# model_type → overrides of COMMON (attribute names follow each HF config class)
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

# model types whose HF class refuses SDPA
EAGER_ONLY = {"gemma2", "gptj", "gpt_oss"}


def make_config(key: str, attn: str = "eager"):
    model_type = key.split("_sequential")[0]
    kw = {**COMMON, **CONFIGS[key]}
    kw = {k: v for k, v in kw.items() if v is not None}
    cfg = AutoConfig.for_model(model_type, **kw)
    cfg._attn_implementation = attn
    return cfg


def make_pair(key: str, dtype: torch.dtype, seed: int = 0):
    """(eager model, sdpa-or-eager model) with identical random weights, in eval mode."""
    torch.manual_seed(seed)
    eager = AutoModelForCausalLM.from_config(make_config(key, "eager"), dtype=dtype).eval()
    attn = "eager" if key.split("_sequential")[0] in EAGER_ONLY else "sdpa"
    fast = AutoModelForCausalLM.from_config(make_config(key, attn), dtype=dtype).eval()
    with torch.no_grad():  # random init leaves biases at 0 and norm weights at 1: perturb so every term counts
        for p in eager.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.dtype) * 0.05)
    fast.load_state_dict(eager.state_dict())
    return eager, fast
