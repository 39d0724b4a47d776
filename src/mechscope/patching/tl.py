"""TransformerLens's ``patching`` functions under their own names and arguments, on the batched engine.

``get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, patching_metric)`` and the rest take and return
what TransformerLens 3's ``transformer_lens.patching`` does — same axis order (``[n_layers, pos, n_heads]`` for the
``by_pos`` head functions, ``[n_layers, n_heads, dest_pos]`` for patterns), same setters, ``index_axis_names``,
``index_df`` and ``return_index_df`` — so code ports by changing the import. The difference is speed: every index
is a variant of one batched forward (``engine.run_variants``) instead of one ``run_with_hooks`` each. Engine
options (``max_batch``, ``memory``, ``method="loop"``) may be passed as keywords.

``index_df`` may be a pandas DataFrame (as in TransformerLens), a list of index tuples, or an int tensor
``[n, n_axes]``; ``return_index_df=True`` returns a DataFrame where pandas is installed, else that int tensor.
For a richer API (labels, noising, neurons) see ``activation.activation_patch``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from ..cache import act_name
from ..errors import InputError, InputTypeError, type_name
from .engine import run_variants
from .result import metric_values

AXES = ("layer", "pos", "head_index", "head", "src_pos", "dest_pos")


def make_df_from_ranges(column_max_ranges: Sequence[int], column_names: Sequence[str]):
    """Every combination of ``range(max)`` per column, the last column fastest (TransformerLens's helper)."""
    rows = list(itertools.product(*[range(r) for r in column_max_ranges]))
    return _frame(torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(column_names)), column_names)


def _frame(rows: Tensor, names: Sequence[str]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows.tolist(), columns=list(names))


def _index_rows(index_df) -> tuple[list[list[int]], list[str] | None]:
    if hasattr(index_df, "columns") and hasattr(index_df, "values"):  # a DataFrame
        return [[int(v) for v in row] for row in index_df.values.tolist()], [str(c) for c in index_df.columns]
    if isinstance(index_df, Tensor):
        if index_df.ndim != 2:
            raise InputError(f"index_df as a tensor must be [n, n_axes], got shape {tuple(index_df.shape)}.")
        return index_df.long().tolist(), None
    if isinstance(index_df, (list, tuple)) and index_df:
        return [[int(v) for v in row] for row in index_df], None
    raise InputTypeError(f"index_df must be a DataFrame, a list of index tuples or an int tensor, got {type_name(index_df)}.")


def generic_activation_patch(model, corrupted_tokens: Tensor, clean_cache, patching_metric: Callable[[Tensor], Tensor],
                             patch_setter: Callable, activation_name: str,
                             index_axis_names: Sequence[str] | None = None, index_df=None,
                             return_index_df: bool = False, **engine_options):
    """Patch ``activation_name`` (shorthand: ``"z"``, ``"resid_pre"``, ...) of layer ``index[0]`` for every index
    and return ``patching_metric`` of each patched run.

    ``patch_setter(corrupted_activation, index, clean_activation) -> patched`` edits the activation; the indices
    come from ``index_axis_names`` (every combination, output shaped by the axes) or ``index_df`` (one row per
    patch, flattened output). The first index of each row is the layer."""
    if not isinstance(corrupted_tokens, Tensor):
        raise InputTypeError(f"corrupted_tokens must be token ids [batch, pos] (as in TransformerLens; "
                             f"model.to_tokens(text)), got {type_name(corrupted_tokens)}.")
    if index_df is None:
        if index_axis_names is None:
            raise InputError("pass index_axis_names (e.g. ('layer', 'pos')) or index_df (one row of indices per patch).")
        bad = [a for a in index_axis_names if a not in AXES]
        if bad:
            raise InputError(f"unknown index axis {bad[0]!r}; axes are {', '.join(AXES)}.")
        n_heads = model.cfg.n_heads
        if activation_name in ("k", "v"):
            n_heads = model.hook_dict[act_name(activation_name, _first_layer(model, activation_name))].shape[2]
        n_pos = corrupted_tokens.shape[-1]
        sizes = {"layer": model.cfg.n_layers, "pos": n_pos, "head_index": n_heads, "head": n_heads,
                 "src_pos": n_pos, "dest_pos": n_pos}
        ranges = [sizes[a] for a in index_axis_names]
        rows = [list(r) for r in itertools.product(*[range(r) for r in ranges])]
        names, flat = list(index_axis_names), False
    else:
        if index_axis_names is not None:
            raise InputError("pass index_axis_names or index_df, not both (index_df's columns name its axes).")
        rows, names = _index_rows(index_df)
        ranges, flat = None, True
    variants = []
    for index in rows:
        name = act_name(activation_name, index[0])
        variants.append([(name, partial(_patching_hook, index=index, clean_activation=clean_cache[name],
                                        patch_setter=patch_setter))])
    values = run_variants(model, corrupted_tokens, variants, patching_metric, **engine_options)
    out = metric_values(values).to(model.cfg.device)
    if not flat:
        out = out.reshape(ranges)
    if return_index_df:
        if index_df is None:
            index_df = _frame(torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(names)), names)
        return out, index_df
    return out


