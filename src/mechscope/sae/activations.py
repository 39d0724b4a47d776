"""Where training batches of activations come from. Every source is an :class:`ActivationSource`: it yields
``{hook_name: (batch_size, d) float tensor}`` batches and can report and restore its position exactly, so a
resumed training run sees the batches an unbroken run would.

:class:`TensorSource` serves activations already in memory (a tensor ``(n, d)``, or one per hook name): each
epoch is a fresh permutation drawn from ``(seed, epoch)``; it never ends (the trainer decides how many tokens).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InputError


@runtime_checkable
class ActivationSource(Protocol):
    """The trainer's view of its data."""

    hooks: list[str]
    """Hook names, in a fixed order; every batch has exactly these keys."""
    d: dict[str, int]
    """Width of each hook's activations."""
    batch_size: int
    """Rows (tokens) per batch."""

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Endless batches ``{hook: (batch_size, d[hook])}`` (float32 unless stated, on the source's device)."""
        ...

    def state_dict(self) -> dict:
        """JSON-serialisable position: after ``load_state_dict`` of it, iteration continues with the batch that
        would have followed the last one yielded before ``state_dict()`` was called."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


class TensorSource:
    """Batches of rows of in-memory activations ``(n, d)`` (one tensor, or a mapping ``{hook: (n, d_hook)}`` with
    the same ``n``, e.g. a transcoder's input and output), shuffled each epoch with ``(seed, epoch)``."""

    def __init__(self, data: Tensor | Mapping[str, Tensor], *, batch_size: int, seed: int = 0, hook: str = "x",
                 device: str | torch.device | None = None, shuffle: bool = True) -> None:
        tensors = {hook: data} if isinstance(data, Tensor) else dict(data)
        if not tensors or not all(isinstance(t, Tensor) and t.ndim == 2 for t in tensors.values()):
            raise InputError("activations must be a 2-d tensor (n, d) or a mapping of hook names to such tensors.")
        ns = {t.shape[0] for t in tensors.values()}
        if len(ns) != 1:
            raise InputError(f"all activation tensors need the same number of rows; got {sorted(ns)}.")
        self.n = ns.pop()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= self.n:
            raise InputError(f"batch_size must be an int from 1 to the number of rows ({self.n}), got {batch_size!r}.")
        self.tensors = tensors
        self.hooks = list(tensors)
        self.d = {k: t.shape[1] for k, t in tensors.items()}
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.shuffle = shuffle
        self.epoch = 0
        self.offset = 0
        self._perm: Tensor | None = None

    def _order(self) -> Tensor:
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
        return self._perm

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            if self.offset + self.batch_size > self.n:  # drop the ragged tail: every batch is full
                self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
            idx = self._order()[self.offset:self.offset + self.batch_size]
            self.offset += self.batch_size
            yield {k: t[idx].to(self.device, torch.float32) if self.device is not None else t[idx].float()
                   for k, t in self.tensors.items()}

    def state_dict(self) -> dict:
        return {"kind": "tensor", "epoch": self.epoch, "offset": self.offset, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "tensor" or state.get("n") != self.n or state.get("seed") != self.seed:
            raise InputError(f"this checkpoint's data position ({state}) is not from this data (n={self.n}, "
                             f"seed={self.seed}); resume with the same activations and seed.")
        self.epoch, self.offset, self._perm = int(state["epoch"]), int(state["offset"]), None
