"""Direct logit attribution: how much each part of the model writes, directly, into one logit (or logit difference,
or any direction of the residual stream), at the cached forward's own normalisation scales.

    res = mechscope.direct_logit_attribution(model, "When Mary and John went to the store, John gave a drink to",
                                             target=" Mary", minus=" John", by="head")
    res.top(5)          # [('L9H2', 1.83), ...]: the heads that push " Mary" over " John" most, directly
    res.values          # (n_layers * n_heads,) one value per label; (component, batch) for several prompts

Built on ``ActivationCache``'s residual algebra (``mechscope.residual``): a component's attribution is
``apply_ln_to_stack(component) · direction`` with the final norm at its cached scale, so over a full decomposition
(``by="layer"`` or ``by="full"``) ``values.sum(0) + constant == logit`` exactly (to float rounding), where
``constant`` is what no component writes (the final norm's bias and ``b_U``). Logits are those ``W_U`` gives:
before any soft-cap or logit scale the family applies after it (Gemma 2's ``final_logit_softcapping``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from . import residual
from .errors import InputError, InputTypeError, type_name
from .tokens import token_strings

By = Literal["layer", "head", "neuron", "full", "position"]
BY = ("layer", "head", "neuron", "full", "position")


class ComponentScore(NamedTuple):
    label: str
    value: float


class HeadGrid(NamedTuple):
    """Head attributions laid out for a layer × head heatmap (``views.heatmap(values, row_labels, col_labels)``)."""

    values: Tensor
    """``[layer, head, *batch_and_pos]``; NaN where a layer has no such head (hybrids' mixer blocks)."""
    row_labels: list[str]
    col_labels: list[str]


@dataclass
class DLAResult:
    """One direct-logit-attribution run. ``values[i]`` belongs to ``labels[i]``."""

    values: Tensor
    """``[component]`` for one prompt, ``[component, batch]`` for several (``[..., pos]`` added with ``position=None``)."""
    labels: list[str]
    """``L{l}H{h}`` (heads), ``L{l}N{n}`` (neurons), ``embed``/``{l}_attn_out``/``{l}_mlp_out``/``{l}_mixer_out``
    (layers), ``bias`` (``full``), ``{k}:{token}`` (source positions)."""
    tokens: list[str] | list[list[str]]
    """The prompt's tokens (a list per prompt for a batch), for labelling and views."""
    target: str
    """What was attributed, in words (``logit(' Mary') - logit(' John') at position -1``)."""
    by: str
    logit: Tensor
    """The attributed quantity itself from the forward: the logit (difference) as ``W_U`` gives it, or the
    direction's dot product with the final (normalised) stream; ``[]``, ``[batch]`` (``[..., pos]``)."""
    constant: Tensor
    """What no component writes (the final norm's bias and ``b_U``, for token targets; zero for directions).
    ``values.sum(0) + constant == logit`` when ``by`` is ``layer`` or ``full``."""
    position: int | None = -1
    meta: dict = field(default_factory=dict)

    def top(self, k: int = 10, *, by_abs: bool = True) -> list[ComponentScore]:
        """The ``k`` largest attributions (by magnitude with ``by_abs``; averaged over a batch and positions)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"top takes a positive int k, got {type_name(k)}.")
        v = self.values.float()
        v = v.reshape(v.shape[0], -1).mean(1) if v.ndim > 1 else v
        order = (v.abs() if by_abs else v).argsort(descending=True)[:k]
        return [ComponentScore(self.labels[i], float(v[i])) for i in order.tolist()]

    def grid(self) -> HeadGrid:
        """``by="head"`` values as ``[layer, head, ...]`` with row labels ``L{l}`` and column labels ``H{h}``."""
        if self.by != "head":
            raise InputError(f"grid() lays out head attributions; this result is by {self.by!r}, so call "
                             "direct_logit_attribution(..., by='head').")
        where = [tuple(int(x) for x in label[1:].split("H")) for label in self.labels]
        layers = sorted({l for l, _ in where})
        n_heads = max(h for _, h in where) + 1
        out = torch.full((len(layers), n_heads, *self.values.shape[1:]), float("nan"), dtype=self.values.dtype)
        for i, (l, h) in enumerate(where):
            out[layers.index(l), h] = self.values[i]
        return HeadGrid(out, [f"L{l}" for l in layers], [f"H{h}" for h in range(n_heads)])

    def view(self, title: str | None = None, top: int = 40):
        """A view of one prompt's attributions: a layer × head heatmap (``by="head"``), a token colour map over the
        source positions (``by="position"``), otherwise a one-row heatmap of every layer's component
        (``layer``) or of the ``top`` largest components (``neuron``, ``full``)."""
        from .views import heatmap, token_colors

        title = title or f"direct logit attribution by {self.by}: {self.target}"
        values = self.values[:, 0] if self.values.ndim == 2 and self.values.shape[1] == 1 else self.values  # batch of 1
        if values.ndim > 1:
            raise InputError("view() shows one prompt at one position; run direct_logit_attribution on one prompt "
                             "with an int position.")
        if self.by == "head":
            g = self.grid()
            return heatmap(g.values.reshape(g.values.shape[:2]), g.row_labels, g.col_labels, title=title, center=0.0)
        if self.by == "position":
            return token_colors([label.split(":", 1)[1] for label in self.labels], values, labels=["DLA"],
                                title=title)
        idx = list(range(len(self.labels))) if self.by == "layer" else [
            self.labels.index(c.label) for c in self.top(top)]
        return heatmap(values[idx][None], ["DLA"], [self.labels[i] for i in idx], title=title, center=0.0)

    def _repr_html_(self) -> str:
        return self.view()._repr_html_()

    def to_dict(self) -> dict:
        """Plain data for JSON: labels with their values, the tokens, the target and the totals."""
        return {"target": self.target, "by": self.by, "position": self.position, "tokens": self.tokens, "labels": self.labels,
                "values": self.values.float().tolist(), "logit": self.logit.float().tolist(),
                "constant": self.constant.float().tolist()}

    def __repr__(self) -> str:
        tops = ", ".join(f"{a.label} {a.value:+.3f}" for a in self.top(5))
        return f"DLAResult({self.target}, by {self.by}, {len(self.labels)} components; top: {tops})"


def _direction(model, target, minus, direction) -> tuple[Tensor, Tensor | None, str]:
    """(direction in the normalised stream ``[d_model]`` or ``[batch, d_model]``, token ids or None, description)."""
    if direction is not None:
        if target is not None or minus is not None:
            raise InputError("pass either target (and minus) tokens or a direction, not both.")
        d = model.cfg.d_model
        if not isinstance(direction, Tensor) or direction.ndim not in (1, 2) or direction.shape[-1] != d:
            raise InputError(f"direction must be a tensor [d_model] or [batch, d_model] with d_model="
                             f"{model.cfg.d_model}, got {type_name(direction)}.")
        return direction, None, "a direction"
    if target is None:
        raise InputError("direct_logit_attribution needs a target: a token (' Mary', or its id), optionally with a "
                         "minus token for a logit difference, or direction=<tensor [d_model]>.")
    ids = residual._token_ids(model, target, "target")
    u = residual.tokens_to_residual_directions(model, ids)
    what = f"logit({_show(model, target)})"
    if minus is not None:
        base = residual._token_ids(model, minus, "minus")
        if base.shape != ids.shape:
            raise InputError(f"target and minus must have the same shape, got {tuple(ids.shape)} and "
                             f"{tuple(base.shape)}.")
        u = u - residual.tokens_to_residual_directions(model, base)
        what += f" - logit({_show(model, minus)})"
        ids = (ids, base)
    else:
        ids = (ids, None)
    if u.ndim > 2:
        raise InputError("target must be one token or one per prompt ([batch]); for every position, call per position.")
    return u, ids, what


def _show(model, t) -> str:
    if isinstance(t, str):
        return repr(t)
    if isinstance(t, int) and model.tokenizer is not None:
        return repr(model.tokenizer.decode([t]))
    return str(t.tolist() if isinstance(t, Tensor) else t)


def _per_batch(x: Tensor, u: Tensor, batched_u: bool) -> Tensor:
    """``x [component, batch, (pos), d]`` dotted with ``u [d]`` or ``[batch, d]`` → ``[component, batch, (pos)]``."""
    if batched_u:
        u = u.view(u.shape[0], *([1] * (x.ndim - 3)), u.shape[1])
    dt = torch.promote_types(x.dtype, u.dtype)
    return (x.to(dt) * u.to(x.device, dt)).sum(-1)


def direct_logit_attribution(model, prompt, target=None, minus=None, *, direction: Tensor | None = None,
                             by: By = "head", position: int | None = -1, apply_ln: bool = True) -> DLAResult:
    """Direct logit attribution of ``target`` (a token string or id, one per prompt as a ``[batch]`` tensor), of
    ``target - minus``, or of ``direction`` (``[d_model]``: read from the final-normalised stream, or from the raw
    stream with ``apply_ln=False``), at position ``position`` (None: every position) of ``prompt`` (text, texts —
    left-padded so ``position=-1`` is each prompt's last token — or token ids).

    ``by``: ``layer`` (embeddings and each attention / MLP / mixer output), ``head`` (every head), ``neuron`` (every
    MLP neuron, projected without building ``[neuron, d_model]`` tensors), ``full`` (every head, MLP layer,
    embedding and the biases: sums to the logit), ``position`` (what each source position contributes through all
    heads' value vectors: ``pattern[q, k] * v_k @ W_O``)."""
    if by not in BY:
        raise InputError(f"by must be one of {', '.join(BY)}, got {by!r}.")
    pos = position
    if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int)):
        raise InputTypeError(f"position must be an int position (negative counts from the end) or None, got "
                             f"{type_name(pos)}.")
    u, ids, what = _direction(model, target, minus, direction)
    names = residual.names_filter if by != "position" else (
        lambda n: residual.names_filter(n) or n.endswith(("attn.hook_pattern", "attn.hook_v")))
    single = isinstance(prompt, str) or (isinstance(prompt, Tensor) and prompt.ndim == 1)
    if pos is not None and isinstance(prompt, list) and len(prompt) > 1:
        _check_not_padding(model, prompt, pos)
    _, cache = model.run_with_cache(prompt, names_filter=names, padding_side="left")
    batch = cache["blocks.0.hook_resid_pre"].shape[0]
    batched_u = u.ndim == 2
    if batched_u and u.shape[0] != batch:
        raise InputError(f"one target (or direction) per prompt: got {u.shape[0]} for {batch} prompts.")
    n = model.cfg.n_layers
    final = residual.Slice(pos).apply(residual._get(cache, f"blocks.{n - 1}.hook_resid_post", "DLA"), dim=-2)[None]
    ln = (lambda s: residual.apply_ln_to_stack(cache, s, None, pos_slice=pos)) if apply_ln else (lambda s: s)
    logit = _per_batch(ln(final), u, batched_u)[0]
    constant = torch.zeros_like(logit)
    if ids is not None:
        t, b = ids
        c = residual.final_bias_terms(model, t)
        if b is not None:
            c = c - residual.final_bias_terms(model, b)
        c = c.to(logit.device, logit.dtype)
        if c.ndim == 1:  # one per prompt
            c = c.view(-1, *([1] * (logit.ndim - 1)))
        constant = c.expand_as(logit).clone()
        logit = logit + constant

    if by == "neuron":
        p = u.T if batched_u else u
        stack, labels = residual.stack_neuron_results(cache, n, pos_slice=pos, return_labels=True, apply_ln=apply_ln,
                                                      project_output_onto=p.to(model.cfg.dtype if not apply_ln
                                                                               else torch.float32))
        if batched_u:  # [neuron, batch, (pos), batch]: each prompt's own direction
            values = stack.diagonal(dim1=1, dim2=-1).movedim(-1, 1)
        else:
            values = stack
    elif by == "position":
        values = _by_source_position(cache, model, u, batched_u, pos, ln)
        labels = [str(k) for k in range(values.shape[0])]
    else:
        if by == "layer":
            stack, labels = residual.decompose_resid(cache, pos_slice=pos, return_labels=True)
        elif by == "head":
            stack, labels = residual.stack_head_results(cache, pos_slice=pos, return_labels=True)
        else:
            stack, labels = residual.get_full_resid_decomposition(cache, expand_neurons=False, pos_slice=pos,
                                                                  return_labels=True)
        values = _per_batch(ln(stack), u, batched_u)
    str_tokens = _str_tokens(model, prompt)
    if by == "position" and len(str_tokens) == 1:
        labels = [f"{k}:{t}" for k, t in enumerate(str_tokens[0])]
    if single:
        values, logit, constant = values[:, 0], logit[0], constant[0]
        str_tokens = str_tokens[0] if str_tokens else str_tokens
    where = "every position" if pos is None else f"position {pos}"
    return DLAResult(values.detach(), labels, str_tokens, f"{what} at {where}", by, logit.detach(),
                     constant.detach(), pos)


def _check_not_padding(model, prompts: list, pos: int) -> None:
    """Refuse a position that is left padding in some prompt of a batch (its attributions would be of a pad token)."""
    mask = model._batch(prompts, None, "left").attention_mask
    if mask is None or not 0 <= pos + (mask.shape[1] if pos < 0 else 0) < mask.shape[1]:
        return  # no padding, or out of range: Slice says so with its own sentence
    padded = (~mask[:, pos].bool()).nonzero()
    if len(padded):
        i = int(padded[0, 0])
        raise InputError(f"position={pos} is left padding in prompt {i} ({int(mask[i].sum())} tokens, padded to "
                         f"{mask.shape[1]}): prompts of different lengths are left-padded, so count positions from "
                         "the end (position=-1 is every prompt's last token) or attribute that prompt on its own.")


def _str_tokens(model, prompt) -> list[list[str]]:
    """``[batch][pos]`` the prompt's tokens as strings, padded as the forward was (left)."""
    if isinstance(prompt, Tensor):
        rows = prompt if prompt.ndim == 2 else prompt[None]
    else:
        rows = model.to_tokens(prompt, padding_side="left")
    return token_strings(model.tokenizer, rows)


def _by_source_position(cache, model, u: Tensor, batched_u: bool, pos: int | None, ln) -> Tensor:
    """Σ over attention layers and heads of ``pattern[b, h, q, k] * (v[b, k, kv(h)] @ W_O[h])``, through each post-norm
    and the final norm at their cached scales, dotted with ``u``: ``[k_pos, batch, (q)]``. Refused where ``hook_z`` is
    not the pattern-weighted sum of ``hook_v`` (gated or sink-scaled outputs, latent attention)."""
    lay = residual._layout(cache)
    q_slice = residual.Slice(pos)
    total = None
    for l in range(lay.n_layers):
        if not lay.attn[l]:
            continue
        v_name, p_name = f"blocks.{l}.attn.hook_v", f"blocks.{l}.attn.hook_pattern"
        if v_name not in model.hook_dict:
            raise InputError(f"by='position' needs per-head value vectors, and block {l} of this {model.cfg.family} "
                             "model has no hook_v (its values are expanded from a latent inside attention).")
        v, pattern = residual._get(cache, v_name, "by='position'"), residual._get(cache, p_name, "by='position'")
        # [b, k, kv, d], [b, h, q, k], on the unembedding's device (a multi-device model's blocks sit on several)
        h = pattern.shape[1]
        v = v.repeat_interleave(h // v.shape[2], dim=2)
        z = residual._get(cache, f"blocks.{l}.attn.hook_z", "by='position'")
        rebuilt = torch.einsum("bhqk,bkhd->bqhd", pattern.to(v.dtype), v)
        if not torch.allclose(rebuilt, z, atol=1e-3 * float(z.abs().max()) + 1e-6, rtol=1e-2):
            raise InputError(f"by='position' splits each head's output over the positions it reads, but in this "
                             f"{model.cfg.family} model hook_z of block {l} is not the pattern-weighted sum of hook_v "
                             "(a gate, sink scaling or other term acts in between); use by='head'.")
        w_o, _ = residual.head_weights(cache, l)
        vo = torch.einsum("bkhd,hdm->bkhm", v, w_o.to(v.dtype))  # each source position's written vector, per head
        pat = q_slice.apply(pattern, dim=2)  # [b, h, (q), k]
        if pos is not None:
            per = torch.einsum("bhk,bkhm->kbm", pat.to(vo.dtype), vo)  # [k, b, d]
        else:
            per = torch.einsum("bhqk,bkhm->kbqm", pat.to(vo.dtype), vo)  # [k, b, q, d]
        norm, scale = residual._post_norm(cache, l, "ln1_post", q_slice)
        if norm is not None:
            per = residual._through(norm, per, scale)
        total = per if total is None else total + per
    if total is None:
        raise InputError(f"this {model.cfg.family} model has no attention blocks to attribute by position.")
    return _per_batch(ln(total), u, batched_u)
