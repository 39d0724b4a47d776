"""Attention rollout (Abnar & Zuidema 2020): how much each input token flows into a position through attention.

Per attention layer the heads' patterns are averaged, ``A = mean_h pattern[h]`` (``(q_pos, k_pos)``; under GQA
the pattern is per query head already), the residual connection is modelled as an identity, ``0.5 A + 0.5 I``, rows
are renormalised to sum to 1, and the layers are multiplied in order, ``R = Â_L ⋯ Â_1``. Row ``q`` of ``R`` is the
attribution of position ``q`` to every input token. Blocks without softmax attention (Mamba, linear-attention or
convolution blocks of hybrid models) act as the identity: rollout knows nothing of how they mix tokens, so on
hybrids it is a statement about the attention blocks only. MLPs and norms, which do not mix positions, are
ignored as in the paper. The patterns are the model's own (``hook_pattern``, from transformers' attention
code); no target logits are involved, only the query position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..errors import InputError
from .baseline import attributed_positions
from .result import Attribution, build
from .runner import check_input
from .target import Target, resolve_position


def attention_rollout(model, input, *, position: int = -1, include_bos: bool = False,
                      residual: float = 0.5) -> Attribution:
    """Rollout from every input token to the query ``position`` (default the last).

    ``residual``: the identity's weight, 0.5 in the paper. ``scores (n_positions,)``: row ``position`` of the
    rolled-out matrix at the attributed positions (the full row, BOS included, sums to 1)."""
    if not isinstance(residual, (int, float)) or not 0 <= residual <= 1:
        raise InputError(f"residual must be a number in [0, 1] (the identity's weight; 0.5 in the paper), got {residual!r}.")
    tokens = check_input(model, input)
    target = QueryPosition(position=position).bind(model, tokens)
    layers = list(model.cfg.attn_layers)
    if not layers:
        raise InputError(f"attention rollout needs attention patterns, but this {model.cfg.family} model exposes no "
                         "attention points (no block has softmax attention mechscope can read); use a gradient or "
                         "perturbation method.")
    names = [f"blocks.{l}.attn.hook_pattern" for l in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    rolled = rollout_matrix([cache[name][0] for name in names], residual)
    positions = attributed_positions(model, tokens, include_bos)
    scores = rolled[target.position, positions]
    return build(model, tokens, target, "rollout", positions, scores.float(),
                 params={"residual": residual, "layers": len(layers), "head_fusion": "mean",
                         "skipped_blocks": model.cfg.n_layers - len(layers)})


def rollout_matrix(patterns: list[Tensor], residual: float = 0.5) -> Tensor:
    """``R = Â_L ⋯ Â_1`` from per-layer patterns ``(head, q_pos, k_pos)`` in forward order: ``(q_pos, k_pos)``,
    float64. ``Â = rownorm((1 - residual) mean_h A + residual I)``."""
    n = patterns[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64, device=patterns[0].device)
    rolled = eye
    for p in patterns:
        a = (1 - residual) * p.double().mean(0).to(eye.device) + residual * eye  # layers may sit on other devices
        a = a / a.sum(-1, keepdim=True)
        rolled = a @ rolled
    return rolled.cpu()


@dataclass(frozen=True)
class QueryPosition(Target):
    """Rollout's "target": a query position; no logits are read."""

    position: int = -1

    def bind(self, model, tokens):
        return replace(self, position=resolve_position(self.position, tokens.shape[-1]))

    def describe(self):
        return f"attention flow into position {self.position}"
