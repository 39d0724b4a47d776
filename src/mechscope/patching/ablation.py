"""Ablations: remove a component by replacing its activation with zero, its mean over a reference dataset, or its
value on another input (resample ablation); and knock-out sweeps, the metric with each component removed in turn.

Zero ablation asks "what if the component wrote nothing?", which can push later layers off-distribution (a zero
residual write is rarely what the model sees); mean ablation asks "what if it carried nothing specific to this
input?" (Wang et al. 2022); resample ablation puts in what it computes on another input (Chan et al. 2022's causal
scrubbing), so its effect says the component carries input-specific information.

Everything returns hooks, ``[(point name, fn(act, hook))]``: a *variant* that ``model.run_with_hooks`` and
``patching.run_variants`` take as they are, so an ablation composes with any other hook. ``Ablation`` computes the
reference statistics once (one cached forward over the reference set) and hands out hooks for as many components
as asked, which is what ``knockout`` needs for a sweep.

What a component is:

- a hook point (``"blocks.3.hook_attn_out"``), the whole activation;
- heads ``[(layer, head)]`` on ``z`` (default), ``q``, ``k``, ``v``, ``pattern`` or ``attn_scores``: the head's slice
  of that point. Under GQA/MQA ``k``/``v`` have ``cfg.n_kv_heads`` heads and the index is the *key/value* head, shared
  by its group of query heads. ``hook_result`` is read-only; ablate ``z`` instead (a head's output ``z_h @ W_O[h]``
  is linear in ``z_h``, so zero, mean and resample ablation of ``z`` are those of its output);
- neurons ``[(layer, neuron)]`` on ``mlp.hook_post`` (or ``mlp.hook_pre``);

optionally only at some positions (query positions for ``pattern``/``attn_scores``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..hooks import HookFn
from .engine import Variant, run_variants
from .result import PatchResult, metric_values

Method = Literal["zero", "mean", "resample"]
METHODS = ("zero", "mean", "resample")
HEAD_POINTS = {"z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
               "pattern": "attn.hook_pattern", "attn_scores": "attn.hook_attn_scores"}
NEURON_POINTS = {"post": "mlp.hook_post", "pre": "mlp.hook_pre", "pre_linear": "mlp.hook_pre_linear"}


@dataclass
class KnockoutResult(PatchResult):
    """A ``PatchResult`` whose ``values`` are the metric with each component removed, plus the metric with nothing
    removed (``baseline``), so ``values - baseline`` is each component's effect."""

    baseline: float = float("nan")
    method: str = "zero"

    def effects(self) -> Tensor:
        """``values - baseline``: how much removing each component changes the metric."""
        return self.values - self.baseline

    def to_dict(self) -> dict:
        return {**super().to_dict(), "baseline": self.baseline, "method": self.method}


# ------------------------------------------------------------------------------------------------ selection
def _layer_point(model, short: str, layer: int) -> str:
    _check_layer(model, layer)
    name = f"blocks.{layer}.{short}"
    model._point(name)  # a sentence when this block has no such point (hybrid mixer blocks, parallel blocks)
    return name


def _check_layer(model, layer) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.cfg.n_layers:
        raise InputError(f"layer {layer!r} is not a block index of this {model.cfg.n_layers}-layer model; use 0 to "
                         f"{model.cfg.n_layers - 1}.")


def unit_axis(model, name: str) -> int:
    """The axis of ``name`` that indexes heads (attention points: the first axis with a fixed size) or neurons (MLP
    points: the last)."""
    shape = model.hook_dict[name].shape
    if ".attn." in name:
        return next(i for i, s in enumerate(shape) if isinstance(s, int))
    return len(shape) - 1


def pos_axis(model, name: str) -> int:
    """The (query) position axis of ``name``: ``pos``, or ``k_pos`` for points that have only key positions."""
    shape = model.hook_dict[name].shape
    return shape.index("pos") if "pos" in shape else shape.index("k_pos")


def _pairs(items, what: str, example: str) -> list[tuple[int, int]]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise InputTypeError(f"{what} must be a non-empty list of (layer, index) pairs such as {example}, got "
                             f"{type_name(items)}.")
    if len(items) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise InputTypeError(f"{what} must be a list of (layer, index) pairs; wrap a single pair in a list: "
                             f"[{tuple(items)}].")
    out = []
    for p in items:
        if (not isinstance(p, (tuple, list)) or len(p) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in p)):
            raise InputTypeError(f"each entry of {what} must be a (layer, index) pair of ints such as {example}, got "
                                 f"{type_name(p)}.")
        out.append((int(p[0]), int(p[1])))
    return out


