"""The intervention engine: one input, many variants of the forward pass, stacked along the batch.

A *variant* is a list of ``(point name, fn(act, hook))`` hooks, exactly what ``model.run_with_hooks`` takes.
``run_variants`` returns, for each variant, ``metric(logits)`` of the run with that variant's hooks. Its meaning is
defined by the plain loop (``method="loop"``): one ``run_with_hooks`` per variant. The batched path
(``method="batched"``, the default) agrees with it to float tolerance.

Hook functions see only their own variant's rows: ``act`` has the input's batch size ``B`` as its first axis,
whatever the engine stacks behind the scenes, so a function written for ``run_with_hooks`` works unchanged.

How the batched path works:

- Variants are stacked along the batch: ``V`` variants × ``B`` rows, variant ``j`` on rows ``j*B:(j+1)*B``, in
  chunks (grouped by the first block they touch, see ``_prefix_chunks``) that fit a memory budget (``max_batch`` rows, or ``memory`` bytes; by default a quarter of what is free).
- One torch-level hook per hooked point dispatches to each variant's functions on that variant's rows only
  (several per point applied in order; returning a tensor or editing in place and returning None both work).
- *Prefix reuse*: nothing differs between variants before the earliest hooked block ``L`` of a chunk, so the
  blocks before ``L`` run once at batch ``B`` and the stream is repeated to ``V·B`` rows on entering block ``L``
  (a forward pre-hook on blocks ``L..`` that repeats ``hidden_states`` and every keyword tensor with the batch
  axis: position embeddings, masks, position ids). Whether that is exact is decided per model and input shape
  by a numerical self-check on first use (ALiBi biases shaped ``[B*heads, ...]``, state carried between blocks
  beside the hidden states, ... fail it); where it fails, the plain stacked forward is used.
- ``logits_at``: only the logits the metric needs (HF's ``logits_to_keep``): the unembedding runs at those
  positions only and the metric receives ``[B, n_kept, vocab]``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .. import memory as mem
from ..errors import InputError, InputTypeError, MechscopeError, type_name
from ..hooks import Entry, HookFn, _check, check_hook_fn, hook_failure

Variant = Sequence[tuple[str, HookFn]]

METHODS = ("batched", "loop")
DEFAULT_MAX_ROWS = 128
"""Rows per chunk when no budget is given: beyond this a CPU forward gains nothing from a larger batch."""
MEMORY_FRACTION = 0.25
"""Share of the free memory a chunk may use when ``memory`` is not given."""

_PREFIX_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # hf_model -> {(B, P, mask, kept): reason|None}


class _NotExpanded(Exception):
    """A hooked point fired before the block where its chunk was expanded: rerun the chunk fully stacked."""


def run_variants(model, tokens, variants: Sequence[Variant], metric: Callable[[Tensor], object] | None = None,
                 *, attention_mask: Tensor | None = None, method: str = "batched", max_batch: int | None = None,
                 memory: int | str | None = None, logits_at: int | Sequence[int] | None = None,
                 prefix: bool = True, **forward_kwargs) -> list:
    """Run ``tokens [B, pos]`` once per variant; return ``[metric(logits [B, n_pos, vocab]) for each variant]``
    (the logits themselves when ``metric`` is None), in the order of ``variants``.

    ``method``: ``"batched"`` (default; stacked, chunked, prefix reuse) or ``"loop"`` (one ``run_with_hooks`` per
    variant: the eager reference). ``max_batch``: at most this many rows (variants × B) per forward; ``memory``:
    a byte budget per forward (an int or ``"2GB"``, ``"512MiB"``). ``logits_at``: compute logits only at these
    positions (``-1``: the last; a list of indices); ``n_pos`` is then their number, else ``pos``. ``prefix``:
    allow prefix reuse (it is still self-checked per model). Other keyword arguments go to the model's forward."""
    tokens, attention_mask = _inputs(model, tokens, attention_mask)
    variants = _variants(model, variants)
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}.")
    if metric is not None and not callable(metric):
        raise InputTypeError(f"metric must be a function of the logits, metric(logits) -> Tensor, got {type_name(metric)}.")
    keep = _keep(model, logits_at, tokens.shape[1])
    fwd = dict(forward_kwargs)
    if "use_cache" in model._hf_kwargs:
        fwd.setdefault("use_cache", False)  # a KV cache sized for B rows would be wrong after expansion, and unused
    if attention_mask is not None:
        fwd["attention_mask"] = attention_mask
    finish = (lambda x: x) if metric is None else metric
    if not variants:
        return []
    with torch.no_grad():
        if method == "loop":
            out = []
            for hooks in variants:
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks, **fwd, **keep.forward)
                out.append(finish(keep.select(logits)))
            return out
        rows = _rows_per_chunk(model, tokens, keep.n, max_batch, memory)
        return _batched(model, tokens, variants, finish, fwd, keep, rows, prefix)


