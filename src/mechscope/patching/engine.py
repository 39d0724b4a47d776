"""The intervention engine: one input, many variants of the forward pass, stacked along the batch.

A *variant* is a list of ``(point name, fn(act, hook))`` hooks, exactly what ``model.run_with_hooks`` takes.
``run_variants`` returns, for each variant, ``metric(logits)`` of the run with that variant's hooks. Its meaning is
defined by the plain loop (``method="loop"``): one ``run_with_hooks`` per variant. The batched path must agree
with it to float tolerance.

Hook functions see only their own variant's rows: ``act`` has the input's batch size ``B`` as its first axis,
whatever the engine stacks behind the scenes, so a function written for ``run_with_hooks`` works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..hooks import HookFn

Variant = Sequence[tuple[str, HookFn]]


def run_variants(model, tokens: Tensor, variants: Sequence[Variant], metric: Callable[[Tensor], object] | None = None,
                 *, attention_mask: Tensor | None = None, method: str = "loop", **options) -> list:
    """Run ``tokens [B, pos]`` once per variant; return ``[metric(logits [B, pos, vocab]) for each variant]``
    (the logits themselves when ``metric`` is None)."""
    out = []
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    with torch.no_grad():
        for variant in variants:
            logits = model.run_with_hooks(tokens, fwd_hooks=list(variant), **kwargs)
            out.append(logits if metric is None else metric(logits))
    return out
