"""Attribution patching (Nanda 2023; Syed et al. 2023): every activation patch at once, to first order.

Activation patching asks what the metric becomes when one activation ``a`` of the base run is replaced by its value
``a'`` on the source run; that takes one forward per patch. Its first-order Taylor term,

    metric(base with a := a')  ≈  metric(base) + ∂metric/∂a · (a' − a),

needs only the base run's gradient at every point and both runs' activations: **two forwards and one backward**
for every point, layer, head, position and neuron together. ``direction="denoise"`` (the default, as the engine's
``activation_patch``): base = corrupted, source = clean; ``"noise"``: base = clean, source = corrupted.

The estimate is exact when the metric is linear in the patched activation and degrades where it is not (attention
patterns, the final norm, saturated softmaxes: Syed et al. report it is poor on early residual positions and
``attn_out`` of layer 0 in GPT-2). ``correlation`` reports how well it agrees with exact activation patching.

Points and dims are the engine's ``activation_patch``'s: ``resid_pre``, ``resid_mid``, ``resid_post``,
``attn_out``, ``mlp_out`` → ``("layer", "pos")`` (``("layer",)`` with ``by_pos=False``); ``z``, ``q``, ``k``,
``v``, ``pattern`` → ``("layer", "head")`` or with ``by_pos=True`` ``("layer", "head", "pos")`` (``pattern``: the
query position; ``k``/``v`` under GQA: key/value heads); ``post`` (MLP neurons) → ``("layer", "neuron")`` or
``("layer", "neuron", "pos")``. Values are the estimated *patched metric* (``baseline + first-order change``), so
they read like activation patching's; ``AttributionResult.effects()`` is the change alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..tokens import token_strings
from .ablation import pos_axis, unit_axis
from .activation import base_and_source
from .result import PatchResult

POINTS = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
          "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "z": "attn.hook_z", "q": "attn.hook_q",
          "k": "attn.hook_k", "v": "attn.hook_v", "pattern": "attn.hook_pattern", "post": "mlp.hook_post"}
_STREAM = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
_HEADS = ("z", "q", "k", "v", "pattern")


@dataclass
class AttributionResult(PatchResult):
    """A ``PatchResult`` of estimated patched-metric values, plus the base run's metric (``baseline``)."""

    baseline: float = float("nan")
    direction: str = "denoise"

    def effects(self) -> Tensor:
        """The first-order change of the metric, ``values - baseline``."""
        return self.values - self.baseline

    def to_dict(self) -> dict:
        return {**super().to_dict(), "baseline": self.baseline, "direction": self.direction}


def _layers(model, point: str, layers) -> list[int]:
    if point not in POINTS:
        raise InputError(f"point must be one of {', '.join(POINTS)}, got {point!r}.")
    have = [l for l in range(model.cfg.n_layers) if f"blocks.{l}.{POINTS[point]}" in model.hook_dict]
    if layers is None:
        if not have:
            raise InputError(f"this {model.cfg.family} model has no blocks.L.{POINTS[point]} point (e.g. parallel "
                             "blocks have no resid_mid); pick another point.")
        return have
    layers = [layers] if isinstance(layers, int) else list(layers)
    for l in layers:
        if l not in have:
            raise InputError(f"blocks.{l}.{POINTS[point]} does not exist; this model has it in blocks {have}.")
    return layers


def _graph_root(act: Tensor, hook) -> Tensor:
    return act.detach().requires_grad_(True)