# ------------------------------------------------------------------------------------------ inputs
def _inputs(model, tokens, attention_mask):
    if isinstance(tokens, (str, list)) and not (isinstance(tokens, list) and tokens and isinstance(tokens[0], int)):
        batch = model._batch(tokens, None, None)
        tokens = batch.tokens
        attention_mask = batch.attention_mask if attention_mask is None else attention_mask
    if isinstance(tokens, list):
        tokens = torch.tensor(tokens)
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.long, torch.int32) or tokens.ndim not in (1, 2):
        raise InputTypeError(f"tokens must be text or integer token ids of shape (pos,) or (batch, pos), got "
                             f"{type_name(tokens)}.")
    if tokens.ndim == 1:
        tokens = tokens[None]
    tokens = tokens.to(model.input_device)
    if attention_mask is not None:
        from ..tokens import check_attention_mask

        if attention_mask.ndim == 1:
            attention_mask = attention_mask[None]
        attention_mask = check_attention_mask(attention_mask, tokens)
    return tokens, attention_mask


def _variants(model, variants) -> list[list[tuple[str, HookFn]]]:
    """Each variant as a list of ``(full point name, fn)``, filters expanded, functions checked up front."""
    if isinstance(variants, (str, Tensor)) or not isinstance(variants, Sequence):
        raise InputTypeError(f"variants must be a list of variants, each a list of (point name, fn) pairs, got "
                             f"{type_name(variants)}.")
    out = []
    for i, v in enumerate(variants):
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and callable(v[1]):
            raise InputTypeError(f"variant {i} is a single (name, fn) pair; wrap it in a list: [(name, fn)].")
        if isinstance(v, (str, Tensor)) or not isinstance(v, Sequence):
            raise InputTypeError(f"variant {i} must be a list of (point name, fn) pairs, got {type_name(v)}.")
        hooks = []
        for pair in v:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise InputTypeError(f"each hook of variant {i} must be a (point name, fn) pair, got {type_name(pair)}.")
            spec, fn = pair
            check_hook_fn(fn, repr(spec) if isinstance(spec, str) else "a filter")
            for name in model._names(spec):
                if model.hook_dict[name].shape[:1] != ("batch",):
                    raise InputError(f"{name!r} has no leading batch axis ({model.hook_dict[name].shape}), so it cannot "
                                     "be patched per variant; use method='loop'.")
                hooks.append((name, fn))
        out.append(hooks)
    return out


class _Keep:
    """Which logits positions the metric receives; ``forward`` adds HF's ``logits_to_keep`` where it exists."""

    def __init__(self, index: Tensor | None, forward: dict):
        self.index, self.forward = index, forward

    @property
    def n(self) -> int | None:
        return None if self.index is None else len(self.index)

    def select(self, logits: Tensor) -> Tensor:
        if self.index is None or self.forward:
            return logits
        return logits[:, self.index.to(logits.device)]


def _keep(model, positions, n_pos: int) -> _Keep:
    if positions is None:
        return _Keep(None, {})
    pos = [positions] if isinstance(positions, int) and not isinstance(positions, bool) else positions
    if isinstance(pos, Tensor):
        pos = pos.tolist()
    if not isinstance(pos, (list, tuple)) or not pos or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise InputTypeError(f"logits_at must be an int or a non-empty list of ints (e.g. -1 for the last token), got "
                             f"{type_name(positions)}.")
    bad = [p for p in pos if not -n_pos <= p < n_pos]
    if bad:
        raise InputError(f"logits_at {bad} are out of range for an input of {n_pos} tokens; pass indices in "
                         f"[{-n_pos}, {n_pos - 1}].")
    index = torch.tensor([p % n_pos for p in pos])
    if "logits_to_keep" not in model._hf_kwargs:
        return _Keep(index, {})
    if len(pos) == 1 and index[0] == n_pos - 1:
        return _Keep(index, {"logits_to_keep": 1})
    return _Keep(index, {"logits_to_keep": index.to(model.input_device)})