def _units(model, pairs, table: dict, kind: str, which: str) -> dict[str, list[int]]:
    """``{point name: [unit indices]}`` for ``[(layer, index)]`` pairs on the ``which`` point of each layer."""
    if which not in table:
        hint = (" hook_result is read-only; ablate 'z' instead: a head's output z_h @ W_O[h] is linear in z_h, so "
                "zero, mean and resample ablation of z are those of its output." if which == "result" else "")
        raise InputError(f"{kind} are ablated on one of {', '.join(table)}, got {which!r}.{hint}")
    by_point: dict[str, list[int]] = {}
    for layer, i in pairs:
        name = _layer_point(model, table[which], layer)
        n = model.hook_dict[name].shape[unit_axis(model, name)]
        if not 0 <= i < n:
            what = ("key/value heads (GQA: k and v are indexed by kv head)" if which in ("k", "v") and
                    n != model.cfg.n_heads else kind)
            raise InputError(f"{kind[:-1]} {(layer, i)} is out of range: {name} has {n} {what}; use 0 to {n - 1}.")
        by_point.setdefault(name, []).append(i)
    return by_point


def targets(model, point=None, heads=None, neurons=None, head_point: str = "z",
            neuron_point: str = "post") -> dict[str, list[int] | None]:
    """``{hook name: unit indices, or None for the whole activation}`` for a point (or list of points), heads and
    neurons, checked against the model."""
    out: dict[str, list[int] | None] = {}
    if point is not None:
        for name in [point] if isinstance(point, str) else list(point):
            if not isinstance(name, str):
                raise InputTypeError(f"point must be a hook name or a list of hook names, got {type_name(name)}.")
            model._point(name)
            out[name] = None
    if heads is not None:
        for name, idx in _units(model, _pairs(heads, "heads", "[(9, 6), (10, 0)]"), HEAD_POINTS, "heads",
                                head_point).items():
            out[name] = idx if out.get(name, []) is not None else None
    if neurons is not None:
        for name, idx in _units(model, _pairs(neurons, "neurons", "[(3, 1027)]"), NEURON_POINTS, "neurons",
                                neuron_point).items():
            out[name] = idx if out.get(name, []) is not None else None
    if not out:
        raise InputError("nothing to ablate: pass point='blocks.L.hook_...', heads=[(layer, head), ...] or "
                         "neurons=[(layer, neuron), ...].")
    return out


