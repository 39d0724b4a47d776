"""How good a sparse dictionary is: reconstruction, sparsity, and what splicing it in does to the model.

:func:`evaluate` runs a model over held-out tokens and measures, for one SAE, transcoder or skip-transcoder:

* **L0**: mean number of non-zero latents per token.
* **MSE**: mean over tokens and output dimensions of ``(y - y_hat)^2`` (SAELens's ``F.mse_loss``), in the
  model's units; ``y`` is the activation at the point the dictionary replaces (``hook_name_out`` for a
  transcoder), ``y_hat`` its reconstruction / prediction.
* **Explained variance**: ``1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``, sums over every evaluated token,
  ``mean(y)`` their mean; **FVU** is ``1 - explained variance``.
* **Cross-entropy** (mean next-token loss over real tokens): clean; with the dictionary spliced in; spliced with
  the error term (equal to clean, bit for bit, by construction); with the point zero-ablated; with it
  mean-ablated (the mean activation over the evaluated tokens). **CE loss recovered**:
  ``(ce_ablated - ce_spliced) / (ce_ablated - ce_clean)``, 1 when splicing costs nothing, 0 when it is as bad as
  the ablation (named in ``ablation``; both are in ``ce_loss_recovered_by``).
* **KL(clean || spliced)**: mean over real positions of the KL divergence of the spliced next-token distribution
  from the clean one (nats); also with the error term (0).
* **Dead / dense fractions**: latents that never fire on the evaluated tokens / fire on more than
  ``dense_threshold`` of them; **density**: each latent's firing frequency, and a histogram of ``log10`` density.

BOS: by default (``exclude_bos=True``) positions holding the BOS token are left out of the reconstruction and
sparsity metrics, and the dictionary is bypassed there in the spliced and ablated runs (SAELens's
``exclude_special_tokens``): BOS activations are outliers (attention sinks) that dictionaries usually do not
train on. ``exclude_bos=False`` evaluates every position.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..progress import task
from .data import token_rows
from .sae import SAE
from .splice import Splice, _flatten, _trailing

ABLATIONS = ("zero", "mean")


@dataclass
class SAEEval:
    """One dictionary's evaluation (see the module docstring for the definitions). ``print(ev)`` shows a table;
    ``ev.to_dict()`` is JSON-ready; ``ev.view()`` draws the density histogram."""

    hook_name: str
    hook_name_out: str | None
    n_tokens: int
    """Tokens in the reconstruction and sparsity metrics."""
    n_predictions: int
    """Next-token predictions in the cross-entropy and KL averages."""
    l0: float
    mse: float
    explained_variance: float
    fvu: float
    l2_ratio: float
    """Mean over tokens of ``||y_hat|| / ||y||`` (SAELens's shrinkage measure; 1 is no shrinkage)."""
    ce_clean: float
    ce_spliced: float
    ce_spliced_error: float
    ce_zero_ablated: float
    ce_mean_ablated: float
    ablation: str
    ce_loss_recovered: float
    ce_loss_recovered_by: dict[str, float]
    kl_spliced: float
    kl_spliced_error: float
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    density: list[float] = field(repr=False)
    """Per latent, the fraction of evaluated tokens it fires on (``d_sae`` values)."""
    histogram_edges: list[float] = field(repr=False)
    """Edges of the ``log10(density)`` bins (latents that fired)."""
    histogram_counts: list[int] = field(repr=False)
    exclude_bos: bool = True

    def to_dict(self, density: bool = True) -> dict:
        d = asdict(self)
        if not density:
            d.pop("density")
        return d

    def rows(self) -> list[tuple[str, str]]:
        f = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
        out = [("point", self.hook_name + (f" -> {self.hook_name_out}" if self.hook_name_out else "")),
               ("tokens", f"{self.n_tokens:,}"), ("L0", f(self.l0)), ("MSE", f(self.mse)),
               ("explained variance", f(self.explained_variance)), ("FVU", f(self.fvu)), ("L2 ratio", f(self.l2_ratio)),
               ("CE clean", f(self.ce_clean)), ("CE spliced", f(self.ce_spliced)),
               ("CE spliced + error", f(self.ce_spliced_error)), ("CE zero-ablated", f(self.ce_zero_ablated)),
               ("CE mean-ablated", f(self.ce_mean_ablated)),
               (f"CE loss recovered ({self.ablation})", f(self.ce_loss_recovered)),
               ("KL(clean || spliced)", f(self.kl_spliced)), ("KL(clean || spliced + error)", f(self.kl_spliced_error)),
               ("dead fraction", f(self.dead_fraction)),
               (f"dense fraction (> {self.dense_threshold:g})", f(self.dense_fraction))]
        return out

    def table(self):
        from rich.table import Table

        t = Table(title="SAE evaluation", show_header=False)
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k, v in self.rows():
            t.add_row(k, v)
        return t

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=72, record=True, force_terminal=False)
        with console.capture() as cap:
            console.print(self.table())
        return cap.get()

    def print(self) -> None:
        from rich.console import Console

        Console().print(self.table())

    def view(self):
        """The ``log10(density)`` histogram as a :mod:`mechscope.views` line chart (latents per bin)."""
        from ..views import line_chart

        edges = np.asarray(self.histogram_edges)
        centres = (edges[:-1] + edges[1:]) / 2
        return line_chart(centres, np.asarray(self.histogram_counts, dtype=float), "latents",
                          title=f"latent density, {self.hook_name}", x_label="log10(firing frequency)",
                          y_label="latents")