# ------------------------------------------------------------------------------------------ budget
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def parse_bytes(memory) -> int:
    """``memory`` as bytes: an int, or a string like ``"2GB"``, ``"512 MiB"``."""
    if isinstance(memory, int) and not isinstance(memory, bool) and memory > 0:
        return memory
    if isinstance(memory, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", memory)
        if m and m.group(2).lower() in _UNITS and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise InputError(f"memory must be a positive number of bytes or a string like '2GB' or '512MiB', got {memory!r}.")


def row_bytes(model, n_pos: int, n_logits: int | None) -> int:
    """Estimated peak bytes one row (one variant of one prompt) adds to a no-grad forward: a block's working set
    (residual, q/k/v, attention scores, MLP hidden) plus the float32 logits kept."""
    c = model.cfg
    item = torch.empty(0, dtype=c.dtype).element_size()
    d_mlp = c.d_mlp or 4 * c.d_model
    block = n_pos * (6 * c.d_model + 3 * d_mlp + 3 * c.n_heads * (c.d_head or 1)) + 3 * c.n_heads * n_pos * n_pos
    logits = (n_logits or n_pos) * c.d_vocab * 4 * 2
    return block * item + logits


def _rows_per_chunk(model, tokens: Tensor, n_logits, max_batch, memory) -> int:
    if max_batch is not None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a positive int (rows per forward: variants × batch), got {max_batch!r}.")
    per_row = row_bytes(model, tokens.shape[1], n_logits)
    if memory is not None:
        budget = parse_bytes(memory)
    else:
        free = mem.free_bytes(model.input_device)
        budget = None if free is None else int(MEMORY_FRACTION * free)
    rows = max_batch if max_batch is not None else DEFAULT_MAX_ROWS
    if budget is not None:
        rows = min(rows, max(1, budget // per_row))
    b = tokens.shape[0]
    if memory is not None and rows < b:
        raise InputError(f"one variant of this input ({b} rows × {tokens.shape[1]} tokens) needs about "
                         f"{mem.format_bytes(per_row * b)}, more than memory={memory!r}; raise the budget or pass "
                         "fewer prompts.")
    return max(rows, b)


# ------------------------------------------------------------------------------------------ batched
def _earliest_layer(model, hooks) -> int:
    """The block a variant first differs in: -1 when a hooked point precedes block 0 (hook_embed)."""
    order = _order(model)
    first = order.get("blocks.0.hook_resid_pre", 0)
    best = model.cfg.n_layers - 1
    for name, _ in hooks:
        layer = model.hook_dict[name].layer_idx
        if layer is None:
            layer = -1 if order.get(name, -1) < first else model.cfg.n_layers - 1
        best = min(best, layer)
    return best


def _order(model) -> dict[str, int]:
    key = tuple(model.hook_dict)
    cached = getattr(model, "_patching_order", None)
    if cached is None or cached[0] != key:
        cached = (key, {n: i for i, n in enumerate(key)})
        model._patching_order = cached
    return cached[1]


def _batched(model, tokens, variants, finish, fwd, keep, rows, prefix) -> list:
    b = tokens.shape[0]
    per_chunk = max(1, rows // b)
    layers = [_earliest_layer(model, hooks) for hooks in variants]
    order = sorted(range(len(variants)), key=lambda i: layers[i])  # chunks share as long a prefix as possible
    out: list = [None] * len(variants)
    can_prefix = prefix and len(variants) > 1 and _prefix_exact(model, tokens, fwd, keep) is None
    chunks = (_prefix_chunks(order, layers, per_chunk) if can_prefix else
              [order[i:i + per_chunk] for i in range(0, len(order), per_chunk)])
    for idx in chunks:
        layer = layers[idx[0]] if can_prefix and len(idx) > 1 else -1
        try:
            logits = _run_chunk(model, tokens, [variants[i] for i in idx], fwd, keep, layer)
        except _NotExpanded:
            logits = _run_chunk(model, tokens, [variants[i] for i in idx], fwd, keep, -1)
        for j, i in enumerate(idx):
            out[i] = finish(logits[j * b:(j + 1) * b])
    return out


def _prefix_chunks(order: list[int], layers: list[int], per_chunk: int) -> list[list[int]]:
    """Chunks of at most ``per_chunk`` variants (sorted by first hooked block) that minimise blocks run: the
    variants first touching block ``L`` join the open chunk (which starts at block ``L0``) only when recomputing
    blocks ``L0..L`` for each of them costs less than running the prefix ``0..L`` once more in a chunk of their own."""
    groups: list[list[int]] = []
    for i in order:
        if groups and layers[groups[-1][0]] == layers[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    chunks: list[list[int]] = []
    for g in groups:
        layer = max(layers[g[0]], 0)
        if chunks and len(chunks[-1]) + len(g) <= per_chunk and \
                (layer - max(layers[chunks[-1][0]], 0)) * len(g) < layer:
            chunks[-1].extend(g)
            continue
        chunks.extend(g[i:i + per_chunk] for i in range(0, len(g), per_chunk))
    return chunks


def _run_chunk(model, tokens: Tensor, chunk: list, fwd: dict, keep: _Keep, layer: int) -> Tensor:
    """Logits ``[V·B, n_pos, vocab]`` of the chunk's variants; expanded at block ``layer`` (-1: from the input)."""
    b, nv = tokens.shape[0], len(chunk)
    per_point: dict[str, dict[int, list]] = {}
    for j, hooks in enumerate(chunk):
        for name, fn in hooks:
            per_point.setdefault(name, {}).setdefault(j, []).append(fn)
    hooks = [(name, _dispatcher(fns, nv, b)) for name, fns in per_point.items()]
    kwargs = dict(fwd)
    handles = []
    if layer < 0:
        inputs = tokens.repeat(nv, 1)
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = kwargs["attention_mask"].repeat(nv, 1)
        if "position_ids" in kwargs:
            kwargs["position_ids"] = kwargs["position_ids"].repeat(nv, 1)
    else:
        inputs = tokens
        handles = _expand_from(model, layer, nv, b)
    try:
        with model.hooks(hooks):
            logits = model.forward(inputs, **kwargs, **keep.forward)
    finally:
        for h in handles:
            h.remove()
    return keep.select(logits)


def _dispatcher(fns: dict[int, list], nv: int, b: int):
    """One hook for a point: variant ``j``'s functions run, in order, on rows ``j*b:(j+1)*b`` only."""

    def dispatch(act: Tensor, hook):
        if act.shape[0] != nv * b:
            if act.shape[0] == b and nv > 1:
                raise _NotExpanded
            raise InputError(f"{hook.name!r} fired with {act.shape[0]} rows where the engine stacked {nv} variants "
                             f"× {b}; this point cannot be patched per variant here, use method='loop'.")
        pieces = []
        for j in range(nv):
            sub = act[j * b:(j + 1) * b]
            for fn in fns.get(j, ()):
                try:
                    new = fn(sub, hook)
                except MechscopeError:
                    raise
                except Exception as exc:
                    raise hook_failure(Entry(hook.site, hook, fn, False), exc) from exc
                if new is not None and new is not sub:
                    sub = _check(new, sub, hook)
            pieces.append(sub)
        return torch.cat(pieces)

    return dispatch


def _expand_from(model, layer: int, nv: int, b: int) -> list:
    """Pre-hooks on blocks ``layer..`` repeating every batch-axis tensor among their arguments ``nv`` times."""

    def rep(x):
        if isinstance(x, Tensor) and x.ndim >= 2 and x.shape[0] == b:
            return x.repeat(nv, *([1] * (x.ndim - 1)))
        if isinstance(x, (tuple, list)):
            return type(x)(rep(y) for y in x)
        return x

    def expand(module, args, kwargs):
        return tuple(rep(a) for a in args), {k: rep(v) for k, v in kwargs.items()}

    return [model.blocks[i].register_forward_pre_hook(expand, with_kwargs=True, prepend=True)
            for i in range(layer, model.cfg.n_layers)]


def _prefix_exact(model, tokens: Tensor, fwd: dict, keep: _Keep) -> str | None:
    """None when expanding the batch at a block gives the stacked forward's logits on this model and input shape;
    else why not. Checked once per (model, batch, length, mask, kept logits): two unhooked copies expanded at
    block 0 and at the middle block must match the plain forward."""
    mask = fwd.get("attention_mask")
    key = (tuple(tokens.shape), None if mask is None else tuple(map(tuple, mask.tolist())), repr(keep.forward), model.cfg.dtype)
    verdicts = _PREFIX_OK.setdefault(model.hf_model, {})
    if key in verdicts:
        return verdicts[key]
    n = model.cfg.n_layers
    reason = None
    try:
        ref = model.forward(tokens, **fwd, **keep.forward)
        tol = (1e-4 if model.cfg.dtype == torch.float32 else 2e-2) * (1 + float(ref.abs().max()))
        for layer in sorted({0, n // 2}):
            handles = _expand_from(model, layer, 2, tokens.shape[0])
            try:
                got = model.forward(tokens, **fwd, **keep.forward)
            finally:
                for h in handles:
                    h.remove()
            b = tokens.shape[0]
            if got.shape[0] != 2 * b:
                reason = f"expanding at block {layer} gave {got.shape[0]} rows, not {2 * b}"
                break
            err = max(float((got[:b] - ref).abs().max()), float((got[b:] - ref).abs().max()))
            if not err <= tol:
                reason = f"expanding at block {layer} changed the logits by {err:.3g}"
                break
    except Exception as e:  # a shape clash inside the model: a batch-shaped tensor the expansion did not see
        reason = f"expanding the batch inside the model failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    if len(verdicts) > 64:
        verdicts.clear()
    verdicts[key] = reason
    return reason


def prefix_reuse(model, tokens: Tensor, attention_mask: Tensor | None = None) -> str | None:
    """Whether the batched engine reuses the unpatched prefix on this model and input: None when it does, else
    the reason it falls back to the plain stacked forward."""
    tokens, attention_mask = _inputs(model, tokens, attention_mask)
    fwd = {"use_cache": False} if "use_cache" in model._hf_kwargs else {}
    if attention_mask is not None:
        fwd["attention_mask"] = attention_mask
    with torch.no_grad():
        return _prefix_exact(model, tokens, fwd, _Keep(None, {}))
