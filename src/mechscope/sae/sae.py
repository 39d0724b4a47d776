"""The sparse dictionary: one interface for every architecture (``SAE(cfg)`` builds the registered class).

Layout (SAELens's and sparsify's, so weights move between them without transposes):
``W_enc (d_in, d_sae)``, ``b_enc (d_sae,)``, ``W_dec (d_sae, d_out)``, ``b_dec (d_out,)``, and for a
skip-transcoder ``W_skip (d_in, d_out)``. ``d_out == d_in`` for an autoencoder.

Units: ``encode``/``decode``/``forward`` take and return the model's own activations. A trainer that normalises
activations (mean norm ``sqrt(d_in)``) keeps the factors in the buffers ``norm_scale_in``/``norm_scale_out`` and
works in normalised units through the underscored methods (``_encode_pre_n``, ``_decode_n``);
:meth:`SAE.fold_norm_scale_` folds the factors into the weights (every export does), after which both are 1::

    x_n = x * s_in;   pre = (x_n - b_dec) @ W_enc + b_enc;   y_n = f @ W_dec + b_dec;   y = y_n / s_out
    folded: W_enc <- W_enc * s_in,  W_dec <- W_dec / s_out,  b_dec <- b_dec / s_out,  W_skip <- W_skip * s_in / s_out

(``- b_dec`` only for autoencoders with ``apply_b_dec_to_input``; thresholds and TopK act on ``pre``, which
folding leaves unchanged.)
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InputError
from .config import LossConfig, SAEConfig
from .kernels import fused_topk_encode, sparse_decode

_REGISTRY: dict[str, type[SAE]] = {}


def register(name: str):
    """Class decorator: ``SAE(cfg)`` with ``cfg.architecture == name`` builds this class."""
    def deco(cls):
        cls.architecture = name
        _REGISTRY[name] = cls
        return cls
    return deco


class TrainOutput(NamedTuple):
    """One training step's forward, from :meth:`SAE.training_forward`."""

    loss: Tensor
    """Scalar to call ``backward()`` on: ``mse`` plus the architecture's other terms."""
    losses: dict[str, Tensor]
    """Each term, detached scalars: ``mse`` (squared error summed over the output, mean over rows, normalised
    units) and the architecture's own (``l1``, ``l0``, ``auxk``, ...)."""
    fvu: Tensor
    """Fraction of variance unexplained, detached scalar: squared error over the target's variance about its batch mean."""
    l0: Tensor
    """Mean number of active latents per row, detached scalar."""
    fired: Tensor
    """``(d_sae,)`` bool: latents active on at least one row of the batch (dead-latent tracking)."""