def first_order(model, base, source, metric: Callable[[Tensor], Tensor], names: Sequence[str], *,
                base_mask: Tensor | None = None, source_mask: Tensor | None = None) -> tuple[dict[str, Tensor], float]:
    """``({name: ∂metric/∂a · (a' − a)} elementwise, shaped like the point [B, ...]), metric(base)``: the
    building block of attribution patching, for any hook points in the autograd graph. One forward and backward on
    ``base`` (token ids ``[B, pos]``), one forward without gradients on ``source`` (same shape)."""
    # Only activations need gradients: the weights are frozen for the backward (which halves its cost and leaves no
    # .grad behind on the model) and the graph starts at the embeddings' output instead.
    weights = [p for p in model.hf_model.parameters() if p.requires_grad]
    try:
        for w in weights:
            w.requires_grad_(False)
        with model.hooks([("hook_embed", _graph_root)]):
            logits, base_cache = model.run_with_cache(base, names_filter=list(names), incl_bwd=True, metric=metric,
                                                      attention_mask=base_mask)
    finally:
        for w in weights:
            w.requires_grad_(True)
    with torch.no_grad():
        baseline = float(metric(logits.detach()))
        _, source_cache = model.run_with_cache(source, names_filter=list(names), return_type=None,
                                               attention_mask=source_mask)
    terms = {}
    for n in names:
        if n + "_grad" not in base_cache:
            raise InputError(f"{n} has no gradient (it is computed beside the model, or the metric does not depend "
                             "on it); attribution patching needs a point in the autograd graph.")
        dt = torch.promote_types(base_cache[n].dtype, torch.float32)  # float32 at least; float64 models stay exact
        terms[n] = base_cache[n + "_grad"].to(dt) * (source_cache[n].to(dt) - base_cache[n].to(dt))
    return terms, baseline


def _reduce(model, point: str, name: str, term: Tensor, by_pos: bool, heads) -> Tensor:
    """Sum ``term`` ``[B, ...]`` down to ``[pos]``, ``[head(, pos)]`` or ``[neuron(, pos)]`` (or a scalar)."""
    p = pos_axis(model, name)
    if point in _STREAM:
        return term.movedim(p, 0).flatten(1).sum(1) if by_pos else term.sum()
    u = unit_axis(model, name)
    kept = [u, p] if by_pos else [u]
    out = term.permute(*kept, *[i for i in range(term.dim()) if i not in kept]).flatten(len(kept)).sum(-1)
    return out if heads is None else out[list(heads)]


def _setup(model, clean, corrupted, metric, direction):
    return base_and_source(model, clean, corrupted, metric, direction)


def _result(model, point, layers, names, terms, baseline, by_pos, heads, pos_labels, direction, metric):
    if by_pos is None:
        by_pos = point in _STREAM
    rows = torch.stack([_reduce(model, point, n, terms[n], by_pos, heads) for n in names]).cpu()
    labels = {"layer": [str(l) for l in layers]}
    if point in _STREAM:
        dims = ("layer", "pos") if by_pos else ("layer",)
    else:
        n_units = model.hook_dict[names[0]].shape[unit_axis(model, names[0])]
        unit = "neuron" if point == "post" else ("kv_head" if n_units != model.cfg.n_heads else "head")
        labels[unit] = [str(i) for i in (range(n_units) if heads is None else heads)]
        dims = ("layer", unit, "pos") if by_pos else ("layer", unit)
    if by_pos:
        labels["pos"] = pos_labels[:rows.shape[-1]]
    return AttributionResult(rows + baseline, dims, labels, metric=getattr(metric, "__name__", "metric"),
                             title=f"attribution patching ({direction}): {point}", baseline=baseline,
                             direction=direction)


def _check_heads(model, point, heads, names):
    if heads is None:
        return None
    if point not in _HEADS:
        raise InputError(f"heads= selects heads of z, q, k, v or pattern, not of {point}.")
    n = model.hook_dict[names[0]].shape[unit_axis(model, names[0])]
    heads = [heads] if isinstance(heads, int) else list(heads)
    if not all(isinstance(h, int) and 0 <= h < n for h in heads):
        raise InputError(f"heads must be indices 0 to {n - 1} of {point}'s head axis, got {heads!r}.")
    return heads


def attribution_patch(model, clean, corrupted, metric: Callable[[Tensor], Tensor], *, point: str = "resid_pre",
                      by_pos: bool | None = None, layers: Sequence[int] | None = None,
                      heads: Sequence[int] | None = None,
                      direction: Literal["denoise", "noise"] = "denoise") -> AttributionResult:
    """Attribution patching of one kind of point at every layer (``layers`` to restrict), in two forwards and one
    backward. ``clean``/``corrupted``: token ids ``[B, pos]`` of one shape, or texts. ``metric(logits [B, pos,
    vocab]) -> 0-d tensor``, differentiable. Dims as in the module docstring; ``by_pos=None`` is ``True`` for
    residual-style points and ``False`` for heads and neurons; ``heads`` restricts the head axis."""
    return attribution_patch_all(model, clean, corrupted, metric, points=[point], by_pos=by_pos, layers=layers,
                                 heads=heads, direction=direction)[point]