# ------------------------------------------------------------------------------------------------ the ablation
class Ablation:
    """What replaces an ablated activation, with its reference statistics computed once.

    ``method``: ``"zero"``; ``"mean"``, the mean over ``reference`` (token ids ``[R, pos]`` or texts): with
    ``mean="pooled"`` over every real (non-padding) token of every row, so one value per unit broadcast to all
    positions; with ``mean="position"`` per position over the rows, which needs an unpadded reference of the same
    length as the input; or ``"resample"``, the activation from another input: input row ``i`` takes reference row
    ``perm[i % R]``, ``perm`` a seeded permutation without fixed points (so with the input as its own reference no
    row keeps its own activation); the reference must have the input's length.

    Statistics are computed on the first ``hooks`` call that needs them, in one forward over the reference for all
    the points asked for (``prepare`` computes them for many points at once)."""

    def __init__(self, model, method: Method = "zero", reference=None, *,
                 mean: Literal["pooled", "position"] = "pooled",
                 seed: int = 0, reference_mask: Tensor | None = None):
        if method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
        if mean not in ("pooled", "position"):
            raise InputError(f"mean must be 'pooled' (over all real tokens) or 'position' (per position), got "
                             f"{mean!r}.")
        if method != "zero" and reference is None:
            raise InputError(f"{method} ablation needs a reference: token ids (R, pos) or texts to take the "
                             f"{'mean' if method == 'mean' else 'activations'} from (e.g. reference=clean_tokens).")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputTypeError(f"seed must be an int, got {type_name(seed)}.")
        self.model, self.method, self.mean, self.seed = model, method, mean, seed
        self.tokens: Tensor | None = None  # [R, pos]
        self.mask: Tensor | None = None    # [R, pos], 1 for real tokens; None when unpadded
        if reference is not None:
            batch = model._batch(reference, None, None)
            self.tokens = batch.tokens
            self.mask = batch.attention_mask if reference_mask is None else reference_mask.to(batch.tokens.device)
            if self.mask is not None and tuple(self.mask.shape) != tuple(self.tokens.shape):
                raise InputError(f"reference_mask has shape {tuple(self.mask.shape)}, the reference "
                                 f"{tuple(self.tokens.shape)}; give one 0/1 entry per reference token.")
            if self.mask is not None and bool(self.mask.all()):
                self.mask = None
        self._stats: dict[str, Tensor] = {}
        self.perm = _derangement(self.tokens.shape[0], seed) if self.tokens is not None else None

    def prepare(self, names: Sequence[str]) -> None:
        """Compute the reference statistics of ``names`` now (one forward over the reference for all of them)."""
        names = [n for n in dict.fromkeys(names) if n not in self._stats]
        if self.method == "zero" or not names:
            return
        for n in names:
            if self.method == "mean" and self.mean == "pooled" and "k_pos" in self.model.hook_dict[n].shape \
                    and "pos" in self.model.hook_dict[n].shape:
                raise InputError(f"{n} has a query and a key position axis, so its mean cannot be pooled over "
                                 "positions; use mean='position' (a reference of the input's length).")
            if self.method == "mean" and self.mean == "position" and self.mask is not None:
                raise InputError("mean='position' averages each position over the reference rows, but the reference "
                                 "is padded (its texts have different lengths); pass texts of one length, or use "
                                 "mean='pooled'.")
        kwargs = {} if self.mask is None else {"attention_mask": self.mask}
        with torch.no_grad():
            _, cache = self.model.run_with_cache(self.tokens, names_filter=names, return_type=None, **kwargs)
        for n in names:
            act = cache[n]
            if self.method == "resample":
                self._stats[n] = act
            elif self.mean == "position":
                self._stats[n] = act.float().mean(0).to(act.dtype)  # [pos, ...]
            else:
                p = pos_axis(self.model, n)
                flat = act.float().movedim(p, 1).flatten(0, 1)  # [R * pos, ...]
                if self.mask is not None:
                    flat = flat[self.mask.to(flat.device).flatten().bool()]
                self._stats[n] = flat.mean(0).to(act.dtype)  # [...]: the point's shape without batch and pos

    def replacement(self, name: str, act: Tensor) -> Tensor:
        """What replaces ``act`` (the activation at ``name``, ``[B, ...]``), same shape, dtype and device."""
        if self.method == "zero":
            return torch.zeros_like(act)
        self.prepare([name])
        stat = self._stats[name].to(act.device)
        if self.method == "mean" and self.mean == "pooled":
            shape = list(act.shape)
            shape[0] = shape[pos_axis(self.model, name)] = 1
            return stat.reshape(shape).expand_as(act)
        if stat.shape[1 if self.method == "resample" else 0:] != act.shape[1:]:
            what = "mean='position'" if self.method == "mean" else "resample ablation"
            raise InputError(
                f"{what} needs a reference of the input's length: {name} is {tuple(act.shape[1:])} per row on the "
                f"input but {tuple(stat.shape[1 if self.method == 'resample' else 0:])} on the reference; pass a "
                f"reference of {act.shape[pos_axis(self.model, name)]} tokens"
                + (", or use mean='pooled'." if self.method == "mean" else "."))
        if self.method == "mean":
            return stat.unsqueeze(0).expand_as(act)
        rows = self.perm[torch.arange(act.shape[0]) % len(self.perm)].to(stat.device)
        return stat[rows]

    def hooks(self, point=None, *, heads=None, neurons=None, head_point: str = "z", neuron_point: str = "post",
              positions: Sequence[int] | None = None) -> list[tuple[str, HookFn]]:
        """The variant that ablates the given point(s), heads and neurons (see the module docstring), at every
        position or only at ``positions`` (ints, negative from the end)."""
        chosen = targets(self.model, point, heads, neurons, head_point, neuron_point)
        pos = _positions(positions)
        self.prepare(list(chosen))
        return [(name, _AblateHook(self, name, units, pos)) for name, units in chosen.items()]


class _AblateHook:
    """``fn(act, hook)``: ``act`` with the chosen units at the chosen positions replaced."""

    def __init__(self, ablation: Ablation, name: str, units: list[int] | None, positions: list[int] | None):
        self.ablation, self.name, self.units, self.positions = ablation, name, units, positions
        self.__name__ = f"ablate[{ablation.method}]"

    def __call__(self, act: Tensor, hook) -> Tensor:
        new = self.ablation.replacement(self.name, act)
        model = self.ablation.model
        mask = torch.ones((1,) * act.dim(), dtype=torch.bool, device=act.device)
        for axis, idx in ((unit_axis(model, self.name), self.units), (pos_axis(model, self.name), self.positions)):
            if idx is None:
                continue
            shape = [1] * act.dim()
            shape[axis] = act.shape[axis]
            sel = torch.zeros(act.shape[axis], dtype=torch.bool, device=act.device)
            try:
                sel[torch.tensor(idx, device=act.device)] = True
            except IndexError:
                raise InputError(f"positions {idx} are out of range for {act.shape[axis]} positions at "
                                 f"{self.name}.") from None
            mask = mask & sel.reshape(shape)
        return torch.where(mask, new, act)


