"""Attention-head detectors: how much of each head's attention lands where a mechanism says it should.

A detection pattern is a boolean ``[batch, q_pos, k_pos]`` mask built from the tokens alone:
- ``previous_token``: k = q - 1;
- ``duplicate_token``: earlier positions holding the same token as q;
- ``induction``: positions right after an earlier occurrence of q's token (tokens[k - 1] == tokens[q], k <= q);
- a user template: a boolean ``[q_pos, k_pos]`` or ``[batch, q_pos, k_pos]`` mask, or a callable from tokens
  ``(batch, pos)`` to one.

:func:`head_scores` (mechscope's measure): the attention mass a head puts on the pattern, averaged over the queries
that have at least one target, so it lies in [0, 1] and reads "fraction of attention spent doing this" where the
mechanism applies. Run on repeated random tokens (:func:`repeated_tokens`, as in Olsson et al. 2022) to find
induction heads. :func:`detect_head` is TransformerLens's function, with its names and semantics (the mass is
divided by *all* attention, over every query, and an ``"abs"`` error measure); :func:`find_heads` runs every
detector plus attention entropy and attention to BOS in one batched pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .attention_analysis import (
    Chunk, as_batch, bos_stat, entropy_stat, first_positions, mean_over, pattern_sums, valid_mask,
)
from .errors import InputError, InputTypeError, type_name

Detector = Literal["previous_token", "duplicate_token", "induction"]
DETECTORS: tuple[Detector, ...] = ("previous_token", "duplicate_token", "induction")
Template = Detector | Tensor | Callable[[Tensor], Tensor]
"""A detector name, a boolean ``(q_pos, k_pos)`` / ``(batch, q_pos, k_pos)`` mask, or ``tokens -> mask``."""

HeadName = Literal["previous_token_head", "duplicate_token_head", "induction_head"]
HEAD_NAMES: tuple[HeadName, ...] = ("previous_token_head", "duplicate_token_head", "induction_head")
"""TransformerLens's names for the built-in patterns (``detect_head``)."""


def detection_pattern(tokens: Tensor, kind: Detector) -> Tensor:
    """``(batch, q_pos, k_pos)`` boolean targets for ``tokens (batch, pos)``."""
    if kind not in DETECTORS:
        raise InputError(f"unknown detector {kind!r}; use one of {', '.join(DETECTORS)}, or pass your own boolean "
                         "(q_pos, k_pos) mask or a function from tokens to one.")
    b, n = tokens.shape
    q = torch.arange(n, device=tokens.device)[:, None]
    k = torch.arange(n, device=tokens.device)[None, :]
    if kind == "previous_token":
        return (k == q - 1).expand(b, n, n)
    same = tokens[:, :, None] == tokens[:, None, :]  # same[b, i, j]: tokens[i] == tokens[j]
    if kind == "duplicate_token":
        return same & (k < q)
    after = torch.zeros_like(same)
    after[:, :, 1:] = same[:, :, :-1]  # tokens[q] == tokens[k - 1]
    return after & (k <= q)


_named_pattern = detection_pattern  # detect_head's argument of the same name (TransformerLens's) shadows it


def template_mask(tokens: Tensor, template: Template) -> Tensor:
    """A template resolved against ``tokens (batch, pos)``: a ``(batch, q_pos, k_pos)`` bool mask, checked."""
    b, n = tokens.shape
    if isinstance(template, str):
        return detection_pattern(tokens, template)  # type: ignore[arg-type]
    what = "the detection template"
    if callable(template) and not isinstance(template, Tensor):
        template, what = template(tokens), "the detection template function's result"
    if not isinstance(template, Tensor):
        raise InputTypeError(f"{what} must be a detector name ({', '.join(DETECTORS)}), a boolean tensor "
                             f"(q_pos, k_pos) or (batch, q_pos, k_pos), or a function of the tokens returning one; "
                             f"got {type_name(template)}.")
    if template.shape not in ((n, n), (b, n, n)):
        raise InputError(f"{what} has shape {tuple(template.shape)}, but the tokens {tuple(tokens.shape)} need "
                         f"({n}, {n}) or ({b}, {n}, {n}) (q_pos, k_pos).")
    if template.dtype != torch.bool:
        if not ((template == 0) | (template == 1)).all():
            raise InputError(f"{what} must be boolean (or 0/1): it marks where the head should attend. For graded "
                             "targets use detect_head(..., error_measure='abs').")
        template = template.bool()
    return template.to(tokens.device).expand(b, n, n)


def _scores_stat(target: Tensor, rows: Tensor):
    def stat(p: Tensor, chunk: Chunk) -> Tensor:
        t, r = target[chunk.rows].to(p.device), rows[chunk.rows].to(p.device)
        return ((p * t[:, None]).sum(-1) * r[:, None]).sum((0, 2))  # (head,)

    return stat


