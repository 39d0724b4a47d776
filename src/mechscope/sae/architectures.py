"""The architectures beyond ReLU and TopK: BatchTopK, JumpReLU, Gated and Matryoshka, each registered so
``SAE(cfg)`` builds it. Each works as an autoencoder, a transcoder (``cfg.hook_name_out``) and a
skip-transcoder (``cfg.skip``): the base class handles the input side (``- b_dec`` only for autoencoders) and the
skip term; every threshold here acts on pre-activations, which :meth:`SAE.fold_norm_scale_` leaves unchanged, so
folding needs nothing extra.

Parameter names are SAELens 6's where it has them (``threshold``, ``log_threshold``, ``b_gate``, ``b_mag``,
``r_mag``), so the formats module maps keys one to one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import SAEConfig
from .sae import SAE, TopKSAE, register

__all__ = ["BatchTopKSAE", "JumpReLUSAE", "GatedSAE", "MatryoshkaSAE", "jumprelu", "step"]


# ------------------------------------------------------------------------------------------ BatchTopK
@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    """BatchTopK (Bussmann et al. 2024): in training, the ``k * batch`` largest ReLU'd pre-activations across the
    whole batch are kept, so ``k`` is the *mean* active latents per token. At inference a per-token rule is
    needed: the buffer ``threshold`` (scalar) is a running estimate of the smallest kept positive activation,
    updated in :meth:`training_forward` (under ``no_grad``, only in ``train()`` mode) as SAELens's
    ``BatchTopKTrainingSAE`` does: ``threshold <- (1 - threshold_lr) * threshold + threshold_lr * min_kept``
    (the first update sets it). :meth:`activation` is then JumpReLU-style, ``pre * (pre > threshold)``.
    Decoder rows unit norm and AuxK as TopK. Training uses the dense path (the batch-wide selection)."""

    threshold_lr: float = 0.01
    fused = False

    def __init__(self, cfg: SAEConfig, *, device=None, seed=None) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.register_buffer("threshold", torch.zeros((), device=device, dtype=torch.float32))

    def activation(self, pre: Tensor) -> Tensor:
        return torch.where(pre > self.threshold.to(pre.dtype), pre, 0).relu()

    def encode(self, x: Tensor) -> Tensor:
        return SAE.encode(self, x)

    def encode_topk(self, x: Tensor):
        raise NotImplementedError("BatchTopK's inference latents are thresholded, not a fixed k per token; "
                                  "use encode(x).")

    def batch_topk(self, pre: Tensor) -> Tensor:
        """Training latents ``(batch, d_sae)``: the ``k * batch`` largest ReLU'd entries of ``pre`` kept."""
        acts = torch.relu(pre)
        flat = acts.reshape(-1)
        n = min(self.cfg.k * pre.shape[0], flat.numel())
        vals, idx = flat.topk(n, sorted=False)
        return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(pre)

    @torch.no_grad()
    def update_threshold_(self, f: Tensor) -> None:
        """Fold this batch's smallest kept positive activation into the running ``threshold``."""
        pos = f[f > 0]
        if pos.numel() == 0:
            return
        m = pos.min().float()
        if float(self.threshold) <= 0:
            self.threshold.copy_(m)
        else:
            self.threshold.mul_(1 - self.threshold_lr).add_(self.threshold_lr * m)

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        def select(pre):
            f = self.batch_topk(pre)
            if self.training:
                self.update_threshold_(f.detach())
            return f

        return self._dense_terms(x_n, y_n, loss, dead, select)


