"""What an attribution explains: a scalar per forward row, computed from the model's logits.

Every method evaluates the model on a batch of (perturbed) embeddings of one prompt, ``n`` rows at a time, and
needs one number per row: ``Target.__call__(logits, tokens, offset) -> (n,)``. ``logits`` is
``(n, kept_pos, d_vocab)``: the model is asked only for the logits from ``first_position`` on (HF's
``logits_to_keep``), so a target at the last position of a 262k-token vocabulary costs one row, not the whole
prompt; ``offset`` is the position of ``logits[:, 0]`` in the prompt.

Targets are given as data and bound to a model and prompt with ``as_target``: a token (``" Paris"`` or an id) at
a position (default the last), a logit difference (``(" Mary", " John")``), the LM loss (``Loss()``), or any
function of the logits (``Metric(fn)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name


@dataclass(frozen=True)
class Target:
    """Base class. ``first_position``: the first prompt position whose logits the target reads (set by ``bind``)."""

    first_position: int = field(default=0, kw_only=True)
    label: str = field(default="", kw_only=True)
    """How the bound target names its tokens (``' Paris'``), for descriptions."""

    def bind(self, model, tokens: Tensor) -> Target:
        """This target with token strings resolved to ids and positions made absolute for ``tokens (1, pos)``."""
        return self

    def __call__(self, logits: Tensor, tokens: Tensor, offset: int) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _token_id(model, token: int | str, what: str) -> int:
    if isinstance(token, bool) or not isinstance(token, (int, str)):
        raise InputTypeError(f"{what} must be a token string (' Paris') or a token id (int), got {type_name(token)}.")
    if isinstance(token, str):
        return model.to_single_token(token)
    if not 0 <= token < model.cfg.d_vocab:
        raise InputError(f"{what} is token id {token}, outside the model's vocabulary of {model.cfg.d_vocab} ids "
                         f"(0 to {model.cfg.d_vocab - 1}); pass an id from this model's tokenizer.")
    return token


def _show(model, token: int) -> str:
    """A token id as its string (``' Paris'``), or ``#id`` for a model without a tokenizer."""
    return repr(model.to_string([token])) if model.tokenizer is not None else f"#{token}"


def resolve_position(position, n_pos: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise InputTypeError(f"a target position must be an int (negative counts from the end), got "
                             f"{type_name(position)}.")
    p = position + n_pos if position < 0 else position
    if not 0 <= p < n_pos:
        raise InputError(f"target position {position} is outside the prompt's {n_pos} tokens; pass 0 to {n_pos - 1} "
                         f"or -1 to -{n_pos} (-1, the default, is the last token's prediction).")
    return p


@dataclass(frozen=True)
class TokenLogit(Target):
    """The logit (or, with ``log_prob=True``, the log-probability) of ``token`` predicted at ``position``."""

    token: int | str = 0
    position: int = -1
    log_prob: bool = False

    def bind(self, model, tokens):
        p = resolve_position(self.position, tokens.shape[-1])
        token = _token_id(model, self.token, "the target token")
        return replace(self, token=token, position=p, first_position=p, label=_show(model, token))

    def __call__(self, logits, tokens, offset):
        row = logits[:, self.position - offset].float()
        if self.log_prob:
            row = row.log_softmax(-1)
        return row[:, self.token]

    def describe(self):
        return f"{'log p' if self.log_prob else 'logit'}({self.label or repr(self.token)}) at position {self.position}"


@dataclass(frozen=True)
class LogitDiff(Target):
    """``logit(token) - logit(other)`` at ``position``: e.g. ``(" Mary", " John")`` for IOI."""

    token: int | str = 0
    other: int | str = 0
    position: int = -1

    def bind(self, model, tokens):
        p = resolve_position(self.position, tokens.shape[-1])
        token = _token_id(model, self.token, "the target token")
        other = _token_id(model, self.other, "the token subtracted from the target")
        return replace(self, token=token, other=other, position=p, first_position=p,
                       label=f"{_show(model, token)} - {_show(model, other)}")

    def __call__(self, logits, tokens, offset):
        row = logits[:, self.position - offset].float()
        return row[:, self.token] - row[:, self.other]

    def describe(self):
        a, b = self.label.split(" - ", 1) if self.label else (repr(self.token), repr(self.other))
        return f"logit({a}) - logit({b}) at position {self.position}"


@dataclass(frozen=True)
class Loss(Target):
    """The LM loss of the prompt (mean next-token cross-entropy over its positions), per row."""

    def bind(self, model, tokens):
        if tokens.shape[-1] < 2:
            raise InputError("the LM-loss target needs at least two tokens (the loss predicts each next token); "
                             "pass a longer prompt or target a token.")
        return self

    def __call__(self, logits, tokens, offset):
        logp = logits[:, :-1].float().log_softmax(-1)
        nll = -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]
        return nll.mean(-1)

    def describe(self):
        return "LM loss"


@dataclass(frozen=True)
class Metric(Target):
    """Any function of the logits: ``fn(logits (batch, pos, d_vocab)) -> (batch,)``, one value per row (all rows hold
    the same prompt, with different embeddings). It must be differentiable for the gradient methods."""

    fn: Callable[[Tensor], Tensor] | None = None
    name: str = ""

    def bind(self, model, tokens):
        if not callable(self.fn):
            raise InputTypeError(f"Metric takes a function logits -> (batch,) values, got {type_name(self.fn)}.")
        return self

    def __call__(self, logits, tokens, offset):
        out = self.fn(logits)
        if not isinstance(out, Tensor):
            raise InputTypeError(f"the metric {self.describe()} returned {type_name(out)}; return a tensor with one "
                                 "value per row of the logits, shape (batch,).")
        if out.shape != (logits.shape[0],):
            raise InputError(f"the metric {self.describe()} returned shape {tuple(out.shape)} for logits of batch "
                             f"{logits.shape[0]}; return one value per row, shape (batch,) (e.g. "
                             "logits[:, -1, token_id], not a .sum() over the batch).")
        return out.float()

    def describe(self):
        return self.name or getattr(self.fn, "__name__", "metric")


TargetSpec = Target | int | str | tuple | Callable | None
"""What ``as_target`` accepts: a ``Target``; a token string or id (its logit at ``position``); a pair of tokens (their
logit difference); a function of the logits (a ``Metric``); None (the token the model predicts at ``position``)."""


def as_target(model, target: TargetSpec, tokens: Tensor, position: int = -1) -> Target:
    """``target`` as a bound ``Target`` for ``tokens (1, pos)``."""
    if isinstance(target, Target):
        return target.bind(model, tokens)
    if target is None:
        p = resolve_position(position, tokens.shape[-1])
        with torch.no_grad():
            top = int(model(tokens)[0, p].argmax())
        return TokenLogit(token=top, position=p).bind(model, tokens)
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        return TokenLogit(token=target, position=position).bind(model, tokens)
    if isinstance(target, tuple) and len(target) == 2:
        return LogitDiff(token=target[0], other=target[1], position=position).bind(model, tokens)
    if callable(target):
        return Metric(fn=target).bind(model, tokens)
    raise InputTypeError(
        f"target must be a token (' Paris' or an id), a pair of tokens (their logit difference), Loss(), a function "
        f"of the logits, or None (the predicted token), got {type_name(target)}."
    )
