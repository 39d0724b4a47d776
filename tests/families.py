"""Tiny random-initialised configs, one per supported model_type, for the exactness suites."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from family_configs import classic, core, frontier, hybrid, modern, moe

COMMON = dict(
    vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=96, max_position_embeddings=64, head_dim=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False,
)

# model_type (or a variant key "<model_type>_<variant>") → overrides of COMMON, one module per family table. For a
# multimodal config (one with a text_config) COMMON and the overrides go to text_config; "top_level" holds
# keyword arguments for the outer config.

_TABLES = (core, classic, modern, frontier, moe, hybrid)
CONFIGS: dict[str, dict] = {k: v for t in _TABLES for k, v in t.CONFIGS.items()}
EAGER_ONLY: set[str] = set().union(*(t.EAGER_ONLY for t in _TABLES))
"""model types whose HF class refuses SDPA"""
REQUIRES: dict[str, tuple[str, ...]] = {k: v for t in _TABLES for k, v in getattr(t, "REQUIRES", {}).items()}
"""config key → optional modules its HF class needs; its cases skip when one is missing"""


def model_type_of(key: str) -> str:
    """The HF model_type of a CONFIGS key (variants are spelled ``<model_type>_<variant>`` via VARIANTS)."""
    for t in _TABLES:
        if key in getattr(t, "VARIANTS", {}):
            return t.VARIANTS[key]
    return key


def make_config(key: str, attn: str = "eager"):
    model_type = model_type_of(key)
    kw = {**COMMON, **CONFIGS[key]}
    top = kw.pop("top_level", {})
    kw = {k: v for k, v in kw.items() if v is not None}
    if "text_config" in (getattr(CONFIG_MAPPING[model_type], "sub_configs", None) or {}) and "text_config" not in kw:
        kw = {"text_config": kw}  # multimodal wrapper: the sizes belong to its text model
    cfg = AutoConfig.for_model(model_type, **kw, **top)
    cfg._attn_implementation = attn
    return cfg


def _keep_in_fp32(model, dtype: torch.dtype):
    """Apply the class's ``_keep_in_fp32_modules_strict`` as ``from_pretrained`` does (``from_config`` does not), so
    low-precision models whose code relies on float32 router or sink weights run as they do from a checkpoint."""
    keep = getattr(model, "_keep_in_fp32_modules_strict", None) or []
    if dtype == torch.float32 or not keep:
        return model
    pattern = re.compile("|".join(rf"((^|\.){re.escape(k)}($|\.))" for k in keep))
    for name, p in model.named_parameters():
        if pattern.search(name):
            p.data = p.data.float()
    return model


def make_pair(key: str, dtype: torch.dtype, seed: int = 0):
    """(eager model, sdpa-or-eager model) with identical random weights, in eval mode."""
    missing = [m for m in REQUIRES.get(key, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{key} needs {', '.join(missing)}")
    torch.manual_seed(seed)
    eager = _keep_in_fp32(AutoModelForCausalLM.from_config(make_config(key, "eager"), dtype=dtype), dtype).eval()
    attn = "eager" if model_type_of(key) in EAGER_ONLY else "sdpa"
    fast = _keep_in_fp32(AutoModelForCausalLM.from_config(make_config(key, attn), dtype=dtype), dtype).eval()
    with torch.no_grad():  # random init leaves biases at 0 and norm weights at 1: perturb so every term counts
        for p in eager.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.dtype) * 0.05)
    fast.load_state_dict(eager.state_dict())
    return eager, fast
