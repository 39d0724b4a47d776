"""Token figures: attention patterns, token colours and the logit-lens table (heatmaps: :mod:`.heatmaps`).

Each function checks its inputs against the tokens (a clear error when lengths disagree), turns tensors into the
compact data of :mod:`.data`, and returns a :class:`~.view.View`. Argument names follow CircuitsVis
(``attention_patterns(tokens, attention, ...)`` there, ``pattern`` here as the planned mechscope API has it).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError, InputTypeError, type_name
from .data import (
    as_array,
    as_labels,
    as_tokens,
    color_scale,
    display_token,
    line_breaks,
    pack_pattern,
    rounded,
    scale_dict,
)
from .heatmaps import heatmap  # noqa: F401  (defined beside heatmaps; kept importable from here)
from .view import Figure, View

_LARGE_BYTES = 50 * 2**20  # an attention view above this is slow to open; warn with what to slice


def attention_patterns(tokens, pattern, head_labels=None, title: str | None = None, layer_labels=None, *,
                       layer: int = 0, head: int = 0) -> View:
    """Interactive attention patterns, as CircuitsVis's ``attention_patterns``.

    ``pattern``: ``[head, q, k]`` or ``[layer, head, q, k]`` (tensor, array or lists), e.g.
    ``cache["pattern", 3][0]`` or ``torch.stack([cache["pattern", l][0] for l in range(n_layers)])``.
    ``tokens``: one string per position (``model.to_str_tokens(prompt)``), ``q == k == len(tokens)``.

    Shows a grid of per-head thumbnails (hover one to enlarge it, click to pin it), the enlarged pattern with
    token labels (hover a cell for its weight), and the tokens: hovering one colours what it attends to (its
    row, blue) and what attends to it (its column, orange). With 4-D input a layer selector picks the layer.
    When the upper triangle is all zero (a causal model) only ``k <= q`` is stored and drawn; NaN is blank.
    ``head_labels``: one per head (default ``H0, H1, ...``); ``layer_labels``: one per layer (default ``0, 1, ...``).
    ``layer``, ``head``: the indices shown (pinned) when the view opens.
    """
    p = as_array(pattern, "pattern", (3, 4))
    four_d = p.ndim == 4
    if not four_d:
        p = p[None]
    n_layers, n_heads, n_q, n_k = p.shape
    if n_q != n_k:
        raise InputError(f"pattern must be square in its last two axes (query and key positions); got shape "
                         f"{tuple(p.shape[-2:])}. Pass the pattern of one prompt without a KV cache.")
    tokens = as_tokens(tokens, n_q, "pattern")
    heads = as_labels(head_labels, n_heads, "head_labels", "H{}")
    layers = as_labels(layer_labels, n_layers, "layer_labels", "{}") if four_d else None
    if layer_labels is not None and not four_d:
        raise InputError("layer_labels only applies to a 4-D pattern [layer, head, q, k]; this one is 3-D.")
    for name, value, n in (("layer", layer, n_layers), ("head", head, n_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise InputError(f"{name} (shown first) must be an index from 0 to {n - 1}, got {value!r}.")
    packed = pack_pattern(p)
    if len(packed.packed) > _LARGE_BYTES:
        warnings.warn(f"this attention view embeds {len(packed.packed) / 2**20:.0f} MB of weights; slice the "
                      "layers, heads or positions to keep it quick to open.", stacklevel=2)
    if packed.lo >= 0 and packed.hi <= 1:
        scale = {"kind": "sequential", "lo": 0.0, "hi": 1.0, "center": 0.0}
    else:
        scale = scale_dict(color_scale(p))
    data = {
        "kind": "attention", "title": title, "tokens": [display_token(t) for t in tokens],
        "breaks": line_breaks(tokens), "n_heads": n_heads, "head_labels": heads, "layer_labels": layers,
        "packed": packed.packed, "causal": packed.causal, "lo": packed.lo, "hi": packed.hi,
        "decimals": packed.decimals, "scale": scale, "layer": layer, "head": head,
    }
    shape = f"{n_layers} layers × " if four_d else ""
    return View([Figure("attention", data, f"attention_patterns {shape}{n_heads} heads × {n_q} tokens")])


def token_colors(tokens, values, labels=None, title: str | None = None, shared_scale: bool = False) -> View:
    """Tokens coloured by a value per position: attributions, neuron activations, losses.

    ``values``: ``[pos]`` or ``[n, pos]`` (one row per method or neuron, each named by ``labels``).
    Colours diverge around 0 (blue negative, red positive) when any value is negative, else run from white at 0.
    Each row has its own scale (methods differ in units) unless ``shared_scale``. Hover a token for its exact
    values in every row. Spaces show as ``·``, newlines as ``⏎`` (and wrap the line); NaN is blank.
    """
    v = as_array(values, "values", (1, 2))
    single = v.ndim == 1
    if single:
        v = v[None]
    tokens = as_tokens(tokens, v.shape[1], "values")
    if single and labels is not None:
        if isinstance(labels, str):
            labels = [labels]
    names = as_labels(labels, v.shape[0], "labels", "" if single else "row {}")
    shared = color_scale(v) if shared_scale else None
    rows = [{"label": name, "values": rounded(row), "scale": scale_dict(shared or color_scale(row))}
            for name, row in zip(names, v)]
    data = {"kind": "token_colors", "title": title, "tokens": [display_token(t) for t in tokens],
            "breaks": line_breaks(tokens), "rows": rows}
    return View([Figure("token_colors", data, f"token_colors {v.shape[0]} × {v.shape[1]} tokens")])


def lens_table(tokens, top_tokens, top_probs, layer_labels=None, title: str | None = None,
               extra: dict | None = None) -> View:
    """The logit-lens table: rows are layers (in the order given), columns are input positions, each cell the
    top predicted token coloured by its probability (white 0 to dark blue 1).

    ``top_tokens``: ``[layer][pos]`` strings; ``top_probs``: ``[layer, pos]``. ``extra`` adds to each cell's
    hover: ``"top_k_tokens"`` (``[layer][pos][k]`` strings) with ``"top_k_probs"`` (``[layer, pos, k]``) list the
    top k with bars; any other key with a ``[layer, pos]`` array (``"kl"``, ``"rank"``, ...) is shown by name.
    """
    probs = as_array(top_probs, "top_probs", (2,))
    n_layers, n_pos = probs.shape
    tokens = as_tokens(tokens, n_pos, "top_probs")
    top = _token_grid(top_tokens, (n_layers, n_pos), "top_tokens")
    layers = as_labels(layer_labels, n_layers, "layer_labels", "{}")
    data = {"kind": "lens_table", "title": title, "tokens": [display_token(t) for t in tokens],
            "layer_labels": layers, "top_tokens": [[display_token(t) for t in row] for row in top],
            "top_probs": rounded(probs), "top_k_tokens": None, "top_k_probs": None, "scalars": {},
            "scale": {"kind": "sequential", "lo": 0.0, "hi": 1.0, "center": 0.0}}
    if extra is not None and not isinstance(extra, dict):
        raise InputTypeError(f"extra must be a dict of per-cell data; got {type_name(extra)}.")
    extra = dict(extra or {})
    if ("top_k_tokens" in extra) != ("top_k_probs" in extra):
        raise InputError("extra needs both 'top_k_tokens' and 'top_k_probs' (the top-k tokens and their "
                         "probabilities per cell), or neither.")
    if "top_k_tokens" in extra:
        k_probs = as_array(extra.pop("top_k_probs"), "extra['top_k_probs']", (3,))
        if k_probs.shape[:2] != (n_layers, n_pos):
            raise InputError(f"extra['top_k_probs'] must be [layer, pos, k] = [{n_layers}, {n_pos}, k]; got "
                             f"shape {tuple(k_probs.shape)}.")
        k_tokens = _token_grid(extra.pop("top_k_tokens"), k_probs.shape, "extra['top_k_tokens']")
        data["top_k_tokens"] = [[[display_token(t) for t in cell] for cell in row] for row in k_tokens]
        data["top_k_probs"] = rounded(k_probs)
    for name, value in extra.items():
        a = as_array(value, f"extra[{name!r}]", (2,))
        if a.shape != (n_layers, n_pos):
            raise InputError(f"extra[{name!r}] must be [layer, pos] = [{n_layers}, {n_pos}]; got shape "
                             f"{tuple(a.shape)}.")
        data["scalars"][str(name)] = rounded(a)
    return View([Figure("lens_table", data, f"lens_table {n_layers} layers × {n_pos} tokens")])


def _token_grid(grid, shape: tuple[int, ...], name: str) -> list:
    """Nested lists of strings with the given shape (``[layer][pos]`` or ``[layer][pos][k]``)."""
    def check(x, depth: int, where: str):
        if depth == len(shape):
            if not isinstance(x, str):
                raise InputTypeError(f"{name}{where} must be a token string; got {type_name(x)}. Decode ids with "
                                     "model.to_str_tokens first.")
            return x
        if isinstance(x, str) or not hasattr(x, "__len__"):
            raise InputTypeError(f"{name}{where} must be a list; got {type_name(x)}.")
        if len(x) != shape[depth]:
            raise InputError(f"{name}{where} has {len(x)} entries where {shape[depth]} are needed (the shape "
                             f"must be {list(shape)}, matching the probabilities).")
        return [check(y, depth + 1, f"{where}[{i}]") for i, y in enumerate(x)]

    if isinstance(grid, np.ndarray):
        grid = grid.tolist()
    return check(grid, 0, "")
