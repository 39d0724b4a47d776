"""What each latent of a sparse dictionary responds to, over a corpus: top-activating examples with their context,
examples sampled from activation intervals, density, activation histogram and logit weights.

:func:`latent_stats` streams a corpus through the model once, in bounded memory whatever its length: per batch it
harvests the SAE's input hook (the forward stopped after that layer), encodes it, and merges the batch into running
per-latent state — all vectorised over latents, never a Python loop over them:

- **top-k examples**: the batch's ``k`` best ``(value, row, pos)`` per latent are concatenated with the running
  best ``k`` and re-top-k'd; each kept example carries its context window's tokens and the latent's activation on
  each of them, gathered while the batch is still in memory.
- **interval samples** (Anthropic's and SAEDashboard's "subsample intervals"): ``n_quantiles`` equal-width
  intervals of ``(0, max_act]``, ``samples_per_quantile`` examples drawn uniformly (seeded) from the tokens whose
  activation falls in each. The maximum is only known at the end, so the stream keeps, per latent and per fine
  log-spaced histogram bin (20 per decade), the firing tokens with the smallest seeded random keys (bottom-m
  sampling, the order-free form of reservoir sampling); at the end each bin goes to the interval holding its
  geometric centre and each interval keeps the ``m`` smallest keys of its bins — an exact uniform sample of the
  tokens in those bins. An interval boundary is therefore resolved to a bin (within 12% of its value).
- **density** (fraction of non-BOS tokens where the latent is > 0), mean activation where it fires, maximum, and
  the activation histogram over the fixed log-spaced bins :data:`HIST_EDGES`.

**Logit weights** follow SAEDashboard's convention: ``W_dec[i] @ W_U``, the decoder direction read by the
unembedding directly, *without* the final norm (a norm scales every token's logit alike for one direction, so
the ranking of tokens is what it would be through the norm's gain-free part; with a gain vector it can differ —
use :func:`mechscope.residual` tools for the exact direct effect in context).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import InputError, InputTypeError, ModelLoadError, type_name
from .data import token_rows

HIST_EDGES: Tensor = torch.logspace(-4, 4, 161, dtype=torch.float64).float()
"""Edges ``(161,)`` of the activation histogram and of the fine bins interval sampling draws from: 20 bins per
decade from 1e-4 to 1e4. Activations below 1e-4 count in the first bin, above 1e4 in the last."""

_TENSORS = ("latents", "density", "mean_act", "max_act", "frequency", "hist_counts", "top_acts", "top_rows",
            "top_pos", "top_tokens", "top_ctx_acts", "q_edges", "q_acts", "q_rows", "q_pos", "q_tokens",
            "q_ctx_acts", "logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")


@dataclass
class LatentStats:
    """Per-latent statistics over a corpus, from :func:`latent_stats`. Row ``j`` of every per-latent tensor is
    latent ``latents[j]``. Missing examples (a latent firing fewer than ``k`` times) have ``pos == -1`` and
    value 0; window slots outside the sequence have token ``-1`` and activation 0. Window slot ``left`` is the
    example's own token."""

    hook_name: str
    """The hook point the latents were read from (a transcoder's input point)."""
    n_tokens: int
    """Tokens counted (BOS positions excluded when ``exclude_bos``)."""
    context: tuple[int, int]
    """``(left, right)`` tokens of context around each example; windows are ``left + 1 + right`` wide."""
    latents: Tensor
    """``(n,)`` int64 latent indices."""
    density: Tensor
    """``(n,)`` fraction of tokens where the latent is > 0."""
    frequency: Tensor
    """``(n,)`` int64 number of tokens where it is > 0."""
    mean_act: Tensor
    """``(n,)`` mean activation over the tokens where it fires (0 if it never does)."""
    max_act: Tensor
    """``(n,)`` maximum activation (0 if it never fires)."""
    hist_counts: Tensor
    """``(n, 160)`` int64 counts of firing activations per :data:`HIST_EDGES` bin."""
    top_acts: Tensor
    """``(n, k)`` activations of the top examples, descending."""
    top_rows: Tensor
    """``(n, k)`` int64 corpus row of each example."""
    top_pos: Tensor
    """``(n, k)`` int64 position in its row (-1: no example)."""
    top_tokens: Tensor
    """``(n, k, window)`` int64 token ids of the context window."""
    top_ctx_acts: Tensor
    """``(n, k, window)`` the latent's activation on each window token."""
    q_edges: Tensor
    """``(n, n_quantiles + 1)`` nominal interval edges: ``linspace(0, max_act, n_quantiles + 1)``."""
    q_acts: Tensor
    """``(n, n_quantiles, m)`` activations of the sampled examples per interval, descending (0: empty slot)."""
    q_rows: Tensor
    """``(n, n_quantiles, m)`` int64."""
    q_pos: Tensor
    """``(n, n_quantiles, m)`` int64 (-1: empty slot)."""
    q_tokens: Tensor
    """``(n, n_quantiles, m, window)`` int64."""
    q_ctx_acts: Tensor
    """``(n, n_quantiles, m, window)``."""
    logit_top_ids: Tensor
    """``(n, n_logits)`` int64 tokens with the largest ``W_dec[i] @ W_U`` (empty when the output is not the
    residual stream's width)."""
    logit_top_values: Tensor
    """``(n, n_logits)``."""
    logit_bottom_ids: Tensor
    """``(n, n_logits)`` int64 tokens with the smallest ``W_dec[i] @ W_U``."""
    logit_bottom_values: Tensor
    """``(n, n_logits)``."""
    vocab: list[str] | None = None
    """Each token id's text (for display without the model); None without a tokenizer."""
    meta: dict = field(default_factory=dict)
    """Provenance: the SAE's config, the corpus, options."""

    # ------------------------------------------------------------------------------------------ access
    def index(self, latent: int) -> int:
        """Row of ``latent`` in the per-latent tensors."""
        hits = (self.latents == int(latent)).nonzero()
        if not len(hits):
            raise InputError(f"latent {latent} was not analysed; these stats hold {len(self.latents)} latents "
                             f"({_ranges(self.latents.tolist())}).")
        return int(hits[0, 0])

    def token_str(self, t: int) -> str:
        if t < 0:
            return ""
        if self.vocab is not None and t < len(self.vocab):
            return self.vocab[t]
        return f"<{t}>"

    def __len__(self) -> int:
        return len(self.latents)

    def __repr__(self) -> str:
        k = self.top_acts.shape[1]
        return (f"<LatentStats {len(self)} latents of {self.hook_name!r} over {self.n_tokens} tokens, top {k}, "
                f"{self.q_acts.shape[1]} intervals × {self.q_acts.shape[2]}>")

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``stats.safetensors`` (the tensors) and ``stats.json`` (the rest) into folder ``path``,
        atomically file by file."""
        from ..lens.tuned import atomic_write

        path = Path(path).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        tensors = {n: getattr(self, n).contiguous() for n in _TENSORS}
        atomic_write(path / "stats.safetensors", lambda f: save_file(tensors, f, metadata={"format": "pt"}))
        info = {"hook_name": self.hook_name, "n_tokens": self.n_tokens, "context": list(self.context),
                "vocab": self.vocab, "meta": self.meta}
        atomic_write(path / "stats.json", lambda f: Path(f).write_text(json.dumps(info, ensure_ascii=False),
                                                                  encoding="utf-8"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentStats:
        """Read a folder written by :meth:`save`."""
        path = Path(path).expanduser()
        tf, jf = path / "stats.safetensors", path / "stats.json"
        if not (tf.is_file() and jf.is_file()):
            raise ModelLoadError(f"{str(path)!r} is not a latent-stats folder: it needs stats.safetensors and "
                                 "stats.json, as LatentStats.save writes.")
        try:
            info = json.loads(jf.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{str(jf)!r} is corrupt: it is not valid JSON ({e}).") from None
        t = load_file(tf)
        missing = [n for n in _TENSORS if n not in t]
        if missing:
            raise ModelLoadError(f"{str(tf)!r} lacks tensors {missing}; it was not written by LatentStats.save.")
        return cls(hook_name=info["hook_name"], n_tokens=int(info["n_tokens"]), context=tuple(info["context"]),
                   vocab=info.get("vocab"), meta=info.get("meta", {}), **{n: t[n] for n in _TENSORS})


# ---------------------------------------------------------------------------------------------- the pass
def latent_stats(sae, model, tokens_or_text, *, latents: list[int] | Tensor | None = None, k: int = 20,
                 context: tuple[int, int] = (8, 4), n_quantiles: int = 5, samples_per_quantile: int = 5,
                 n_logits: int = 10, batch_size: int = 32, n_tokens: int | None = None, seq_len: int = 128,
                 exclude_bos: bool = True, seed: int = 0, show_progress: bool = False) -> LatentStats:
    """Stream a corpus through ``model`` and ``sae`` and collect, per latent, the statistics of :class:`LatentStats`.

    ``tokens_or_text``: token ids ``(n_rows, seq)`` (int), or text that :func:`~mechscope.sae.data.token_rows`
    reads (a ``.txt``/``.jsonl`` path, an HF datasets folder, a list of documents: packed into rows of ``seq_len``
    tokens with BOS in front where the model prepends one; ``n_tokens`` of them, default 1,000,000). Token ids are run as given (no BOS added);
    ``n_tokens`` then keeps the first rows that hold that many. ``latents``: which to analyse (default all);
    memory is ``O(len(latents) * (k + n_quantiles * samples_per_quantile) * window)`` plus one batch.
    ``exclude_bos``: BOS tokens are neither counted nor examples (their residual stream is an outlier that
    many latents fire on). The forward stops after the SAE's layer."""
    hook = _check_sae(sae, model)
    rows = _corpus(model, tokens_or_text, n_tokens, seq_len)
    lat = _latent_ids(latents, sae.cfg.d_sae)
    for name, v, lo in (("k", k, 1), ("n_quantiles", n_quantiles, 0), ("samples_per_quantile",
                        samples_per_quantile, 0), ("n_logits", n_logits, 0), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"{name} must be an int >= {lo}, got {v!r}.")
    if (not isinstance(context, (tuple, list)) or len(context) != 2
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in context)):
        raise InputError(f"context must be (left, right), two ints >= 0, got {context!r}.")
    left, right = int(context[0]), int(context[1])
    bos = _bos_id(model) if exclude_bos else None
    acc = _Accumulator(len(lat), k, left, right, samples_per_quantile * (n_quantiles > 0), seed)
    stop = _stop_layer(model, hook)
    from ..progress import task

    dev = sae.device
    lat_dev = lat.to(dev)
    with torch.inference_mode(), task(f"latent stats over {rows.numel()} tokens", total=len(rows),
                                      enabled=show_progress) as t:
        for start in range(0, len(rows), batch_size):
            toks = rows[start:start + batch_size]
            _, cache = model.run_with_cache(toks, names_filter=hook, stop_at_layer=stop, prepend_bos=False)
            x = cache[hook]  # (batch, pos, d_in)
            f = sae.encode(x.to(dev)).float()  # (batch, pos, d_sae)
            f = f.index_select(-1, lat_dev) if len(lat) != sae.cfg.d_sae else f
            keep = torch.ones(toks.shape, dtype=torch.bool) if bos is None else toks != bos
            acc.add(f.cpu(), toks.cpu(), keep, start)
            t.update(len(toks))
    stats = acc.finish(n_quantiles)
    logits = logit_weights(sae, model, lat, n_logits)
    corpus = "token ids" if isinstance(tokens_or_text, Tensor) else str(tokens_or_text)
    meta = {"sae": sae.cfg.to_dict(), "exclude_bos": exclude_bos, "seed": seed, "n_rows": len(rows),
            "seq_len": rows.shape[1], "corpus": corpus}
    return LatentStats(hook_name=hook, context=(left, right), latents=lat, **stats, **logits, vocab=_vocab(model),
                       meta=meta)