class SAE(nn.Module):
    """A sparse autoencoder, transcoder or skip-transcoder. ``SAE(cfg)`` returns the class registered for
    ``cfg.architecture``; subclasses override :meth:`activation` and, for training, :meth:`_train_terms`."""

    architecture: ClassVar[str] = ""

    def __new__(cls, cfg: SAEConfig | None = None, *args, **kwargs):
        if cls is SAE:
            if not isinstance(cfg, SAEConfig):
                raise InputError(f"SAE(cfg) takes an SAEConfig, got {type(cfg).__name__}; build one with "
                                 "SAEConfig(d_in=..., d_sae=..., architecture=...).")
            if cfg.architecture not in _REGISTRY:
                raise InputError(f"no SAE class is registered for architecture {cfg.architecture!r}; "
                                 f"registered: {', '.join(sorted(_REGISTRY))}.")
            cls = _REGISTRY[cfg.architecture]
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, *, device: str | torch.device | None = None, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise InputError(f"SAE(cfg) takes an SAEConfig, got {type(cfg).__name__}.")
        if self.architecture and cfg.architecture != self.architecture:
            raise InputError(f"{type(self).__name__} is the {self.architecture!r} architecture; the config says "
                             f"{cfg.architecture!r}. Build it with SAE(cfg).")
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise InputError(f"cfg.dtype {cfg.dtype!r} is not a torch dtype name (e.g. 'float32', 'bfloat16').")
        kw = dict(device=device, dtype=dtype)
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae, **kw))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **kw))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out, **kw))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **kw))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(d_in, d_out, **kw))
        self.register_buffer("norm_scale_in", torch.ones((), device=device, dtype=torch.float32))
        self.register_buffer("norm_scale_out", torch.ones((), device=device, dtype=torch.float32))
        self.reset_parameters(seed)

    # ------------------------------------------------------------------------------------------ set-up
    decoder_init_norm: ClassVar[float] = 0.1
    """Row norm of ``W_dec`` at initialisation (Anthropic's April 2024 update uses 0.1 for L1-penalised SAEs)."""

    def reset_parameters(self, seed: int | None = None) -> None:
        """Random unit-direction decoder rows of norm :attr:`decoder_init_norm`; the encoder its transpose when
        ``d_in == d_out`` (tied initialisation), else Kaiming-uniform; biases zero."""
        g = None
        if seed is not None:
            g = torch.Generator(device="cpu").manual_seed(seed)
        W = torch.randn(self.cfg.d_sae, self.cfg.width_out, generator=g, dtype=torch.float32)
        W = W / W.norm(dim=1, keepdim=True) * self.decoder_init_norm
        with torch.no_grad():
            self.W_dec.copy_(W)
            if self.cfg.d_in == self.cfg.width_out:
                self.W_enc.copy_(W.T)
            else:
                bound = 1 / self.cfg.d_in ** 0.5
                self.W_enc.copy_(torch.rand(self.cfg.d_in, self.cfg.d_sae, generator=g) * 2 * bound - bound)
            self.b_enc.zero_()
            self.b_dec.zero_()
            if self.cfg.skip:
                self.W_skip.zero_()

    @torch.no_grad()
    def init_from_data_(self, x: Tensor, target: Tensor | None = None) -> None:
        """Before training, from a sample of activations ``x (n, d_in)`` (and ``target (n, d_out)`` for a
        transcoder): the normalisation factors when ``cfg.normalize_activations`` asks for them, and ``b_dec``
        to the mean of the (normalised) target."""
        x = x.to(self.W_enc.dtype)
        y = x if target is None else target.to(self.W_enc.dtype)
        if self.cfg.normalize_activations == "expected_average_only_in":
            self.norm_scale_in.fill_(self.cfg.d_in ** 0.5 / x.float().norm(dim=-1).mean().clamp_min(1e-12))
            self.norm_scale_out.fill_(self.cfg.width_out ** 0.5 / y.float().norm(dim=-1).mean().clamp_min(1e-12))
        self.b_dec.copy_((y.float() * self.norm_scale_out).mean(0))

    # ------------------------------------------------------------------------------------------ inference
    def _encode_pre_n(self, x_n: Tensor) -> Tensor:
        """Pre-activations ``(..., d_sae)`` of normalised input ``x_n (..., d_in)``."""
        if self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder:
            x_n = x_n - self.b_dec
        return x_n @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        """Latent activations ``(..., d_sae)`` from pre-activations ``(..., d_sae)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define its activation")

    def _decode_n(self, f: Tensor) -> Tensor:
        """Normalised output ``(..., d_out)`` of latents ``f (..., d_sae)`` (no skip term)."""
        return f @ self.W_dec + self.b_dec

    def _in(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise InputError(f"this SAE reads activations of width d_in={self.cfg.d_in} "
                             f"({self.cfg.hook_name or 'its hook point'}); got a tensor of shape {tuple(x.shape)}.")
        return x.to(self.W_enc.dtype) * self.norm_scale_in.to(self.W_enc.dtype)

    def encode_pre(self, x: Tensor) -> Tensor:
        """Pre-activations ``(..., d_sae)`` of activations ``x (..., d_in)`` in the model's units."""
        return self._encode_pre_n(self._in(x))

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations ``(..., d_sae)`` of ``x (..., d_in)``."""
        return self.activation(self.encode_pre(x))

    def decode(self, f: Tensor) -> Tensor:
        """Output ``(..., d_out)`` in the model's units of latents ``f (..., d_sae)``; without the skip term."""
        if f.shape[-1] != self.cfg.d_sae:
            raise InputError(f"decode takes latents of width d_sae={self.cfg.d_sae}; got shape {tuple(f.shape)}.")
        return self._decode_n(f.to(self.W_dec.dtype)) / self.norm_scale_out.to(self.W_dec.dtype)

    def skip_out(self, x: Tensor) -> Tensor:
        """The skip-transcoder's linear term ``(..., d_out)`` in the model's units; zeros without ``cfg.skip``."""
        if not self.cfg.skip:
            return x.new_zeros(*x.shape[:-1], self.cfg.width_out, dtype=self.W_dec.dtype)
        return self._in(x) @ self.W_skip / self.norm_scale_out.to(self.W_dec.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (autoencoder) or prediction (transcoder) ``(..., d_out)`` of ``x (..., d_in)``, in the
        dtype of ``x``."""
        out = self.decode(self.encode(x))
        if self.cfg.skip:
            out = out + self.skip_out(x)
        return out.to(x.dtype)

    # ------------------------------------------------------------------------------------------ training
    def training_forward(self, x: Tensor, target: Tensor | None = None, *, loss: LossConfig | None = None,
                         dead: Tensor | None = None, l1_scale: float = 1.0) -> TrainOutput:
        """Loss and statistics on a batch ``x (batch, d_in)`` (``target (batch, d_out)`` for transcoders), in
        normalised units. ``dead (d_sae,)`` bool marks latents the trainer counts as dead (for AuxK);
        ``l1_scale`` in [0, 1] warms the sparsity penalty up."""
        loss = loss or LossConfig()
        if self.cfg.is_transcoder and target is None:
            raise InputError("a transcoder trains on pairs: pass target, the activations at hook_name_out.")
        x_n = self._in(x)
        y_n = x_n if target is None else target.to(self.W_dec.dtype) * self.norm_scale_out.to(self.W_dec.dtype)
        out_n, f, terms = self._train_terms(x_n, y_n, loss, dead, l1_scale)
        if self.cfg.skip:
            out_n = out_n + x_n @ self.W_skip
        err = out_n - y_n
        mse = err.pow(2).sum(-1).mean()
        total = mse + sum(terms.values()) if terms else mse
        with torch.no_grad():
            var = (y_n - y_n.mean(0)).pow(2).sum(-1).mean()
            fvu = mse.detach() / var.clamp_min(1e-12)
            if isinstance(f, tuple):  # sparse latents from the fused path: (top_acts, top_indices)
                acts, idx = f
                on = acts != 0
                fired = torch.zeros(self.cfg.d_sae, device=acts.device).index_add_(
                    0, idx.reshape(-1), on.reshape(-1).float()) > 0
                stats = dict(l0=on.sum(-1).float().mean(), fired=fired)
            else:
                active = f != 0
                stats = dict(l0=active.sum(-1).float().mean(), fired=active.any(0))
        return TrainOutput(total, {"mse": mse.detach(), **{k: v.detach() for k, v in terms.items()}}, fvu, **stats)

    def _train_terms(self, x_n: Tensor, y_n: Tensor, loss: LossConfig, dead: Tensor | None,
                     l1_scale: float) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor], dict[str, Tensor]]:
        """``(output_n (batch, d_out) without skip, latents, {name: loss term})``; the latents are dense
        ``f (batch, d_sae)`` or, from a sparse path, ``(top_acts, top_indices)`` each ``(batch, k)``."""
        f = self.activation(self._encode_pre_n(x_n))
        return self._decode_n(f), f, {}

    def prepare_grads_(self) -> None:
        """Called by the trainer after ``backward()``, before the optimiser step (e.g. TopK removes the gradient
        parallel to the unit-norm decoder rows)."""

    @torch.no_grad()
    def constrain_(self) -> None:
        """Called by the trainer after each optimiser step (e.g. TopK renormalises decoder rows to unit norm)."""

    # ------------------------------------------------------------------------------------------ weights
    @torch.no_grad()
    def fold_norm_scale_(self) -> SAE:
        """Fold ``norm_scale_in``/``norm_scale_out`` into the weights (see the module docstring); both become 1.
        Outputs in the model's units are unchanged. Returns self."""
        s_in, s_out = self.norm_scale_in.item(), self.norm_scale_out.item()
        if s_in == 1 and s_out == 1:
            return self
        if self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder and s_in != s_out:
            # checked before any weight changes: b_dec is subtracted from the input, so one scale must serve both
            raise InputError(f"an autoencoder that subtracts b_dec from its input has one normalisation scale for "
                             f"input and output; norm_scale_in is {s_in} and norm_scale_out {s_out}. Set both to "
                             "the same factor before folding.")
        self.W_enc.mul_(s_in)
        self.W_dec.div_(s_out)
        self.b_dec.div_(s_out)
        if self.cfg.skip:
            self.W_skip.mul_(s_in / s_out)
        self._fold_extra_(s_in, s_out)
        self.norm_scale_in.fill_(1.0)
        self.norm_scale_out.fill_(1.0)
        return self

    def _fold_extra_(self, s_in: float, s_out: float) -> None:
        """Architectures with more input-side parameters (gated's ``b_mag``...) fold them here."""

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def extra_repr(self) -> str:
        c = self.cfg
        kind = "skip-transcoder" if c.skip else "transcoder" if c.is_transcoder else "autoencoder"
        k = f", k={c.k}" if c.k is not None else ""
        return f"{c.architecture} {kind}, d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.width_out}{k}, hook={c.hook_name!r}"


@register("relu")
class ReLUSAE(SAE):
    """ReLU latents; sparsity from an L1 penalty weighted by decoder row norms (Anthropic, April 2024 update):
    ``l1 = l1_coefficient * sum_i f_i ||W_dec[i]||``."""

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        f = torch.relu(self._encode_pre_n(x_n))
        l1 = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        return self._decode_n(f), f, {"l1": loss.l1_coefficient * l1_scale * l1}


@register("topk")
class TopKSAE(SAE):
    """The ``k`` largest pre-activations per token, ReLU'd; the rest zero (Gao et al. 2024). Decoder rows are kept
    at unit norm; AuxK makes dead latents model the residual error.

    Two paths compute the same thing: the fused/sparse one (:mod:`mechscope.sae.kernels`: no dense
    ``(batch, d_sae)`` latents in the decoder or the backward), used by :meth:`training_forward` and
    :meth:`encode_topk` while ``self.fused`` is True (the default), and the plain reference
    ``linear -> topk -> linear`` (``sae.fused = False``). ``self.fast_topk`` (default False) selects with the
    exact block-maxima top-k of :func:`~mechscope.sae.kernels.topk_exact` instead of ``torch.topk``."""

    decoder_init_norm = 1.0
    fused: bool = True
    fast_topk: bool = False

    def activation(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations ``(..., d_sae)`` of ``x (..., d_in)`` (through :meth:`encode_topk` when fused)."""
        if not self.fused:
            return super().encode(x)
        acts, idx = self.encode_topk(x)
        out = acts.new_zeros(*acts.shape[:-1], self.cfg.d_sae)
        return out.scatter_(-1, idx, acts)

    def encode_topk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Sparse latents of ``x (..., d_in)``: ``top_acts, top_indices (..., k)`` (sparsify's ``EncoderOutput``
        fields); ``encode(x)`` is these scattered into ``(..., d_sae)``."""
        x_n = self._in(x)
        lead = x_n.shape[:-1]
        x_n = x_n.reshape(-1, self.cfg.d_in)
        if self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder:
            x_n = x_n - self.b_dec
        if self.fused:
            acts, idx, _, _ = fused_topk_encode(x_n, self.W_enc, self.b_enc, self.cfg.k, fast_topk=self.fast_topk)
        else:
            vals, idx = (x_n @ self.W_enc + self.b_enc).topk(self.cfg.k, dim=-1, sorted=False)
            acts = torch.relu(vals)
        return acts.reshape(*lead, -1), idx.reshape(*lead, -1)

    def _dense_terms(self, x_n, y_n, loss, dead, select):
        """The plain path: ``f = select(pre)`` dense ``(batch, d_sae)``, dense decoder, AuxK on the dead latents."""
        pre = self._encode_pre_n(x_n)
        f = select(pre)
        out = self._decode_n(f)
        terms = {}
        if self._k_aux(loss, dead):
            terms["auxk"] = loss.auxk_coefficient * auxk_loss(self, pre, dead, self._residual_n(x_n, y_n, out), y_n,
                                                              loss)
        return out, f, terms

    def _k_aux(self, loss: LossConfig, dead: Tensor | None) -> int:
        if loss.auxk_coefficient <= 0 or dead is None or not bool(dead.any()):
            return 0
        return min(loss.auxk_k or max(self.cfg.d_in // 2, 1), int(dead.sum()))

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        if not self.fused:
            return self._dense_terms(x_n, y_n, loss, dead, self.activation)
        sub = self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder
        k_aux = self._k_aux(loss, dead)
        acts, idx, aux_acts, aux_idx = fused_topk_encode(x_n, self.W_enc, self.b_enc, self.cfg.k,
                                                         aux_mask=dead if k_aux else None, k_aux=k_aux,
                                                         fast_topk=self.fast_topk, b_dec=self.b_dec if sub else None)
        out = sparse_decode(idx, acts, self.W_dec) + self.b_dec
        terms = {}
        if k_aux:
            e_hat = sparse_decode(aux_idx, aux_acts, self.W_dec)
            var = (y_n - y_n.mean(0)).pow(2).sum()
            err = self._residual_n(x_n, y_n, out)
            terms["auxk"] = loss.auxk_coefficient * (e_hat - err).pow(2).sum() / var.clamp_min(1e-12)
        return out, (acts, idx), terms

    def _residual_n(self, x_n: Tensor, y_n: Tensor, out_n: Tensor) -> Tensor:
        """AuxK's target, detached: what the full output (with a skip-transcoder's skip term, which
        :meth:`training_forward` adds after ``_train_terms``) leaves unexplained."""
        with torch.no_grad():
            return y_n - (out_n + x_n @ self.W_skip if self.cfg.skip else out_n)

    def prepare_grads_(self) -> None:
        remove_parallel_decoder_grad_(self.W_dec)

    @torch.no_grad()
    def constrain_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


def auxk_loss(sae: SAE, pre: Tensor, dead: Tensor, err: Tensor, y_n: Tensor, loss: LossConfig) -> Tensor:
    """Gao et al.'s AuxK: the top ``auxk_k`` *dead* latents (``dead (d_sae,)``) of ``pre (batch, d_sae)`` decode
    (without ``b_dec``) the residual error ``err (batch, d_out)``; squared error normalised by the target's
    variance about its batch mean, as sparsify does."""
    k_aux = min(loss.auxk_k or max(sae.cfg.d_in // 2, 1), int(dead.sum()))
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
    f_aux = torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))
    e_hat = f_aux @ sae.W_dec
    var = (y_n - y_n.mean(0)).pow(2).sum()
    return (e_hat - err).pow(2).sum() / var.clamp_min(1e-12)


@torch.no_grad()
def remove_parallel_decoder_grad_(W_dec: nn.Parameter) -> None:
    """Project out of ``W_dec.grad (d_sae, d_out)`` each row's component along that (unit-norm) decoder row, so
    the step moves along the unit sphere (SAELens's ``remove_gradient_parallel_to_decoder_directions``)."""
    if W_dec.grad is None:
        return
    W = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    W_dec.grad.sub_((W_dec.grad * W).sum(1, keepdim=True) * W)
