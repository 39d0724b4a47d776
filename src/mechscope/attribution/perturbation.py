"""Perturbation methods over tokens: occlusion, Shapley value sampling, KernelSHAP and LIME.

Each replaces whole tokens by their baseline embedding (see ``baseline``) and reads the target off the real
model's forward; no gradients, so they work on any target, differentiable or not. The perturbed inputs are
built and evaluated ``batch_size`` rows at a time (``runner.masked_values``). Scores are in the target's units:
how much the target drops when the token is removed (occlusion), the token's average marginal contribution over
orderings (Shapley), or the token's weight in a local linear model of the target (LIME).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from .baseline import BaselineSpec, setup
from .result import Attribution, build, completeness_delta
from .runner import masked_values, prepare
from .target import TargetSpec


def occlusion(model, input, target: TargetSpec = None, *, baseline: BaselineSpec = "auto", window: int = 1,
              stride: int = 1, batch_size: int = 16, position: int = -1, include_bos: bool = False) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014) over tokens: slide a window of ``window`` attributed tokens by ``stride``,
    replace them by the baseline, and give each token the mean of ``f(x) - f(occluded)`` over the windows that
    cover it (Captum's ``Occlusion``: windows start at 0, stride, 2·stride, ... until one reaches the end, the
    last possibly cut short, so every token is covered)."""
    for name, v in (("window", window), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive int (tokens), got {type_name(v)}.")
    runner = prepare(model, input, target, position, batch_size)
    s = setup(runner, baseline, include_bos)
    n = len(s.positions)
    if window > n:
        raise InputError(f"window={window} is longer than the {n} attributed tokens; pass window <= {n}.")
    starts = range(0, -(-(n - window) // stride) * stride + 1, stride)  # as Captum: the last window may be cut short
    masks = torch.ones(len(starts) + 1, n, dtype=torch.bool)  # row 0: the real input
    for row, start in enumerate(starts, 1):
        masks[row, start:start + window] = False
    f = masked_values(runner, s.positions, s.baseline, masks)
    total, count = torch.zeros(n), torch.zeros(n)
    drop = (f[0] - f[1:]).cpu()
    for row, start in enumerate(starts):
        total[start:start + window] += drop[row]
        count[start:start + window] += 1
    scores = total / count
    return build(runner.model, runner.tokens, runner.target, "occlusion", s.positions, scores, value=float(f[0]),
                 params={"baseline": s.baseline_name, "window": window, "stride": stride})


def shapley_values(model, input, target: TargetSpec = None, *, baseline: BaselineSpec = "auto",
                   n_samples: int = 25, seed: int = 0, batch_size: int = 16, position: int = -1,
                   include_bos: bool = False) -> Attribution:
    """Shapley values of the tokens (Castro et al. 2009 sampling, Captum's ``ShapleyValueSampling``): for each of
    ``n_samples`` random orderings, add the tokens to the all-baseline input one at a time and credit each with
    the change in the target; average. When ``n_samples`` covers every ordering (``n! <= n_samples``) all are
    enumerated once and the values are exact. Each ordering's contributions telescope to ``f(x) - f(x')``, so
    the scores sum to it exactly (``delta`` is float rounding). Cost: ``n_samples × n`` forward rows."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive int (orderings), got {type_name(n_samples)}.")
    runner = prepare(model, input, target, position, batch_size)
    s = setup(runner, baseline, include_bos)
    n = len(s.positions)
    exact = math.factorial(n) <= n_samples
    if exact:
        orders = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long).reshape(-1, n)
    else:
        gen = torch.Generator().manual_seed(seed)
        orders = torch.stack([torch.randperm(n, generator=gen) for _ in range(n_samples)])
    # every ordering's prefixes: row j of ordering k keeps its first j+1 tokens; plus the all-baseline row
    rank = torch.empty_like(orders)
    rank.scatter_(1, orders, torch.arange(n).expand_as(orders))  # rank[k, token] = its place in ordering k
    steps = rank[:, None, :] <= torch.arange(n)[None, :, None]  # (k, j, token): token among the first j+1
    masks = torch.cat([torch.zeros(1, n, dtype=torch.bool), steps.reshape(-1, n)])
    unique, inverse = torch.unique(masks, dim=0, return_inverse=True)  # orderings share prefixes (the full input)
    f = masked_values(runner, s.positions, s.baseline, unique).cpu().double()[inverse]
    base, prefix = f[0], f[1:].reshape(len(orders), n)
    gains = prefix - torch.cat([base.expand(len(orders), 1), prefix[:, :-1]], 1)  # (k, j): gain of j-th added
    phi = torch.zeros(len(orders), n, dtype=torch.float64)
    phi.scatter_(1, orders, gains)
    scores = phi.mean(0)
    value = float(prefix[0, -1])
    delta = completeness_delta(float(scores.sum()), value, float(base))
    return build(runner.model, runner.tokens, runner.target, "shapley", s.positions, scores.float(), value=value, baseline_value=float(base),
                 delta=delta, params={"baseline": s.baseline_name, "n_samples": len(orders), "exact": exact,
                                      "seed": None if exact else seed})


def kernel_shap(model, input, target: TargetSpec = None, *, baseline: BaselineSpec = "auto", n_samples: int = 200,
                seed: int = 0, batch_size: int = 16, position: int = -1, include_bos: bool = False) -> Attribution:
    """KernelSHAP (Lundberg & Lee 2017) over tokens: Shapley values as the weighted least-squares fit of the target
    on coalitions of kept tokens, with the Shapley kernel ``(n-1) / (C(n,|z|) |z| (n-|z|))`` and the efficiency
    constraint ``sum(scores) = f(x) - f(x')`` imposed exactly. When ``n_samples`` covers every proper coalition
    (``2^n - 2 <= n_samples``) all are used with their kernel weights and the result is the exact Shapley values;
    otherwise ``n_samples`` coalitions are drawn from the kernel's distribution (size ``k`` with probability
    ``∝ (n-1) / (k (n-k))``, then a uniform subset) and weighted equally."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive int (coalitions), got {type_name(n_samples)}.")
    runner = prepare(model, input, target, position, batch_size)
    s = setup(runner, baseline, include_bos)
    n = len(s.positions)
    exact = 2 ** n - 2 <= n_samples
    if n < 2:
        coalitions, weights = torch.zeros(0, n, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    elif exact:
        bits = torch.arange(1, 2 ** n - 1)[:, None] >> torch.arange(n) & 1
        coalitions = bits.bool()
        k = coalitions.sum(1).double()
        weights = (n - 1) / (torch.tensor([math.comb(n, int(j)) for j in k], dtype=torch.float64) * k * (n - k))
    else:
        gen = torch.Generator().manual_seed(seed)
        sizes = torch.arange(1, n, dtype=torch.float64)
        size_p = (n - 1) / (sizes * (n - sizes))
        k = torch.multinomial(size_p / size_p.sum(), n_samples, replacement=True, generator=gen) + 1
        order = torch.rand(n_samples, n, generator=gen).argsort(1)
        coalitions = order < k[:, None]  # the first k of a random ordering: a uniform subset of size k
        weights = torch.ones(n_samples, dtype=torch.float64)
    ends = torch.stack([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
    masks = torch.cat([ends, coalitions])
    unique, inverse = torch.unique(masks, dim=0, return_inverse=True)
    f = masked_values(runner, s.positions, s.baseline, unique).cpu().double()[inverse]
    base, value, fz = f[0], f[1], f[2:]
    scores = shapley_regression(coalitions.double(), fz - base, weights, float(value - base))
    delta = completeness_delta(float(scores.sum()), float(value), float(base))
    return build(runner.model, runner.tokens, runner.target, "kernel_shap", s.positions, scores.float(),
                 value=float(value), baseline_value=float(base), delta=delta,
                 params={"baseline": s.baseline_name, "n_samples": len(coalitions), "exact": exact,
                         "seed": None if exact else seed})


def shapley_regression(Z: Tensor, y: Tensor, w: Tensor, total: float) -> Tensor:
    """``argmin Σ w (y - Z·φ)²`` subject to ``Σ φ = total`` (the last coefficient eliminated), float64.
    ``Z (m, n)`` coalitions, ``y (m,)`` the target minus its baseline value."""
    n = Z.shape[1]
    if n == 1 or len(Z) == 0:
        return torch.full((n,), total / n, dtype=torch.float64)
    X = Z[:, :-1] - Z[:, -1:]
    r = y - Z[:, -1] * total
    head = torch.linalg.lstsq(X.T @ (w[:, None] * X), X.T @ (w * r)).solution
    return torch.cat([head, (total - head.sum())[None]])


def lime(model, input, target: TargetSpec = None, *, baseline: BaselineSpec = "auto", n_samples: int = 200,
         kernel_width: float = 0.25, alpha: float = 1.0, seed: int = 0, masks: Tensor | None = None,
         batch_size: int = 16, position: int = -1, include_bos: bool = False) -> Attribution:
    """LIME (Ribeiro et al. 2016) over tokens: fit a weighted ridge regression of the target on which tokens are
    kept, over ``n_samples`` random subsets (each token kept with probability 1/2; the full input is always
    sample 0). Sample weights follow LIME's text explainer: ``exp(-(d / kernel_width)²)`` with ``d`` the cosine
    distance between the kept-mask and the all-kept mask; ``alpha`` is the ridge penalty (LIME's default 1.0;
    the intercept is not penalised). ``masks (m, n_positions)`` bool gives the subsets yourself. The scores are
    the regression's coefficients; ``params["intercept"]`` its intercept."""
    runner = prepare(model, input, target, position, batch_size)
    s = setup(runner, baseline, include_bos)
    n = len(s.positions)
    if masks is None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise InputError(f"n_samples must be an int >= 2 (perturbed inputs), got {type_name(n_samples)}.")
        gen = torch.Generator().manual_seed(seed)
        masks = torch.cat([torch.ones(1, n, dtype=torch.bool), torch.rand(n_samples - 1, n, generator=gen) < 0.5])
    elif not isinstance(masks, Tensor) or masks.dtype != torch.bool or masks.ndim != 2 or masks.shape[1] != n:
        raise InputTypeError(f"masks must be a bool tensor (n_samples, {n}) (True keeps a token), got "
                             f"{type_name(masks)}.")
    if not (isinstance(kernel_width, (int, float)) and kernel_width > 0):
        raise InputError(f"kernel_width must be a positive number, got {type_name(kernel_width)}.")
    f = masked_values(runner, s.positions, s.baseline, masks).cpu().double()
    w = lime_weights(masks, kernel_width)
    coef, intercept = weighted_ridge(masks.double(), f, w, alpha)
    return build(runner.model, runner.tokens, runner.target, "lime", s.positions, coef.float(), value=float(f[0]) if bool(masks[0].all()) else None,
                 params={"baseline": s.baseline_name, "n_samples": len(masks), "kernel_width": kernel_width,
                         "alpha": alpha, "seed": seed, "intercept": float(intercept)})


def lime_weights(masks: Tensor, kernel_width: float) -> Tensor:
    """``exp(-(d / kernel_width)²)``, ``d`` the cosine distance of each mask ``(m, n)`` to the all-ones mask."""
    m = masks.double()
    cos = m.sum(1) / (m.norm(dim=1) * math.sqrt(m.shape[1])).clamp(min=1e-12)
    return torch.exp(-((1 - cos) / kernel_width) ** 2)


def weighted_ridge(X: Tensor, y: Tensor, w: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Minimise ``Σ w_i (y_i - X_i·β - c)² + alpha ‖β‖²`` (intercept ``c`` unpenalised): ``(β, c)``, float64."""
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    reg = torch.eye(A.shape[1], dtype=X.dtype) * alpha
    reg[-1, -1] = 0
    sol = torch.linalg.lstsq(A.T @ (w[:, None] * A) + reg, A.T @ (w * y)).solution
    return sol[:-1], sol[-1]