def _first_layer(model, activation_name: str) -> int:
    for l in range(model.cfg.n_layers):
        if act_name(activation_name, l) in model.hook_dict:
            return l
    model._point(act_name(activation_name, 0))
    return 0


def _patching_hook(corrupted_activation, hook, index, clean_activation, patch_setter):
    if corrupted_activation.requires_grad:
        corrupted_activation = corrupted_activation.clone()
    return patch_setter(corrupted_activation, index, clean_activation)


# --------------------------------------------------------------------------------------- setters
def layer_pos_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, pos]; activations ``[batch, pos, ...]``."""
    assert len(index) == 2
    layer, pos = index
    corrupted_activation[:, pos, ...] = clean_activation[:, pos, ...]
    return corrupted_activation


def layer_pos_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, pos, head_index]; activations ``[batch, pos, head_index, ...]`` (q, k, v, z, result)."""
    assert len(index) == 3
    layer, pos, head_index = index
    corrupted_activation[:, pos, head_index] = clean_activation[:, pos, head_index]
    return corrupted_activation


def layer_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head_index]; activations ``[batch, pos, head_index, ...]``, every position."""
    assert len(index) == 2
    layer, head_index = index
    corrupted_activation[:, :, head_index] = clean_activation[:, :, head_index]
    return corrupted_activation


def layer_head_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head_index]; patterns ``[batch, head_index, dest_pos, src_pos]``."""
    assert len(index) == 2
    layer, head_index = index
    corrupted_activation[:, head_index, :, :] = clean_activation[:, head_index, :, :]
    return corrupted_activation


def layer_head_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head_index, dest_pos]."""
    assert len(index) == 3
    layer, head_index, dest_pos = index
    corrupted_activation[:, head_index, dest_pos, :] = clean_activation[:, head_index, dest_pos, :]
    return corrupted_activation


def layer_head_dest_src_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head_index, dest_pos, src_pos]."""
    assert len(index) == 4
    layer, head_index, dest_pos, src_pos = index
    corrupted_activation[:, head_index, dest_pos, src_pos] = clean_activation[:, head_index, dest_pos, src_pos]
    return corrupted_activation


# ------------------------------------------------------------------------------------- the named ones
def _named(doc: str, setter, name: str, axes: tuple[str, ...]):
    fn = partial(generic_activation_patch, patch_setter=setter, activation_name=name, index_axis_names=axes)
    fn.__doc__ = doc
    return fn


get_act_patch_resid_pre = _named("Patch the residual stream entering each block, by position: ``[n_layers, pos]``.",
                                 layer_pos_patch_setter, "resid_pre", ("layer", "pos"))
get_act_patch_resid_mid = _named("Patch the residual stream between attention and MLP, by position: ``[n_layers, pos]``.",
                                 layer_pos_patch_setter, "resid_mid", ("layer", "pos"))
get_act_patch_attn_out = _named("Patch each attention layer's output, by position: ``[n_layers, pos]``.",
                                layer_pos_patch_setter, "attn_out", ("layer", "pos"))
get_act_patch_mlp_out = _named("Patch each MLP layer's output, by position: ``[n_layers, pos]``.",
                               layer_pos_patch_setter, "mlp_out", ("layer", "pos"))
get_act_patch_attn_head_out_by_pos = _named("Patch each head's output z, by position: ``[n_layers, pos, n_heads]``.",
                                            layer_pos_head_vector_patch_setter, "z", ("layer", "pos", "head"))
get_act_patch_attn_head_q_by_pos = _named("Patch each head's queries, by position: ``[n_layers, pos, n_heads]``.",
                                          layer_pos_head_vector_patch_setter, "q", ("layer", "pos", "head"))
get_act_patch_attn_head_k_by_pos = _named(
    "Patch each head's keys, by position: ``[n_layers, pos, n_heads]`` (``n_key_value_heads`` under GQA).",
    layer_pos_head_vector_patch_setter, "k", ("layer", "pos", "head"))
