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


def metric_values(values) -> Tensor:
    """The metric of each run as a float32 CPU tensor ``[n]``; a sentence (not a torch error) when the metric
    returned something other than one number per run (e.g. one value per prompt)."""
    out = []
    for v in values:
        t = torch.as_tensor(v)
        if t.numel() != 1:
            raise InputError(f"metric must return one number per run (a 0-d tensor), got shape {tuple(t.shape)}; "
                             "reduce it over the batch, e.g. with .mean().")
        out.append(t.detach().float().cpu().reshape(()))
    return torch.stack(out) if out else torch.zeros(0)


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

    def view(self, title: str | None = None, **options):
        """The result as heatmaps with token labels (a ``View``; ``.save(path)`` writes it as HTML).

        A ``pos`` axis always becomes the columns, labelled with the tokens. Two axes are one heatmap (layer ×
        position, layer × head); a small first axis (≤ 5: TransformerLens's ``[3, layer, pos]`` of
        ``get_act_patch_block_every`` or ``[5, layer, head]``, causal tracing's resid / MLP / attention) becomes
        panels side by side on one colour scale; otherwise the first two axes are flattened into rows
        (``L3 H2`` × position). The metric's name is in the title (with the baselines, the clean and corrupted
        runs' metric, when the result has them) and in the hover. ``options`` go to
        :func:`mechscope.views.heatmaps` (``highlight_cols=[...]`` marks the subject's tokens, ``center=``, ...).
        """
        from .. import views

        v, dims = self.values.detach().float().cpu(), list(self.dims)
        if "pos" in dims[:-1]:  # positions read left to right: make them the columns
            k = dims.index("pos")
            v, dims = v.movedim(k, -1), dims[:k] + dims[k + 1:] + ["pos"]

        def tag(dim: str, label: str) -> str:  # "L3", "H2" for numbered axes; names ("attn_out") as they are
            return f"{dim[0].upper()}{label}" if label.lstrip("-").isdigit() else label

        def rows_of(ds: list[str]) -> list[str]:
            out = [""]
            for d in ds:
                out = [f"{r} {tag(d, x)}".strip() for r in out for x in self.labels[d]]
            return out

        name = title or self.title or "patching"
        heading = name if self.metric.lower() in name.lower() else f"{name} ({self.metric})"
        baselines = getattr(self, "baselines", None) or {}  # the unpatched runs' metric: what a raw value means
        if baselines:
            heading += " · " + ", ".join(f"{k} {float(x):.4g}" for k, x in baselines.items())
        cols, last = self.labels[dims[-1]], dims[-1]
        common = {"tokens": last == "pos", "value_name": self.metric, **options}
        if not common["tokens"]:
            cols = [tag(last, c) for c in cols]
        if v.dim() == 1:
            return views.heatmap(v[None].numpy(), [self.metric], cols, title=heading, **common)
        if v.dim() == 2:
            return views.heatmap(v.numpy(), rows_of(dims[:1]), cols, title=heading, **common)
        if v.dim() in (3, 4) and v.shape[0] <= 5:
            grids = v.reshape(v.shape[0], -1, v.shape[-1]).numpy()
            common.setdefault("shared_scale", True)  # one metric, one scale: panels compare at a glance
            return views.heatmaps(grids, rows_of(dims[1:-1]), cols, [tag(dims[0], x) for x in self.labels[dims[0]]],
                                  title=heading, **common)
        if v.dim() == 3:
            return views.heatmap(v.reshape(-1, v.shape[-1]).numpy(), rows_of(dims[:2]), cols, title=heading, **common)
        raise InputError(f"a {v.dim()}-axis result ({', '.join(self.dims)}) has no heatmap; index it down to at most "
                         "3 axes (or 4 with a first axis of at most 5, drawn as panels) first.")
