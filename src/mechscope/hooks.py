"""Hook points and the machinery that attaches user functions to them.

A ``HookPoint`` is a name (``blocks.3.attn.hook_z``) bound to a *site*: where the activation lives in the
unmodified HF model (a module's input or output, a slice of a fused projection, a step inside attention) and
how to view it in the canonical layout (``[batch, pos, head, d_head]``) and write a replacement back.

Attaching is per call and minimal: one torch hook per module that has at least one requested point, none
anywhere else, so a forward with no hooks is the plain HF forward and caching costs only what was asked for.
Hook functions have TransformerLens's signature ``fn(activation, hook) -> Tensor | None``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import HookReturnError

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]


class HookPoint:
    """A named activation. Passed to hook functions as their ``hook`` argument.

    ``shape`` names each axis of the activation: ``"batch"``, ``"pos"``, ``"k_pos"`` or a size. ``ctx`` is a dict
    for hook functions to keep state across calls (cleared by ``model.reset_hooks``)."""

    __slots__ = ("name", "layer_idx", "site", "shape", "doc", "ctx")

    def __init__(self, name: str, site: Site, layer_idx: int | None, shape: tuple, doc: str):
        self.name, self.site, self.layer_idx, self.shape, self.doc = name, site, layer_idx, shape, doc
        self.ctx: dict[str, Any] = {}

    def layer(self) -> int | None:
        """Block index of this point (None for embeddings and the final norm)."""
        return self.layer_idx

    def fire(self, x: Tensor) -> Tensor:
        """Run the hooks attached to a point added with ``Model.add_point``; returns the (maybe replaced) tensor."""
        if not isinstance(self.site, Virtual):
            raise TypeError(f"{self.name!r} belongs to the model; only points added with add_point are fired by hand.")
        return self.site.fire(x)

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


# ---------------------------------------------------------------------------------------------- sites
class Site:
    """Where an activation lives. ``anchor`` is ``("in"|"out", module)`` or ``("attn", module, kind)``."""

    anchor: tuple
    writable = True
    in_graph = True
    """The activation is (a view of) a tensor in the model's autograd graph, so backward hooks can see its gradient."""

    def read(self, raw: Tensor, ctx) -> Tensor:
        return raw

    def write(self, raw: Tensor, new: Tensor, old: Tensor, ctx) -> Tensor:
        return new


class Whole(Site):
    """The module's whole input (``in``) or output (``out``, first element when it returns a tuple)."""

    def __init__(self, where: str, module: nn.Module):
        self.anchor = (where, module)


class Heads(Site):
    """``[..., n * d_head]`` seen as ``[..., n, d_head]``, optionally a column slice of a fused output.

    ``lo:hi`` selects a contiguous slice (``[q | k | v]`` layouts); ``part`` selects one of ``parts`` interleaved
    per-head chunks (``[heads, 3, d_head]`` layouts; ``[heads, 2, d_head]`` for gated queries ``[query | gate]``)."""

    def __init__(self, where: str, module: nn.Module, n: int, d_head: int,
                 lo: int | None = None, hi: int | None = None, part: int | None = None, parts: int = 3):
        self.anchor = (where, module)
        self.n, self.d_head, self.lo, self.hi, self.part, self.parts = n, d_head, lo, hi, part, parts

    def read(self, raw, ctx):
        if self.part is not None:
            return raw.unflatten(-1, (self.n, self.parts, self.d_head))[..., self.part, :]
        if self.lo is not None:
            raw = raw[..., self.lo:self.hi]
        return raw.unflatten(-1, (self.n, self.d_head))

    def write(self, raw, new, old, ctx):
        if self.part is not None:
            out = raw.clone()
            out.unflatten(-1, (self.n, self.parts, self.d_head))[..., self.part, :] = new
            return out
        if self.lo is not None:
            return torch.cat([raw[..., :self.lo], new.flatten(-2), raw[..., self.hi:]], dim=-1)
        return new.flatten(-2)


class Chunk(Site):
    """A contiguous slice ``lo:hi`` of the last axis (fused ``[gate | up]`` MLP projections)."""

    def __init__(self, where: str, module: nn.Module, lo: int, hi: int):
        self.anchor = (where, module)
        self.lo, self.hi = lo, hi

    def read(self, raw, ctx):
        return raw[..., self.lo:self.hi]

    def write(self, raw, new, old, ctx):
        return torch.cat([raw[..., :self.lo], new, raw[..., self.hi:]], dim=-1)


