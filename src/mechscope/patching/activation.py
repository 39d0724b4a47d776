"""Activation patching (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024) at every granularity.

Two runs that differ in one detail — *clean* (the behaviour is there) and *corrupted* (it is not) — and one
activation copied from one run into the other. ``direction="denoise"`` (TransformerLens's convention) patches the
clean activation into the corrupted run and asks what is *sufficient* to restore the behaviour; ``"noise"``
patches the corrupted activation into the clean run and asks what is *necessary*. Every patch of a sweep is one
variant of the same forward, run together on the batched engine.

Points and the result's dims (``by_pos`` picks the position axis; its default is in brackets):

- ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out`` → ``(layer, pos)`` [by_pos] or ``(layer,)``
- ``z``, ``q``, ``k``, ``v`` → ``(layer, head)`` [all positions] or ``(layer, head, pos)``; ``k``/``v`` have
  ``kv_head`` instead of ``head`` where the model has fewer key/value heads (GQA/MQA)
- ``pattern`` → ``(layer, head)`` or ``(layer, head, pos)`` with ``pos`` the query position
- ``post`` (MLP neurons) → ``(layer, neuron)`` [all positions] or ``(layer, neuron, pos)``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..tokens import token_strings
from .engine import run_variants
from .result import PatchResult, metric_values

RESID_POINTS = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
                "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
HEAD_POINTS = {"z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
               "pattern": "attn.hook_pattern"}
NEURON_POINTS = {"post": "mlp.hook_post"}
POINTS = {**RESID_POINTS, **HEAD_POINTS, **NEURON_POINTS}
DIRECTIONS = ("denoise", "noise")


def activation_patch(model, clean, corrupted, metric: Callable[[Tensor], Tensor], *, point: str = "resid_pre",
                     by_pos: bool | None = None, layers: Sequence[int] | None = None,
                     positions: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                     neurons: Sequence[int] | None = None, direction: str = "denoise",
                     **engine_options) -> PatchResult:
    """Patch ``point`` one component at a time and return ``metric`` of each patched run as a ``PatchResult``.

    ``clean``/``corrupted``: text, a list of texts, or token ids ``[B, pos]`` — the same number of tokens (the
    patch copies position ``i`` to position ``i``). ``metric(logits [B, pos, vocab]) -> 0-d tensor`` (see
    ``mechscope.patching.metrics``; normalise it with ``normalised`` for 0 = corrupted, 1 = clean). ``layers``,
    ``positions``, ``heads`` (or kv heads), ``neurons``: restrict the sweep. Engine options (``max_batch``,
    ``memory``, ``method``, ``logits_at``) go to ``run_variants``. ``result.baselines`` holds the metric on the
    clean and corrupted runs."""
    if point not in POINTS:
        raise InputError(f"point must be one of {', '.join(POINTS)}, got {point!r}.")
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be 'denoise' (clean into corrupted, TransformerLens's default) or 'noise' "
                         f"(corrupted into clean), got {direction!r}.")
    if not callable(metric):
        raise InputTypeError(f"metric must be a function metric(logits) -> 0-d Tensor, got {type_name(metric)}.")
    clean_b, corrupt_b = _pair(model, clean, corrupted)
    source, target = (clean_b, corrupt_b) if direction == "denoise" else (corrupt_b, clean_b)
    if by_pos is None:
        by_pos = point in RESID_POINTS
    layer_list = _layers(model, point, layers)
    n_pos = target.tokens.shape[1]
    pos_list = _subset(positions, n_pos, "positions", allow_negative=True)
    names = [f"blocks.{l}.{POINTS[point]}" for l in layer_list]
    _, cache = model.run_with_cache(source.tokens, names_filter=names, attention_mask=source.attention_mask)

    unit, n_units = _units(model, point, names[0] if names else None)
    if unit is not None:
        unit_list = _subset(heads if unit != "neuron" else neurons, n_units, "heads" if unit != "neuron" else "neurons")
    else:
        unit_list = None
    if point in NEURON_POINTS and heads is not None or point not in NEURON_POINTS and neurons is not None:
        raise InputError(f"{'heads' if heads is not None else 'neurons'}= does not apply to point {point!r}.")

    axes = [("layer", layer_list)]
    if unit is not None:
        axes.append((unit, unit_list))
    if by_pos:
        axes.append(("pos", pos_list))
    grid = _product([a[1] for a in axes])
    variants = []
    for cell in grid:
        layer = cell[0]
        name = f"blocks.{layer}.{POINTS[point]}"
        idx = _index(point, cell[1] if unit is not None else None, cell[-1] if by_pos else None)
        variants.append([(name, _setter(cache[name], idx))])
    opts = dict(engine_options)
    mask = target.attention_mask
    values = run_variants(model, target.tokens, variants, metric, attention_mask=mask, **opts)
    base = run_variants(model, target.tokens, [[]], metric, attention_mask=mask, **opts)[0]
    src = run_variants(model, source.tokens, [[]], metric, attention_mask=source.attention_mask, **opts)[0]
    values = metric_values(values).reshape([len(a[1]) for a in axes])
    base, src = metric_values([base, src])
    strings = token_strings(model.tokenizer, clean_b.tokens[0])
    labels = {"layer": [str(l) for l in layer_list]}
    if unit is not None:
        labels[unit] = [str(u) for u in unit_list]
    if by_pos:
        labels["pos"] = [strings[p] for p in pos_list]
    clean_v, corrupt_v = (float(src), float(base)) if direction == "denoise" else (float(base), float(src))
    what = getattr(metric, "__qualname__", "metric")
    return PatchResult(values, tuple(a[0] for a in axes), labels, metric=what if what != "<lambda>" else "metric",
                       title=f"activation patching ({direction}): {point}",
                       baselines={"clean": clean_v, "corrupted": corrupt_v})


# ------------------------------------------------------------------------------------------ pieces
def _pair(model, clean, corrupted):
    from ..tokens import Batch, check_token_ids

    batches = []
    for what, x in (("clean", clean), ("corrupted", corrupted)):
        if isinstance(x, Tensor):
            ids = x[None] if x.ndim == 1 else x
            if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int32):
                raise InputTypeError(f"{what} token ids must be integers of shape (pos,) or (batch, pos), got "
                                     f"{type_name(x)}.")
            check_token_ids(ids, model._n_ids(), f"the {what} tokens")
            batches.append(Batch(ids.long().to(model.input_device), None))
        elif isinstance(x, (str, list)):
            batches.append(model._batch(x, None, None))
        else:
            raise InputTypeError(f"{what} must be text, a list of texts or token ids, got {type_name(x)}.")
    a, b = batches
    if a.tokens.shape != b.tokens.shape:
        raise InputError(
            f"clean is {tuple(a.tokens.shape)} tokens and corrupted {tuple(b.tokens.shape)}; patching copies "
            "position i to position i, so both need the same number of prompts and tokens. Pick a corruption of "
            "equal token length (e.g. swap names that are single tokens), and check with model.to_str_tokens."
        )
    if (a.attention_mask is None) != (b.attention_mask is None) or (
            a.attention_mask is not None and not torch.equal(a.attention_mask, b.attention_mask)):
        raise InputError("clean and corrupted are padded differently, so positions do not line up; give prompts of "
                         "equal token length per pair.")
    return a, b


def _layers(model, point: str, layers) -> list[int]:
    full = POINTS[point]
    have = [l for l in range(model.cfg.n_layers) if f"blocks.{l}.{full}" in model.hook_dict]
    if not have:
        model._point(f"blocks.0.{full}")  # the model's own sentence for why the point is missing
        raise InputError(f"no block of this {model.cfg.family} model has {full!r}.")
    if layers is None:
        return have
    want = _subset(layers, model.cfg.n_layers, "layers", allow_negative=True)
    missing = [l for l in want if l not in have]
    if missing:
        model._point(f"blocks.{missing[0]}.{full}")
    return want


def _units(model, point: str, name: str | None):
    if point in HEAD_POINTS:
        n = model.cfg.n_heads
        if point in ("k", "v") and name is not None:
            n = model.hook_dict[name].shape[2]
            if n != model.cfg.n_heads:
                return "kv_head", n
        return "head", n
    if point in NEURON_POINTS:
        return "neuron", model.hook_dict[name].shape[-1]
    return None, 0


def _subset(values, n: int, what: str, allow_negative: bool = False) -> list[int]:
    if values is None:
        return list(range(n))
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, Tensor):
        values = values.tolist()
    if not isinstance(values, (list, tuple, range)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values) or not values:
        raise InputTypeError(f"{what} must be a non-empty list of ints, got {type_name(values)}.")
    lo = -n if allow_negative else 0
    bad = [v for v in values if not lo <= v < n]
    if bad:
        raise InputError(f"{what} {bad} out of range: there are {n} (0 to {n - 1}).")
    return [v % n for v in values]


def _product(lists: list[list[int]]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for lst in lists:
        out = [(*o, x) for o in out for x in lst]
    return out


def _index(point: str, unit: int | None, pos: int | None) -> tuple:
    """Where in the activation one patch writes. Resid ``[B, pos, d]``; heads ``[B, pos, head, d]``; pattern
    ``[B, head, q_pos, k_pos]``; neurons ``[B, pos, d_mlp]``."""
    every = slice(None)
    p = every if pos is None else pos
    if point in RESID_POINTS:
        return (every, p)
    if point == "pattern":
        return (every, unit, p)
    if point in NEURON_POINTS:
        return (every, p, unit)
    return (every, p, unit)


def _setter(source: Tensor, idx: tuple):
    def patch(act: Tensor, hook) -> Tensor:
        act[idx] = source[idx].to(act.device)
        return act

    return patch


def base_and_source(model, clean, corrupted, metric, direction: str):
    """The checked ``(base, source)`` batches of a patching-style experiment: the run that is patched and the run the
    patched values come from (``denoise``: corrupted and clean; ``noise``: clean and corrupted)."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be 'denoise' (clean into corrupted, TransformerLens's default) or 'noise' "
                         f"(corrupted into clean), got {direction!r}.")
    if not callable(metric):
        raise InputTypeError(f"metric must be a function of the logits returning a 0-d tensor, got "
                             f"{type_name(metric)}.")
    clean_b, corrupt_b = _pair(model, clean, corrupted)
    return (corrupt_b, clean_b) if direction == "denoise" else (clean_b, corrupt_b)
