"""Gradient methods on the token embeddings: saliency, gradient×input and integrated gradients.

All three differentiate the target through the real model with respect to ``hook_embed`` (see ``runner``).
Per embedding dimension they give ``dim_scores (n_positions, d_model)``; a token's score is their sum over
``d_model``, so for gradient×input and integrated gradients the scores are additive in the target's units.

Integrated gradients (Sundararajan et al. 2017): ``(x - x') · ∫₀¹ ∇f(x' + α(x - x')) dα``, the integral by a
quadrature rule of ``n_steps`` points (the rules Captum offers: ``gausslegendre``, its default, and
``riemann_left|right|middle|trapezoid``). Its completeness axiom says the attributions sum to
``f(x) - f(x')``; the relative gap is reported as ``delta`` and shrinks as ``n_steps`` grows. The steps run
``batch_size`` at a time and each batch's gradients are folded into a running sum, so memory does not grow with
``n_steps``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, type_name
from .baseline import BaselineSpec, setup
from .result import Attribution, build, completeness_delta
from .runner import prepare
from .target import TargetSpec

Integration = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
INTEGRATIONS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
IG_STEPS = 128
"""Default ``n_steps``: keeps the completeness delta under 5% on SmolLM2-135M and Gemma-3-270M (docs/attribution.md)."""


def saliency(model, input, target: TargetSpec = None, *, abs: bool = True, position: int = -1,
             include_bos: bool = False) -> Attribution:
    """The gradient of the target with respect to each token's embedding (Simonyan et al. 2014): ``|grad|``
    (``abs=True``, Captum's default) or the signed gradient. ``dim_scores (n_positions, d_model)``; ``scores``
    their sum over ``d_model``."""
    runner = prepare(model, input, target, position)
    positions = _positions(runner, include_bos)
    value, grad = next(runner.value_and_grad(runner.embeds))
    g = grad[0, positions].float()
    g = g.abs() if abs else g
    return build(runner.model, runner.tokens, runner.target, "saliency", positions, g.sum(-1), dim_scores=g.cpu(), value=float(value[0]),
                 params={"abs": abs})


def grad_x_input(model, input, target: TargetSpec = None, *, position: int = -1,
                 include_bos: bool = False) -> Attribution:
    """Gradient × input (Shrikumar et al. 2016): ``grad · x`` per embedding dimension, ``dim_scores
    (n_positions, d_model)``; ``scores`` their sum (the first-order Taylor term of removing the token to zero)."""
    runner = prepare(model, input, target, position)
    positions = _positions(runner, include_bos)
    value, grad = next(runner.value_and_grad(runner.embeds))
    a = (grad[0, positions].float() * runner.embeds[0, positions].float())
    return build(runner.model, runner.tokens, runner.target, "grad_x_input", positions, a.sum(-1), dim_scores=a.cpu(), value=float(value[0]))


def integrated_gradients(model, input, target: TargetSpec = None, *, baseline: BaselineSpec = "auto",
                         n_steps: int = IG_STEPS, method: Integration = "gausslegendre", batch_size: int = 16,
                         position: int = -1, include_bos: bool = False) -> Attribution:
    """Integrated gradients from ``baseline`` to the prompt's embeddings; ``delta`` reports completeness.

    ``n_steps`` points of the ``method`` quadrature, evaluated ``batch_size`` at a time. Non-attributed positions
    (a leading BOS) stay at their real embedding along the whole path."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise InputError(f"n_steps must be a positive int (points on the path), got {type_name(n_steps)}.")
    if method not in INTEGRATIONS:
        raise InputError(f"unknown integration method {method!r}; choose one of {', '.join(INTEGRATIONS)}.")
    runner = prepare(model, input, target, position, batch_size)
    s = setup(runner, baseline, include_bos)
    x, x0 = runner.embeds, s.baseline
    alphas, weights = quadrature(method, n_steps)
    diff = (x - x0).float()
    total = torch.zeros(diff.shape[1:], dtype=torch.float64, device=x.device)
    for start in range(0, n_steps, batch_size):
        a = alphas[start:start + batch_size].to(x.device, torch.float32)
        w = weights[start:start + batch_size].to(x.device)
        path = (x0.float() + a[:, None, None] * diff).to(x.dtype)
        _, grads = next(runner.value_and_grad(path))  # one batch: path has at most batch_size rows
        total += (w[:, None, None] * grads.double()).sum(0)
    attr = (diff[0].double() * total)[s.positions].float()
    f = runner.values(torch.cat([x, x0]))
    value, base_value = float(f[0]), float(f[1])
    scores = attr.sum(-1)
    delta = completeness_delta(float(scores.double().sum()), value, base_value)
    return build(runner.model, runner.tokens, runner.target, "ig", s.positions, scores, dim_scores=attr.cpu(), value=value, baseline_value=base_value,
                 delta=delta, params={"baseline": s.baseline_name, "n_steps": n_steps, "method": method,
                                      "batch_size": batch_size})


def quadrature(method: Integration, n_steps: int) -> tuple[Tensor, Tensor]:
    """Points ``α`` in [0, 1] and weights (summing to 1) of an ``n_steps``-point rule for ∫₀¹, float64."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)
    i = torch.arange(n_steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise InputError("the trapezoid rule needs n_steps >= 2 (both ends of the path).")
        w = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n_steps - 1)
        return i / (n_steps - 1), w
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (i + shift) / n_steps, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)


def _positions(runner, include_bos: bool) -> list[int]:
    from .baseline import attributed_positions

    return attributed_positions(runner.model, runner.tokens, include_bos)
