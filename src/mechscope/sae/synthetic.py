"""A ground-truth benchmark for dictionary learning (Sharkey, Braun & Millidge 2022, "Taking features out of
superposition with sparse autoencoders", interim report): data made of known sparse features in superposition,
and :func:`mmcs`, how well a trained dictionary recovers them.

``n_features`` unit directions in ``d`` dimensions (``n_features > d``: superposition). Each sample activates
each feature independently with probability ``p_i`` (all equal, or decaying ``p_i ∝ decay**i`` as in the
report's harder setting), optionally correlated through a Gaussian copula, with a coefficient uniform in
``[0, 1)``; the sample is the coefficient-weighted sum of the active directions. A dictionary that has found the
features has, for every true direction, a decoder row pointing the same way: the mean over true features of
the max cosine similarity with any decoder row (MMCS) is then close to 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InputError
from .activations import TensorSource


class SyntheticFeatures:
    """Known sparse features in superposition; :meth:`sample` draws data, ``features`` holds the truth."""

    def __init__(self, d: int = 64, n_features: int = 256, *, avg_active: float = 5.0, decay: float | None = None,
                 correlated: bool = False, seed: int = 0) -> None:
        """``d``: data width. ``n_features``: true features (``> d`` for superposition). ``avg_active``: mean
        active features per sample. ``decay``: if set (e.g. 0.99), feature ``i`` is ``decay**i`` times as frequent
        as feature 0. ``correlated``: draw activity through a Gaussian copula with a random correlation matrix."""
        for name, v in (("d", d), ("n_features", n_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive int, got {v!r}.")
        if not isinstance(avg_active, (int, float)) or not 0 < avg_active <= n_features:
            raise InputError(f"avg_active must be in (0, n_features={n_features}], got {avg_active!r}.")
        if decay is not None and not 0 < decay <= 1:
            raise InputError(f"decay must be in (0, 1], got {decay!r}.")
        self.d, self.n_features, self.seed, self.correlated = d, n_features, seed, correlated
        g = torch.Generator().manual_seed(seed)
        f = torch.randn(n_features, d, generator=g)
        self.features = f / f.norm(dim=1, keepdim=True)
        """``(n_features, d)`` unit rows: the true feature directions."""
        w = torch.ones(n_features) if decay is None else decay ** torch.arange(n_features, dtype=torch.float64)
        p = (w / w.sum() * avg_active).float()
        if float(p.max()) > 1:
            raise InputError(f"avg_active={avg_active} with decay={decay} would make feature 0 active with "
                             f"probability {float(p.max()):.2f} > 1; lower avg_active or raise decay.")
        self.p = p
        """``(n_features,)`` probability each feature is active in a sample."""
        self._chol = None
        if correlated:
            a = torch.randn(n_features, n_features, generator=g) / math.sqrt(n_features)
            cov = a @ a.T + torch.eye(n_features)
            dinv = cov.diagonal().rsqrt()
            self._chol = torch.linalg.cholesky(cov * dinv[:, None] * dinv[None, :])

    def sample(self, n: int, *, seed: int = 1) -> tuple[Tensor, Tensor]:
        """``(x (n, d), coefficients (n, n_features))`` for ``n`` samples drawn from ``seed``."""
        g = torch.Generator().manual_seed(seed)
        if self._chol is None:
            u = torch.rand(n, self.n_features, generator=g)
        else:
            z = torch.randn(n, self.n_features, generator=g) @ self._chol.T
            u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # the normal CDF: uniform marginals, correlated
        coef = torch.rand(n, self.n_features, generator=g) * (u < self.p)
        return coef @ self.features, coef

    def source(self, n: int, *, batch_size: int, seed: int = 1) -> TensorSource:
        """A training source over ``n`` samples (shuffled each epoch)."""
        return TensorSource(self.sample(n, seed=seed)[0], batch_size=batch_size, seed=seed)


def mmcs(sae_or_dictionary, features: Tensor | SyntheticFeatures) -> float:
    """Mean over the true features ``(n_features, d)`` of the max cosine similarity with any dictionary row:
    ``sae_or_dictionary`` is an SAE (its ``W_dec (d_sae, d)``) or a ``(d_sae, d)`` tensor."""
    if isinstance(features, SyntheticFeatures):
        features = features.features
    W = sae_or_dictionary if isinstance(sae_or_dictionary, Tensor) else sae_or_dictionary.W_dec
    W = W.detach().float().cpu()
    if W.ndim != 2 or W.shape[1] != features.shape[1]:
        raise InputError(f"the dictionary {tuple(W.shape)} and the features {tuple(features.shape)} must both be "
                         "(rows, d) with the same d.")
    Wn = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    Fn = features.float() / features.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((Fn @ Wn.T).max(dim=1).values.mean())