class AttnInternal(Site):
    """A step inside attention; q/k are shown ``[batch, pos, head, d_head]``, scores/pattern as computed."""

    def __init__(self, module: nn.Module, kind: str):
        self.anchor = ("attn", module, kind)
        self.transpose = kind in ("rot_q", "rot_k")

    def read(self, raw, ctx):
        return raw.transpose(1, 2) if self.transpose else raw

    def write(self, raw, new, old, ctx):
        return new.transpose(1, 2) if self.transpose else new


class NormScale(Site):
    """The norm's divisor, ``sqrt(mean((x - mean x)^2) + eps)`` (LN) or ``sqrt(mean(x^2) + eps)`` (RMS), in float32,
    shape ``[batch, pos, 1]``. Replacing it rescales the norm's output: ``(out - b) * old / new + b``."""

    in_graph = False

    def __init__(self, module: nn.Module, centred: bool):
        self.anchor = ("out", module)
        self.centred = centred
        self.eps = next((getattr(module, a) for a in ("eps", "variance_epsilon", "epsilon") if hasattr(module, a)), 1e-5)

    def read(self, raw, ctx):
        x = ctx[0][0] if ctx[0] else next(iter(ctx[1].values()))
        x = x.float()
        if self.centred:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def write(self, raw, new, old, ctx):
        bias = getattr(self.anchor[1], "bias", None)
        ratio = (old / new).to(raw.dtype)
        # (raw - b) * r + b, arranged to give raw back exactly when r == 1
        return raw * ratio if bias is None else raw * ratio + bias * (1 - ratio)


class HeadResult(Site):
    """Per-head output into the residual, ``z[..., h, :] @ W_O[h]``, shape ``[batch, pos, head, d_model]``.

    For analysis only: the sum over heads is not bit-equal to the output projection, so it is never fed back."""

    writable = False
    in_graph = False

    def __init__(self, o_proj: nn.Module, n_heads: int, d_head: int):
        self.anchor = ("in", o_proj)
        self.n, self.d_head = n_heads, d_head

    def read(self, raw, ctx):
        o = self.anchor[1]
        w = o.weight if type(o).__name__ == "Conv1D" else o.weight.T  # [n_heads * d_head, d_model]
        w_o = w.reshape(self.n, self.d_head, -1)
        return torch.einsum("bphd,hdm->bphm", raw.unflatten(-1, (self.n, self.d_head)), w_o)


class Stream(Whole):
    """One residual stream of a block that passes several stacked on axis 0 (Gemma 3n's AltUp:
    ``[streams, batch, pos, d_model]``), shown as ``[batch, pos, d_model]``; a replacement changes only that stream."""

    def __init__(self, where: str, module: nn.Module, index: int):
        super().__init__(where, module)
        self.index = index

    def read(self, raw, ctx):
        return raw[self.index]

    def write(self, raw, new, old, ctx):
        out = raw.clone()
        out[self.index] = new
        return out


class TokenRows(Whole):
    """A module output that may come back flattened to ``[batch * pos, d]`` (Llama 4's MoE returns token rows),
    shown with its input's leading shape, ``[batch, pos, d]``; a replacement is written back in the raw layout."""

    def read(self, raw, ctx):
        x = ctx[0][0] if ctx[0] else next(iter(ctx[1].values()))
        return raw.view(*x.shape[:-1], raw.shape[-1])

    def write(self, raw, new, old, ctx):
        return new.reshape(raw.shape)


class ResidMid(Whole):
    """The first input of the module after attention (ln2, or the MLP in post-norm blocks).

    HF keeps its own reference to this tensor for the residual add, so a replacement is applied twice: to the
    input here and, as ``new - old``, to the block's output (``block``), so both the MLP and the residual see it.
    """

    def __init__(self, module: nn.Module, block: nn.Module):
        super().__init__("in", module)
        self.block = block
        self.delta: Tensor | None = None

    def write(self, raw, new, old, ctx):
        if new is not old:
            self.delta = new - old if self.delta is None else self.delta + (new - old)
        return new


class Virtual(Site):
    """A point that code running inside the forward fires itself, e.g. an SAE spliced in at a hook point fires
    ``<point>.sae.hook_sae_acts_post``. Hooks attach to it like to any other point; ``fire`` runs them."""

    def __init__(self):
        self.anchor = ("virtual", self)
        self.entries: list[Entry] = []

    def fire(self, x: Tensor) -> Tensor:
        return run_entries(self.entries, x, None)[0] if self.entries else x


# ------------------------------------------------------------------------------------------ dispatch
@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    site: Site
    point: HookPoint
    fn: HookFn
    backward: bool