def _targets(model, batch, template: Template) -> tuple[Tensor, Tensor]:
    target = template_mask(batch.tokens.cpu(), template)
    valid = valid_mask(batch).cpu()
    target = target & valid[:, None, :]
    rows = target.any(-1) & valid  # (batch, q_pos): queries that have something to attend to
    if not rows.any():
        name = template if isinstance(template, str) else "template"
        raise InputError(f"the tokens contain no {name} targets (e.g. induction needs a repeated token); use "
                         "repeated_tokens(model) or a prompt where the pattern occurs.")
    return target, rows


def head_scores(model, tokens, kind: Template, *, cache=None, batch_size: int = 8) -> Tensor:
    """``(n_layers, n_heads)`` attention mass on ``kind``'s detection pattern, in [0, 1].

    ``tokens``: ``(batch, pos)`` ids, text or a list of texts (padding queries are not counted). ``kind``: a detector
    name, a boolean ``(q_pos, k_pos)``/``(batch, q_pos, k_pos)`` mask or a function of the tokens returning one.
    ``cache``: an ``ActivationCache`` holding ``hook_pattern`` for exactly these tokens; else the model runs in
    batches of ``batch_size``. Hybrids: rows of blocks without softmax attention are NaN."""
    batch = as_batch(model, tokens)
    target, rows = _targets(model, batch, kind)
    sums = pattern_sums(model, batch, {"s": _scores_stat(target, rows)}, cache=cache, batch_size=batch_size)["s"]
    return sums / rows.sum()