@torch.no_grad()
def logit_weights(sae, model, latents: Tensor | None = None, n: int = 10) -> dict[str, Tensor]:
    """Top and bottom ``n`` tokens of ``W_dec[i] @ W_U`` per latent (SAEDashboard's convention: no final norm):
    ``logit_top_ids/values``, ``logit_bottom_ids/values``, each ``(len(latents), n)``. Empty ``(len, 0)`` tensors
    when the SAE's output width is not ``d_model`` (a transcoder into an MLP's hidden layer)."""
    lat = _latent_ids(latents, sae.cfg.d_sae)
    W_U = model.W_U.detach()  # (d_model, d_vocab)
    n = min(n, W_U.shape[1])
    if sae.cfg.width_out != W_U.shape[0] or n == 0:
        e, ei = torch.zeros(len(lat), 0), torch.zeros(len(lat), 0, dtype=torch.long)
        return dict(logit_top_ids=ei, logit_top_values=e, logit_bottom_ids=ei.clone(), logit_bottom_values=e.clone())
    out = {k: [] for k in ("logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")}
    W_U = W_U.float()
    for i in range(0, len(lat), 256):  # (256, d_vocab) at a time: bounded memory for large vocabularies
        # in the model's units, as decode() gives them (an SAE whose normalisation is not folded yet included)
        dirs = (sae.W_dec.detach()[lat[i:i + 256].to(sae.device)].float() / sae.norm_scale_out.float()).to(W_U.device)
        lw = dirs @ W_U
        top, bot = lw.topk(n, dim=-1), lw.topk(n, dim=-1, largest=False)
        out["logit_top_ids"].append(top.indices.cpu()), out["logit_top_values"].append(top.values.cpu())
        out["logit_bottom_ids"].append(bot.indices.cpu()), out["logit_bottom_values"].append(bot.values.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- streaming state
class _Accumulator:
    """The running per-latent state of :func:`latent_stats` (all on CPU, float32)."""

    def __init__(self, n: int, k: int, left: int, right: int, m: int, seed: int) -> None:
        self.n, self.k, self.left, self.right, self.m = n, k, left, right, m
        self.W = left + 1 + right
        self.gen = torch.Generator().manual_seed(seed)
        self.n_tokens = 0
        self.freq = torch.zeros(n, dtype=torch.long)
        self.total = torch.zeros(n, dtype=torch.float64)
        self.max = torch.zeros(n)
        self.nb = len(HIST_EDGES) - 1
        self.hist = torch.zeros(n * self.nb, dtype=torch.long)
        self.top_acts = torch.full((n, k), -math.inf)
        self.top_rows = torch.full((n, k), -1, dtype=torch.long)
        self.top_pos = torch.full((n, k), -1, dtype=torch.long)
        self.top_tokens = torch.full((n, k, self.W), -1, dtype=torch.long)
        self.top_ctx = torch.zeros(n, k, self.W)
        # interval samples: flat entries, at most m per (latent, fine bin)
        self.s_group = torch.zeros(0, dtype=torch.long)
        self.s_key = torch.zeros(0)
        self.s_val = torch.zeros(0)
        self.s_row = torch.zeros(0, dtype=torch.long)
        self.s_pos = torch.zeros(0, dtype=torch.long)
        self.s_tokens = torch.zeros(0, self.W, dtype=torch.long)
        self.s_ctx = torch.zeros(0, self.W)

    def _windows(self, f: Tensor, toks: Tensor, lat: Tensor, row: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens and latent activations ``(len, W)`` around ``(row, pos)`` for latent column ``lat``."""
        T = toks.shape[1]
        p = pos[:, None] + torch.arange(-self.left, self.right + 1)
        ok = (p >= 0) & (p < T) & (pos[:, None] >= 0)
        pc, rc = p.clamp(0, T - 1), row.clamp_min(0)[:, None].expand_as(p)
        tokens = torch.where(ok, toks[rc, pc], -1)
        acts = torch.where(ok, f[rc, pc, lat[:, None].expand_as(p)], 0.0)
        return tokens, acts

    def add(self, f: Tensor, toks: Tensor, keep: Tensor, row0: int) -> None:
        """Merge one batch: ``f (batch, pos, n)`` latent activations, ``toks (batch, pos)``, ``keep (batch, pos)``
        the positions counted (not BOS); ``row0`` the corpus row of the batch's first row."""
        B, T, n = f.shape
        if not bool(keep.all()):
            f[~keep] = 0.0  # excluded positions: not counted, not examples, shown as 0 in windows
        self.n_tokens += int(keep.sum())
        flat = f.reshape(B * T, n)
        # a sparse dictionary fires on few (token, latent) pairs: everything below works on those entries
        tok_i, li = (flat > 0).nonzero(as_tuple=True)
        v = flat[tok_i, li]
        # top-k: the batch's best k per latent (ranked within each latent's entries), packed (n, k) and merged
        # with the running best k by one top-k over (n, 2k)
        order, rank = _group_rank(li, -v)
        first = rank < self.k
        sel_e, slot_e = order[first], rank[first]
        bv = torch.full((n, self.k), -math.inf)
        bi = torch.zeros((n, self.k), dtype=torch.long)
        bv[li[sel_e], slot_e] = v[sel_e]
        bi[li[sel_e], slot_e] = tok_i[sel_e]
        cand_v = torch.cat([self.top_acts, bv], 1)
        sel = cand_v.topk(self.k, dim=1).indices  # (n, k) into [running k | batch k]
        new_v = cand_v.gather(1, sel)
        new = (sel >= self.k) & (new_v > -math.inf)
        keep_old = torch.where(sel >= self.k, 0, sel)
        if new.any():
            lj, slot = new.nonzero(as_tuple=True)
            t_idx = bi[lj, sel[lj, slot] - self.k]
            r, p = t_idx // T, t_idx % T
            tw, aw = self._windows(f, toks, lj, r, p)
            for name, fresh in (("top_rows", r + row0), ("top_pos", p)):
                cur = getattr(self, name).gather(1, keep_old)
                cur[lj, slot] = fresh
                setattr(self, name, cur)
            ti = keep_old[..., None].expand(-1, -1, self.W)
            self.top_tokens, self.top_ctx = self.top_tokens.gather(1, ti), self.top_ctx.gather(1, ti)
            self.top_tokens[lj, slot], self.top_ctx[lj, slot] = tw, aw
            self.top_acts = new_v
        # density, mean, max, histogram over the firing entries
        self.freq += torch.bincount(li, minlength=n)
        self.total += torch.bincount(li, weights=v.double(), minlength=n)
        self.max.scatter_reduce_(0, li, v, reduce="amax")
        b = (torch.bucketize(v, HIST_EDGES) - 1).clamp(0, self.nb - 1)
        group = li * self.nb + b
        self.hist += torch.bincount(group, minlength=n * self.nb)
        if self.m:
            key = torch.rand(len(v), generator=self.gen)
            keep_s = _bottom_m(group, key, self.m)  # the batch's own bottom-m first: fewer entries to merge
            group, key, v, tok_i, li = group[keep_s], key[keep_s], v[keep_s], tok_i[keep_s], li[keep_s]
            keep_all = _bottom_m(torch.cat([self.s_group, group]), torch.cat([self.s_key, key]), self.m)
            old, fresh = keep_all[: len(self.s_group)], keep_all[len(self.s_group):]
            group, key, v, tok_i, li = group[fresh], key[fresh], v[fresh], tok_i[fresh], li[fresh]
            r, p = tok_i // T, tok_i % T
            tw, aw = self._windows(f, toks, li, r, p)  # only for the entries that stay
            for name, add in (("s_group", group), ("s_key", key), ("s_val", v), ("s_row", r + row0), ("s_pos", p),
                              ("s_tokens", tw), ("s_ctx", aw)):
                setattr(self, name, torch.cat([getattr(self, name)[old], add]))

    def finish(self, n_quantiles: int) -> dict:
        n, W, m = self.n, self.W, self.m
        empty = self.top_acts <= 0  # -inf (never filled) or not firing
        top_acts = torch.where(empty, 0.0, self.top_acts)
        top_pos = torch.where(empty, -1, self.top_pos)
        top_rows = torch.where(empty, -1, self.top_rows)
        top_tokens = torch.where(empty[..., None], -1, self.top_tokens)
        top_ctx = torch.where(empty[..., None], 0.0, self.top_ctx)
        q_edges = self.max[:, None] * torch.linspace(0, 1, n_quantiles + 1)
        q_acts = torch.zeros(n, n_quantiles, m)
        q_rows = torch.full((n, n_quantiles, m), -1, dtype=torch.long)
        q_pos = q_rows.clone()
        q_tokens = torch.full((n, n_quantiles, m, W), -1, dtype=torch.long)
        q_ctx = torch.zeros(n, n_quantiles, m, W)
        if m and n_quantiles and len(self.s_group):
            li, b = self.s_group // self.nb, self.s_group % self.nb
            centre = (HIST_EDGES[b] * HIST_EDGES[b + 1]).sqrt()
            j = (centre / self.max[li].clamp_min(1e-30) * n_quantiles).floor().long().clamp(0, n_quantiles - 1)
            g2 = li * n_quantiles + j
            keep = _bottom_m(g2, self.s_key, m)
            g2, val = g2[keep], self.s_val[keep]
            order = torch.argsort(val, descending=True, stable=True)
            order = order[torch.argsort(g2[order], stable=True)]  # by interval, then value descending
            g2s = g2[order]
            _, counts = torch.unique_consecutive(g2s, return_counts=True)
            starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
            slot = torch.arange(len(g2s)) - starts
            src = keep.nonzero(as_tuple=True)[0][order]
            li_o, j_o = g2s // n_quantiles, g2s % n_quantiles
            q_acts[li_o, j_o, slot] = self.s_val[src]
            q_rows[li_o, j_o, slot] = self.s_row[src]
            q_pos[li_o, j_o, slot] = self.s_pos[src]
            q_tokens[li_o, j_o, slot] = self.s_tokens[src]
            q_ctx[li_o, j_o, slot] = self.s_ctx[src]
        n_tok = max(self.n_tokens, 1)
        return dict(n_tokens=self.n_tokens, density=self.freq.float() / n_tok, frequency=self.freq,
                    mean_act=(self.total / self.freq.clamp_min(1)).float(), max_act=self.max,
                    hist_counts=self.hist.reshape(n, self.nb), top_acts=top_acts, top_rows=top_rows,
                    top_pos=top_pos, top_tokens=top_tokens, top_ctx_acts=top_ctx, q_edges=q_edges, q_acts=q_acts,
                    q_rows=q_rows, q_pos=q_pos, q_tokens=q_tokens, q_ctx_acts=q_ctx)


def _group_rank(group: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """``(order, rank)``: entries sorted by ``group`` then ``key`` ascending, and each sorted entry's rank (0, 1,
    ...) within its group (vectorised)."""
    if not len(group):
        return group.new_zeros(0), group.new_zeros(0)
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    _, counts = torch.unique_consecutive(group[order], return_counts=True)
    rank = torch.arange(len(order)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return order, rank


def _bottom_m(group: Tensor, key: Tensor, m: int) -> Tensor:
    """Bool mask ``(len,)`` of the ``m`` entries with the smallest ``key`` in each ``group`` (vectorised)."""
    order, rank = _group_rank(group, key)
    mask = torch.zeros(len(group), dtype=torch.bool)
    mask[order[rank < m]] = True
    return mask


# ---------------------------------------------------------------------------------------------- inputs
def _check_sae(sae, model) -> str:
    from .sae import SAE

    if not isinstance(sae, SAE):
        raise InputTypeError(f"latent_stats takes a mechscope SAE first, got {type_name(sae)}; load one with "
                             "mechscope.sae.load(path).")
    hook = sae.cfg.hook_name
    if not hook:
        raise InputError("the SAE's config has no hook_name, so it is unknown where its latents read the model; "
                         "set sae.cfg.hook_name (e.g. 'blocks.1.hook_resid_post').")
    if hook not in model.hook_dict:
        from ..errors import unknown_hook

        raise unknown_hook(hook, model.hook_names())
    return hook


def _stop_layer(model, hook: str) -> int | None:
    """Stop the forward before the block after the hook's (None: the hook is past the last block)."""
    layer = model.hook_dict[hook].layer()
    if layer is None:
        return 0 if hook in ("hook_embed", "hook_pos_embed") else None
    return layer + 1


def _corpus(model, src, n_tokens: int | None, seq_len: int) -> Tensor:
    if isinstance(src, Tensor):
        if src.ndim != 2 or src.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise InputError(f"token ids must be an int tensor (n_rows, seq), got {src.dtype} of shape "
                             f"{tuple(src.shape)}.")
        rows = src.long().cpu()
        if n_tokens is not None:
            rows = rows[: max(1, math.ceil(n_tokens / rows.shape[1]))]
        return rows
    if isinstance(src, (str, os.PathLike, list)):
        return token_rows(model, src, context_size=seq_len, n_tokens=1_000_000 if n_tokens is None else n_tokens)
    raise InputTypeError(f"latent_stats reads token ids (an int tensor (n_rows, seq)), a corpus file path or a list "
                         f"of documents; got {type_name(src)}.")


def _latent_ids(latents, d_sae: int) -> Tensor:
    if latents is None:
        return torch.arange(d_sae)
    lat = torch.as_tensor(latents).long().flatten().cpu()
    if not len(lat):
        raise InputError("latents is empty; pass None for all latents or a list of indices.")
    if int(lat.min()) < 0 or int(lat.max()) >= d_sae:
        raise InputError(f"latent indices must be in 0..{d_sae - 1} (d_sae={d_sae}); got {int(lat.min())}.."
                         f"{int(lat.max())}.")
    if len(lat.unique()) != len(lat):
        raise InputError("latents lists an index twice; pass each latent once.")
    return lat


def _bos_id(model) -> int | None:
    tok = model.tokenizer
    if tok is not None and tok.bos_token_id is not None:
        return tok.bos_token_id
    return getattr(model.hf_model.config, "bos_token_id", None)


def _vocab(model) -> list[str] | None:
    tok = model.tokenizer
    if tok is None:
        return None
    return [tok.decode([i]) for i in range(len(tok))]


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    ids = sorted(ids)
    out, a, b = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == b + 1:
            b = i
            continue
        out.append(f"{a}" if a == b else f"{a}-{b}")
        if i is not None:
            a = b = i
    return ", ".join(out[:6]) + (", ..." if len(out) > 6 else "")
