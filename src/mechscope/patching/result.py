"""Labelled results: a tensor of scores with a name and labels for each axis.

Every patching-style sweep (activation patching, ablation knock-outs, attribution patching, causal tracing) returns
a ``PatchResult``: ``values`` with axes named in ``dims`` (``("layer", "pos")``, ``("layer", "head")``,
``("layer", "head", "pos")``, ``("layer", "neuron")``, ...) and ``labels[dim]`` a string per index (token strings for
``pos``), so a table, a heatmap or a JSON file can be made from it without knowing which sweep made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InputError


@dataclass
class PatchResult:
    values: Tensor                                   # [*dims], float
    dims: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    metric: str = "metric"                           # what a value is ("normalised logit difference", ...)
    title: str | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    """Reference values of the metric, e.g. ``{"clean": 5.3, "corrupted": -0.4}`` for activation patching."""

    def __post_init__(self):
        if self.values.dim() != len(self.dims):
            raise InputError(f"values has {self.values.dim()} axes but dims names {len(self.dims)} "
                             f"({', '.join(self.dims)}); give one name per axis.")
        for i, d in enumerate(self.dims):
            if d not in self.labels:
                self.labels[d] = [str(j) for j in range(self.values.shape[i])]
            elif len(self.labels[d]) != self.values.shape[i]:
                raise InputError(f"labels[{d!r}] has {len(self.labels[d])} entries for an axis of size "
                                 f"{self.values.shape[i]}.")

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def label(self, index: tuple[int, ...]) -> str:
        """``"L3 H2"``-style label of one cell."""
        return " ".join(f"{d}={self.labels[d][i]}" if d == "pos" else f"{d[0].upper()}{self.labels[d][i]}"
                        for d, i in zip(self.dims, index))

    def top(self, k: int = 10, *, by_abs: bool = True) -> list[tuple[str, float]]:
        """The ``k`` largest cells (by absolute value unless ``by_abs=False``) as ``(label, value)``."""
        flat = self.values.detach().float().flatten()
        order = (flat.abs() if by_abs else flat).nan_to_num(float("-inf")).argsort(descending=True)[:k]
        return [(self.label(tuple(int(i) for i in torch.unravel_index(j, self.values.shape))), float(flat[j]))
                for j in order]

    def to_dict(self) -> dict:
        return {"dims": list(self.dims), "labels": self.labels, "metric": self.metric, "title": self.title,
                "baselines": self.baselines, "values": self.values.detach().float().tolist()}

    def view(self, title: str | None = None):
        """A heatmap: rows are the first axis (or the first two, flattened), columns the last."""
        from .. import views

        v = self.values.detach().float()
        if v.dim() == 1:
            v, rows = v[None], [self.metric]
        elif v.dim() == 2:
            rows = self.labels[self.dims[0]]
        elif v.dim() == 3:
            a, b = self.dims[:2]
            rows = [f"{a[0].upper()}{x} {b[0].upper()}{y}" for x in self.labels[a] for y in self.labels[b]]
            v = v.reshape(-1, v.shape[-1])
        else:
            raise InputError(f"a {v.dim()}-axis result has no heatmap; index it down to at most 3 axes first.")
        return views.heatmap(v.numpy(), rows, self.labels[self.dims[-1]], title=title or self.title or self.metric)
