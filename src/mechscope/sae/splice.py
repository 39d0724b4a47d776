"""SAEs, transcoders and skip-transcoders spliced into a model: later computation reads the dictionary's output.

An autoencoder at ``hook_name`` replaces that activation with its reconstruction; a transcoder reads
``hook_name`` and replaces ``hook_name_out`` with its prediction. Each spliced dictionary adds six hook points
(SAELens's names) under ``<point>.sae.``, where ``<point>`` is the point replaced (``hook_name``, or
``hook_name_out`` for a transcoder)::

    hook_sae_input      (*lead, d_in)    what the dictionary reads
    hook_sae_acts_pre   (*lead, d_sae)   pre-activations
    hook_sae_acts_post  (*lead, d_sae)   latents (feature activations)
    hook_sae_recons     (*lead, d_out)   reconstruction / prediction (with a skip-transcoder's skip term)
    hook_sae_error      (*lead, d_out)   the model's activation minus the clean reconstruction (error term only)
    hook_sae_output     (*lead, d_out)   what the rest of the model reads

so ``run_with_cache``, ``run_with_hooks``, backward hooks (attribution) and steering work on features as on any
point. The replaced model point itself (``hook_name``) shows what the rest of the model reads, i.e. the
dictionary's output; the model's own activation there is ``hook_sae_input``.

The error term (``use_error_term=True``) adds back ``x - sae(x)`` so the run is the clean run. It is exact, not
approximately so: the output is ``x + ((recons - recons_clean) + (error - error_clean))``, where ``recons`` and
``error`` are the hooked values and the ``_clean`` ones what they would be with no hook editing them. With no
edit both differences are exactly zero, so the model reads ``x`` itself, bit for bit; an edit of latents,
reconstruction or error moves the output by exactly the edit's effect. Gradients: latents, reconstruction and
error are nodes of the graph (their gradients are the output's); points upstream get the model's true gradient
(SAELens detaches the error instead, so upstream gradients there flow through the dictionary only).
With the error term and no hook on any of the six points, the dictionary is not even run; under ``no_grad`` it
runs once (unchanged values stand for the clean ones), with autograd on the clean reconstruction is computed apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ..errors import HookNameError, InputError, InputTypeError, type_name
from ..hooks import HookPoint
from ..model import Model
from .sae import SAE

SAE_POINTS: tuple[str, ...] = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
                               "hook_sae_error", "hook_sae_output")
"""The hook points each spliced dictionary adds under ``<point>.sae.`` (SAELens's names)."""

_DOCS = {
    "hook_sae_input": "what the spliced dictionary reads (the model's activation at hook_name)",
    "hook_sae_acts_pre": "the dictionary's pre-activations",
    "hook_sae_acts_post": "the dictionary's latents (feature activations)",
    "hook_sae_recons": "the dictionary's reconstruction or prediction",
    "hook_sae_error": "the model's activation minus the clean reconstruction (with the error term only)",
    "hook_sae_output": "what the rest of the model reads in place of the activation",
}

_REGISTRY_ATTR = "_sae_splices"


def spliced(model) -> dict[str, Splice]:
    """``{replaced point: Splice}`` for the dictionaries attached to ``model``, in attachment order."""
    return model.__dict__.setdefault(_REGISTRY_ATTR, {})


class Splice:
    """One dictionary spliced into a model (made by :func:`attach_sae`; removed by :meth:`detach`).

    ``point``: the model point whose activation is replaced; ``prefix``: ``point + ".sae."``, the start of the
    names of its six hook points (``splice.points``)."""

    def __init__(self, model, sae: SAE, use_error_term: bool = False) -> None:
        if not isinstance(sae, SAE):
            raise InputTypeError(f"only a mechscope.sae.SAE can be spliced in, got {type_name(sae)}; load one with "
                                 "mechscope.sae.load(path) or build it with SAE(SAEConfig(...)).")
        if not isinstance(use_error_term, bool):
            raise InputTypeError(f"use_error_term must be True or False, got {type_name(use_error_term)}.")
        cfg = sae.cfg
        if not cfg.hook_name:
            raise InputError("this SAE's cfg.hook_name is empty, so there is no point to splice it in at; set "
                             "sae.cfg.hook_name to the point it was trained on, e.g. 'blocks.1.hook_resid_post'.")
        self.model, self.sae, self.use_error_term = model, sae, use_error_term
        self.hook_in = cfg.hook_name
        self.point = cfg.hook_name_out or cfg.hook_name
        names = model.hook_names()
        for role, name in (("hook_name", self.hook_in), ("hook_name_out", self.point)):
            try:
                model._point(name)
            except HookNameError as e:
                raise HookNameError(f"cannot splice this SAE in: its {role} {name!r} is not a hook point of this "
                                    f"{model.cfg.family} model. {e.args[0] if e.args else ''}") from None
            if ".sae." in name:
                raise InputError(f"{name!r} is a point of another spliced dictionary; splice dictionaries at the "
                                 "model's own points.")
        taken = spliced(model).get(self.point)
        if taken is not None:
            raise InputError(f"{self.point!r} already has a dictionary spliced in ({taken.sae.extra_repr()}); "
                             "detach it first (detach_saes(model, ...) or model.reset_saes()), or splice this one "
                             "at another point.")
        if cfg.is_transcoder and names.index(self.hook_in) >= names.index(self.point):
            raise InputError(f"a transcoder reads hook_name before predicting hook_name_out, but {self.hook_in!r} "
                             f"does not come before {self.point!r} in the forward pass.")
        self._in_flat = _trailing(model, self.hook_in, cfg.d_in, "d_in")
        self._out_flat = _trailing(model, self.point, cfg.width_out, "d_out")
        lead = tuple(a for a in model.hook_dict[self.point].shape if isinstance(a, str))
        layer = model.hook_dict[self.point].layer_idx
        self.prefix = self.point + ".sae."
        widths = {"hook_sae_input": cfg.d_in, "hook_sae_acts_pre": cfg.d_sae, "hook_sae_acts_post": cfg.d_sae}
        self.points: dict[str, HookPoint] = {}
        try:
            for short in SAE_POINTS:
                self.points[short] = model.add_point(self.prefix + short, (*lead, widths.get(short, cfg.width_out)),
                                                     _DOCS[short], layer)
            hooks = [(self.point, self._replace)]
            if cfg.is_transcoder:
                hooks.insert(0, (self.hook_in, self._capture))
            self._attachment = model._attach(hooks)
        except BaseException:
            for p in self.points.values():
                model.remove_point(p.name)
            raise
        self._x: Tensor | None = None
        self.token_mask: Tensor | None = None
        """Optional ``(batch, pos)`` bool: True where the dictionary is bypassed (the model's own activation flows
        on, as SAELens's ``exclude_special_tokens`` does for BOS); set it for the forwards that need it."""
        self.exclude_ids: list[int] = []
        """Token ids at which :class:`HookedSAETransformer` bypasses the dictionary (``add_sae``'s
        ``exclude_special_tokens``); it sets :attr:`token_mask` from them for each forward."""
        spliced(model)[self.point] = self

    # ------------------------------------------------------------------------------------------ the hooks
    def _capture(self, act: Tensor, hook) -> None:
        """Transcoders: keep the input read at ``hook_name`` for the prediction at ``hook_name_out``."""
        self._x = act

    def _replace(self, act: Tensor, hook) -> Tensor:
        if self.sae.cfg.is_transcoder:
            x, self._x = self._x, None
            if x is None:
                raise InputError(f"the transcoder predicting {self.point!r} found no input: {self.hook_in!r} did not "
                                 "run earlier in this forward pass.")
        else:
            x = act
        y = _flatten(act, self._out_flat)
        out = self.run(_flatten(x, self._in_flat), y)
        return out.reshape(act.shape)

    def run(self, x: Tensor, y: Tensor) -> Tensor:
        """What the model reads in place of ``y (*lead, d_out)``, the activation at the replaced point, given the
        dictionary's input ``x (*lead, d_in)`` (``y`` itself for an autoencoder); fires the six points."""
        p, sae = self.points, self.sae
        hooked = [bool(p[n].site.entries) for n in SAE_POINTS]
        if self.use_error_term and not any(hooked):
            return y  # the output would be y exactly; nothing watches the dictionary
        # Without a graph (no_grad), values a hook left unchanged stand for the clean ones, so the dictionary runs
        # once; with one, the clean reconstruction is computed apart, or its gradient would cancel the latents'.
        track = self.use_error_term and not torch.is_grad_enabled()
        edited = False
        x_h = p["hook_sae_input"].fire(x.clone()) if hooked[0] else x  # a clone: an in-place edit must not reach x
        if track and hooked[0]:
            edited = not torch.equal(x_h, x)
        if hooked[1]:  # dense pre-activations only when watched; else the architecture's own (maybe fused) encode
            pre = sae.encode_pre(x_h)
            before = pre.clone() if track else None
            pre = p["hook_sae_acts_pre"].fire(pre)
            edited = edited or (track and not torch.equal(pre, before))
            f = sae.activation(pre)
        else:
            f = sae.encode(x_h)
        if hooked[2]:
            before = f.clone() if track else None
            f = p["hook_sae_acts_post"].fire(f)
            edited = edited or (track and not torch.equal(f, before))
        recons = sae.decode(f)
        if sae.cfg.skip:
            recons = recons + sae.skip_out(x_h)
        unhooked = recons
        if hooked[3]:
            unhooked = recons.clone() if track else None
            recons = p["hook_sae_recons"].fire(recons)
            edited = edited or (track and not torch.equal(recons, unhooked))
        if not self.use_error_term:
            return p["hook_sae_output"].fire(self._bypass(y, recons.to(y.dtype)))
        if (track and not edited) or not any(hooked[:4]):
            clean = unhooked
        else:  # a hook may have edited the input, pre-activations, latents or reconstruction
            clean = sae.decode(sae.encode(x))
            if sae.cfg.skip:
                clean = clean + sae.skip_out(x)
        error = y - clean.to(y.dtype)
        error_h = p["hook_sae_error"].fire(error.clone()) if hooked[4] else error
        out = y + ((recons - clean).to(y.dtype) + (error_h - error))
        return p["hook_sae_output"].fire(self._bypass(y, out))

    def _bypass(self, y: Tensor, out: Tensor) -> Tensor:
        """``out`` with the model's own ``y`` where :attr:`token_mask` is True."""
        m = self.token_mask
        if m is None:
            return out
        if m.shape != y.shape[:m.ndim] or m.dtype != torch.bool:
            raise InputError(f"token_mask of {self.point!r} must be a bool tensor of the leading shape of its "
                             f"activation {tuple(y.shape[:-1])}; got {tuple(m.shape)} {m.dtype}.")
        return torch.where(m.to(y.device).reshape(*m.shape, *[1] * (y.ndim - m.ndim)), y, out)

    # ------------------------------------------------------------------------------------------ removal
    def detach(self) -> None:
        """Remove the dictionary and its six points; the model is as before it was attached."""
        reg = spliced(self.model)
        if reg.get(self.point) is not self:
            return
        self._attachment.remove()
        for p in self.points.values():
            self.model.remove_point(p.name)
        self._x = None
        del reg[self.point]

    def __repr__(self) -> str:
        return (f"Splice({self.sae.extra_repr()} at {self.point!r}"
                f"{', with error term' if self.use_error_term else ''})")


def _trailing(model, name: str, width: int, what: str) -> int:
    """How many trailing axes of ``name``'s activation make up ``width`` (1, or 2 for per-head points such as
    ``hook_z``, read flattened as SAELens does); an error naming both widths otherwise."""
    sizes = [a for a in model.hook_dict[name].shape if not isinstance(a, str)]
    for n in range(1, len(sizes) + 1):
        if math.prod(sizes[-n:]) == width:
            return n
    have = " x ".join(map(str, sizes)) or "unknown"
    raise InputError(f"this SAE's {what} is {width}, but {name!r} has width {have}; it was trained on another "
                     "point or another model (check sae.cfg.hook_name and the model).")


def _flatten(act: Tensor, n: int) -> Tensor:
    return act if n == 1 else act.flatten(-n)


# -------------------------------------------------------------------------------------------- the API
def _as_list(saes) -> list[SAE]:
    if isinstance(saes, SAE):
        return [saes]
    if isinstance(saes, (str, bytes)) or not isinstance(saes, Iterable):
        raise InputTypeError(f"saes must be an SAE or a list of SAEs, got {type_name(saes)}.")
    return list(saes)


def attach_sae(model, sae: SAE, *, use_error_term: bool = False) -> Splice:
    """Splice ``sae`` into ``model`` until :func:`detach_saes` (or ``splice.detach()``): every forward reads its
    reconstruction at ``sae.cfg.hook_name`` (a transcoder's prediction at ``hook_name_out``), plus the error
    term when ``use_error_term``. Returns the :class:`Splice` (its points: ``splice.prefix + "hook_sae_..."``)."""
    return Splice(model, sae, use_error_term)


def attach_saes(model, saes, *, use_error_term: bool = False) -> list[Splice]:
    """:func:`attach_sae` for each of ``saes`` (at distinct points); all or none are attached."""
    done: list[Splice] = []
    try:
        for sae in _as_list(saes):
            done.append(Splice(model, sae, use_error_term))
    except BaseException:
        for s in reversed(done):
            s.detach()
        raise
    return done


def detach_saes(model, saes=None) -> None:
    """Remove spliced dictionaries: all (``saes=None``), or those given as SAEs, :class:`Splice` objects or the
    names of the points they replace (or read)."""
    reg = spliced(model)
    if saes is None:
        for s in reversed(list(reg.values())):
            s.detach()
        return
    items = [saes] if isinstance(saes, (SAE, Splice, str)) else list(saes)
    for item in items:
        if isinstance(item, Splice):
            item.detach()
            continue
        match = [s for s in reg.values()
                 if (s.sae is item if isinstance(item, SAE) else item in (s.point, s.hook_in))]
        if not match:
            what = item.extra_repr() if isinstance(item, SAE) else repr(item)
            raise InputError(f"no dictionary spliced into this model matches {what}; spliced: "
                             f"{list(reg) or 'none'}.")
        for s in match:
            s.detach()


@contextmanager
def splice(model, saes, *, use_error_term: bool = False) -> Iterator[list[Splice]]:
    """Context in which ``saes`` are spliced into ``model``; removed on exit, even on error::

        with splice(model, sae, use_error_term=True):
            logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_sae_acts_post" in n)
    """
    splices = attach_saes(model, saes, use_error_term=use_error_term)
    try:
        yield splices
    finally:
        for s in reversed(splices):
            s.detach()


def feature_direction(sae: SAE, index: int) -> Tensor:
    """Decoder direction ``(d_out,)`` of latent ``index`` in the model's units (``W_dec[index] / norm_scale_out``):
    add ``coefficient * feature_direction(sae, i)`` at the dictionary's point to steer with that feature."""
    if isinstance(index, bool) or not isinstance(index, int) or not -sae.cfg.d_sae <= index < sae.cfg.d_sae:
        raise InputError(f"index must be a latent index from 0 to d_sae - 1 ({sae.cfg.d_sae - 1}), got {index!r}.")
    return (sae.W_dec[index] / sae.norm_scale_out.to(sae.W_dec.dtype)).detach()


def steering_hook(sae: SAE, index: int, coefficient: float, positions=None):
    """A forward hook ``(act, hook) -> act + coefficient * direction`` adding latent ``index``'s decoder direction
    (at every position, or at ``positions``) to an activation of width ``d_out``: steer with
    ``model.run_with_hooks(tokens, fwd_hooks=[(sae.cfg.hook_name, steering_hook(sae, 12, 8.0))])``."""
    direction = feature_direction(sae, index)

    def steer(act: Tensor, hook) -> Tensor:
        if act.shape[-1] != direction.shape[0]:
            raise InputError(f"the steering direction has width {direction.shape[0]} but {hook.name!r} has width "
                             f"{act.shape[-1]}; steer at the dictionary's own point ({sae.cfg.hook_name_out or sae.cfg.hook_name}).")
        add = coefficient * direction.to(act.device, act.dtype)
        if positions is None:
            return act + add
        act = act.clone()
        act[:, positions] += add
        return act

    return steer


# ------------------------------------------------------------------------------- SAELens's names
class HookedSAETransformer(Model):
    """A :class:`mechscope.Model` with SAELens's ``HookedSAETransformer`` methods, so SAELens code ports by
    changing the import: ``HookedSAETransformer.from_pretrained(name)``, ``add_sae``, ``reset_saes``,
    ``run_with_saes``, ``run_with_cache_with_saes``, ``run_with_hooks_with_saes``, the ``saes`` context and
    ``acts_to_saes``. The latents are at ``<hook_name>.sae.hook_sae_acts_post`` (SAELens 6 drops the ``.sae``).

    As in SAELens, ``use_error_term=None`` means the SAE's own ``use_error_term`` attribute (False if it has
    none), and :meth:`add_sae` replaces a dictionary already at the same point (:func:`attach_sae` refuses)."""

    @classmethod
    def from_pretrained(cls, model_name: str = "default", **kwargs) -> HookedSAETransformer:
        """Load like :func:`mechscope.load` (a named model, a local folder, a hub id; ``device=``, ``dtype=``)."""
        from ..loading import load

        m = load(model_name, **kwargs)
        out = cls(m.hf_model, m.tokenizer)
        out.source = m.source
        return out

    @property
    def acts_to_saes(self) -> dict[str, SAE]:
        """``{hook_name: SAE}`` for the attached dictionaries (a transcoder under the point it reads)."""
        return {s.hook_in: s.sae for s in spliced(self).values()}

    def add_sae(self, sae: SAE, use_error_term: bool | None = None,
                exclude_special_tokens: bool | list[int] = False) -> None:
        """Splice ``sae`` in until :meth:`reset_saes`, replacing one already at its point.
        ``exclude_special_tokens``: True bypasses the dictionary at the tokenizer's BOS, EOS, PAD, SEP and CLS
        tokens (the model's own activation flows on there), a list of ids at those ids (not during ``generate``)."""
        ids = self._special_ids(exclude_special_tokens)
        if use_error_term is None:
            use_error_term = bool(getattr(sae, "use_error_term", False))
        if not isinstance(sae, SAE):
            Splice(self, sae)  # its sentence
        old = spliced(self).get(sae.cfg.hook_name_out or sae.cfg.hook_name)
        if old is not None:
            old.detach()
        try:
            Splice(self, sae, use_error_term).exclude_ids = ids
        except BaseException:
            if old is not None:
                Splice(self, old.sae, old.use_error_term).exclude_ids = old.exclude_ids
            raise

    def _special_ids(self, exclude) -> list[int]:
        if exclude is False:
            return []
        if exclude is True:
            tok = self._tokenizer("exclude_special_tokens=True (pass a list of token ids instead)")
            return sorted({i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                                       getattr(tok, "sep_token_id", None), getattr(tok, "cls_token_id", None))
                           if i is not None})
        if isinstance(exclude, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in exclude):
            return list(exclude)
        raise InputTypeError(f"exclude_special_tokens must be True, False or a list of token ids, got "
                             f"{type_name(exclude)}.")

    def _run(self, input, *, prepend_bos=None, padding_side=None, **kwargs):
        """``Model._run`` with each dictionary's :attr:`Splice.token_mask` set from its ``exclude_ids``."""
        from ..tokens import Batch

        masked = [s for s in spliced(self).values() if s.exclude_ids]
        if not masked:
            return super()._run(input, prepend_bos=prepend_bos, padding_side=padding_side, **kwargs)
        batch = input if isinstance(input, Batch) else self._batch(input, prepend_bos, padding_side)
        for s in masked:
            s.token_mask = torch.isin(batch.tokens, torch.tensor(s.exclude_ids, device=batch.tokens.device))
        try:
            return super()._run(batch, **kwargs)
        finally:
            for s in masked:
                s.token_mask = None

    def reset_saes(self, act_names: str | list[str] | None = None) -> None:
        """Remove the dictionaries reading ``act_names`` (a name or list; all when None)."""
        if act_names is None:
            detach_saes(self)
            return
        names = [act_names] if isinstance(act_names, str) else list(act_names)
        for name in names:
            if not isinstance(name, str):
                raise InputTypeError(f"act_names must be hook names (str), got {type_name(name)}.")
            for s in [s for s in spliced(self).values() if name in (s.hook_in, s.point)]:
                s.detach()

    @contextmanager
    def saes(self, saes=(), reset_saes_end: bool = True, use_error_term: bool | None = None):
        """Context with ``saes`` attached; on exit (``reset_saes_end``) they are removed and the dictionaries they
        displaced come back."""
        saes = _as_list(saes)
        restore = []
        for sae in saes:
            if isinstance(sae, SAE):
                prev = spliced(self).get(sae.cfg.hook_name_out or sae.cfg.hook_name)
                restore.append(None if prev is None else (prev.sae, prev.use_error_term, prev.exclude_ids))
        added: list[SAE] = []
        try:
            for sae in saes:
                self.add_sae(sae, use_error_term=use_error_term)
                added.append(sae)
            yield self
        finally:
            if reset_saes_end:
                for sae in reversed(added):
                    detach_saes(self, sae)
                for prev in restore:
                    if prev is not None and (prev[0].cfg.hook_name_out or prev[0].cfg.hook_name) not in spliced(self):
                        Splice(self, prev[0], prev[1]).exclude_ids = prev[2]

    def run_with_saes(self, *model_args, saes=(), reset_saes_end: bool = True, use_error_term: bool | None = None,
                      **model_kwargs):
        """``forward`` with ``saes`` attached for this call."""
        with self.saes(saes=saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(self, *model_args, saes=(), reset_saes_end: bool = True,
                                 use_error_term: bool | None = None, return_cache_object: bool = True,
                                 remove_batch_dim: bool = False, **kwargs):
        """``run_with_cache`` with ``saes`` attached: ``(output, cache)``; the cache is a plain dict when
        ``return_cache_object=False``."""
        with self.saes(saes=saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            out, cache = self.run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        return out, (cache if return_cache_object else dict(cache.items()))

    def run_with_hooks_with_saes(self, *model_args, saes=(), reset_saes_end: bool = True, fwd_hooks=(),
                                 bwd_hooks=(), reset_hooks_end: bool = True, clear_contexts: bool = False,
                                 **model_kwargs):
        """``run_with_hooks`` with ``saes`` attached. Hooks are always removed at the end (mechscope keeps
        persistent hooks to ``add_hook``); ``clear_contexts`` clears the hooked points' ``ctx``."""
        if reset_hooks_end is not True:
            raise InputError("reset_hooks_end=False is not supported: hooks passed here last one call; attach "
                             "lasting ones with model.add_hook(name, fn).")
        with self.saes(saes=saes, reset_saes_end=reset_saes_end):
            try:
                return self.run_with_hooks(*model_args, fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks, **model_kwargs)
            finally:
                if clear_contexts:
                    for pt in self.hook_dict.values():
                        pt.ctx.clear()