# --------------------------------------------------------------------------------------- tensors only
@torch.no_grad()
def evaluate_activations(sae: SAE, x: Tensor, target: Tensor | None = None, *,
                         dense_threshold: float = 0.1, n_bins: int = 40) -> dict:
    """Tensor-only metrics of ``sae`` on activations ``x (n, d_in)`` (``target (n, d_out)`` for a transcoder;
    the input itself for an autoencoder): ``l0``, ``mse``, ``explained_variance``, ``fvu``, ``l2_ratio``,
    ``dead_fraction``, ``dense_fraction``, ``density`` (``(d_sae,)`` tensor), ``histogram_edges``/``counts``."""
    if not isinstance(sae, SAE):
        raise InputTypeError(f"sae must be a mechscope.sae.SAE, got {type_name(sae)}.")
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise InputError(f"x must be a (n, d_in) tensor of activations, got {type_name(x)}.")
    if target is None and sae.cfg.is_transcoder:
        raise InputError("a transcoder predicts another point: pass target, the activations at hook_name_out.")
    y = x if target is None else target
    if y.ndim != 2 or y.shape != (x.shape[0], sae.cfg.width_out):
        raise InputError(f"target must be ({x.shape[0]}, d_out={sae.cfg.width_out}), got {tuple(y.shape)}.")
    acc = _Accumulator(sae.cfg.d_sae, dense_threshold)
    for i in range(0, x.shape[0], 8192):
        xs = x[i:i + 8192].to(sae.device)
        acc.add(sae, xs, y[i:i + 8192].to(sae.device))
    out = acc.result(n_bins)
    out["density"] = torch.tensor(out["density"])
    return out


class _Accumulator:
    """Streaming sums for the reconstruction and sparsity metrics (float64)."""

    def __init__(self, d_sae: int, dense_threshold: float) -> None:
        if isinstance(dense_threshold, bool) or not isinstance(dense_threshold, (int, float)) \
                or not 0 <= dense_threshold < 1:
            raise InputError(f"dense_threshold must be a fraction in [0, 1), got {dense_threshold!r}.")
        self.dense_threshold = float(dense_threshold)
        self.n = 0
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.l0 = self.sq_err = self.sq_norm = self.ratio = 0.0
        self.sum_y: Tensor | None = None

    def add(self, sae: SAE, x: Tensor, y: Tensor) -> None:
        """``x (n, d_in)``, ``y (n, d_out)`` on the SAE's device."""
        if x.shape[0] == 0:
            return
        f = sae.encode(x)
        y_hat = sae.decode(f)
        if sae.cfg.skip:
            y_hat = y_hat + sae.skip_out(x)
        y, y_hat = y.double(), y_hat.double()
        active = f != 0
        self.n += x.shape[0]
        self.fired += active.sum(0).to(torch.float64).cpu()
        self.l0 += float(active.sum())
        self.sq_err += float((y - y_hat).pow(2).sum())
        self.sq_norm += float(y.pow(2).sum())
        self.ratio += float((y_hat.norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-30)).sum())
        s = y.sum(0).cpu()
        self.sum_y = s if self.sum_y is None else self.sum_y + s

    def mean_y(self) -> Tensor:
        return self.sum_y / self.n

    def result(self, n_bins: int) -> dict:
        if self.n == 0:
            raise InputError("no tokens to evaluate on (every position was padding or BOS); pass more text.")
        n, d = self.n, self.sum_y.shape[0]
        tss = self.sq_norm - float(self.sum_y.pow(2).sum()) / n
        ev = 1 - self.sq_err / tss if tss > 0 else float("nan")
        density = self.fired / n
        fired = density[density > 0]
        lo = math.floor(math.log10(1 / n))
        edges = np.linspace(lo, 0, n_bins + 1)
        counts, _ = np.histogram(torch.log10(fired).numpy(), bins=edges)
        return dict(n_tokens=n, l0=self.l0 / n, mse=self.sq_err / (n * d), explained_variance=ev, fvu=1 - ev,
                    l2_ratio=self.ratio / n, dead_fraction=float((density == 0).double().mean()),
                    dense_fraction=float((density > self.dense_threshold).double().mean()),
                    density=density.tolist(), histogram_edges=edges.tolist(), histogram_counts=counts.tolist())


