"""Hybrid attention/state-space and linear-attention models: the residual stream everywhere, attention points on
attention blocks, ``hook_mixer_out`` on blocks whose token mixer is a state-space model, linear attention or a
convolution.

Which blocks have which points is read off the model, not written per family: a group of points exists in a block
exactly where its modules do (``Family.has_group``), so Jamba's ``self_attn``/``mamba`` blocks need no table of
layer kinds; only where one module path serves several kinds (NemotronH's ``mixer``) does ``layer_groups`` map
``config.layer_types`` values to groups.
"""

from __future__ import annotations

from dataclasses import replace

from .base import LLAMA, Family

LFM2 = replace(
    LLAMA, name="lfm2", model_types=("lfm2",), o="self_attn.out_proj", ln_final="model.embedding_norm",
    norms={"ln1": "operator_norm", "ln2": "ffn_norm"}, resid_mid="ffn_norm", mixer="conv",
    mlp="feed_forward", mlp_out="feed_forward", mlp_gate="feed_forward.w1", mlp_in="feed_forward.w3",
    mlp_down="feed_forward.w2",
    notes="Convolution blocks (short gated convolution) have hook_mixer_out instead of attention points; q and k "
    "are RMS-normed per head before RoPE (hook_rot_q/k are after both). ln_final is the model's embedding_norm.",
)

FAMILIES: tuple[Family, ...] = (
    LFM2,
)
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
