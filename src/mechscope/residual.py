"""Residual-stream algebra on an ``ActivationCache``: TransformerLens's decompositions, on the unmodified model.

The residual stream entering the unembedding is a sum of what each part of the model wrote into it: the
embeddings, each attention layer's output (itself a sum over heads plus the output bias), each MLP's output
(a sum over neurons plus the output bias) and, in hybrids, each non-attention mixer's output. The functions here
split the cached forward into those parts (``decompose_resid``, ``stack_head_results``, ``stack_neuron_results``,
``get_full_resid_decomposition``), divide a stack of them by the *cached* normalisation scale of the norm that
reads them (``apply_ln_to_stack``), and map them to logits (``logit_attrs``). Because every norm is linearised at
the scale the forward actually used, the decomposition is exact for that forward: components sum to the residual
stream, and their logit attributions plus the final norm's bias term plus ``b_U`` sum to the logits.

mechscope does not fold norm weights into ``W_U``: ``apply_ln_to_stack`` returns the stack *before* the norm's
weight (as TransformerLens does on a ``fold_ln`` model), and ``logit_attrs`` reads through the norm's effective
weight (``1 + w`` in Gemma; read off ``Family.norm_weight_offset``) times ``W_U``.

Sandwich norms (Gemma 2/3, OLMo 2): a head's or neuron's contribution is what it adds *after* the post-norm,
linearised at that norm's cached scale, ``gain * centre(x) / scale``; the output bias goes through the same map,
and the post-norm's own bias is part of the ``bias`` component. See ``docs/residual.md`` for what a component is in
each kind of block.

Shapes: a stack is ``[component, batch, pos, d_model]`` (``batch`` absent after ``remove_batch_dim``; ``pos``
absent when ``pos_slice`` is an int).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .errors import HookNameError, InputError, InputTypeError, UnsupportedModelError, type_name
from .families.base import resolve
from .weights import _io, _real

NEEDED = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
          "hook_mlp_out", "hook_mixer_out", "attn.hook_z", "attn.hook_result", "mlp.hook_post", "hook_scale")
"""Hook-name endings the algebra reads (``names_filter=mechscope.residual.names_filter``)."""


def names_filter(name: str) -> bool:
    """A ``names_filter`` that caches what every method here needs, and nothing else (no attention patterns)."""
    return name.endswith(NEEDED)


# ------------------------------------------------------------------------------------------------- slices
class Slice:
    """TransformerLens's ``Slice``: an int (indexes, dropping the axis), a tuple ``(stop,)``/``(start, stop[, step])``
    or a ``slice`` (keeps the axis), a list/array/1-D tensor of indices (keeps the axis), or None (everything)."""

    def __init__(self, input_slice=None):
        if isinstance(input_slice, Slice) or (hasattr(input_slice, "apply") and hasattr(input_slice, "mode")):
            self.slice, self.mode = input_slice.slice, input_slice.mode  # ours, or TransformerLens's own Slice
        elif isinstance(input_slice, tuple):
            self.slice, self.mode = slice(*input_slice), "slice"
        elif isinstance(input_slice, bool):
            raise InputTypeError("a position/batch slice cannot be a bool; pass an int, a slice, a list of indices "
                                 "or None.")
        elif isinstance(input_slice, (int, np.integer)):
            self.slice, self.mode = int(input_slice), "int"
        elif isinstance(input_slice, slice):
            self.slice, self.mode = input_slice, "slice"
        elif isinstance(input_slice, (list, np.ndarray, Tensor)):
            arr = np.asarray(input_slice.cpu() if isinstance(input_slice, Tensor) else input_slice)
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) and arr.size:
                raise InputError(f"a slice given as indices must be a 1-D list of ints, got {type_name(input_slice)}.")
            self.slice, self.mode = arr.astype(np.int64), "array"
        elif input_slice is None:
            self.slice, self.mode = slice(None), "identity"
        else:
            raise InputTypeError(f"a position/batch slice must be an int, a tuple, a slice, a list of indices or "
                                 f"None, got {type_name(input_slice)}.")

    def apply(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """``tensor`` sliced along ``dim`` (an int slice removes the axis)."""
        index = [slice(None)] * tensor.ndim
        index[dim] = torch.as_tensor(self.slice, device=tensor.device) if self.mode == "array" else self.slice
        try:
            return tensor[tuple(index)]
        except IndexError as e:
            raise InputError(f"the slice {self.slice!r} does not fit axis {dim} of size {tensor.shape[dim]}: {e}; "
                             "pick indices inside the axis.") from None

    def __repr__(self) -> str:
        return f"Slice({self.slice!r}, mode={self.mode!r})"


# ---------------------------------------------------------------------------------------- model structure
class _Layout:
    """What each block of ``model`` writes into the residual stream, read off its hook table and family entry."""

    def __init__(self, model):
        self.model = model
        cfg, pts = model.cfg, model.hook_dict
        self.n_layers = cfg.n_layers
        resid = pts.get("blocks.0.hook_resid_pre")
        if resid is not None and resid.shape[2:] != (cfg.d_model,):
            raise UnsupportedModelError(
                f"this {cfg.family} model carries its residual stream as {resid.shape}, several stacked or "
                "concatenated streams (hyper-connections, AltUp), not one [batch, pos, d_model] stream, so it has no "
                "single residual decomposition; read hook_attn_out / hook_mlp_out directly.")
        if model.family.ln_final is None:
            raise UnsupportedModelError(
                f"{cfg.family} is post-LN (each block ends in a norm and there is no final norm), so the residual "
                "stream is not a sum of the blocks' outputs and cannot be decomposed; read hook_attn_out / "
                "hook_mlp_out directly.")
        self.parallel = cfg.parallel_attn_mlp
        self.attn = [f"blocks.{l}.hook_attn_out" in pts for l in range(self.n_layers)]
        self.mixer = [f"blocks.{l}.hook_mixer_out" in pts for l in range(self.n_layers)]
        self.mlp = [f"blocks.{l}.hook_mlp_out" in pts for l in range(self.n_layers)]
        self.neurons = [f"blocks.{l}.mlp.hook_post" in pts for l in range(self.n_layers)]
        self.has_embed = "hook_embed" in pts
        self.has_pos_embed = "hook_pos_embed" in pts
        text_config = model.hf_model.config.get_text_config()
        self.fams = [model.family.at_layer(text_config, l).for_block(b) for l, b in enumerate(model.blocks)]
        for l in range(self.n_layers):
            if f"blocks.{l}.attn.hook_z" in pts and not self.attn[l]:
                raise UnsupportedModelError(
                    f"block {l} of this {cfg.family} model has attention whose output does not enter the residual "
                    "stream directly (no hook_attn_out: Zamba's shared block feeds the Mamba block's input), so the "
                    "stream cannot be decomposed into blocks' outputs.")

    def norm(self, prefix: str):
        """The ``hooks.Norm`` of ``prefix`` (``ln_final``, ``blocks.3.ln1_post``), or None where the model has none."""
        pt = self.model.hook_dict.get(f"{prefix}.hook_scale")
        return pt.site.norm if pt is not None else None

    def input_norm(self, layer: int, mlp_input: bool) -> str:
        """The norm that reads the stream at ``layer`` (``n_layers``: the unembedding), as a hook prefix."""
        if layer == self.n_layers:
            if "ln_final.hook_scale" not in self.model.hook_dict:
                raise UnsupportedModelError(
                    f"the final norm of this {self.model.cfg.family} model is not a plain norm (only ln_final.hook_out "
                    "exists), so there is no cached scale to linearise it at.")
            return "ln_final"
        names = ("ln2", "ln1") if mlp_input and self.parallel else ("ln2",) if mlp_input else ("ln1",)
        for n in names:  # a parallel block with one norm for both branches (GPT-J, Phi) reads ln1 for its MLP too
            if f"blocks.{layer}.{n}.hook_scale" in self.model.hook_dict:
                return f"blocks.{layer}.{n}"
        raise UnsupportedModelError(
            f"block {layer} of this {self.model.cfg.family} model has no {'pre-MLP' if mlp_input else 'pre-attention'} "
            f"norm ({names[0]}; it normalises only after attention and the MLP), so there is no cached scale to apply "
            "to a stack entering it; use layer=None (the final norm), or apply_ln=False.")

    def heads_module(self, layer: int):
        """The output projection whose input is ``hook_z`` in block ``layer``."""
        fam = self.fams[layer]
        if fam.z is not None:
            raise UnsupportedModelError(
                f"in this {self.model.cfg.family} model a norm ({fam.z}) sits between the heads' weighted values "
                f"(hook_z) and the output projection, so attention's output is not a sum of per-head terms; use "
                "decompose_resid (one component per attention layer) instead of per-head results.")
        return resolve(self.model.blocks[layer], fam.o)

    def mlp_down(self, layer: int):
        fam = self.fams[layer]
        if not self.neurons[layer]:
            why = ("it is a mixture of experts: each token's neurons belong to the experts it was routed to, so there "
                   "is no single layer of neurons" if fam.moe else "it has no dense MLP")
            raise UnsupportedModelError(
                f"block {layer} of this {self.model.cfg.family} model has no per-neuron results: {why}; decompose "
                "per MLP layer instead (expand_neurons=False, or by='full' / by='layer' in direct_logit_attribution).")
        if fam.mlp_post is not None:
            raise UnsupportedModelError(
                f"in this {self.model.cfg.family} model a norm ({fam.mlp_post}) sits between the MLP's hidden "
                "activation and its output projection, so the MLP's output is not a sum of per-neuron terms; pass "
                "expand_neurons=False.")
        return resolve(self.model.blocks[layer], fam.mlp_down)


def _layout(cache) -> _Layout:
    model = _model(cache)
    lay = getattr(cache, "_layout", None)
    if lay is None or lay.model is not model:
        lay = cache._layout = _Layout(model)
    return lay


def _model(cache):
    model = getattr(cache, "model", None)
    if model is None:
        raise InputError("this cache has no model attached, and residual-stream methods need its weights and "
                         "structure; make the cache with model.run_with_cache(...) or set cache.model = model.")
    return model


def _home(cache) -> torch.device:
    """Where the algebra works: the cache's device when all its tensors share one (``run_with_cache(device="cpu")``
    keeps the work on the CPU), else the unembedding's (``cfg.device``): a model spread over devices caches each
    block's activations on that block's device, and stacking or summing them needs one."""
    home = cache.__dict__.get("_home")
    if home is None:
        devices = {t.device for t in cache._store.values()}
        home = cache.__dict__["_home"] = devices.pop() if len(devices) == 1 else _model(cache).cfg.device
    return home


def _at_home(cache, name: str) -> Tensor:
    return cache[name].to(_home(cache))  # no copy where the model sits on one device


def _get(cache, name: str, why: str) -> Tensor:
    if name in cache:
        return _at_home(cache, name)
    hint = name.split(".")[-1]
    raise HookNameError(
        f"{why} needs {name!r}, which this cache does not hold; run model.run_with_cache(..., names_filter=...) "
        f"with it included (e.g. names_filter=lambda n: n.endswith({hint!r}) or ..., or "
        "names_filter=mechscope.residual.names_filter for everything the residual algebra reads).")


def _layer(cache, layer, what: str = "layer") -> int:
    n = _layout(cache).n_layers
    if layer is None:
        return n
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise InputTypeError(f"{what} must be an int block index (or None for the unembedding), got "
                             f"{type_name(layer)}.")
    layer = int(layer)
    if layer == -1:
        return n
    if not 0 <= layer <= n:
        raise InputError(f"{what}={layer} is out of range: use 0 to {n} ({n} or -1 or None: the stream entering the "
                         "unembedding).")
    return layer


def _slice(s) -> Slice:
    return s if isinstance(s, Slice) else Slice(s)


# --------------------------------------------------------------------------------------------- the algebra
def _through(norm, x: Tensor, scale: Tensor | None) -> Tensor:
    """``gain * centre(x) / scale``: a norm linearised at its cached scale (no bias), on ``x [..., d_model]``."""
    if norm.centred:
        x = x - x.mean(-1, keepdim=True)
    if scale is not None:
        x = x / scale
    gain = norm.gain(x)
    return x * gain.detach() if gain is not None else x


def _post_norm(cache, layer: int, kind: str, pos_slice: Slice):
    """(norm, its cached scale ``[..., pos, 1]``) of block ``layer``'s ``ln1_post``/``ln2_post``, or (None, None)."""
    prefix = f"blocks.{layer}.{kind}"
    norm = _layout(cache).norm(prefix)
    if norm is None:
        return None, None
    why = f"a sandwich-norm block's {'head' if kind == 'ln1_post' else 'neuron'} results (linearised at its post-norm)"
    return norm, pos_slice.apply(_get(cache, f"{prefix}.hook_scale", why), dim=-2)


