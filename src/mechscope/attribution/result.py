"""``Attribution``: one result object for every method, keyed by token and position."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor

from ..errors import InputError, type_name
from ..tokens import token_strings


class TokenScore(NamedTuple):
    position: int
    token: str
    score: float


@dataclass
class Attribution:
    """How much each token of one prompt contributes to a target, by one method.

    Scores are in the target's units (logits, nats, ...) for the additive methods: for integrated gradients and
    Shapley values (sampled or KernelSHAP) they sum to ``value - baseline_value`` (up to ``delta``); saliency
    scores are gradient magnitudes, rollout scores attention mass. For a view, ``tokens`` and ``scores`` are what
    a token colour map needs."""

    method: str
    """``saliency``, ``grad_x_input``, ``ig``, ``occlusion``, ``shapley``, ``kernel_shap``, ``lime`` or ``rollout``."""
    target: str
    """What was explained, e.g. ``"logit(' Paris') at position 6"``."""
    tokens: list[str]
    """The attributed tokens, one per entry of ``positions``."""
    positions: list[int]
    """Their positions in the prompt (a leading BOS is not attributed unless ``include_bos=True``)."""
    scores: Tensor
    """``(n_positions,)`` float32: one score per attributed token; for the embedding-space methods the sum of
    ``dim_scores`` over ``d_model``."""
    dim_scores: Tensor | None = None
    """``(n_positions, d_model)``: per embedding dimension, where the method has them (saliency, gradient×input,
    integrated gradients); None otherwise."""
    prompt_tokens: list[str] = field(default_factory=list)
    """Every token of the prompt, BOS included: ``positions`` index into it."""
    value: float | None = None
    """The target on the real input, f(x)."""
    baseline_value: float | None = None
    """The target with every attributed token at the baseline, f(x') (the methods that use a baseline)."""
    delta: float | None = None
    """Completeness gap ``|sum(scores) - (f(x) - f(x'))| / |f(x) - f(x')|``: integrated gradients' error from
    its finite number of steps (and Shapley sampling's float rounding; exact in arithmetic)."""
    params: dict = field(default_factory=dict)
    """The method's settings (baseline, n_steps, window, n_samples, seed, ...), as run."""

    def top(self, k: int = 10, *, by_abs: bool = True) -> list[TokenScore]:
        """The ``k`` tokens with the largest scores (by magnitude unless ``by_abs=False``)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"top takes a non-negative int k (how many tokens), got {type_name(k)}.")
        order = (self.scores.abs() if by_abs else self.scores).argsort(descending=True)[:k]
        return [TokenScore(self.positions[i], self.tokens[i], float(self.scores[i])) for i in order.tolist()]

    def to_dict(self) -> dict:
        """Plain JSON-ready data: ``scores`` keyed ``"{position}:{token}"`` and the same as a list of records."""
        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

        return {
            "method": self.method,
            "target": self.target,
            "prompt_tokens": self.prompt_tokens,
            "scores": {f"{p}:{t}": float(s) for p, t, s in zip(self.positions, self.tokens, self.scores.tolist())},
            "tokens": [{"position": p, "token": t, "score": float(s)}
                       for p, t, s in zip(self.positions, self.tokens, self.scores.tolist())],
            "value": num(self.value),
            "baseline_value": num(self.baseline_value),
            "delta": num(self.delta),
            "params": {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                       for k, v in self.params.items()},
        }

    def view(self, title: str | None = None):
        """The scores as a token colour map (:func:`mechscope.views.token_colors`); hover shows each value."""
        from ..views import token_colors

        delta = f", completeness delta {100 * self.delta:.2f}%" if self.delta is not None else ""
        return token_colors(self.tokens, self.scores, labels=[self.method],
                            title=title or f"{self.method}: {self.target}{delta}")

    def _repr_html_(self) -> str:
        return self.view()._repr_html_()

    def __repr__(self) -> str:
        best = ", ".join(f"{t!r}@{p} {s:+.3g}" for p, t, s in self.top(5))
        extra = f", delta {self.delta:.2%}" if self.delta is not None else ""
        return f"Attribution({self.method}, {self.target}: {best}{extra})"


def build(model, tokens: Tensor, target, method: str, positions: list[int], scores: Tensor, **fields) -> Attribution:
    """An ``Attribution`` for the prompt ``tokens (1, pos)`` and bound ``target``; ``scores (n_positions,)``."""
    prompt = token_strings(model.tokenizer, tokens[0])
    return Attribution(method=method, target=target.describe(), tokens=[prompt[p] for p in positions],
                       positions=list(positions), scores=scores.detach().float().cpu(), prompt_tokens=prompt,
                       **fields)


def completeness_delta(total: float, value: float, baseline_value: float) -> float:
    """``|total - (value - baseline_value)| / |value - baseline_value|`` (inf when the difference is zero and
    the total is not)."""
    diff = value - baseline_value
    gap = abs(total - diff)
    if diff == 0:
        return 0.0 if gap == 0 else math.inf
    return gap / abs(diff)
