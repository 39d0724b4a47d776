"""Attention-head detectors: how much of each head's attention lands where a mechanism says it should.

A detection pattern is a boolean ``[batch, q_pos, k_pos]`` mask built from the tokens alone:
- ``previous_token``: k = q - 1;
- ``duplicate_token``: earlier positions holding the same token as q;
- ``induction``: positions right after an earlier occurrence of q's token (tokens[k - 1] == tokens[q], k <= q).

A head's score is the attention mass it puts on the pattern, averaged over the queries that have at least one
target, so it lies in [0, 1] and reads "fraction of attention spent doing this". Run on repeated random tokens
(``default_model.make_repeated_tokens``) to find induction heads.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Detector = Literal["previous_token", "duplicate_token", "induction"]


def detection_pattern(tokens: Tensor, kind: Detector) -> Tensor:
    """``(batch, q_pos, k_pos)`` boolean targets for ``tokens (batch, pos)``."""
    b, n = tokens.shape
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    if kind == "previous_token":
        return (k == q - 1).expand(b, n, n)
    same = tokens[:, :, None] == tokens[:, None, :]  # same[b, i, j]: tokens[i] == tokens[j]
    if kind == "duplicate_token":
        return same & (k < q)
    if kind == "induction":
        after = torch.zeros_like(same)
        after[:, :, 1:] = same[:, :, :-1]  # tokens[q] == tokens[k - 1]
        return after & (k <= q) & (k - 1 < q)
    raise ValueError(f"unknown detector {kind!r}; use previous_token, duplicate_token or induction.")


def head_scores(model, tokens: Tensor, kind: Detector) -> Tensor:
    """``(n_layers, n_heads)`` attention mass on ``kind``'s detection pattern, for ``tokens (batch, pos)``.

    Hybrids: rows of blocks without softmax attention (not in ``model.cfg.attn_layers``) are NaN."""
    target = detection_pattern(tokens.cpu(), kind)
    rows = target.any(-1)  # (batch, q_pos): queries that have something to attend to
    if not rows.any():
        raise ValueError(f"the tokens contain no {kind} targets (e.g. induction needs a repeated token).")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"), device="cpu")
    scores = []
    for layer in range(model.cfg.n_layers):
        if layer not in model.cfg.attn_layers:
            scores.append(torch.full((model.cfg.n_heads,), float("nan")))
            continue
        p = cache["pattern", layer].float()  # (batch, head, q, k)
        mass = (p * target[:, None]).sum(-1)  # (batch, head, q)
        scores.append((mass * rows[:, None]).sum((0, 2)) / rows.sum())
    return torch.stack(scores)