# ------------------------------------------------------------------------------------------- with a model
def _tokens(model, tokens_or_text, context_size: int | None, n_tokens: int | None, sae: SAE) -> Tensor:
    if isinstance(tokens_or_text, Tensor):
        t = tokens_or_text
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.dtype not in (torch.long, torch.int32):
            raise InputError(f"tokens must be integer ids of shape (batch, pos), got {type_name(tokens_or_text)}.")
        if n_tokens is not None:
            t = t[:max(1, n_tokens // t.shape[1])]
        return t.long()
    ctx = context_size or sae.cfg.context_size or 128
    if isinstance(tokens_or_text, str) and not os.path.exists(tokens_or_text):
        tokens_or_text = [tokens_or_text]  # one document, not a file name
    return token_rows(model, tokens_or_text, context_size=ctx, n_tokens=n_tokens)


def _nll(logits: Tensor, tokens: Tensor, logp: Tensor | None = None) -> float:
    """Summed next-token negative log-likelihood of ``tokens[:, 1:]``."""
    logp = torch.log_softmax(logits.float(), dim=-1) if logp is None else logp
    return float(-logp[:, :-1].gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0].double().sum())


def _nll_kl(logits: Tensor, clean_logp: Tensor, tokens: Tensor) -> tuple[float, float]:
    """Summed next-token NLL and summed KL(clean || this) over all positions (``clean_logp``: clean log-probs)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1)
    return _nll(logits, tokens, logp), float(kl.double().sum())


@torch.no_grad()
def evaluate(sae: SAE, model, tokens_or_text, *, batch_size: int = 16, context_size: int | None = None,
             n_tokens: int | None = None, ablation: str = "zero", exclude_bos: bool = True,
             dense_threshold: float = 0.1, n_bins: int = 40, progress: bool = False) -> SAEEval:
    """Evaluate ``sae`` on ``model`` over ``tokens_or_text``: token ids ``(batch, pos)`` (unpadded), or text (a
    document, a list of them, or anything :func:`~mechscope.sae.data.token_rows` reads, such as a ``.txt``/``.jsonl``
    path: packed into rows of ``context_size``, default the SAE's or 128). ``n_tokens``
    caps the tokens used; ``batch_size`` rows go per forward. ``ablation`` (``"zero"`` or ``"mean"``) is the
    baseline of ``ce_loss_recovered``. Two passes over the data (the mean ablation needs the mean first); the
    model is left as it was."""
    if not isinstance(sae, SAE):
        raise InputTypeError(f"sae must be a mechscope.sae.SAE, got {type_name(sae)}.")
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be 'zero' or 'mean', got {ablation!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}.")
    tokens = _tokens(model, tokens_or_text, context_size, n_tokens, sae)
    if tokens.shape[1] < 2:
        raise InputError("each row needs at least 2 tokens for a next-token loss.")
    cfg = sae.cfg
    probe = Splice(model, sae)  # checks the points and widths with its sentences; removed at once
    probe.detach()
    hook_in, point = cfg.hook_name, cfg.hook_name_out or cfg.hook_name
    n_in, n_out = _trailing(model, hook_in, cfg.d_in, "d_in"), _trailing(model, point, cfg.width_out, "d_out")
    bos = getattr(model.tokenizer, "bos_token_id", None) if exclude_bos else None
    acc = _Accumulator(cfg.d_sae, dense_threshold)
    batches = [tokens[i:i + batch_size] for i in range(0, tokens.shape[0], batch_size)]
    with task("evaluating the SAE", 2 * len(batches), enabled=progress) as bar:
        return _evaluate(sae, model, cfg, batches, hook_in, point, n_in, n_out, bos, acc, ablation, n_bins,
                         exclude_bos, bar.update)


def _evaluate(sae, model, cfg, batches, hook_in, point, n_in, n_out, bos, acc, ablation, n_bins, exclude_bos,
              track) -> SAEEval:
    ce = dict(clean=0.0, spliced=0.0, spliced_error=0.0, zero_ablated=0.0, mean_ablated=0.0)
    kl = dict(spliced=0.0, spliced_error=0.0)
    n_pred = 0

    def keep_mask(t: Tensor) -> Tensor | None:
        return None if bos is None else (t == bos)

    def ablate(value: Tensor | None, keep: Tensor | None):
        """Hook replacing the point by zeros (``value`` None) or the flat mean ``value (d_out,)``, except at
        ``keep`` positions."""
        def hook(act, hp):
            if value is None:
                new = torch.zeros_like(act)
            else:
                new = value.reshape(act.shape[act.ndim - n_out:]).to(act.device, act.dtype).expand_as(act)
            if keep is not None:
                new = torch.where(keep.to(act.device).reshape(*keep.shape, *[1] * (act.ndim - keep.ndim)), act, new)
            return new
        return hook

    for t in batches:
        t = t.to(model.input_device)
        keep = keep_mask(t)
        names = [hook_in] if hook_in == point else [hook_in, point]
        logits, cache = model.run_with_cache(t, names_filter=names)
        x = _flatten(cache[hook_in], n_in)
        y = _flatten(cache[point], n_out)
        sel = torch.ones(t.shape, dtype=torch.bool, device=x.device) if keep is None else ~keep.to(x.device)
        acc.add(sae, x[sel].to(sae.device), y[sel].to(sae.device))
        clean_logp = torch.log_softmax(logits.float(), dim=-1)
        ce["clean"] += _nll(logits, t)
        n_pred += t.shape[0] * (t.shape[1] - 1)
        for key, err in (("spliced", False), ("spliced_error", True)):
            s = Splice(model, sae, err)
            s.token_mask = keep
            try:
                if err:  # watch the latents, so the error-term path really runs (else it is skipped as exact)
                    logits_s = model.run_with_hooks(t, fwd_hooks=[(s.prefix + "hook_sae_acts_post", _observe)])
                else:
                    logits_s = model(t)
            finally:
                s.detach()
            nll, k = _nll_kl(logits_s, clean_logp, t)
            ce[key] += nll
            kl[key] += k
        ce["zero_ablated"] += _nll(model.run_with_hooks(t, fwd_hooks=[(point, ablate(None, keep))]), t)
        track(1)
    stats = acc.result(n_bins)
    mean = acc.mean_y().to(model.point_device(point))
    for t in batches:
        t = t.to(model.input_device)
        logits_m = model.run_with_hooks(t, fwd_hooks=[(point, ablate(mean, keep_mask(t)))])
        ce["mean_ablated"] += _nll(logits_m, t)
        track(1)
    n_pos = sum(b.numel() for b in batches)
    ce = {k: v / n_pred for k, v in ce.items()}
    kl = {k: v / n_pos for k, v in kl.items()}
    by = {a: _score(ce[f"{a}_ablated"], ce["spliced"], ce["clean"]) for a in ABLATIONS}
    return SAEEval(hook_name=hook_in, hook_name_out=cfg.hook_name_out, n_predictions=n_pred,
                   ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_spliced_error=ce["spliced_error"],
                   ce_zero_ablated=ce["zero_ablated"], ce_mean_ablated=ce["mean_ablated"], ablation=ablation,
                   ce_loss_recovered=by[ablation], ce_loss_recovered_by=by, kl_spliced=kl["spliced"],
                   kl_spliced_error=kl["spliced_error"], dense_threshold=acc.dense_threshold,
                   exclude_bos=exclude_bos, **stats)


def _observe(act, hook) -> None:
    return None


def _score(ablated: float, spliced: float, clean: float) -> float:
    """``(ablated - spliced) / (ablated - clean)``; NaN when the ablation does not change the loss."""
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else float("nan")

