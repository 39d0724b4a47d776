"""Labelled heatmaps: one grid (``heatmap``) or several side by side on the same rows and columns (``heatmaps``).

Patching sweeps are read as grids: layer × position (columns are the prompt's tokens), layer × head, or
(layer, head) × position flattened into rows. Causal tracing compares three such grids (residual stream, MLP,
attention) and TransformerLens's ``get_act_patch_block_every`` stacks them as ``[3, layer, pos]``, so
``heatmaps`` draws panels that share their labels, hover the same cell in all of them at once, and can share one
colour scale (the same metric in the same units) or keep one each.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, InputTypeError, type_name
from .data import as_array, as_labels, color_scale, display_token, rounded, scale_dict
from .view import Figure, View


def heatmap(values, row_labels, col_labels, title: str | None = None, center: float | None = None, *,
            tokens: bool | str = False, highlight_rows=None, highlight_cols=None, value_name: str = "value") -> View:
    """A labelled heatmap of ``values [rows, cols]``: layer × head scores, layer × position KL, and so on.

    Diverging around ``center`` when it is given or any value is negative, else sequential from 0. Hover a cell
    for its row and column labels and value; NaN cells are blank. Small grids print their values in the cells.
    ``tokens=True`` (or ``"cols"``): the columns are positions and ``col_labels`` their token strings (shown with
    their index, whitespace visible as in :func:`~.data.display_token`); ``tokens="rows"``: the rows are, as in
    Meng et al.'s causal-tracing figures (tokens down, layers across). ``highlight_rows`` / ``highlight_cols``: indices to
    mark (the subject's tokens, the answer position). ``value_name`` names the value in the hover.
    """
    v = as_array(values, "values", (2,))
    data = _grid_data(v.shape, row_labels, col_labels, title, tokens, highlight_rows, highlight_cols, value_name)
    data.update(kind="heatmap", values=rounded(v), scale=scale_dict(color_scale(v, center)))
    return View([Figure("heatmap", data, f"heatmap {v.shape[0]} × {v.shape[1]}")])


def heatmaps(panels, row_labels, col_labels, titles=None, shared_scale: bool = False, title: str | None = None, *,
             center: float | None = None, tokens: bool | str = False, highlight_rows=None, highlight_cols=None,
             value_name: str = "value") -> View:
    """Several heatmaps side by side on the same rows and columns.

    ``panels``: ``[panel, rows, cols]`` (a tensor, an array, or a list of equally shaped 2-D grids), e.g. causal
    tracing's residual / MLP / attention restoration ``[3, layer, pos]`` or TransformerLens's
    ``get_act_patch_attn_head_all_pos_every`` ``[5, layer, head]``. ``titles``: one per panel (default
    ``panel 0, ...``). Each panel has its own colour scale and bar unless ``shared_scale`` (one scale, one bar:
    use it when the panels hold the same metric). Hovering a cell outlines the same cell in every panel and lists
    every panel's value there. The other arguments are :func:`heatmap`'s. Panels wrap onto the next line when
    they do not fit side by side; each scrolls on its own when it is larger than the page.
    """
    if isinstance(panels, (list, tuple)) and panels and not isinstance(panels[0], (int, float)):
        grids = [as_array(p, f"panels[{i}]", (2,)) for i, p in enumerate(panels)]
        shapes = {g.shape for g in grids}
        if len(shapes) > 1:
            raise InputError(f"every panel must have the same shape (they share row and column labels); got "
                             f"{', '.join(str(g.shape) for g in grids)}. Pad or slice them to one shape.")
        v = np.stack(grids)
    else:
        v = as_array(panels, "panels", (3,))
    n = v.shape[0]
    names = as_labels(titles, n, "titles", "panel {}")
    data = _grid_data(v.shape[1:], row_labels, col_labels, title, tokens, highlight_rows, highlight_cols,
                      value_name)
    if not isinstance(shared_scale, bool):
        raise InputTypeError(f"shared_scale must be True or False; got {type_name(shared_scale)}.")
    shared = scale_dict(color_scale(v, center)) if shared_scale else None
    data.update(kind="heatmaps", shared_scale=shared_scale, panels=[
        {"title": name, "values": rounded(p), "scale": shared or scale_dict(color_scale(p, center))}
        for name, p in zip(names, v)])
    return View([Figure("heatmaps", data, f"heatmaps {n} × {v.shape[1]} × {v.shape[2]}")])


def _grid_data(shape: tuple[int, ...], row_labels, col_labels, title, tokens, highlight_rows, highlight_cols,
               value_name: str) -> dict:
    """What every heatmap embeds besides its values: labels, which axis holds tokens, marked indices, names."""
    n_rows, n_cols = shape
    if tokens is True:
        tokens = "cols"
    if tokens not in (False, "cols", "rows"):
        raise InputTypeError(f"tokens must be False, True (the columns are token positions), 'cols' or 'rows'; "
                             f"got {tokens!r}.")
    rows = (_token_labels(row_labels, n_rows, "row_labels") if tokens == "rows"
            else as_labels(row_labels, n_rows, "row_labels", "{}"))
    cols = (_token_labels(col_labels, n_cols, "col_labels") if tokens == "cols"
            else as_labels(col_labels, n_cols, "col_labels", "{}"))
    if not isinstance(value_name, str):
        raise InputTypeError(f"value_name must be a string (what a value is); got {type_name(value_name)}.")
    return {"title": title, "row_labels": rows, "col_labels": cols, "tokens": tokens, "value_name": value_name,
            "highlight_rows": _indices(highlight_rows, n_rows, "highlight_rows", "rows"),
            "highlight_cols": _indices(highlight_cols, n_cols, "highlight_cols", "columns")}


def _token_labels(labels, n: int, name: str) -> list[str]:
    """Token strings labelling an axis of positions, made visible as :func:`~.data.display_token` does."""
    if labels is None or isinstance(labels, str) or not all(isinstance(t, str) for t in labels):
        raise InputTypeError(f"with tokens on this axis, {name} must be the token strings, one per position "
                             "(model.to_str_tokens(prompt)).")
    if len(labels) != n:
        raise InputError(f"{name} has {len(labels)} tokens but the values have {n} positions along that axis; "
                         "pass the tokens the values were computed on.")
    return [display_token(t) for t in labels]


def _indices(marks, n: int, name: str, what: str) -> list[int]:
    """Indices into an axis of ``n`` (negative ones count from the end), sorted and without repeats."""
    if marks is None:
        return []
    if isinstance(marks, (int, np.integer)) and not isinstance(marks, bool):
        marks = [marks]
    if hasattr(marks, "tolist"):
        marks = marks.tolist()
    if isinstance(marks, str) or not isinstance(marks, (list, tuple, range)):
        raise InputTypeError(f"{name} must be a list of indices; got {type_name(marks)}.")
    out = set()
    for m in marks:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise InputTypeError(f"{name} must hold integer indices; got {m!r} ({type_name(m)}).")
        if not -n <= m < n:
            raise InputError(f"{name} has index {m}, but there are {n} {what} (indices 0 to {n - 1}, or negative "
                             "from the end).")
        out.add(int(m) % n)
    return sorted(out)
