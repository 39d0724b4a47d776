"""Ready-made patching tasks: clean and corrupted token ids of equal shape with a metric — induction on repeated
random tokens (Olsson et al.), IOI (Wang et al.) and a custom prompt pair. Used by ``mechscope circuit``, the demo and
the findings scripts; any patching function takes a task's ``clean``, ``corrupted`` and ``metric``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Task:
    """Clean and corrupted token ids ``[batch, pos]`` of equal shape, the metric, and a line saying what it is."""

    clean: Tensor
    corrupted: Tensor
    metric: Callable[[Tensor], Tensor]
    description: str


def induction_task(model, n_seqs: int = 8, seg_len: int = 20, seed: int = 0) -> Task:
    """Clean: BOS + a random segment shown twice (Olsson et al.); corrupted: BOS + other random tokens + the same
    second half, so nothing repeats and the second half (the induction heads' queries) is unchanged: what differs
    is what earlier positions hold, which the induction circuit reads through keys and values. Metric: the mean
    logit of the token that repeats, at every second-half position whose next token induction can predict (the
    same positions and tokens in both runs)."""
    from ..detectors import repeated_tokens

    clean = repeated_tokens(model, n_seqs, seg_len, seed=seed)
    other = repeated_tokens(model, n_seqs, seg_len, seed=seed + 1)
    corrupted = torch.cat([clean[:, :1], other[:, 1:1 + seg_len], clean[:, 1 + seg_len:]], dim=1)
    pos = torch.arange(seg_len + 1, 2 * seg_len)        # second-half positions whose next token is a repeat
    targets = clean[:, pos + 1]                         # [batch, seg_len]

    def metric(logits: Tensor) -> Tensor:
        lg = logits[:, pos]                              # [batch, seg_len, vocab]
        return lg.gather(-1, targets[..., None].to(lg.device))[..., 0].float().mean()

    return Task(clean, corrupted, metric,
                f"induction: {n_seqs} sequences of BOS + {seg_len} random tokens twice vs other tokens then the same "
                "second half; metric = mean logit of the repeated token")


def ioi_task(model, n: int = 16, seed: int = 0) -> Task:
    """``n`` IOI prompts (Wang et al.'s templates, ``datasets.ioi_dataset``, ABBA and BABA) with their ABC
    corruptions; metric: the mean logit difference IO − S at each prompt's last token. Prompts of different lengths
    are right-padded and run without a mask: in a causal model no real position sees the padding after it, and
    clean and corrupted prompts align token for token."""
    from ..datasets.ioi import ioi_dataset

    ds = ioi_dataset(model, n=n, seed=seed)
    return Task(ds.tokens, ds.corrupted_tokens, ds.metric(),
                f"IOI: {len(ds)} prompts (e.g. '{ds.texts[0]}') vs their ABC corruptions; "
                "metric = mean logit difference IO − S")


def custom_task(model, clean: str, corrupt: str, answer: str, wrong: str | None) -> Task:
    """One prompt pair; metric: logit(answer) − logit(wrong) (or just logit(answer)) at the last position."""
    from .eap import as_pair

    a = model.to_single_token(answer)
    w = model.to_single_token(wrong) if wrong else None
    c, r = as_pair(model, clean, corrupt)

    def metric(logits: Tensor) -> Tensor:
        last = logits[:, -1].float()
        return (last[:, a] - (last[:, w] if w is not None else 0)).mean()

    what = f"logit({answer!r})" + (f" − logit({wrong!r})" if wrong else "")
    return Task(c, r, metric, f"custom: {clean!r} vs {corrupt!r}; metric = {what} at the last token")