def _positions(positions) -> list[int] | None:
    if positions is None:
        return None
    if isinstance(positions, int) and not isinstance(positions, bool):
        return [positions]
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise InputTypeError(f"positions must be an int or a list of ints (negative from the end), got "
                             f"{type_name(positions)}.")
    return list(positions)


def _derangement(n: int, seed: int) -> Tensor:
    """A seeded permutation of ``range(n)`` with no fixed point (the identity for ``n == 1``)."""
    g = torch.Generator().manual_seed(seed)
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    while True:  # a random permutation is a derangement with probability ~1/e
        perm = torch.randperm(n, generator=g)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def ablation_hooks(model, point=None, *, heads=None, neurons=None, method: Method = "zero", reference=None,
                   head_point: str = "z", neuron_point: str = "post", positions: Sequence[int] | None = None,
                   mean: Literal["pooled", "position"] = "pooled", seed: int = 0) -> list[tuple[str, HookFn]]:
    """The hooks (a variant) that ablate a point, heads ``[(layer, head)]`` and/or neurons ``[(layer, neuron)]``:
    ``model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, heads=[(9, 6)], method="mean",
    reference=ref_tokens))``. See ``Ablation`` for the methods."""
    return Ablation(model, method, reference, mean=mean, seed=seed).hooks(
        point, heads=heads, neurons=neurons, head_point=head_point, neuron_point=neuron_point, positions=positions)


def ablate(model, tokens, metric: Callable[[Tensor], Tensor] | None = None, point=None, *, heads=None, neurons=None,
           method: Method = "zero", reference=None, head_point: str = "z", neuron_point: str = "post",
           positions: Sequence[int] | None = None, mean: Literal["pooled", "position"] = "pooled",
           seed: int = 0) -> Tensor:
    """Run ``tokens`` (ids ``[B, pos]`` or text) with the components ablated: ``metric(logits)``, or the logits
    ``[B, pos, vocab]`` when ``metric`` is None. Mean and resample ablation default to the input as its own
    reference."""
    batch = model._batch(tokens, None, None)
    hooks = Ablation(model, method, batch.tokens if reference is None and method != "zero" else reference,
                     mean=mean, seed=seed, reference_mask=batch.attention_mask if reference is None else None).hooks(
        point, heads=heads, neurons=neurons, head_point=head_point, neuron_point=neuron_point, positions=positions)
    return run_variants(model, batch.tokens, [hooks], metric, attention_mask=batch.attention_mask)[0]


