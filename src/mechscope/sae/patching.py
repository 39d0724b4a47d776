"""Activation patching of features: a spliced dictionary's latents copied one at a time from one run into
another (Marks et al. 2024's node patching), on ``mechscope.patching``'s engine.

``mechscope.patching.activation_patch`` sweeps a fixed vocabulary of model points per layer (``resid_pre``,
``z``, ...); latents are points of their own (``<point>.sae.hook_sae_acts_post``), swept here per latent (and
per position) instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..patching.activation import base_and_source
from ..patching.engine import run_variants
from ..patching.result import PatchResult, metric_values
from ..tokens import token_strings
from .splice import spliced


def latent_point(model, point: str) -> str:
    """The latents' hook name for ``point``: a latents point itself, or the point a dictionary is spliced at (or
    reads), whose ``.sae.hook_sae_acts_post`` it names."""
    if not isinstance(point, str):
        raise InputTypeError(f"point must be a hook name, got {type_name(point)}.")
    for s in spliced(model).values():
        if point in (s.point, s.hook_in):
            return s.prefix + "hook_sae_acts_post"
    if ".sae." not in point:
        raise InputError(f"no dictionary is spliced at {point!r}; splice one first (mechscope.sae.splice) or pass a "
                         f"latents point such as '{point}.sae.hook_sae_acts_post'.")
    model._point(point)
    return point


def patch_features(model, clean, corrupted, metric: Callable[[Tensor], Tensor], point: str, *,
                   features: Sequence[int] | None = None, by_pos: bool = False,
                   positions: Sequence[int] | None = None, direction: str = "denoise",
                   **engine_options) -> PatchResult:
    """Patch each latent of the dictionary spliced at ``point`` from the source run into the base run (``denoise``:
    clean into corrupted, TransformerLens's default; ``noise``: the reverse) and return ``metric`` of each patched
    run: a :class:`PatchResult` over ``feature`` (and ``pos`` when ``by_pos``).

    ``features``: the latents to sweep (default: every latent active somewhere in either run); ``positions``:
    with ``by_pos``, the positions swept (default all). Splice with ``use_error_term=True`` so an unpatched run is
    the model's own; engine options (``max_batch``, ``memory``, ``method``) go to ``run_variants``."""
    name = latent_point(model, point)
    base, source = base_and_source(model, clean, corrupted, metric, direction)
    with torch.no_grad():
        _, src_cache = model.run_with_cache(source.tokens, names_filter=name, attention_mask=source.attention_mask)
        src = src_cache[name]
        if features is None:
            _, base_cache = model.run_with_cache(base.tokens, names_filter=name, attention_mask=base.attention_mask)
            active = (src != 0).flatten(0, -2).any(0) | (base_cache[name] != 0).flatten(0, -2).any(0)
            features = active.nonzero()[:, 0].tolist()
    d_sae = src.shape[-1]
    feats = _ints(features, d_sae, "features", False)
    n_pos = src.shape[1]
    pos_list = _ints(positions if positions is not None else range(n_pos), n_pos, "positions", True) if by_pos else None
    variants = []
    for j in feats:
        for p in (pos_list if by_pos else [None]):
            variants.append([(name, _setter(src, j, p))])
    opts = dict(engine_options)
    values = metric_values(run_variants(model, base.tokens, variants, metric, attention_mask=base.attention_mask,
                                        **opts)) if variants else torch.zeros(0)
    b0, s0 = metric_values([run_variants(model, base.tokens, [[]], metric, attention_mask=base.attention_mask, **opts)[0],
                            run_variants(model, source.tokens, [[]], metric, attention_mask=source.attention_mask,
                                         **opts)[0]])
    dims, labels = ("feature",), {"feature": [str(j) for j in feats]}
    if by_pos:
        values = values.reshape(len(feats), len(pos_list))
        dims = ("feature", "pos")
        strings = token_strings(model.tokenizer, base.tokens[0])
        labels["pos"] = [strings[p] for p in pos_list]
    clean_v, corrupt_v = (float(s0), float(b0)) if direction == "denoise" else (float(b0), float(s0))
    return PatchResult(values, dims, labels, metric=getattr(metric, "__qualname__", "metric"),
                       title=f"feature patching ({direction}): {name}",
                       baselines={"clean": clean_v, "corrupted": corrupt_v})


def _ints(items, n: int, what: str, allow_negative: bool) -> list[int]:
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or not (-n if allow_negative else 0) <= v < n:
            raise InputError(f"{what} must be ints from 0 to {n - 1}, got {v!r}.")
        out.append(v % n)
    return out


def _setter(src: Tensor, j: int, p: int | None):
    def patch(f: Tensor, hook) -> Tensor:
        f = f.clone()
        s = src.to(f.device, f.dtype)
        if p is None:
            f[..., j] = s[..., j]
        else:
            f[:, p, j] = s[:, p, j]
        return f

    return patch