def _check(new: Any, old: Tensor, point: HookPoint, what: str = "activation") -> None:
    if not isinstance(new, Tensor):
        raise HookReturnError(
            f"hook on {point.name!r} returned {type(new).__name__}; return a Tensor to replace the {what}, or None."
        )
    if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
        raise HookReturnError(
            f"hook on {point.name!r} returned shape {tuple(new.shape)} {new.dtype} on {new.device}, but the {what} "
            f"is {tuple(old.shape)} {old.dtype} on {old.device}; return a tensor of the same shape, dtype and device."
        )


def _grad_hook(entry: Entry):
    def hook(grad: Tensor):
        new = entry.fn(grad, entry.point)
        if new is not None:
            _check(new, grad, entry.point, "gradient")
        return new

    return hook


def run_entries(entries: list[Entry], raw: Tensor, ctx) -> tuple[Tensor, bool]:
    """Run hooks in order on one tensor; return the (possibly replaced) tensor and whether it changed."""
    changed = False
    for e in entries:
        act = e.site.read(raw, ctx)
        if e.backward:
            if act.requires_grad:  # route the forward through ``act`` so its gradient is computed
                act.register_hook(_grad_hook(e))
                raw, changed = e.site.write(raw, act, act, ctx), True
            continue
        new = e.fn(act, e.point)
        if new is None or new is act:
            continue
        if not e.site.writable:
            raise HookReturnError(
                f"{e.point.name!r} is read-only (it is computed for analysis, not used by the model); "
                "hook hook_z or hook_attn_out to change what attention writes."
            )
        _check(new, act, e.point)
        raw, changed = e.site.write(raw, new, act, ctx), True
    return raw, changed


def _out_hook(entries: list[Entry]):
    def hook(module, args, kwargs, output):
        is_tuple = isinstance(output, tuple)
        raw, changed = run_entries(entries, output[0] if is_tuple else output, (args, kwargs))
        if changed:
            return (raw, *output[1:]) if is_tuple else raw
        return None

    return hook


def _in_hook(entries: list[Entry]):
    def hook(module, args, kwargs):
        raw = args[0] if args else kwargs["hidden_states"]
        raw, changed = run_entries(entries, raw, (args, kwargs))
        if not changed:
            return None
        if args:
            return (raw, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": raw}

    return hook


def _resid_mid_fixup(sites: list[ResidMid]):
    def hook(module, args, output):
        delta = None
        for s in sites:
            if s.delta is not None:
                delta = s.delta if delta is None else delta + s.delta
                s.delta = None
        if delta is None:
            return None
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    return hook


class Attachment:
    """Torch hooks and attention state for one set of (point, fn) pairs; ``remove()`` undoes everything."""

    def __init__(self, entries: Iterable[Entry], switch_attention: Callable[[int], None]):
        self.entries = list(entries)
        self.handles: list = []
        self.attn_entries: list[tuple] = []  # (AttnState, kind, Entry)
        self.virtual: list[tuple[Virtual, Entry]] = []
        self._switch = switch_attention
        self._switched = False
        by_anchor: dict[tuple, list[Entry]] = defaultdict(list)
        for e in self.entries:
            by_anchor[e.site.anchor].append(e)
        mids: dict[nn.Module, list[ResidMid]] = defaultdict(list)
        try:
            for anchor, group in by_anchor.items():
                kind, module = anchor[0], anchor[1]
                if kind == "out":
                    self.handles.append(module.register_forward_hook(_out_hook(group), with_kwargs=True))
                elif kind == "virtual":
                    module.entries.extend(group)
                    self.virtual.extend((module, e) for e in group)
                elif kind == "in":
                    self.handles.append(module.register_forward_pre_hook(_in_hook(group), with_kwargs=True))
                    for e in group:
                        if isinstance(e.site, ResidMid) and e.site not in mids[e.site.block]:
                            mids[e.site.block].append(e.site)
                else:
                    from .attention import _STATE  # attention imports this module

                    state = _STATE[module]
                    lst = state.entries.setdefault(anchor[2], [])
                    for e in group:
                        lst.append(e)
                        self.attn_entries.append((state, anchor[2], e))
            for block, sites in mids.items():
                self.handles.append(block.register_forward_hook(_resid_mid_fixup(sites)))
            if self.attn_entries:
                self._switch(+1)
                self._switched = True
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for state, kind, e in self.attn_entries:
            lst = state.entries.get(kind)
            if lst is not None:
                lst.remove(e)
                if not lst:
                    del state.entries[kind]
        self.attn_entries.clear()
        for site, e in self.virtual:
            site.entries.remove(e)
        self.virtual.clear()
        if self._switched:
            self._switch(-1)
            self._switched = False