get_act_patch_attn_head_v_by_pos = _named(
    "Patch each head's values, by position: ``[n_layers, pos, n_heads]`` (``n_key_value_heads`` under GQA).",
    layer_pos_head_vector_patch_setter, "v", ("layer", "pos", "head"))
get_act_patch_attn_head_pattern_by_pos = _named(
    "Patch each head's attention pattern, by destination position: ``[n_layers, n_heads, dest_pos]``.",
    layer_head_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos"))
get_act_patch_attn_head_pattern_dest_src_pos = _named(
    "Patch each single attention weight: ``[n_layers, n_heads, dest_pos, src_pos]``.",
    layer_head_dest_src_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos", "src_pos"))
get_act_patch_attn_head_out_all_pos = _named("Patch each head's output z at every position: ``[n_layers, n_heads]``.",
                                             layer_head_vector_patch_setter, "z", ("layer", "head"))
get_act_patch_attn_head_q_all_pos = _named("Patch each head's queries at every position: ``[n_layers, n_heads]``.",
                                           layer_head_vector_patch_setter, "q", ("layer", "head"))
get_act_patch_attn_head_k_all_pos = _named(
    "Patch each head's keys at every position: ``[n_layers, n_heads]`` (``n_key_value_heads`` under GQA).",
    layer_head_vector_patch_setter, "k", ("layer", "head"))
get_act_patch_attn_head_v_all_pos = _named(
    "Patch each head's values at every position: ``[n_layers, n_heads]`` (``n_key_value_heads`` under GQA).",
    layer_head_vector_patch_setter, "v", ("layer", "head"))
get_act_patch_attn_head_pattern_all_pos = _named(
    "Patch each head's whole attention pattern: ``[n_layers, n_heads]``.",
    layer_head_pattern_patch_setter, "pattern", ("layer", "head_index"))


def _pad_heads(t: Tensor, n: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, n - t.size(-1)))


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric, **engine_options) -> Tensor:
    """z, q, k, v and pattern patched per head at every position, stacked: ``[5, n_layers, n_heads]`` (k and v
    zero-padded to ``n_heads`` under GQA, as TransformerLens does)."""
    args = (model, corrupted_tokens, clean_cache, metric)
    z = get_act_patch_attn_head_out_all_pos(*args, **engine_options)
    q = get_act_patch_attn_head_q_all_pos(*args, **engine_options)
    k = _pad_heads(get_act_patch_attn_head_k_all_pos(*args, **engine_options), q.size(-1))
    v = _pad_heads(get_act_patch_attn_head_v_all_pos(*args, **engine_options), k.size(-1))
    pattern = get_act_patch_attn_head_pattern_all_pos(*args, **engine_options)
    return torch.stack([z, q, k, v, pattern], dim=0)


def get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, metric, **engine_options) -> Tensor:
    """z, q, k, v and pattern patched per head and position, stacked: ``[5, n_layers, pos, n_heads]``."""
    args = (model, corrupted_tokens, clean_cache, metric)
    z = get_act_patch_attn_head_out_by_pos(*args, **engine_options)
    q = get_act_patch_attn_head_q_by_pos(*args, **engine_options)
    k = _pad_heads(get_act_patch_attn_head_k_by_pos(*args, **engine_options), q.size(-1))
    v = _pad_heads(get_act_patch_attn_head_v_by_pos(*args, **engine_options), k.size(-1))
    pattern = get_act_patch_attn_head_pattern_by_pos(*args, **engine_options).transpose(1, 2)
    return torch.stack([z, q, k, v, pattern], dim=0)


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric, **engine_options) -> Tensor:
    """resid_pre, attn_out and mlp_out patched by layer and position, stacked: ``[3, n_layers, pos]``."""
    args = (model, corrupted_tokens, clean_cache, metric)
    return torch.stack([get_act_patch_resid_pre(*args, **engine_options), get_act_patch_attn_out(*args, **engine_options),
                        get_act_patch_mlp_out(*args, **engine_options)], dim=0)


__all__ = [n for n in list(globals()) if n.startswith("get_act_patch_")] + [
    "generic_activation_patch", "make_df_from_ranges", "layer_pos_patch_setter", "layer_pos_head_vector_patch_setter",
    "layer_head_vector_patch_setter", "layer_head_pattern_patch_setter", "layer_head_pos_pattern_patch_setter",
    "layer_head_dest_src_pos_pattern_patch_setter"]