def _check_additive(cache, layer: int) -> None:
    """Refuse, with the block and the size of the gap, a model whose residual stream is not the plain sum of the
    cached components up to ``layer``: families that scale or gate what blocks add (muP multipliers, Doge's residual
    gates). Where only the embedding is transformed before block 0 (a scale, a norm, unhooked sinusoids), the
    ``embed`` component becomes ``blocks.0.hook_resid_pre`` instead (see ``_embeds``). Checked once per cache on the
    tensors it holds; blocks whose ``hook_resid_pre``/``hook_resid_post`` were not cached are not checked."""
    done = cache.__dict__.setdefault("_additive", set())
    lay = _layout(cache)

    def gap(total: Tensor, parts: list[Tensor], what: str, where: str) -> None:
        acc = parts[0].to(total.dtype)
        for p in parts[1:]:
            acc = acc + p.to(total.dtype)
        diff = float((acc - total).abs().max())
        size = float(total.abs().max())
        if diff > 16 * torch.finfo(total.dtype).eps * size + 1e-30:
            raise UnsupportedModelError(
                f"in this {lay.model.cfg.family} model {where} is not the sum of {what} (they differ by up to "
                f"{diff:.3g}, on a stream of size {size:.3g}): the family scales, gates or normalises what it adds "
                "(see model.family.notes), so the residual stream has no exact decomposition into these components; "
                "read the hook points directly.")

    todo = [l for l in range(-1, min(layer, lay.n_layers)) if l not in done]
    for l in todo:
        if l == -1:
            if "blocks.0.hook_resid_pre" in cache and lay.has_embed and "hook_embed" in cache and (
                    not lay.has_pos_embed or "hook_pos_embed" in cache):
                try:
                    gap(_at_home(cache, "blocks.0.hook_resid_pre"), [_at_home(cache, "hook_embed")] + (
                        [_at_home(cache, "hook_pos_embed")] if lay.has_pos_embed else []), "", "")
                except UnsupportedModelError:  # a scale, a norm or unhooked sinusoids between embedding and block 0
                    cache.__dict__["_embed_is_resid_pre"] = True
        else:
            names = [h for _, h in _block_parts(cache, l + 1, False, "all") if h.startswith(f"blocks.{l}.")]
            have = [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.hook_resid_post", *names]
            if all(n in cache for n in have):
                gap(_at_home(cache, have[1]), [_at_home(cache, n) for n in (have[0], *names)],
                    f"hook_resid_pre and {', '.join(n.split('.')[-1] for n in names)}", have[1])
        done.add(l)


def _empty(cache, pos_slice: Slice, width: int | None = None) -> Tensor:
    """A stack of no components, ``[0, *batch_and_pos, d_model or width]`` (TransformerLens's layer-0 case)."""
    name = next((k for k in cache if k.endswith("hook_resid_post")), None)
    if name is None:
        raise HookNameError("an empty stack needs the residual stream's shape; cache a hook_resid_post.")
    like = pos_slice.apply(_at_home(cache, name), dim=-2)
    shape = like.shape if width is None else (*like.shape[:-1], width)
    return torch.zeros(0, *shape, dtype=like.dtype, device=like.device)


def apply_ln_to_stack(cache, residual_stack: Tensor, layer: int | None = None, mlp_input: bool = False,
                      pos_slice=None, batch_slice=None, has_batch_dim: bool = True,
                      recompute_ln: bool = False) -> Tensor:
    """``residual_stack [component, *batch_and_pos, d_model]`` as the norm reading the stream at ``layer`` sees it,
    before the norm's weight: centred (LayerNorm) and divided by that norm's *cached* scale (``ln_final`` for
    ``layer`` None/-1/n_layers, else ``blocks.{layer}.ln1``, or ``ln2`` with ``mlp_input``). ``recompute_ln`` (final
    layer only): each component normalised by its own statistics instead (logit lens)."""
    lay = _layout(cache)
    layer = _layer(cache, layer)
    if mlp_input and layer == lay.n_layers:
        raise InputError("mlp_input=True needs a block index below n_layers; the unembedding has no MLP input.")
    if not isinstance(residual_stack, Tensor):
        raise InputTypeError(f"residual_stack must be a tensor [component, ..., d_model], got "
                             f"{type_name(residual_stack)}.")
    pos_slice, batch_slice = _slice(pos_slice), _slice(batch_slice)
    if has_batch_dim:
        residual_stack = batch_slice.apply(residual_stack, dim=1)
    prefix = lay.input_norm(layer, mlp_input)
    norm = lay.norm(prefix)
    if recompute_ln and layer == lay.n_layers:
        x = residual_stack.to(torch.promote_types(residual_stack.dtype, torch.float32))
        if norm.centred:
            x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    if norm.centred:
        residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
    scale = pos_slice.apply(_get(cache, f"{prefix}.hook_scale", "apply_ln_to_stack"), dim=-2).to(residual_stack.device)
    if batch_slice.mode != "identity" and cache.has_batch_dim:
        scale = batch_slice.apply(scale, dim=0)
    if residual_stack.ndim < 2 or _strip_ones(residual_stack.shape[1:-1]) != _strip_ones(scale.shape[:-1]):
        # Broadcasting would otherwise divide silently by the wrong positions' scales (a full-length stack with an
        # int pos_slice divides every position by that one position's scale when batch is 1).
        raise InputError(
            f"residual_stack {tuple(residual_stack.shape)} does not line up with the cached scale "
            f"{tuple(scale.shape[:-1])} (batch and position axes after pos_slice={pos_slice.slice!r}"
            f"{'' if batch_slice.mode == 'identity' else f', batch_slice={batch_slice.slice!r}'}); build the stack "
            "with the same pos_slice (e.g. cache.decompose_resid(pos_slice=-1)) so it is [component, "
            f"{', '.join(map(str, scale.shape[:-1]))}, d_model].")
    return residual_stack / scale


def _strip_ones(shape) -> tuple[int, ...]:
    """``shape`` without leading 1s: a stack without the batch axis of a batch-1 cache still lines up."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def accumulated_resid(cache, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                      pos_slice=None, mlp_input: bool = False, return_labels: bool = False):
    """The residual stream entering each block up to ``layer`` (``{l}_pre``; ``{l}_mid`` with ``incl_mid``; the
    stream after the last block, ``final_post``, when ``layer`` is None/-1/n_layers): ``[layers_covered,
    *batch_and_pos, d_model]``. ``mlp_input`` adds ``{layer}_mid``, the stream the MLP of ``layer`` reads (parallel
    blocks: their MLP reads ``{layer}_pre``, already there, so nothing is added); ``incl_mid`` is refused for
    parallel blocks, which have no stream between attention and MLP."""
    lay = _layout(cache)
    layer = _layer(cache, layer)
    pos_slice = _slice(pos_slice)
    if incl_mid and lay.parallel:
        raise InputError(f"incl_mid=True asks for hook_resid_mid, but {lay.model.cfg.family} runs attention and the "
                         "MLP in parallel on hook_resid_pre, so no stream exists between them; leave incl_mid=False.")
    comps, labels = [], []
    for l in range(layer + 1):
        if l == lay.n_layers:
            comps.append(_get(cache, f"blocks.{l - 1}.hook_resid_post", "accumulated_resid"))
            labels.append("final_post")
            continue
        comps.append(_get(cache, f"blocks.{l}.hook_resid_pre", "accumulated_resid"))
        labels.append(f"{l}_pre")
        if ((incl_mid and l < layer) or (mlp_input and l == layer)) and not lay.parallel:
            comps.append(_get(cache, f"blocks.{l}.hook_resid_mid", "accumulated_resid"))
            labels.append(f"{l}_mid")
    stack = torch.stack([pos_slice.apply(c, dim=-2) for c in comps])
    if apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                  has_batch_dim=cache.has_batch_dim, recompute_ln=layer == lay.n_layers)
    return (stack, labels) if return_labels else stack


def _block_parts(cache, layer: int, mlp_input: bool, mode: str) -> list[tuple[str, str]]:
    """(label, hook) of what blocks before ``layer`` wrote into the stream, in order (and the attention of
    ``layer`` itself with ``mlp_input`` in a sequential block)."""
    lay = _layout(cache)
    out = []
    for l in range(layer + (1 if mlp_input and not lay.parallel else 0)):
        current = l == layer
        if mode != "mlp" and lay.attn[l]:
            out.append((f"{l}_attn_out", f"blocks.{l}.hook_attn_out"))
        if mode != "mlp" and lay.mixer[l]:
            out.append((f"{l}_mixer_out", f"blocks.{l}.hook_mixer_out"))
        if mode != "attn" and lay.mlp[l] and not current:
            out.append((f"{l}_mlp_out", f"blocks.{l}.hook_mlp_out"))
    return out


def _embeds(cache, pos_slice: Slice) -> list[tuple[str, Tensor]]:
    """``embed`` (and ``pos_embed``): the embedding points, or, where the family transforms them before block 0
    (Gemma-style scales outside the module, Bloom's and nanochat's embedding norms, CTRL's unhooked sinusoids),
    one ``embed`` component that is ``blocks.0.hook_resid_pre``, what actually enters block 0."""
    lay = _layout(cache)
    if cache.__dict__.get("_embed_is_resid_pre"):
        return [("embed", pos_slice.apply(_at_home(cache, "blocks.0.hook_resid_pre"), dim=-2))]
    out = []
    if lay.has_embed:
        out.append(("embed", pos_slice.apply(_get(cache, "hook_embed", "the embedding component"), dim=-2)))
    if lay.has_pos_embed:
        out.append(("pos_embed", pos_slice.apply(_get(cache, "hook_pos_embed", "the embedding component"), dim=-2)))
    return out


def decompose_resid(cache, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                    apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True, return_labels: bool = False):
    """The stream entering ``layer`` split into what wrote it: ``embed``, ``pos_embed``, ``{l}_attn_out``,
    ``{l}_mixer_out`` (hybrids' non-attention mixers, counted with ``mode="attn"``) and ``{l}_mlp_out``, as
    ``[component, *batch_and_pos, d_model]``. The components sum to ``hook_resid_pre`` of ``layer`` (or the final
    ``hook_resid_post``). ``mode``: ``all``, ``attn`` or ``mlp``."""
    if mode not in ("all", "attn", "mlp"):
        raise InputError(f"mode must be 'all', 'mlp' or 'attn', got {mode!r}.")
    lay = _layout(cache)
    layer = _layer(cache, layer)
    if mlp_input and layer == lay.n_layers:
        raise InputError("mlp_input=True needs a block index below n_layers; the unembedding has no MLP input.")
    pos_slice = _slice(pos_slice)
    _check_additive(cache, layer)
    parts = _embeds(cache, pos_slice) if incl_embeds else []
    parts += [(label, pos_slice.apply(_get(cache, hook, "decompose_resid"), dim=-2))
              for label, hook in _block_parts(cache, layer, mlp_input, mode)]
    stack = torch.stack([t for _, t in parts]) if parts else _empty(cache, pos_slice)
    if apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                  has_batch_dim=cache.has_batch_dim)
    return (stack, [label for label, _ in parts]) if return_labels else stack


def head_weights(cache, layer: int) -> tuple[Tensor, Tensor]:
    """``W_O [head, d_head_v, d_model]`` and ``b_O [d_model]`` of block ``layer`` (zeros where it has no bias),
    detached: the algebra analyses a finished forward, it builds no autograd graph."""
    o = _layout(cache).heads_module(layer)
    w = _io(o)
    n = _model(cache).hook_dict[f"blocks.{layer}.attn.hook_z"].shape[2]  # per layer (Inkling's layers differ)
    b = _real(o, "bias")
    b = b if b is not None else torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
    return w.detach().reshape(n, w.shape[0] // n, w.shape[1]), b.detach()


def compute_head_results(cache) -> None:
    """Store ``blocks.{l}.attn.hook_result`` (``z_h @ W_O[h]``, no bias, ``[batch, pos, head, d_model]``, before any
    post-norm) for every attention block, as the opt-in hook point would have cached it."""
    lay = _layout(cache)
    for l in range(lay.n_layers):
        name = f"blocks.{l}.attn.hook_result"
        if not lay.attn[l] or name in cache:
            continue
        z = _get(cache, f"blocks.{l}.attn.hook_z", "compute_head_results")
        w_o, _ = head_weights(cache, l)
        cache._store[name] = torch.einsum("...hd,hdm->...hm", z, w_o.to(z.device, z.dtype)).detach()


def _check_sum(cache, layer: int, kind: str) -> None:
    """Refuse a block whose ``hook_attn_out`` (``hook_mlp_out``) is not its heads' (neurons') results plus the
    output bias, through the post-norm where there is one: some families add terms no head or neuron owns
    (Inkling's attention). Checked once per cache and block, as one matmul, on the full cached tensors."""
    done = cache.__dict__.setdefault("_sums", set())
    out_name = f"blocks.{layer}.hook_{kind}_out"
    if (layer, kind) in done or out_name not in cache:
        return
    if kind == "attn":
        z = _get(cache, f"blocks.{layer}.attn.hook_z", "per-head results")
        w, b = head_weights(cache, layer)
        x, w, norm_kind = z.flatten(-2), w.flatten(0, 1), "ln1_post"
    else:
        x = _get(cache, f"blocks.{layer}.mlp.hook_post", "per-neuron results")
        w, b = _neuron_weights(cache, layer, Slice())
        norm_kind = "ln2_post"
    dt = torch.promote_types(x.dtype, torch.float32)
    total = x.to(dt) @ w.to(x.device, dt) + b.to(x.device, dt)
    norm, scale = _post_norm(cache, layer, norm_kind, Slice())
    if norm is not None:
        total = _through(norm, total, scale)
        beta = norm.bias(total)
        if beta is not None:
            total = total + beta.detach().to(dt)
    out = _at_home(cache, out_name).to(dt)
    diff, size = float((total - out).abs().max()), float(out.abs().max())
    if diff > max(1e-4, 32 * torch.finfo(cache[out_name].dtype).eps) * size + 1e-30:
        what = "heads' results (hook_z @ W_O)" if kind == "attn" else "neurons' results (hook_post @ W_out)"
        raise UnsupportedModelError(
            f"in this {_model(cache).cfg.family} model {out_name} is not the sum of its {what} plus the output bias "
            f"(they differ by up to {diff:.3g} on outputs of size {size:.3g}): the block adds terms no single "
            f"{'head' if kind == 'attn' else 'neuron'} owns, so it cannot be split further; use decompose_resid or "
            "expand_neurons=False.")
    done.add((layer, kind))


def _head_results(cache, layer: int, pos_slice: Slice) -> Tensor:
    """What each head of ``layer`` adds to the stream, ``[*batch_and_pos, head, d_model]`` (post-norm linearised)."""
    _check_sum(cache, layer, "attn")
    name = f"blocks.{layer}.attn.hook_result"
    if name in cache:
        r = pos_slice.apply(_at_home(cache, name), dim=-3)
    else:
        z = pos_slice.apply(_get(cache, f"blocks.{layer}.attn.hook_z", "per-head results"), dim=-3)
        w_o, _ = head_weights(cache, layer)
        r = torch.einsum("...hd,hdm->...hm", z, w_o.to(z.device, z.dtype))
    norm, scale = _post_norm(cache, layer, "ln1_post", pos_slice)
    return _through(norm, r, scale.unsqueeze(-2)) if norm is not None else r


def stack_head_results(cache, layer: int = -1, return_labels: bool = False, incl_remainder: bool = False,
                       pos_slice=None, apply_ln: bool = False):
    """Every head's contribution to the stream from blocks before ``layer``, ``[layer * head, *batch_and_pos,
    d_model]`` labelled ``L{l}H{h}`` (attention blocks only, in hybrids). In sandwich-norm blocks a head's
    contribution passes through the post-attention norm at its cached scale. ``incl_remainder`` adds the rest of
    the stream (embeddings, MLPs, biases) as ``remainder``."""
    lay = _layout(cache)
    layer = _layer(cache, layer)
    pos_slice = _slice(pos_slice)
    _check_additive(cache, layer)
    comps, labels = [], []
    for l in range(layer):
        if lay.attn[l]:
            r = _head_results(cache, l, pos_slice)
            comps.append(r.movedim(-2, 0))
            labels += [f"L{l}H{h}" for h in range(r.shape[-2])]
    stack = torch.cat(comps) if comps else _empty(cache, pos_slice)
    if incl_remainder:
        total = _stream(cache, layer, False, pos_slice)
        stack = torch.cat([stack, (total - stack.sum(0))[None].to(stack.dtype)])
        labels.append("remainder")
    if apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, pos_slice=pos_slice, has_batch_dim=cache.has_batch_dim)
    return (stack, labels) if return_labels else stack


def _stream(cache, layer: int, mlp_input: bool, pos_slice: Slice) -> Tensor:
    """The residual stream entering ``layer`` (its MLP with ``mlp_input``)."""
    lay = _layout(cache)
    if layer == lay.n_layers:
        name = f"blocks.{layer - 1}.hook_resid_post"
    elif mlp_input and not lay.parallel:
        name = f"blocks.{layer}.hook_resid_mid"
    else:
        name = f"blocks.{layer}.hook_resid_pre"
    return pos_slice.apply(_get(cache, name, "the remainder term"), dim=-2)


def stack_activation(cache, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> Tensor:
    """``cache[activation_name, l, sublayer_type]`` stacked over the blocks before ``layer``: ``[layers, ...]``."""
    layer = _layer(cache, layer)
    return torch.stack([(cache[(activation_name, l, sublayer_type)] if sublayer_type else cache[(activation_name, l)])
                        .to(_home(cache))
                        for l in range(layer)])


def _neuron_weights(cache, layer: int, neuron_slice: Slice) -> tuple[Tensor, Tensor]:
    """(neuron activations' reader ``W_out [d_mlp, d_model]``, output bias ``b_out [d_model]``) of ``layer``."""
    down = _layout(cache).mlp_down(layer)
    w = _io(down)
    b = _real(down, "bias")
    b = b if b is not None else torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
    return neuron_slice.apply(w.detach(), dim=0), b.detach()


def get_neuron_results(cache, layer: int, neuron_slice=None, pos_slice=None,
                       project_output_onto: Tensor | None = None, _ln: tuple | None = None) -> Tensor:
    """What each neuron of ``layer`` adds to the stream, ``post_n * W_out[n]`` (through the post-MLP norm at its
    cached scale in sandwich-norm blocks): ``[*batch_and_pos, neuron, d_model]``, or ``[..., neuron, n_outs]`` /
    ``[..., neuron]`` projected onto ``project_output_onto`` (``[d_model, n_outs]`` / ``[d_model]``) without
    building the ``[..., neuron, d_model]`` tensor."""
    layer = _layer(cache, layer)
    neuron_slice, pos_slice = _slice(neuron_slice), _slice(pos_slice)
    _layout(cache).mlp_down(layer)  # refuses blocks without neurons (mixture of experts), saying why
    _check_sum(cache, layer, "mlp")
    post = pos_slice.apply(_get(cache, f"blocks.{layer}.mlp.hook_post", "per-neuron results"), dim=-2)
    post = neuron_slice.apply(post, dim=-1)
    w, _ = _neuron_weights(cache, layer, neuron_slice)
    w = w.to(post.device)
    norm, scale = _post_norm(cache, layer, "ln2_post", pos_slice)
    if norm is not None:  # gain * centre(post_n W_out[n]) / s = (post_n / s) * (gain * centre(W_out[n]))
        w = _through(norm, w, None)
        post = post / scale
    if _ln is not None:  # a further linearised norm (apply_ln): centre and divide by its scale
        ln_norm, ln_scale = _ln
        if ln_norm.centred:
            w = w - w.mean(-1, keepdim=True)
        post = post / ln_scale
    if neuron_slice.mode == "int":
        post, w = post[..., None], w[None]
    if project_output_onto is None:
        return post[..., None] * w.to(post.dtype)
    p = project_output_onto.to(w.device)
    projected = w.to(torch.promote_types(w.dtype, p.dtype)) @ p.to(torch.promote_types(w.dtype, p.dtype))
    if projected.ndim == 1:
        return post * projected.to(post.dtype)
    return post[..., None] * projected.to(post.dtype)


def stack_neuron_results(cache, layer: int, pos_slice=None, neuron_slice=None, return_labels: bool = False,
                         incl_remainder: bool = False, apply_ln: bool = False,
                         project_output_onto: Tensor | None = None, *, _mlp_input: bool = False):
    """Every neuron's contribution from blocks before ``layer``, ``[layer * neuron, *batch_and_pos, d_model]``
    labelled ``L{l}N{n}`` (or projected: last axis ``n_outs``, or none for a ``[d_model]`` projection). Blocks
    without a dense MLP (mixture of experts, mixers) are refused: use ``expand_neurons=False`` decompositions."""
    lay = _layout(cache)
    layer = _layer(cache, layer)
    pos_slice, neuron_slice = _slice(pos_slice), _slice(neuron_slice)
    _check_additive(cache, layer)
    if project_output_onto is not None and not isinstance(project_output_onto, Tensor):
        raise InputTypeError(f"project_output_onto must be a tensor [d_model] or [d_model, n_outs], got "
                             f"{type_name(project_output_onto)}.")
    ln = None
    if apply_ln and project_output_onto is not None:  # fold the norm in: no [..., neuron, d_model] tensor
        prefix = lay.input_norm(layer, _mlp_input)  # get_full_resid_decomposition(mlp_input=True): the pre-MLP norm
        ln = (lay.norm(prefix), pos_slice.apply(_get(cache, f"{prefix}.hook_scale", "apply_ln"), dim=-2))
    comps, labels = [], []
    for l in range(layer):
        if not lay.mlp[l] and not lay.neurons[l]:
            continue  # a block without an MLP (NemotronH's mixer-only blocks)
        r = get_neuron_results(cache, l, neuron_slice, pos_slice, project_output_onto, ln)
        r = r.movedim(-1 if project_output_onto is not None and project_output_onto.ndim == 1 else -2, 0)
        comps.append(r)
        idx = np.arange(r.shape[0]) if neuron_slice.mode == "identity" else \
            np.arange(_neuron_weights(cache, l, Slice())[0].shape[0])[neuron_slice.slice]
        labels += [f"L{l}N{n}" for n in np.atleast_1d(idx)]
    if comps:
        stack = torch.cat(comps)
    else:
        width = None if project_output_onto is None else (
            project_output_onto.shape[-1] if project_output_onto.ndim == 2 else None)
        stack = _empty(cache, pos_slice, width)
        if project_output_onto is not None and project_output_onto.ndim == 1:
            stack = stack[..., 0]
    if incl_remainder:
        total = _stream(cache, layer, False, pos_slice)
        if ln is not None:
            total = apply_ln_to_stack(cache, total[None], layer, pos_slice=pos_slice)[0]
        if project_output_onto is not None:
            total = total.to(project_output_onto.dtype) @ project_output_onto.to(total.device)
        stack = torch.cat([stack, (total - stack.sum(0))[None].to(stack.dtype)])
        labels.append("remainder")
    if apply_ln and ln is None:
        stack = apply_ln_to_stack(cache, stack, layer, pos_slice=pos_slice, has_batch_dim=cache.has_batch_dim)
    return (stack, labels) if return_labels else stack


def _bias(cache, layer: int, mlp_input: bool, include_mlp_biases: bool, pos_slice: Slice) -> Tensor:
    """What the blocks' biases add to the stream entering ``layer``: each attention output bias (and, with
    ``include_mlp_biases``, MLP output bias), through the post-norm in sandwich blocks, plus those post-norms' own
    biases. ``[*batch_and_pos, d_model]`` (or ``[d_model]`` where no post-norm makes it position dependent)."""
    lay = _layout(cache)
    total: Tensor | None = None

    def add(b: Tensor, l: int, kind: str):
        nonlocal total
        b = b.to(_home(cache))
        norm, scale = _post_norm(cache, l, kind, pos_slice)
        if norm is not None:
            b = _through(norm, b, scale)
            beta = norm.bias(b)
            if beta is not None:
                b = b + beta.detach().to(b.dtype)
        total = b if total is None else total + b

    for l in range(layer + (1 if mlp_input and not lay.parallel else 0)):
        if lay.attn[l]:
            add(head_weights(cache, l)[1], l, "ln1_post")
        if include_mlp_biases and l < layer and (lay.mlp[l] or lay.neurons[l]):
            add(_neuron_weights(cache, l, Slice())[1], l, "ln2_post")
    if total is None:
        model = _model(cache)
        total = torch.zeros(model.cfg.d_model, dtype=model.cfg.dtype, device=_home(cache))
    return total


def get_full_resid_decomposition(cache, layer: int | None = None, mlp_input: bool = False,
                                 expand_neurons: bool = True, apply_ln: bool = False, pos_slice=None,
                                 return_labels: bool = False, project_output_onto: Tensor | None = None):
    """The stream entering ``layer`` as every head (``L{l}H{h}``), every neuron (``L{l}N{n}``; with
    ``expand_neurons=False`` one ``{l}_mlp_out`` per MLP, biases included), every non-attention mixer
    (``{l}_mixer_out``), ``embed``, ``pos_embed`` and ``bias`` (the output biases and post-norm biases):
    ``[component, *batch_and_pos, d_model]`` (or projected onto ``project_output_onto``). They sum to the stream."""
    lay = _layout(cache)
    layer = _layer(cache, layer)
    if mlp_input and layer == lay.n_layers:
        raise InputError("mlp_input=True needs a block index below n_layers; the unembedding has no MLP input.")
    pos_slice = _slice(pos_slice)
    if project_output_onto is not None and not isinstance(project_output_onto, Tensor):
        raise InputTypeError(f"project_output_onto must be a tensor [d_model] or [d_model, n_outs], got "
                             f"{type_name(project_output_onto)}.")
    if expand_neurons:
        for l in range(layer):
            if lay.mlp[l] and not lay.neurons[l]:
                lay.mlp_down(l)  # raises: why this block has no neurons
    ln_folded = apply_ln and project_output_onto is not None

    def finish(stack: Tensor) -> Tensor:
        if ln_folded:
            stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                      has_batch_dim=cache.has_batch_dim)
        if project_output_onto is not None:
            p = project_output_onto.to(stack.device)
            dt = torch.promote_types(stack.dtype, p.dtype)
            stack = stack.to(dt) @ p.to(dt)
        return stack

    head_layer = layer + (1 if mlp_input and not lay.parallel else 0)
    heads, labels = stack_head_results(cache, head_layer, pos_slice=pos_slice, return_labels=True)
    comps = [finish(heads)]
    if expand_neurons:
        neurons, n_labels = stack_neuron_results(cache, layer, pos_slice=pos_slice, return_labels=True,
                                                 apply_ln=ln_folded, project_output_onto=project_output_onto,
                                                 _mlp_input=mlp_input)
        if project_output_onto is not None and project_output_onto.ndim == 1:
            neurons = neurons[..., None]
            comps[0] = comps[0][..., None]
        comps.append(neurons)
        labels = labels + n_labels
    else:
        mlps = [(label, hook) for label, hook in _block_parts(cache, layer, False, "mlp")]
        if mlps:
            comps.append(finish(torch.stack([pos_slice.apply(_get(cache, h, "the MLP components"), dim=-2)
                                             for _, h in mlps])))
            labels = labels + [label for label, _ in mlps]
    squeeze = project_output_onto is not None and project_output_onto.ndim == 1
    if squeeze and not expand_neurons:
        comps = [c[..., None] for c in comps]
    mixers = [(label, hook) for label, hook in _block_parts(cache, layer, mlp_input, "attn") if "_mixer_out" in label]
    rest = [(label, pos_slice.apply(_get(cache, h, "the mixer components"), dim=-2)) for label, h in mixers]
    rest += _embeds(cache, pos_slice)
    shape = heads.shape[1:]
    bias = _bias(cache, layer, mlp_input, expand_neurons, pos_slice)
    rest.append(("bias", bias.to(heads.dtype).expand(shape) if bias.ndim == 1 else bias.expand(shape)))
    dt = torch.promote_types(heads.dtype, rest[-1][1].dtype)
    more = finish(torch.stack([t.to(dt) for _, t in rest]))
    comps.append(more[..., None] if squeeze else more)
    labels = labels + [label for label, _ in rest]
    dt = comps[0].dtype
    for c in comps[1:]:
        dt = torch.promote_types(dt, c.dtype)
    stack = torch.cat([c.to(dt) for c in comps])
    if squeeze:
        stack = stack[..., 0]
    if apply_ln and not ln_folded:
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                  has_batch_dim=cache.has_batch_dim)
    return (stack, labels) if return_labels else stack


# ---------------------------------------------------------------------------------------------- logits
def _token_ids(model, tokens, what: str) -> Tensor:
    if isinstance(tokens, str):
        return torch.tensor(model.to_single_token(tokens))
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer, Tensor)):
        raise InputTypeError(f"{what} must be a token (a str such as ' Mary', an int id, or an int tensor [], [batch] "
                             f"or [batch, pos]), got {type_name(tokens)}.")
    ids = torch.as_tensor(tokens)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise InputTypeError(f"{what} must hold integer token ids, got {type_name(tokens)}.")
    n = model.cfg.d_vocab
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise InputError(f"{what} holds ids outside the unembedding's {n} rows (0 to {n - 1}); pass ids from this "
                         "model's tokenizer.")
    return ids


