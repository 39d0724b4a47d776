"""Hook points and the machinery that attaches user functions to them.

A ``HookPoint`` is a name (``blocks.3.attn.hook_z``) bound to a *site*: where the activation lives in the
unmodified HF model (a module's input or output, a slice of a fused projection, a step inside attention) and
how to view it in the canonical layout (``[batch, pos, head, d_head]``) and write a replacement back.

Attaching is per call and minimal: one torch hook per module that has at least one requested point, none
anywhere else, so a forward with no hooks is the plain HF forward and caching costs only what was asked for.
Hook functions have TransformerLens's signature ``fn(activation, hook) -> Tensor | None``.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .devices import parameter
from .errors import HookError, HookFunctionError, HookReturnError, InputTypeError, MechscopeError, type_name

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
            raise InputTypeError(f"{self.name!r} belongs to the model and fires itself during the forward; only points "
                                 "added with model.add_point are fired by hand.")
        return self.site.fire(x)

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


# ---------------------------------------------------------------------------------------------- sites
_MEMO: dict[int, tuple[weakref.ref, dict]] = {}


class Call:
    """One module call as its hooks see it: the module's inputs, and what hooks on points of this call computed
    or replaced so far (``memo``), so that a later point reads the replaced value (``hook_normalized`` after a
    replaced ``hook_scale``, as in TransformerLens). Torch runs one hook per attachment (a ``hooks()`` context and
    a cache are two), so the memo is shared through the input tensor and dies with it."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple = (), kwargs: dict | None = None):
        self.args, self.kwargs = args, kwargs or {}

    def input(self) -> Tensor:
        """The module's first input (``hidden_states``)."""
        return self.args[0] if self.args else next(iter(self.kwargs.values()))

    @property
    def memo(self) -> dict:
        x = self.input()
        key = id(x)
        entry = _MEMO.get(key)
        if entry is None or entry[0]() is not x:
            entry = _MEMO[key] = (weakref.ref(x, lambda _, key=key: _MEMO.pop(key, None)), {})
        return entry[1]


class Site:
    """Where an activation lives. ``anchor`` is ``("in"|"out", module)`` or ``("attn", module, kind)``."""

    anchor: tuple
    writable = True
    shape_from: nn.Module | None = None
    """A module whose input's leading (batch, pos) shape this site needs; see ``Routed``."""
    prepend = False
    """Run before forward hooks already on the module (transformers' output recorders), so they see a replacement."""
    in_graph = True
    """The activation is (a view of) a tensor in the model's autograd graph, so backward hooks can see its gradient."""
    after: nn.Module | None = None
    """When set, the site is live only on the anchor module's first call after this module has run in the forward:
    a module applied twice per forward (nanochat's final norm, also applied to the embeddings) shows its later call."""
    grad_writable = True
    """A backward hook may replace the gradient (False where the gradient is observed beside the graph)."""
    stage = 0
    """Order among sites sharing an anchor: lower runs first (a norm's scale, then normalized, then its output)."""
    dtype: torch.dtype | None = None
    """The activation's dtype when it is not the model's (points computed in float32); for memory estimates."""

    def read(self, raw: Tensor, ctx) -> Tensor:
        return raw

    def write(self, raw: Tensor, new: Tensor, old: Tensor, ctx) -> Tensor:
        return new

    def tap(self, raw: Tensor, ctx) -> tuple[Tensor | None, Tensor]:
        """For backward hooks: ``(activation whose gradient is wanted, raw routed through it)``; None when the
        activation has no gradient in this call."""
        act = self.read(raw, ctx)
        if not act.requires_grad:
            return None, raw
        return act, self.write(raw, act, act, ctx)

    def attach(self) -> list:
        """Extra torch hooks this site needs while attached (their handles)."""
        return []


class Whole(Site):
    """The module's whole input (``in``) or output (``out``, first element when it returns a tuple).

    ``copy``: read a copy, for a tensor HF modifies in place after the hook has seen it."""

    def __init__(self, where: str, module: nn.Module, copy: bool = False):
        self.anchor = (where, module)
        self.copy = copy

    def read(self, raw, ctx):
        return raw.clone() if self.copy else raw


