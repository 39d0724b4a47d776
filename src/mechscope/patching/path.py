"""Path patching (Wang et al. 2022, §3 and Appendix B; ARENA's IOI implementation): a sender's effect through
chosen receivers only.

Activation patching a head measures its effect through every path downstream. Path patching isolates the edges
sender → receiver: with ``base`` the run being patched and ``source`` the run whose values are patched in
(``direction="denoise"``: base = corrupted, source = clean; ``"noise"``: the reverse, which is Wang et al.'s and
ARENA's form: run on x_orig, patch in from x_new),

1. cache every head's output ``z`` (and every MLP's output) on base and source;
2. run base with the sender set to its source value and every *other* head frozen to its base value (MLPs
   recomputed, or frozen too with ``freeze_mlps=True``); record the receivers' inputs;
3. run base with only the receivers' inputs (their ``hook_q``/``hook_k``/``hook_v`` slices) replaced by the values
   recorded in step 2, everything else recomputed; the metric of this run is the result.

With ``receivers="logits"`` the receiver is the final residual stream, so step 2's logits are the result (step 3
is not needed). With ``freeze_heads=False`` nothing is frozen in step 2, so path patching to the logits is exactly
activation patching of the sender's ``z``. Receiver heads' inputs are indexed as their hook points are: under
GQA/MQA ``k``/``v`` receivers are *key/value* heads (``hook_k``'s axis), shared by a group of query heads.

A sweep (``senders="heads"``) runs steps 2 and 3 as two ``run_variants`` calls of one variant per sender, so the
engine batches them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from .ablation import _check_layer, unit_axis
from .activation import base_and_source
from .engine import run_variants
from .result import PatchResult, metric_values


@dataclass
class PathPatchResult(PatchResult):
    """A ``PatchResult`` of the metric with each sender path-patched, plus the metric of the unpatched base run
    (``baseline``) and what the receivers were."""

    baseline: float = float("nan")
    receivers: list = field(default_factory=list)
    direction: str = "denoise"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "baseline": self.baseline, "receivers": [list(r) if isinstance(r, tuple) else r
                                                                            for r in self.receivers],
                "direction": self.direction}


_Z, _MLP, _MIXER = "attn.hook_z", "hook_mlp_out", "hook_mixer_out"


def _senders(model, senders, max_layer: int):
    """``(dims, labels, [sender])``; a sender is ``{point name: unit indices or None (all)}``, the activations
    patched from the source run. Senders at or after ``max_layer`` cannot reach the receivers and are left out of
    a sweep."""
    has = lambda l, s: f"blocks.{l}.{s}" in model.hook_dict  # noqa: E731
    layers = range(min(max_layer, model.cfg.n_layers))
    if senders == "heads":
        ls = [l for l in layers if has(l, _Z)]
        if not ls:
            raise InputError("no block before the receivers has attention heads, so there are no senders.")
        h = model.cfg.n_heads
        return (("layer", "head"), {"layer": [str(l) for l in ls], "head": [str(i) for i in range(h)]},
                [{f"blocks.{l}.{_Z}": [i]} for l in ls for i in range(h)])
    if senders in ("mlps", "layers"):
        shorts = (_MLP,) if senders == "mlps" else (_Z, _MIXER, _MLP)
        ls = [l for l in layers if any(has(l, s) for s in shorts)]
        if not ls:
            raise InputError(f"no block before the receivers has {' or '.join(shorts)}, so there are no senders.")
        return (("layer",), {"layer": [str(l) for l in ls]},
                [{f"blocks.{l}.{s}": None for s in shorts if has(l, s)} for l in ls])
    if isinstance(senders, (list, tuple)) and senders and not isinstance(senders[0], int):
        out, labels = [], []
        for s in senders:
            if (isinstance(s, (tuple, list)) and len(s) == 2 and s[0] in ("mlp", "layer")
                    and isinstance(s[1], int)):
                _check_layer(model, s[1])
                shorts = (_MLP,) if s[0] == "mlp" else (_Z, _MIXER, _MLP)
                pts = {f"blocks.{s[1]}.{x}": None for x in shorts if has(s[1], x)}
                if not pts:
                    raise InputError(f"block {s[1]} has no {' or '.join(shorts)} to send from.")
                out.append(pts)
                labels.append(f"{s[0].upper()}{s[1]}")
            elif (isinstance(s, (tuple, list)) and len(s) == 2
                  and all(isinstance(i, int) and not isinstance(i, bool) for i in s)):
                l, h = s
                _check_layer(model, l)
                if not has(l, _Z):
                    raise InputError(f"block {l} has no attention heads (no blocks.{l}.{_Z}), so head {(l, h)} "
                                     "cannot be a sender.")
                if not 0 <= h < model.cfg.n_heads:
                    raise InputError(f"sender head {(l, h)} is out of range: there are {model.cfg.n_heads} heads.")
                out.append({f"blocks.{l}.{_Z}": [h]})
                labels.append(f"L{l}H{h}")
            else:
                raise InputTypeError(f"each sender must be a (layer, head) pair, ('mlp', layer) or ('layer', layer), "
                                     f"got {type_name(s)}.")
        return ("sender",), {"sender": labels}, out
    raise InputTypeError(f"senders must be 'heads', 'mlps', 'layers' or a list of (layer, head) pairs, ('mlp', layer) "
                         f"and ('layer', layer), got {type_name(senders)}.")


def _receivers(model, receivers) -> dict[str, list[int]] | None:
    """``{hook_q/k/v name: receiving head indices}``, or None for the logits."""
    if receivers == "logits":
        return None
    if isinstance(receivers, (str, bytes)) or not isinstance(receivers, Sequence) or not receivers:
        raise InputTypeError(f"receivers must be 'logits' or a non-empty list of (layer, head, 'q'|'k'|'v') triples, "
                             f"got {type_name(receivers)}.")
    out: dict[str, list[int]] = {}
    for r in receivers:
        if (not isinstance(r, (tuple, list)) or len(r) != 3 or not isinstance(r[2], str) or not r[2]
                or set(r[2]) - set("qkv") or not all(isinstance(i, int) and not isinstance(i, bool) for i in r[:2])):
            raise InputTypeError(f"each receiver must be a (layer, head, 'q'|'k'|'v') triple such as (8, 6, 'q') "
                                 f"('qkv' for all three inputs), got {type_name(r)}.")
        l, h, which = r
        _check_layer(model, l)
        for c in which:
            name = f"blocks.{l}.attn.hook_{c}"
            model._point(name)
            n = model.hook_dict[name].shape[unit_axis(model, name)]
            if not 0 <= h < n:
                kv = " (under GQA, k and v receivers are key/value heads)" if c in "kv" and n != model.cfg.n_heads \
                    else ""
                raise InputError(f"receiver {(l, h, c)} is out of range: {name} has {n} heads{kv}; use 0 to {n - 1}.")
            if h not in out.setdefault(name, []):
                out[name].append(h)
    return out


def _slice(act: Tensor, axis: int, units: list[int] | None) -> tuple:
    idx = [slice(None)] * act.dim()
    if units is not None:
        idx[axis] = units
    return tuple(idx)


def path_patch(model, clean, corrupted, metric: Callable[[Tensor], Tensor], *, senders="heads",
               receivers="logits", freeze_mlps: bool = False, freeze_heads: bool = True,
               direction: Literal["denoise", "noise"] = "denoise", **engine_options) -> PathPatchResult:
    """The metric with each sender's effect patched in through ``receivers`` only (see the module docstring).

    ``clean``, ``corrupted``: token ids ``[B, pos]`` of one shape (or texts that tokenize to one shape).
    ``metric(logits [B, pos, vocab]) -> 0-d tensor``. ``senders``: ``"heads"`` (one value per (layer, head),
    dims ``("layer", "head")``), ``"mlps"`` or ``"layers"`` (dims ``("layer",)``), or a list of ``(layer, head)``,
    ``("mlp", layer)``, ``("layer", layer)`` (dims ``("sender",)``); a sweep only includes senders before the last
    receiver's block. ``receivers``: ``"logits"`` or ``[(layer, head, "q"|"k"|"v"|"qkv")]``. ``freeze_heads``:
    freeze every non-sender head (and token mixer) to its base value in step 2 (Wang et al.); ``freeze_mlps``:
    freeze the MLPs too (default: recomputed, as Wang et al. and ARENA)."""
    base_b, source_b = base_and_source(model, clean, corrupted, metric, direction)
    recv = _receivers(model, receivers)
    max_layer = model.cfg.n_layers if recv is None else max(model.hook_dict[n].layer_idx for n in recv)
    dims, labels, sends = _senders(model, senders, max_layer)

    frozen = [n for n in model.hook_dict if n.endswith((_Z, _MIXER))] if freeze_heads else []
    frozen += [n for n in model.hook_dict if n.endswith(_MLP)] if freeze_mlps else []
    sent = sorted({n for s in sends for n in s})
    names = list(dict.fromkeys(frozen + sent))
    with torch.no_grad():
        _, base_cache = model.run_with_cache(base_b.tokens, names_filter=names, return_type=None,
                                             attention_mask=base_b.attention_mask)
        _, source_cache = model.run_with_cache(source_b.tokens, names_filter=sent, return_type=None,
                                               attention_mask=source_b.attention_mask)
    kwargs = dict(attention_mask=base_b.attention_mask, **engine_options)
    baseline = float(metric_values(run_variants(model, base_b.tokens, [[]], metric, **kwargs))[0])

    def sender_hook(name: str, units: list[int] | None):
        axis = unit_axis(model, name) if units is not None else 0
        freeze = name in frozen

        def fn(act, hook):
            out = base_cache[name].to(act.device, act.dtype).clone() if freeze else act.clone()
            idx = _slice(act, axis, units)
            out[idx] = source_cache[name].to(act.device, act.dtype)[idx]
            return out
        return fn

    def freeze_hook(name: str):
        return lambda act, hook: base_cache[name].to(act.device, act.dtype)

    def step2(sender: dict, record: dict | None):
        hooks = [(n, sender_hook(n, u)) for n, u in sender.items()]
        hooks += [(n, freeze_hook(n)) for n in frozen if n not in sender]
        if record is not None:
            def keep(act, hook):
                record[hook.name] = act.detach().clone()
            hooks += [(n, keep) for n in recv]
        return hooks

    if recv is None:
        values = run_variants(model, base_b.tokens, [step2(s, None) for s in sends], metric, **kwargs)
    else:
        records = [{} for _ in sends]
        run_variants(model, base_b.tokens, [step2(s, r) for s, r in zip(sends, records)],
                     lambda logits: logits.new_zeros(()), **kwargs)

        def receive(name: str, units: list[int], record: dict):
            axis = unit_axis(model, name)

            def fn(act, hook):
                out = act.clone()
                idx = _slice(act, axis, units)
                out[idx] = record[name].to(act.device, act.dtype)[idx]
                return out
            return fn

        variants = [[(n, receive(n, u, r)) for n, u in recv.items()] for r in records]
        values = run_variants(model, base_b.tokens, variants, metric, **kwargs)
    values = metric_values(values)
    what = "logits" if recv is None else f"{len(receivers)} receiver input{'s' * (len(receivers) > 1)}"
    return PathPatchResult(values.reshape([len(labels[d]) for d in dims]), tuple(dims), labels,
                           metric=getattr(metric, "__name__", "metric"),
                           title=f"path patching ({direction}) → {what}", baseline=baseline,
                           receivers=["logits"] if recv is None else [tuple(r) for r in receivers],
                           direction=direction)
