"""Line charts: a few series over one x axis, as SVG (faithfulness against circuit size, a metric against a
steering coefficient). The axes' ticks are chosen here ("nice" steps of 1, 2 or 5 × 10^k, or powers of ten on a
log axis) so the browser only maps numbers to pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, InputTypeError, type_name
from .data import as_array, as_labels, rounded
from .view import Figure, View


def line_chart(x, ys, labels=None, title: str | None = None, x_label: str | None = None,
               y_label: str | None = None, log_x: bool = False) -> View:
    """Lines of ``ys`` over ``x``.

    ``x``: ``[n]`` numbers (in any order: the points are drawn sorted by x). ``ys``: ``[n]`` (one line) or ``[series, n]`` (a tensor, an array or a list of
    equally long sequences), one label each in ``labels`` (default ``series 0, ...``; a legend shows them when
    there are several). NaN leaves a gap. ``log_x``: a logarithmic x axis (every x must be > 0). Hovering the plot
    marks the nearest x and lists every series' value there.
    """
    xs = as_array(x, "x", (1,))
    y = as_array(ys, "ys", (1, 2))
    single = y.ndim == 1
    if single:
        y = y[None]
    if y.shape[1] != xs.shape[0]:
        raise InputError(f"ys has {y.shape[1]} points per series but x has {xs.shape[0]}; give one y per x "
                         "(ys is [n] or [series, n]).")
    if not np.isfinite(xs).all():
        raise InputError("x holds NaN or infinity; every x must be a finite number.")
    order = np.argsort(xs, kind="stable")  # a line runs left to right whatever order the points came in
    xs, y = xs[order], y[:, order]
    if not isinstance(log_x, bool):
        raise InputTypeError(f"log_x must be True or False; got {type_name(log_x)}.")
    if log_x and (xs <= 0).any():
        raise InputError(f"log_x needs every x > 0; the smallest is {xs.min():g}. Drop it or use a linear axis.")
    if single and isinstance(labels, str):
        labels = [labels]
    names = as_labels(labels, y.shape[0], "labels", "series {}")
    finite = y[np.isfinite(y)]
    if finite.size == 0:
        raise InputError("ys holds no finite value; there is nothing to draw.")
    x_lo, x_hi = float(xs.min()), float(xs.max())
    x_ticks = log_ticks(x_lo, x_hi) if log_x else nice_ticks(x_lo, x_hi)
    y_ticks = nice_ticks(float(finite.min()), float(finite.max()))
    x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    data = {
        "kind": "line_chart", "title": title, "x_label": x_label, "y_label": y_label, "log_x": log_x,
        "x": rounded(xs), "series": [{"label": name, "y": rounded(row)} for name, row in zip(names, y)],
        "x_ticks": x_ticks, "y_ticks": y_ticks,
        "x_range": [x_lo, x_hi], "y_range": [y_ticks[0], y_ticks[-1]],
    }
    return View([Figure("line_chart", data, f"line_chart {y.shape[0]} series × {xs.shape[0]} points")])


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round ticks (steps of 1, 2 or 5 × 10^k) covering ``[lo, hi]``."""
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if lo == 0 else (lo - abs(lo) / 2, hi + abs(hi) / 2)
    raw = (hi - lo) / max(n - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-6), math.ceil(hi / step - 1e-6)  # float noise is not a new tick
    return [float(f"{k * step:.12g}") for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering ``[lo, hi]`` (with 2 and 5 between them when the range spans under two decades)."""
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if b == a:
        b += 1
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [float(f"{m * 10 ** k:.12g}") for k in range(a, b + 1) for m in mults]
    inside = [t for t in ticks if lo <= t <= hi]
    return inside if len(inside) >= 2 else [t for t in ticks if t <= 10 ** b]