class PerBatch(Whole):
    """An output HF computes once for the whole batch when it makes the position ids itself (GPT-2's position
    embedding, ``[1, pos, d_model]``), shown as ``[batch, pos, d_model]`` as in TransformerLens. The batch size is
    that of ``batch_module``'s output (the token embedding, which runs first). A replacement may differ per
    sequence: HF adds it to the token embeddings, which broadcasts."""

    def __init__(self, module: nn.Module, batch_module: nn.Module):
        super().__init__("out", module)
        self.batch_module = batch_module
        self.batch: int | None = None

    def read(self, raw, ctx):
        if raw.shape[0] == 1 and self.batch not in (None, 1):
            return raw.expand(self.batch, *raw.shape[1:]).contiguous()
        return raw

    def attach(self) -> list:
        def record(module, args, output):
            self.batch = output.shape[0]

        return [self.batch_module.register_forward_hook(record)]


class Heads(Site):
    """``[..., n * d_head]`` seen as ``[..., n, d_head]``, optionally a column slice of a fused output.

    ``lo:hi`` selects a contiguous slice (``[q | k | v]`` layouts); ``part`` selects one of ``parts`` interleaved
    chunks in each of ``groups`` groups (``[groups, parts, n / groups * d_head]``): groups defaults to n, the per-head
    ``[heads, 3, d_head]`` q/k/v layouts and ``[heads, 2, d_head]`` gated-query layouts; CodeGen has 4 groups."""

    def __init__(self, where: str, module: nn.Module, n: int, d_head: int, lo: int | None = None,
                 hi: int | None = None, part: int | None = None, parts: int = 3, groups: int | None = None):
        self.anchor = (where, module)
        self.n, self.d_head, self.lo, self.hi, self.part, self.parts = n, d_head, lo, hi, part, parts
        self.groups = groups or n

    def _grouped(self, raw):
        return raw.unflatten(-1, (self.groups, self.parts, self.n // self.groups * self.d_head))

    def read(self, raw, ctx):
        if self.part is not None:
            if self.groups == self.n:
                return raw.unflatten(-1, (self.n, self.parts, self.d_head))[..., self.part, :]
            return self._grouped(raw)[..., self.part, :].unflatten(-1, (self.n // self.groups, self.d_head)).flatten(-3, -2)
        if self.lo is not None:
            raw = raw[..., self.lo:self.hi]
        return raw.unflatten(-1, (self.n, self.d_head))

    def write(self, raw, new, old, ctx):
        if self.part is not None:
            out = raw.clone()
            self._grouped(out)[..., self.part, :] = new.flatten(-2).unflatten(-1, (self.groups, -1))
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


class HeadSlice(Site):
    """``[..., n * w]`` seen as ``[..., n, w]`` and sliced ``lo:hi`` within each head: one part of a projection
    whose heads each hold several parts (MLA's key/value up-projection, ``[k_nope | v]`` per head).

    ``squeeze``: a size-1 axis of the raw tensor that is not shown (MLA up-projects the latent viewed as a single
    head, ``[batch, 1, k_pos, rank]``)."""

    def __init__(self, where: str, module: nn.Module, n: int, lo: int, hi: int, squeeze: int | None = None):
        self.anchor = (where, module)
        self.n, self.lo, self.hi, self.squeeze = n, lo, hi, squeeze

    def read(self, raw, ctx):
        if self.squeeze is not None:
            raw = raw.squeeze(self.squeeze)
        return raw.unflatten(-1, (self.n, -1))[..., self.lo:self.hi]

    def write(self, raw, new, old, ctx):
        out = raw.clone()
        view = out.squeeze(self.squeeze) if self.squeeze is not None else out
        view.unflatten(-1, (self.n, -1))[..., self.lo:self.hi] = new
        return out


class Routed(Site):
    """A mixture-of-experts routing tensor, ``[tokens, x]`` in HF (tokens = batch * pos, flattened by the MoE
    block), shown as ``[batch, pos, x]``. ``arg`` None: the output (first element) of ``module`` (the router's
    logits); an int: that positional input of ``module`` (the experts' indices and weights). The batch and
    position sizes are read from the block's input by a pre-hook that ``Attachment`` adds (``shape_from``)."""

    def __init__(self, module: nn.Module, block: nn.Module, arg: int | None = None):
        self.anchor = ("out", module) if arg is None else ("arg", module, arg)
        self.shape_from = block
        self.prepend = arg is None  # HF records router logits (output_router_logits) with its own forward hook
        self.lead: tuple[int, ...] = ()

    def read(self, raw, ctx):
        return raw.reshape(*self.lead, raw.shape[-1])

    def write(self, raw, new, old, ctx):
        return new.reshape(raw.shape)


class AttnInternal(Site):
    """A step inside attention; q/k are shown ``[batch, pos, head, d_head]``, the pattern as computed."""

    def __init__(self, module: nn.Module, kind: str):
        self.anchor = ("attn", module, kind)
        self.transpose = kind in ("rot_q", "rot_k")

    def read(self, raw, ctx):
        return raw.transpose(1, 2) if self.transpose else raw

    def write(self, raw, new, old, ctx):
        return new.transpose(1, 2) if self.transpose else new


def _masked(mask: Tensor | None) -> Tensor | None:
    """Boolean ``[batch, 1, q_pos, k_pos]``: True where the model's attention mask forbids attending."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return ~mask
    return mask == torch.finfo(mask.dtype).min


class AttnScores(AttnInternal):
    """Scores before softmax, ``[batch, head, pos, k_pos]``. Masked positions read ``-inf`` as in TransformerLens;
    the model itself adds ``finfo.min`` there, which is what it keeps wherever a replacement leaves ``-inf`` at a
    masked position (so an identity replacement is exact). Any other value written there is used as given."""

    def __init__(self, module: nn.Module):
        super().__init__(module, "attn_scores")

    def read(self, raw, mask):
        m = _masked(mask) if mask is not None else _masked_by_value(raw)
        return raw if m is None else raw.masked_fill(m, float("-inf"))

    def write(self, raw, new, old, mask):
        m = _masked(mask) if mask is not None else _masked_by_value(raw)
        return new if m is None else torch.where(m & (new == float("-inf")), raw, new)


def _masked_by_value(scores: Tensor) -> Tensor | None:
    """Masked positions of scores computed by a family's own attention method (no mask tensor reaches the hook):
    the model writes ``finfo.min`` there, possibly plus a bias or divided by a scale, so anything below
    ``finfo.min / 1e4`` is masked. Only for wide dtypes (float32, bfloat16, float64): in float16 real scores can be
    that low, so nothing is shown as masked there."""
    info = torch.finfo(scores.dtype)
    if info.max < 1e30:
        return None
    return scores < info.min / 1e4


class Norm:
    """One norm module seen through TransformerLens's LayerNorm/RMSNorm arithmetic on its input, in float32
    (float64 for float64 models): ``x - mean(x)`` if ``centred``, ``scale = sqrt(mean(x^2) + eps)``,
    ``normalized = x / scale``; and how the module applies its weight to that, ``out = normalized * gain + bias``
    with ``gain = weight_offset + weight`` (``1 + weight`` in Gemma and Nemotron), so replacements can be written
    into the module's output exactly."""

    def __init__(self, module: nn.Module, centred: bool, weight_offset: float = 0.0):
        self.module, self.centred, self.weight_offset = module, centred, weight_offset
        self.eps = next((getattr(module, a) for a in ("eps", "variance_epsilon", "epsilon") if hasattr(module, a)), 1e-5)

    # The memo lives as long as the norm's input (often kept by a cache), so it holds only the small scale and
    # replaced values; full-size intermediates are recomputed rather than kept.
    def _x(self, call: Call) -> Tensor:
        x = call.input()
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        return x - x.mean(-1, keepdim=True) if self.centred else x

    def scale(self, call: Call) -> Tensor:
        memo = call.memo
        key = (self, "scale")
        if key not in memo:
            memo[key] = (self._x(call).pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return memo[key]

    def normalized(self, call: Call) -> Tensor:
        replaced = call.memo.get((self, "normalized"))
        return replaced if replaced is not None else self._x(call) / self.scale(call)

    def gain(self, like: Tensor) -> Tensor | None:
        """``weight_offset + weight`` in ``like``'s dtype, on its device; None for a norm without a weight."""
        w = parameter(self.module, "weight", like.device)
        if w is None:
            return None
        w = w.to(like.dtype)
        return w + self.weight_offset if self.weight_offset else w

    def bias(self, like: Tensor) -> Tensor | None:
        return parameter(self.module, "bias", like.device)


class NormScale(Site):
    """The norm's divisor, ``sqrt(mean((x - mean x)^2) + eps)`` (LN) or ``sqrt(mean(x^2) + eps)`` (RMS), float32,
    ``[batch, pos, 1]``. Replacing it rescales the norm's output: ``(out - b) * old / new + b``."""

    in_graph = False
    stage = -2
    dtype = torch.float32

    def __init__(self, norm: Norm):
        self.anchor = ("out", norm.module)
        self.norm = norm

    def read(self, raw, ctx):
        return self.norm.scale(ctx)

    def write(self, raw, new, old, ctx):
        ctx.memo[(self.norm, "scale")] = new
        ctx.memo.pop((self.norm, "normalized"), None)
        bias = self.norm.bias(raw)
        ratio = (old / new).to(raw.dtype)
        # (raw - b) * r + b, arranged to give raw back exactly when r == 1
        return raw * ratio if bias is None else raw * ratio + bias * (1 - ratio)


class NormNormalized(Site):
    """TransformerLens's ``hook_normalized``: ``x / scale`` (x centred for LayerNorm), *before* the norm's weight and
    bias, float32, ``[batch, pos, d_model]``.

    It is computed beside the model from the norm's input; a replacement ``new`` is written into the norm's output
    as ``out + (new - old) * gain``, which is ``out`` bit for bit when ``new == old`` and ``new * gain + bias`` up to
    rounding otherwise. Its gradient is observed beside the graph (``out + (n - n.detach()) * gain`` routes the
    backward through a copy ``n``), so backward hooks may read it but not replace it."""

    grad_writable = False
    stage = -1
    dtype = torch.float32

    def __init__(self, norm: Norm):
        self.anchor = ("out", norm.module)
        self.norm = norm

    def read(self, raw, ctx):
        return self.norm.normalized(ctx)

    def write(self, raw, new, old, ctx):
        ctx.memo[(self.norm, "normalized")] = new
        delta = new - old
        gain = self.norm.gain(delta)
        if gain is not None:
            delta = delta * gain
        return raw + delta.to(raw.dtype)

    def tap(self, raw, ctx):
        if not raw.requires_grad:
            return None, raw
        n = self.read(raw, ctx).detach().requires_grad_(True)
        delta = n - n.detach()
        gain = self.norm.gain(delta)
        if gain is not None:
            delta = delta * gain.detach()
        return n, raw + delta.to(raw.dtype)


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
        w = parameter(o, "weight", raw.device)
        w = w if type(o).__name__ == "Conv1D" else w.T  # [n_heads * d_head, d_model]
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
        return raw.view(*ctx.input().shape[:-1], raw.shape[-1])

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


class Flat(Site):
    """A site inside a block that flattens ``(batch, pos)`` into one axis (OPT's MLP half), shown unflattened.

    The leading shape is recorded by a pre-hook on ``shape_from`` (the block), attached only while this site is."""

    def __init__(self, inner: Site, lead_from: nn.Module):
        self.inner, self.shape_from = inner, lead_from
        for attr in ("anchor", "writable", "in_graph", "grad_writable", "stage", "dtype", "after", "prepend"):
            setattr(self, attr, getattr(inner, attr))
        self.lead: tuple = ()

    def attach(self) -> list:
        return self.inner.attach()

    def __getattr__(self, name):  # anything else (a norm site's ``norm``...) is the inner site's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def read(self, raw, ctx):
        act = self.inner.read(raw, ctx)
        return act.reshape(*self.lead, act.shape[-1])

    def write(self, raw, new, old, ctx):
        flat = (-1, new.shape[-1])
        return self.inner.write(raw, new.reshape(flat), old.reshape(flat), ctx)


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


def _check(new: Any, old: Tensor, point: HookPoint, what: str = "activation") -> Tensor:
    """The replacement to use: same shape and dtype as ``old`` or an error; moved to ``old``'s device if needed,
    so a value patched in from another device (a cache kept on CPU, another GPU's activation) just works."""
    if not isinstance(new, Tensor):
        raise HookReturnError(
            f"hook on {point.name!r} returned {type(new).__name__}; return a Tensor to replace the {what}, or None."
        )
    if new.shape != old.shape or new.dtype != old.dtype:
        raise HookReturnError(
            f"hook on {point.name!r} returned shape {tuple(new.shape)} {new.dtype}, but the {what} is "
            f"{tuple(old.shape)} {old.dtype}; return a tensor of the same shape and dtype."
        )
    if new.device == old.device:
        return new
    if new.device.type == "meta":
        raise HookReturnError(
            f"hook on {point.name!r} returned a tensor on meta, which holds no data; return a real tensor (it is "
            f"moved to the {what}'s device, {old.device}, if it lives elsewhere)."
        )
    return new.to(old.device)  # a model split across devices: patches may come from a cache on another device


# ------------------------------------------------------------------------------ hook-function errors
_SIGNATURE = "fn(activation, hook) -> Tensor | None"


def fn_name(fn) -> str:
    """How a hook function is named in messages: its qualified name, or its repr for partials and objects."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)[:80]


def _code_accepts_two(f: types.FunctionType, bound_pos: int = 0, bound_kw=()) -> bool:
    """Whether ``f`` still accepts two positional arguments after ``bound_pos`` leading positionals and the
    keywords ``bound_kw`` were bound (a bound method or a ``functools.partial``). Read from the code object:
    ``inspect.signature`` costs tens of µs, which would be paid on every ``run_with_hooks`` call."""
    code = f.__code__
    params = code.co_varnames[:code.co_argcount]
    defaulted = set(params[len(params) - len(f.__defaults__ or ()):])
    rest = [p for p in params[bound_pos:] if p not in bound_kw]
    required = [p for p in rest if p not in defaulted]
    kwonly = code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount]
    kw_required = [k for k in kwonly if k not in (f.__kwdefaults__ or {}) and k not in bound_kw]
    varargs = bool(code.co_flags & inspect.CO_VARARGS)
    return not kw_required and len(required) <= 2 and (varargs or len(rest) >= 2)


def check_hook_fn(fn, where: str) -> None:
    """Refuse, at attach time, a hook function that cannot be called as ``fn(activation, hook)``.

    Plain functions, lambdas, bound methods, callable objects and ``functools.partial`` of those are checked
    from their code objects (about a µs); builtins are left to the call, where ``hook_failure`` names them."""
    if not callable(fn):
        raise HookFunctionError(f"the hook for {where} is {type_name(fn)}, not a function; pass {_SIGNATURE}.")
    f, bound_pos, bound_kw = fn, 0, ()
    if isinstance(f, functools.partial):
        f, bound_pos, bound_kw = f.func, len(f.args), tuple(f.keywords)
    if not isinstance(f, (types.FunctionType, types.MethodType)) and isinstance(
            getattr(type(f), "__call__", None), types.FunctionType):
        f = f.__call__  # a callable object: check its __call__ as a bound method
    if isinstance(f, types.MethodType):
        f, bound_pos = f.__func__, bound_pos + 1
    if isinstance(f, types.FunctionType) and not _code_accepts_two(f, bound_pos, bound_kw):
        raise HookFunctionError(
            f"the hook function {fn_name(fn)} for {where} takes {inspect.signature(fn)}, but hooks are called with "
            f"two arguments, {_SIGNATURE}; define it as def fn(activation, hook) (functools.partial binds extra "
            "arguments)."
        )


def hook_failure(entry: Entry, exc: Exception) -> MechscopeError:
    """The error to raise, chained ``from exc``, when calling a hook function raised ``exc``.

    A ``TypeError`` whose traceback never entered the function is a call that did not fit its signature; any other
    exception came from the function's body and is reported with the hook point it ran on."""
    name, point = fn_name(entry.fn), entry.point.name
    what = "gradient" if entry.backward else "activation"
    if isinstance(exc, TypeError) and (exc.__traceback__ is None or exc.__traceback__.tb_next is None):
        return HookFunctionError(
            f"the hook function {name} on {point!r} cannot be called as {_SIGNATURE} (with the {what} and the "
            f"HookPoint): {exc}; define it as def fn({what}, hook)."
        )
    return HookError(
        f"the hook function {name} on {point!r} raised {type(exc).__name__}: {exc} (its traceback is chained "
        "above); fix the function: the model is unchanged and the hooks attached for this call are removed.",
        point, exc,
    )


def _grad_hook(entry: Entry):
    def hook(grad: Tensor):
        try:
            new = entry.fn(grad, entry.point)
        except MechscopeError:
            raise
        except Exception as exc:
            raise hook_failure(entry, exc) from exc
        if new is None:
            return None
        if not entry.site.grad_writable:
            raise HookReturnError(
                f"the gradient at {entry.point.name!r} is observed beside the model's graph and cannot be replaced; "
                "replace the gradient at the norm's output (hook_out) or input (hook_resid_pre/mid) instead."
            )
        return _check(new, grad, entry.point, "gradient")

    return hook


def run_entries(entries: list[Entry], raw: Tensor, ctx) -> tuple[Tensor, bool]:
    """Run hooks in order on one tensor; return the (possibly replaced) tensor and whether it changed."""
    changed = False
    for e in entries:
        if e.backward:
            act, routed = e.site.tap(raw, ctx)  # route the forward through ``act`` so its gradient is computed
            if act is not None:
                act.register_hook(_grad_hook(e))
                raw, changed = routed, True
            continue
        act = e.site.read(raw, ctx)
        copied = getattr(e.site, "copy", False)
        version = None if not copied or act.is_inference() else act._version
        try:
            new = e.fn(act, e.point)
        except MechscopeError:
            raise
        except Exception as exc:
            raise hook_failure(e, exc) from exc
        if new is None or new is act:
            if not (copied and _edited(act, version, raw)):
                continue
            new = act  # an in-place edit of a copied read (Whole(copy=True)): write it back, or it would be lost
        if not e.site.writable:
            raise HookReturnError(
                f"{e.point.name!r} is read-only (it is computed for analysis, not used by the model); "
                "hook hook_z or hook_attn_out to change what attention writes."
            )
        new = _check(new, act, e.point)
        raw, changed = e.site.write(raw, new, act, ctx), True
    return raw, changed


def _edited(copy: Tensor, version: int | None, raw: Tensor) -> bool:
    """Whether a hook edited a copied read in place: by its version counter, or (inference tensors have none) by
    comparing it with the tensor it copies, which HF has not modified yet when the hooks run."""
    return copy._version != version if version is not None else not torch.equal(copy, raw)


def _out_hook(entries: list[Entry]):
    def hook(module, args, kwargs, output):
        is_seq = isinstance(output, (tuple, list))  # OpenAI GPT's modules return lists
        raw, changed = run_entries(entries, output[0] if is_seq else output, Call(args, kwargs))
        if changed:
            return type(output)((raw, *output[1:])) if is_seq else raw
        return None

    return hook


def _in_hook(entries: list[Entry]):
    mids = {site for e in entries if isinstance(site := (e.site.inner if isinstance(e.site, Flat) else e.site), ResidMid)}

    def hook(module, args, kwargs):
        for site in mids:  # a forward that raised between a resid_mid write and its fix-up left a stale delta
            site.delta = None
        raw = args[0] if args else kwargs["hidden_states"]
        raw, changed = run_entries(entries, raw, Call(args, kwargs))
        if not changed:
            return None
        if args:
            return (raw, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": raw}

    return hook


def _arg_hook(entries: list[Entry], index: int):
    def hook(module, args, kwargs):
        raw, changed = run_entries(entries, args[index], (args, kwargs))
        if not changed:
            return None
        return (*args[:index], raw, *args[index + 1:]), kwargs

    return hook


def _record_lead(sites: list[Site]):
    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        for s in sites:
            s.lead = tuple(x.shape[:-1])

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
        if isinstance(output, (tuple, list)):
            first = output[0]
            return type(output)((first + delta.to(first.device).reshape(first.shape), *output[1:]))
        return output + delta.to(output.device).reshape(output.shape)  # (OPT's MLP half works on flattened positions)

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
        for e in sorted(self.entries, key=lambda e: e.site.stage):  # stable: same-stage entries keep their order
            by_anchor[e.site.anchor].append(e)
        mids: dict[nn.Module, list[ResidMid]] = defaultdict(list)
        try:
            for anchor, group in by_anchor.items():
                kind, module = anchor[0], anchor[1]
                if kind == "out":
                    hook = _out_hook(group)
                    after = group[0].site.after
                    if after is not None:
                        hook = self._gated(hook, after)
                    first = any(e.site.prepend for e in group)
                    self.handles.append(module.register_forward_hook(hook, with_kwargs=True, prepend=first))
                elif kind == "arg":
                    self.handles.append(module.register_forward_pre_hook(_arg_hook(group, anchor[2]), with_kwargs=True))
                elif kind == "virtual":
                    module.entries.extend(group)
                    self.virtual.extend((module, e) for e in group)
                elif kind == "in":
                    self.handles.append(module.register_forward_pre_hook(_in_hook(group), with_kwargs=True))
                    for e in group:
                        site = e.site.inner if isinstance(e.site, Flat) else e.site
                        if isinstance(site, ResidMid) and site not in mids[site.block]:
                            mids[site.block].append(site)
                else:
                    from .attention import _STATE  # attention imports this module

                    state = _STATE[module]
                    lst = state.entries.setdefault(anchor[2], [])
                    for e in group:
                        lst.append(e)
                        self.attn_entries.append((state, anchor[2], e))
            for site in {id(e.site): e.site for e in self.entries}.values():
                self.handles.extend(site.attach())
            leads: dict[nn.Module, list[Site]] = defaultdict(list)
            for e in self.entries:
                if e.site.shape_from is not None and e.site not in leads[e.site.shape_from]:
                    leads[e.site.shape_from].append(e.site)
            for module, sites in leads.items():  # the block is entered before its submodules
                self.handles.append(module.register_forward_pre_hook(_record_lead(sites), with_kwargs=True))
            for block, sites in mids.items():
                self.handles.append(block.register_forward_hook(_resid_mid_fixup(sites)))
            if self.attn_entries:
                self._switch(+1)
                self._switched = True
        except BaseException:
            self.remove()
            raise

    def _gated(self, hook, after: nn.Module):
        """``hook`` runs only on the first call after ``after`` has run (see ``Site.after``)."""
        state = {"open": False}

        def opener(module, args, output):
            state["open"] = True

        self.handles.append(after.register_forward_hook(opener))

        def gated(module, args, kwargs, output):
            if not state["open"]:
                return None
            state["open"] = False
            return hook(module, args, kwargs, output)

        return gated

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