def attribution_patch_all(model, clean, corrupted, metric: Callable[[Tensor], Tensor], *,
                          points: Sequence[str] | None = None, by_pos: bool | None = None,
                          layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                          direction: Literal["denoise", "noise"] = "denoise") -> dict[str, AttributionResult]:
    """``{point: AttributionResult}`` for every point the model has (or ``points``), all from the same two forwards
    and one backward."""
    base_b, source_b = _setup(model, clean, corrupted, metric, direction)
    if points is None:
        points = [p for p in POINTS if any(f"blocks.{l}.{POINTS[p]}" in model.hook_dict
                                           for l in range(model.cfg.n_layers))]
    plan = {}
    for point in points:
        ls = _layers(model, point, layers)
        names = [f"blocks.{l}.{POINTS[point]}" for l in ls]
        plan[point] = ls, names, _check_heads(model, point, heads, names)
    all_names = [n for _, names, _ in plan.values() for n in names]
    terms, baseline = first_order(model, base_b.tokens, source_b.tokens, metric, all_names,
                                  base_mask=base_b.attention_mask, source_mask=source_b.attention_mask)
    clean_b = source_b if direction == "denoise" else base_b  # positions are labelled with the clean prompt, as
    pos_labels = token_strings(model.tokenizer, clean_b.tokens[0])  # activation_patch does, whichever run is patched
    return {point: _result(model, point, ls, names, terms, baseline, by_pos, hs, pos_labels, direction, metric)
            for point, (ls, names, hs) in plan.items()}


def correlation(a, b, *, k: int = 10, baseline_a: float | None = None,
                baseline_b: float | None = None) -> dict:
    """How well two sweeps over the same cells agree (e.g. attribution vs exact activation patching): Pearson and
    Spearman correlation over the cells, and the overlap of their top-``k`` cells by absolute effect.

    ``a``, ``b``: ``PatchResult``s (or tensors) of one shape. Effects are ``values - baseline``: the result's own
    ``baseline`` where it has one (for ``activation_patch``'s results: the unpatched run's metric from ``baselines``,
    corrupted when denoising, clean when noising), else ``baseline_a``/``baseline_b``, else 0. NaN cells are left
    out."""
    x, y = (_effects(r, base) for r, base in ((a, baseline_a), (b, baseline_b)))
    if x.shape != y.shape:
        raise InputError(f"the two results have shapes {tuple(x.shape)} and {tuple(y.shape)}; compare sweeps over "
                         "the same cells.")
    x, y = x.flatten().double(), y.flatten().double()
    ok = ~(x.isnan() | y.isnan())
    x, y = x[ok], y[ok]
    if x.numel() < 2:
        raise InputError("correlation needs at least two cells that are not NaN.")
    k = min(k, x.numel())
    top = lambda v: set(v.abs().argsort(descending=True)[:k].tolist())  # noqa: E731
    return {"pearson": _pearson(x, y), "spearman": _pearson(_ranks(x), _ranks(y)),
            "top_k_overlap": len(top(x) & top(y)) / k, "k": k, "n": int(x.numel())}


def _effects(r, baseline) -> Tensor:
    values = r.values if isinstance(r, PatchResult) else torch.as_tensor(r)
    base = getattr(r, "baseline", None) if baseline is None else baseline
    if base is None and isinstance(r, PatchResult) and {"clean", "corrupted"} <= set(r.baselines):
        # activation_patch's result: patched metric values, the unpatched run is the corrupted one when denoising
        base = r.baselines["clean" if "(noise)" in (r.title or "") else "corrupted"]
    return values.detach().float().cpu() - (0.0 if base is None else float(base))


def _pearson(x: Tensor, y: Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = float((x.norm() * y.norm()))
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


def _ranks(x: Tensor) -> Tensor:
    """Ranks with ties given their average rank (Spearman's convention)."""
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    for v in x.unique()[torch.unique(x, return_counts=True)[1] > 1]:
        ranks[x == v] = ranks[x == v].mean()
    return ranks