# ------------------------------------------------------------------------------------------ Matryoshka
@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024): BatchTopK latents, and each nested prefix
    ``f[:, :m] @ W_dec[:m] + b_dec`` for ``m`` in ``cfg.matryoshka_sizes`` must reconstruct the target on its
    own, so early latents learn general features and later ones refine them. Loss: the full reconstruction's MSE
    plus ``mse_<m>`` for every inner prefix (SAELens's ``MatryoshkaBatchTopKTrainingSAE``)."""

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        out, f, terms = super()._train_terms(x_n, y_n, loss, dead, l1_scale)
        skip = x_n @ self.W_skip if self.cfg.skip else 0
        partial = self.b_dec
        prev = 0
        for m in self.cfg.matryoshka_sizes[:-1]:
            partial = partial + f[:, prev:m] @ self.W_dec[prev:m]
            prev = m
            terms[f"mse_{m}"] = (partial + skip - y_n).pow(2).sum(-1).mean()
        return out, f, terms


# ------------------------------------------------------------------------------------------ JumpReLU
def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _Step(torch.autograd.Function):
    """Heaviside ``H(pre - threshold)``; the threshold's gradient by the rectangle-kernel estimator
    ``d/dθ = -(1/ε) K((pre - θ)/ε)`` summed over rows (Rajamanoharan et al. 2024, eq. 11); none to ``pre``."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g_t = (-(1.0 / bw) * _rectangle((pre - threshold) / bw) * g).reshape(-1, pre.shape[-1]).sum(0)
        return None, g_t, None


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - threshold)``; gradient ``H`` to ``pre`` and ``-(θ/ε) K((pre - θ)/ε)`` to the threshold."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g_pre = (pre > threshold).to(g.dtype) * g
        g_t = (-(threshold / bw) * _rectangle((pre - threshold) / bw) * g).reshape(-1, pre.shape[-1]).sum(0)
        return g_pre, g_t, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """JumpReLU with the straight-through threshold gradient (SAELens's ``JumpReLU.apply``)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """Heaviside step with the straight-through threshold gradient (SAELens's ``Step.apply``)."""
    return _Step.apply(pre, threshold, bandwidth)


@register("jumprelu")
class JumpReLUSAE(SAE):
    """JumpReLU (Rajamanoharan et al. 2024): ``f = pre * (pre > threshold)``, per-latent ``threshold (d_sae,)``
    trained as ``log_threshold`` (so it stays positive; ``threshold`` is the exposed property). The step has no
    gradient, so the threshold learns through straight-through estimators with a rectangle kernel of width
    ``LossConfig.jumprelu_bandwidth`` in both the JumpReLU and the L0 penalty
    ``l0_coefficient * sum_i H(pre_i - threshold_i)``. Initial threshold ``init_threshold`` (default 0.001, a
    constructor argument)."""

    init_threshold: float = 0.001

    def __init__(self, cfg: SAEConfig, *, device=None, seed=None, init_threshold: float | None = None) -> None:
        super().__init__(cfg, device=device, seed=seed)
        t = self.init_threshold if init_threshold is None else init_threshold
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0:
            from ..errors import InputError
            raise InputError(f"a JumpReLU threshold must start > 0 (it is trained as its log); got {t!r}.")
        self.init_threshold = float(t)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(t), device=device,
                                                     dtype=self.W_enc.dtype))

    @property
    def threshold(self) -> Tensor:
        """Per-latent threshold ``(d_sae,)`` on pre-activations (``exp(log_threshold)``)."""
        return self.log_threshold.exp()

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        pre = torch.relu(self._encode_pre_n(x_n))
        th = self.threshold
        f = jumprelu(pre, th, loss.jumprelu_bandwidth)
        l0 = step(pre, th, loss.jumprelu_bandwidth).sum(-1).mean()
        return self._decode_n(f), f, {"l0": loss.l0_coefficient * l1_scale * l0}


# ------------------------------------------------------------------------------------------ Gated
@register("gated")
class GatedSAE(SAE):
    """Gated SAE (Rajamanoharan et al. 2024): a gate decides which latents fire, a magnitude path how much, both
    from the one ``W_enc``::

        pi_gate = x @ W_enc + b_gate                       (the pre-activation, ``encode_pre``)
        pi_mag  = x @ (W_enc * exp(r_mag)) + b_mag = (pi_gate - b_gate) * exp(r_mag) + b_mag
        f       = (pi_gate > 0) * relu(pi_mag)

    Loss: MSE + ``l1_coefficient * sum_i relu(pi_gate)_i ||W_dec[i]||`` + the auxiliary reconstruction
    ``||relu(pi_gate) @ W_dec.detach() + b_dec.detach() - y||^2`` (which trains the gate, since the Heaviside
    passes no gradient). Parameters are SAELens's: ``b_gate`` (also reachable as ``b_enc``), ``b_mag``, ``r_mag``;
    there is no separate ``b_enc``."""

    def __init__(self, cfg: SAEConfig, *, device=None, seed=None) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.b_gate = nn.Parameter(self._parameters.pop("b_enc").detach().clone())
        self.b_mag = nn.Parameter(torch.zeros_like(self.b_gate))
        self.r_mag = nn.Parameter(torch.zeros_like(self.b_gate))

    @property
    def b_enc(self) -> Tensor:
        p = self._parameters
        if "b_gate" in p:
            return p["b_gate"]
        if "b_enc" in p:
            return p["b_enc"]
        raise AttributeError("b_enc")

    def reset_parameters(self, seed: int | None = None) -> None:
        super().reset_parameters(seed)
        with torch.no_grad():
            for name in ("b_mag", "r_mag"):
                if name in self._parameters:
                    self._parameters[name].zero_()

    def activation(self, pre: Tensor) -> Tensor:
        mag = (pre - self.b_gate) * self.r_mag.exp() + self.b_mag
        return (pre > 0).to(pre.dtype) * torch.relu(mag)

    def _train_terms(self, x_n, y_n, loss, dead, l1_scale):
        pre = self._encode_pre_n(x_n)
        f = self.activation(pre)
        gate = torch.relu(pre)
        l1 = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
        target = y_n - (x_n @ self.W_skip).detach() if self.cfg.skip else y_n
        aux = (gate @ self.W_dec.detach() + self.b_dec.detach() - target).pow(2).sum(-1).mean()
        return self._decode_n(f), f, {"l1": loss.l1_coefficient * l1_scale * l1, "aux": aux}