def repeated_tokens(model, n_seqs: int = 8, seg_len: int = 50, *, seed: int = 0) -> Tensor:
    """``(n_seqs, 1 + 2 * seg_len)`` sequences ``BOS + segment + segment`` of uniformly random tokens (Olsson et al.
    2022): the second copy can only be predicted by induction. Special tokens are never drawn, nor ids beyond the
    model's embedding; BOS is the tokenizer's BOS, or its EOS when it has none (GPT-2). Same ``seed``, same tokens
    (the draw is the one ``default_model.make_repeated_tokens`` makes)."""
    for name, v in (("n_seqs", n_seqs), ("seg_len", seg_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputTypeError(f"{name} must be a positive int, got {type_name(v)}.")
    if model.cfg.n_ctx is not None and 1 + 2 * seg_len > model.cfg.n_ctx:
        raise InputError(f"seg_len={seg_len} makes sequences of {1 + 2 * seg_len} tokens, longer than the model's "
                         f"context of {model.cfg.n_ctx}; pass seg_len <= {(model.cfg.n_ctx - 1) // 2}.")
    tok = model._tokenizer("repeated_tokens")
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None:
        raise InputError("repeated_tokens needs a tokenizer with a BOS or an EOS token to start each sequence.")
    special = set(tok.all_special_ids)
    candidates = np.array([i for i in range(min(len(tok), model._n_ids())) if i not in special])
    segments = candidates[np.random.default_rng(seed).integers(0, len(candidates), (n_seqs, seg_len))]
    tokens = np.concatenate([np.full((n_seqs, 1), bos), segments, segments], axis=1)
    return torch.from_numpy(tokens).long().to(model.input_device)


# ----------------------------------------------------------------------------------- TransformerLens's detect_head
def _layer_heads(cfg, heads) -> dict[int, list[int]]:
    if heads is None:
        return {layer: list(range(cfg.n_heads)) for layer in range(cfg.n_layers)}
    pairs = heads.items() if isinstance(heads, dict) else None
    if pairs is None:
        try:
            pairs = [(layer, [head]) for layer, head in heads]
        except (TypeError, ValueError):
            raise InputTypeError(f"heads must be a list of (layer, head) pairs or a dict layer -> [heads], got "
                                 f"{type_name(heads)}.") from None
    out: dict[int, list[int]] = {}
    for layer, hs in pairs:
        for head in hs:
            if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
                raise InputError(f"head ({layer}, {head}) is out of range for {cfg.n_layers} layers x {cfg.n_heads} "
                                 "heads.")
            out.setdefault(layer, []).append(head)
    return out


def _detect_stat(det: Tensor, exclude_bos: bool, exclude_current_token: bool, error_measure: str):
    def stat(p: Tensor, chunk: Chunk) -> Tensor:
        p, d = p[0], det.to(p.device)  # (head, q, k), (q, k)
        n = p.shape[-1]
        keep = torch.ones(n, n, dtype=torch.bool, device=p.device)
        if exclude_bos:
            keep[:, 0] = False
        if exclude_current_token:
            keep.fill_diagonal_(False)
        if error_measure == "mul":
            p = p * keep
            return (p * d).sum((-2, -1)) / p.sum((-2, -1))
        diff = (p - d).abs() * keep
        return 1 - torch.round(diff.mean((-2, -1)) * n, decimals=3)

    return stat


def detect_head(model, seq: str | list[str] | Tensor, detection_pattern: Tensor | HeadName,
                heads: list[tuple[int, int]] | dict[int, list[int]] | None = None, cache=None, *,
                exclude_bos: bool = False, exclude_current_token: bool = False,
                error_measure: Literal["mul", "abs"] = "mul") -> Tensor:
    """TransformerLens's ``transformer_lens.head_detector.detect_head``, same arguments and semantics.

    ``seq``: one prompt (BOS prepended as ``model.to_tokens`` does; a ``(pos,)``/``(1, pos)`` id tensor is also
    taken), or a list of prompts with a named pattern (the scores are averaged over prompts). ``detection_pattern``:
    ``"previous_token_head"``, ``"duplicate_token_head"``, ``"induction_head"`` or a lower-triangular
    ``(pos, pos)`` tensor. ``error_measure="mul"``: attention mass on the pattern over all attention (after
    ``exclude_bos`` / ``exclude_current_token`` zero those entries); ``"abs"``: ``1 - round(sum|pattern -
    detection| / pos, 3)``, in [-1, 1]. Heads not in ``heads`` score -1; blocks without attention NaN.
    Returns ``(n_layers, n_heads)`` float32. ``cache``: a cache of this one prompt (with or without batch axis)."""
    if error_measure not in ("mul", "abs"):
        raise InputError(f"error_measure must be 'mul' or 'abs', got {error_measure!r}.")
    named = isinstance(detection_pattern, str)
    if named and detection_pattern.removesuffix("_head") not in DETECTORS:
        raise InputError(f"detection_pattern must be a Tensor or one of {', '.join(HEAD_NAMES)}; got "
                         f"{detection_pattern!r}.")
    if isinstance(seq, list):
        if cache is not None:
            raise InputError("a cache holds the activations of one prompt, so cache= cannot be used with a list of "
                             "prompts; pass one prompt at a time, or omit cache.")
        if not named:
            raise InputError("a detection-pattern tensor fits one prompt's length; pass one prompt with it, or a "
                             "named pattern with a list of prompts (or use head_scores for batches).")
        return torch.stack([detect_head(model, s, detection_pattern, heads, exclude_bos=exclude_bos,
                                        exclude_current_token=exclude_current_token, error_measure=error_measure)
                            for s in seq]).mean(0)
    tokens = model.to_tokens(seq) if isinstance(seq, str) else seq
    if not isinstance(tokens, Tensor):
        raise InputTypeError(f"seq must be a string, a list of strings or token ids, got {type_name(seq)}.")
    tokens = tokens.reshape(1, -1) if tokens.ndim == 1 or tokens.shape[0] == 1 else tokens
    n, cfg = tokens.shape[-1], model.cfg
    if tokens.shape[0] != 1:
        raise InputError(f"detect_head takes one sequence, got token ids of shape {tuple(tokens.shape)}; loop over "
                         "the rows, or use head_scores(model, tokens, ...) for a batch.")
    if not 1 < n < (cfg.n_ctx or n + 1):
        raise InputError(f"the sequence has {n} tokens; detect_head needs more than 1 and fewer than the model's "
                         f"context of {cfg.n_ctx}.")
    if named:
        det = _named_pattern(tokens.cpu(), detection_pattern.removesuffix("_head"))[0].float()
    else:
        det = detection_pattern
        if not isinstance(det, Tensor):
            raise InputTypeError(f"detection_pattern must be a Tensor or one of {', '.join(HEAD_NAMES)}; got "
                                 f"{type_name(det)}.")
        if det.shape != (n, n) or not torch.equal(det, det.tril()):
            raise InputError(f"the detection pattern must be a lower triangular matrix of shape (sequence_length, "
                             f"sequence_length); sequence_length={n}; got shape {tuple(det.shape)}.")
        det = det.float()
        if error_measure == "mul" and not ((det == 0) | (det == 1)).all():
            warnings.warn("Using detection pattern with values other than 0 or 1 with error_measure 'mul'",
                          stacklevel=2)
    stat = _detect_stat(det, exclude_bos, exclude_current_token, error_measure)
    scores = pattern_sums(model, tokens, {"s": stat}, cache=cache)["s"]
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    for layer, hs in _layer_heads(cfg, heads).items():
        chosen[layer, hs] = True
    return torch.where(chosen | scores.isnan(), scores, -1.0)


# ---------------------------------------------------------------------------------------------- all at once
@dataclass
class HeadScores:
    """Every detector, attention entropy and attention to BOS for every head, measured on ``tokens``.

    Rows are layers, columns heads; NaN rows for blocks without attention."""

    tokens: Tensor
    """(batch, pos) the token ids measured on (by default :func:`repeated_tokens`)."""
    scores: dict[str, Tensor]
    """detector name → (n_layers, n_heads) :func:`head_scores`."""
    bos_attention: Tensor
    """(n_layers, n_heads) mean attention to the first token (:func:`~mechscope.attention_analysis.bos_attention`)."""
    entropy: Tensor
    """(n_layers, n_heads) mean attention entropy in nats (:func:`~mechscope.attention_analysis.attention_entropy`)."""

    def top(self, detector: str, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` highest-scoring heads for a detector (or ``"bos_attention"``, ``"entropy"``), as
        ``(layer, head, score)``, best first; NaN rows are skipped."""
        s = self._table(detector)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"top takes a non-negative int k (how many heads), got {type_name(k)}.")
        flat = s.flatten().nan_to_num(float("-inf"))
        top = flat.topk(min(k, int(s.isfinite().sum())))
        return [(*divmod(int(i), s.shape[1]), float(v)) for v, i in zip(top.values, top.indices)]

    def _table(self, name: str) -> Tensor:
        if name in self.scores:
            return self.scores[name]
        if name in ("bos_attention", "entropy"):
            return getattr(self, name)
        names = ", ".join([*self.scores, "bos_attention", "entropy"])
        raise InputError(f"no scores named {name!r} here; these are {names}.")

    @property
    def head_labels(self) -> list[str]:
        """``L{layer}H{head}`` for each head, row-major (the order of ``scores[d].flatten()``)."""
        n_layers, n_heads = self.entropy.shape
        return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]

    def view(self, title: str | None = None):
        """One layer × head heatmap per detector, plus attention to BOS and entropy (:func:`mechscope.views.heatmap`)."""
        from .views import heatmap, report

        n_layers, n_heads = self.entropy.shape
        rows, cols = [f"L{layer}" for layer in range(n_layers)], [f"H{head}" for head in range(n_heads)]
        names = (*self.scores, "bos_attention", "entropy")
        return report([heatmap(self._table(n), rows, cols, title=n.replace("_", " ")) for n in names],
                      title=title or "attention heads")

    def _repr_html_(self) -> str:
        return self.view()._repr_html_()

    def to_dict(self, top: int = 10) -> dict:
        """JSON-ready: per detector the ``[layer][head]`` scores (None for NaN) and the top heads."""
        def rows(t: Tensor) -> list[list[float | None]]:
            return [[None if v != v else round(v, 6) for v in row] for row in t.tolist()]

        out = {name: {"scores": rows(self._table(name)),
                      "top": [{"layer": l, "head": h, "score": v} for l, h, v in self.top(name, top)]}
               for name in (*self.scores, "bos_attention", "entropy")}
        out["tokens"] = {"shape": list(self.tokens.shape)}
        return out


def find_heads(model, tokens=None, *, detectors: tuple[str, ...] | list[str] = DETECTORS, n_seqs: int = 8,
               seg_len: int = 50, seed: int = 0, cache=None, batch_size: int = 8) -> HeadScores:
    """Score every head on every detector, with entropy and attention to BOS, in one batched pass.

    ``tokens``: ``(batch, pos)`` ids or text; by default ``repeated_tokens(model, n_seqs, seg_len, seed=seed)``.
    ``detectors``: names from :data:`DETECTORS`."""
    for d in detectors:
        if d not in DETECTORS:
            raise InputError(f"unknown detector {d!r}; use one of {', '.join(DETECTORS)}.")
    batch = as_batch(model, repeated_tokens(model, n_seqs, seg_len, seed=seed) if tokens is None else tokens)
    valid = valid_mask(batch).cpu()
    counted = valid.clone()
    counted[torch.arange(valid.shape[0]), first_positions(valid)] = False
    targets = {d: _targets(model, batch, d) for d in detectors}
    stats = {d: _scores_stat(*targets[d]) for d in detectors}
    stats["entropy"], stats["bos_attention"] = entropy_stat(False), bos_stat(False)
    sums = pattern_sums(model, batch, stats, cache=cache, batch_size=batch_size)
    return HeadScores(
        tokens=batch.tokens.cpu(),
        scores={d: sums[d] / targets[d][1].sum() for d in detectors},
        bos_attention=mean_over(sums["bos_attention"], counted.sum(), False),
        entropy=mean_over(sums["entropy"], valid.sum(), False),
    )
