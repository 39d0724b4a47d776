"""Per-architecture adapter table: where each canonical hook point lives in a HuggingFace model.

A family is described as data, never as code (``base.Family``). The table is split by kind of architecture:
``core`` (the first families covered), ``classic``, ``modern``, ``frontier``, ``moe`` and ``hybrid``; ``excluded``
lists the model types that are not decoder-only text models, and each table may exclude types of its kind, with
reasons.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import UnsupportedModelError
from . import classic, core, frontier, hybrid, modern, moe, excluded
from .base import GPT2, LLAMA, Family, QKVLayout

_TABLES = (core, classic, modern, frontier, moe, hybrid)
FAMILIES: tuple[Family, ...] = tuple(f for t in _TABLES for f in t.FAMILIES)
EXCLUDED: dict[str, str] = {k: v for t in (excluded, *_TABLES[1:]) for k, v in t.EXCLUDED.items()}
"""model_type → why mechscope does not wrap it."""


def _index(families: tuple[Family, ...]) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for fam in families:
        for mt in fam.model_types:
            if mt in out:
                raise AssertionError(f"model_type {mt!r} is claimed by both {out[mt].name!r} and {fam.name!r}")
            out[mt] = fam
    return out


_BY_MODEL_TYPE = _index(FAMILIES)


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(config) -> Family:
    """The adapter entry for a HuggingFace config, with MoE and config-dependent variants resolved."""
    model_type = getattr(config, "model_type", None)
    fam = _BY_MODEL_TYPE.get(model_type)
    if fam is None:
        why = f" ({EXCLUDED[model_type]})" if model_type in EXCLUDED else ""
        raise UnsupportedModelError(
            f"mechscope does not support model_type {model_type!r} ({type(config).__name__}){why}; supported "
            f"decoder-only families: {', '.join(supported_model_types())}. Encoder-only and encoder-decoder models "
            "are out of scope. To add a decoder-only family, add a Family entry to mechscope/families/ (usually a "
            "one-line replace() of a close relative) and a tiny config to tests/family_configs/."
        )
    for attr, value, overrides in fam.variants:
        if getattr(config, attr, None) == value:
            fam = replace(fam, **overrides)
    for attr, want in fam.config_requires:
        got = getattr(config, attr, None)
        if got != want:
            raise UnsupportedModelError(
                f"mechscope's {fam.name!r} entry assumes config.{attr} == {want!r}, but this model has {got!r}, which "
                "changes where the hook points live; this variant is not supported yet."
            )
    if fam.moe:
        fam = replace(fam, notes=(fam.notes + " Mixture-of-experts MLP: its blocks have hook_mlp_out and, where the "
                                  "router is known, the router points, but no hook_pre/hook_post.").strip())
    if fam.qkv_layout == "latent" and getattr(config, "q_lora_rank", 0) is None:
        fam = replace(fam, q="self_attn.q_proj")
    if model_type == "gpt_bigcode" and not getattr(config, "multi_query", True):
        fam = replace(fam, qkv_layout="interleaved")
    if fam.is_parallel(config) and fam.resid_mid is not None:
        fam = replace(fam, resid_mid=None)
    return fam


__all__ = ["EXCLUDED", "FAMILIES", "GPT2", "LLAMA", "Family", "QKVLayout", "family_for", "supported_model_types"]