# ------------------------------------------------------------------------------------------------ knock-outs
def components(model, which, *, head_point: str = "z", layers: Sequence[int] | None = None):
    """``(dims, labels, [component])`` for a knock-out sweep; a component is the keyword arguments of
    ``Ablation.hooks``. ``which``: ``"heads"``, ``"layers"`` (a block's attention, token mixer and MLP writes),
    ``"attn"``, ``"mlps"``, ``"neurons"``, or a list of ``(layer, head)`` pairs and hook names."""
    n = model.cfg.n_layers
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else list(layers)
        for l in layers:
            _check_layer(model, l)
    if isinstance(which, str):
        has = lambda l, short: f"blocks.{l}.{short}" in model.hook_dict  # noqa: E731
        if which == "heads":
            ls = [l for l in (layers if layers is not None else range(n)) if has(l, HEAD_POINTS.get(head_point, ""))]
            if not ls:
                raise InputError(f"no chosen block has {HEAD_POINTS.get(head_point, head_point)}, so there are no "
                                 "heads to knock out.")
            counts = {model.hook_dict[f"blocks.{l}.{HEAD_POINTS[head_point]}"].shape[
                unit_axis(model, f"blocks.{l}.{HEAD_POINTS[head_point]}")] for l in ls}
            h = max(counts)
            if len(counts) > 1:
                raise InputError(f"the blocks have different numbers of heads ({sorted(counts)}); knock out a list "
                                 "of (layer, head) pairs, or pick layers= with one head count.")
            return (("layer", "head"), {"layer": [str(l) for l in ls], "head": [str(i) for i in range(h)]},
                    [dict(heads=[(l, i)], head_point=head_point) for l in ls for i in range(h)])
        if which == "neurons":
            ls = [l for l in (layers if layers is not None else range(n)) if has(l, "mlp.hook_post")]
            widths = {model.hook_dict[f"blocks.{l}.mlp.hook_post"].shape[-1] for l in ls}
            if len(widths) != 1:
                raise InputError("no chosen block has mlp.hook_post, so there are no neurons to knock out." if not
                                 widths else f"the MLPs have different widths ({sorted(widths)}); pick layers= of one "
                                 "width.")
            m = widths.pop()
            return (("layer", "neuron"), {"layer": [str(l) for l in ls], "neuron": [str(i) for i in range(m)]},
                    [dict(neurons=[(l, i)]) for l in ls for i in range(m)])
        shorts = {"layers": ("hook_attn_out", "hook_mixer_out", "hook_mlp_out"), "attn": ("hook_attn_out",),
                  "mlps": ("hook_mlp_out",)}.get(which)
        if shorts is None:
            raise InputError(f"components must be 'heads', 'layers', 'attn', 'mlps', 'neurons' or a list of "
                             f"(layer, head) pairs and hook names, got {which!r}.")
        ls = [l for l in (layers if layers is not None else range(n)) if any(has(l, s) for s in shorts)]
        if not ls:
            raise InputError(f"no chosen block has {' or '.join(shorts)}, so there is nothing to knock out.")
        return (("layer",), {"layer": [str(l) for l in ls]},
                [dict(point=[f"blocks.{l}.{s}" for s in shorts if has(l, s)]) for l in ls])
    if isinstance(which, (list, tuple)) and which:
        comps, labels = [], []
        for c in which:
            if isinstance(c, str):
                comps.append(dict(point=c))
                labels.append(c)
            else:
                comps.append(dict(heads=_pairs([c], "components", "[(9, 6), 'blocks.0.hook_mlp_out']"),
                                  head_point=head_point))
                labels.append(f"L{c[0]}H{c[1]}")
        return ("component",), {"component": labels}, comps
    raise InputTypeError(f"components must be a name ('heads', 'layers', 'attn', 'mlps', 'neurons') or a non-empty "
                         f"list of (layer, head) pairs and hook names, got {type_name(which)}.")


def knockout(model, tokens, metric: Callable[[Tensor], Tensor], components="heads", method: Method = "zero",
             reference=None, *, head_point: str = "z", layers: Sequence[int] | None = None,
             positions: Sequence[int] | None = None, mean: Literal["pooled", "position"] = "pooled", seed: int = 0,
             **engine_options) -> KnockoutResult:
    """The metric with each component removed in turn, one variant per component through ``run_variants``
    (batched by the engine), and the metric with nothing removed as ``baseline``.

    ``tokens``: ids ``[B, pos]`` or text(s). ``metric(logits [B, pos, vocab]) -> 0-d tensor``. ``components``: see
    ``components()``; ``layers`` restricts the sweep to some blocks. ``method``/``reference``/``mean``/``seed``: as
    ``Ablation`` (mean and resample default to the input as its own reference). Values have dims ``("layer",
    "head")``, ``("layer",)``, ``("layer", "neuron")`` or ``("component",)``."""
    if not callable(metric):
        raise InputTypeError(f"metric must be a function of the logits returning a 0-d tensor, got "
                             f"{type_name(metric)}.")
    batch = model._batch(tokens, None, None)
    dims, labels, comps = _components(model, components, head_point=head_point, layers=layers)
    ab = Ablation(model, method, batch.tokens if reference is None and method != "zero" else reference, mean=mean,
                  seed=seed, reference_mask=batch.attention_mask if reference is None else None)
    variants: list[Variant] = [ab.hooks(positions=positions, **c) for c in comps]
    kwargs = dict(attention_mask=batch.attention_mask, **engine_options)
    baseline = metric_values(run_variants(model, batch.tokens, [[]], metric, **kwargs))[0]
    values = metric_values(run_variants(model, batch.tokens, variants, metric, **kwargs))
    shape = [len(labels[d]) for d in dims]
    return KnockoutResult(values.reshape(shape), tuple(dims), labels, metric=getattr(metric, "__name__", "metric"),
                          title=f"{method}-ablation knock-out "
                                f"({components if isinstance(components, str) else 'list'})",
                          baseline=float(baseline), method=method)


_components = components