def tokens_to_residual_directions(model, tokens) -> Tensor:
    """The direction in the *normalised* stream (after centring and division by the final norm's scale, before its
    weight) whose dot product is a token's logit, less the final norm's bias term and ``b_U``: ``gain * W_U[:, t]``
    — what TransformerLens's ``W_U[:, t]`` is on a ``fold_ln`` model. ``[d_model]``, ``[batch, d_model]`` or
    ``[batch, pos, d_model]`` for a str/int, ``[batch]`` or ``[batch, pos]`` ids."""
    ids = _token_ids(model, tokens, "tokens")
    w_u = model.W_U.detach()
    directions = w_u[:, ids.to(w_u.device)].movedim(0, -1)
    pt = model.hook_dict.get("ln_final.hook_scale")
    gain = pt.site.norm.gain(directions) if pt is not None else None
    return directions * gain.detach() if gain is not None else directions


def final_bias_terms(model, tokens) -> Tensor:
    """The part of a token's logit that no component writes: the final norm's bias ``beta @ W_U[:, t]`` plus
    ``b_U[t]``; shaped like ``tokens``. ``logit_attrs`` of a full decomposition plus this is the logit."""
    ids = _token_ids(model, tokens, "tokens")
    w_u = model.W_U.detach()
    out = model.b_U.detach()[ids.to(w_u.device)]
    pt = model.hook_dict.get("ln_final.hook_scale")
    beta = pt.site.norm.bias(w_u) if pt is not None else None
    if beta is not None:
        out = out + (beta.detach().to(w_u.dtype) @ w_u)[ids.to(w_u.device)]
    return out


def logit_attrs(cache, residual_stack: Tensor, tokens, incorrect_tokens=None, pos_slice=None, batch_slice=None,
                has_batch_dim: bool = True) -> Tensor:
    """How much each component of ``residual_stack [component, *batch_and_pos, d_model]`` adds to the logit of
    ``tokens`` (minus ``incorrect_tokens``'), through the final norm at its cached scale and ``W_U``:
    ``[component, *batch_and_pos]``. Summed over a full decomposition, plus ``final_bias_terms``, it is the logit
    (before any soft-cap or logit scale the family applies after ``W_U``)."""
    model = _model(cache)
    ids = _token_ids(model, tokens, "tokens")
    directions = tokens_to_residual_directions(model, ids)
    if incorrect_tokens is not None:
        wrong = _token_ids(model, incorrect_tokens, "incorrect_tokens")
        if wrong.shape != ids.shape:
            raise InputError(f"tokens and incorrect_tokens must have the same shape, got {tuple(ids.shape)} and "
                             f"{tuple(wrong.shape)}; pass one incorrect token per correct one.")
        directions = directions - tokens_to_residual_directions(model, wrong)
    scaled = apply_ln_to_stack(cache, residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                               has_batch_dim=has_batch_dim)
    dt = torch.promote_types(scaled.dtype, directions.dtype)
    return (scaled.to(dt) * directions.to(scaled.device, dt)).sum(-1)
