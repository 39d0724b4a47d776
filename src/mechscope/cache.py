"""``ActivationCache``: the activations (and gradients) recorded by ``Model.run_with_cache``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from . import residual
from .errors import CacheKeyError, HookNameError, InputError, InputTypeError, closest, type_name

_SHORT = {
    "embed": "hook_embed", "pos_embed": "hook_pos_embed",
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k", "attn_scores": "attn.hook_attn_scores", "scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern", "attn": "attn.hook_pattern", "z": "attn.hook_z", "result": "attn.hook_result",
    "pre": "mlp.hook_pre", "pre_linear": "mlp.hook_pre_linear", "post": "mlp.hook_post",
    "scale": "hook_scale", "normalized": "hook_normalized",
}


_LAYER_TYPES = ("ln1", "ln2", "ln1_post", "ln2_post")


def act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """Full hook name from TransformerLens-style shorthand: ``act_name("pattern", 4)`` → ``blocks.4.attn.hook_pattern``.

    ``scale``/``normalized`` take ``layer_type`` (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``); with no layer they
    refer to ``ln_final``. A ``_grad`` suffix (``resid_post_grad``) names the gradient."""
    if not isinstance(name, str):
        raise InputTypeError(f"a shorthand is a str such as 'resid_post', got {type_name(name)}.")
    grad = name.endswith("_grad")
    base = name[:-5] if grad else name
    if base not in _SHORT:
        hint = closest(base, _SHORT, n=1)
        raise CacheKeyError(f"unknown shorthand {name!r}{f'; did you mean {hint[0]!r}?' if hint else ''} Use one of "
                            f"{', '.join(sorted(_SHORT))} (with '_grad' for gradients), or a full hook name.")
    if layer is not None and (isinstance(layer, bool) or not hasattr(layer, "__index__")):
        raise CacheKeyError(f"the layer in ({name!r}, {layer!r}) must be an int block index, got {type_name(layer)}.")
    if layer_type is not None and layer_type not in _LAYER_TYPES:
        raise CacheKeyError(f"the norm in ({name!r}, {layer!r}, {layer_type!r}) must be one of "
                            f"{', '.join(_LAYER_TYPES)}.")
    suffix = _SHORT[base]
    if base in ("scale", "normalized"):
        prefix = "ln_final" if layer is None else f"blocks.{int(layer)}.{layer_type or 'ln1'}"
        full = f"{prefix}.{suffix}"
    elif base in ("embed", "pos_embed"):
        full = suffix
    else:
        if layer is None:
            raise CacheKeyError(f"shorthand {name!r} needs a layer: cache[{name!r}, 3].")
        full = f"blocks.{int(layer)}.{suffix}"
    return full + ("_grad" if grad else "")


class ActivationCache(Mapping[str, Tensor]):
    """Hook name → tensor. Index by full name (``cache["blocks.4.attn.hook_pattern"]``) or by shorthand
    (``cache["pattern", 4]``, ``cache["scale", 2, "ln2"]``, negative layers count from the end).

    Gradients recorded with ``incl_bwd=True`` are stored under ``<name>_grad``. Tensors keep the layout of their
    hook point (see ``docs/hook-points.md``); with ``has_batch_dim`` false the leading batch axis was removed.
    """

    def __init__(self, store: dict[str, Tensor], n_layers: int | None = None, has_batch_dim: bool = True,
                 model=None):
        self._store = store
        self.n_layers = n_layers
        self.has_batch_dim = has_batch_dim
        self.model = model  # the Model that made it, as in TransformerLens: the residual algebra reads its weights

    def _resolve(self, key) -> str:
        if isinstance(key, str):
            if key in self._store or (key.removesuffix("_grad") not in _SHORT):
                return key
            return act_name(key)  # "embed", "pos_embed", "normalized" (ln_final) need no layer
        if isinstance(key, tuple) and 1 <= len(key) <= 3 and isinstance(key[0], str):
            name, layer, *rest = (*key, None) if len(key) == 1 else key
            full = act_name(name, layer, rest[0] if rest else None)  # checks the layer's type
            n = self.n_layers
            if layer is not None and n is not None:
                if not -n <= layer < n:
                    raise CacheKeyError(f"layer {layer} in {key!r} is out of range for a {n}-layer model; use 0 to "
                                        f"{n - 1}, or -{n} to -1 counting from the end.")
                if layer < 0:
                    full = act_name(name, layer + n, rest[0] if rest else None)
            return full
        raise CacheKeyError(f"index the cache with a hook name or (shorthand, layer[, norm]), such as "
                            f"cache['blocks.0.hook_resid_post'] or cache['resid_post', 0], not {key!r}.")

    def __getitem__(self, key) -> Tensor:
        name = self._resolve(key)
        try:
            return self._store[name]
        except KeyError:
            raise self._missing(name) from None

    def _missing(self, name: str) -> HookNameError:
        """Why ``name`` is not here: no gradients were recorded, or names_filter did not select it."""
        if name.endswith("_grad") and not any(k.endswith("_grad") for k in self._store):
            return HookNameError(f"{name!r} is a gradient, and this cache holds none; run "
                                 "model.run_with_cache(..., incl_bwd=True) to record gradients as '<name>_grad'.")
        hint = closest(name, self._store)
        did_you_mean = f"; did you mean {' or '.join(map(repr, hint))}?" if hint else "."
        n = f"{len(self)} tensor{'s' * (len(self) != 1)}"
        return HookNameError(
            f"{name!r} is not in this cache, which holds the {n} that names_filter selected (and their '_grad' "
            f"with incl_bwd=True); add it to names_filter, or check the name against model.hook_names(){did_you_mean}"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key) -> bool:
        try:
            return self._resolve(key) in self._store
        except InputError:
            return False

    @property
    def nbytes(self) -> int:
        """Total size of the cached tensors in bytes."""
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def to(self, device: str | torch.device) -> ActivationCache:
        """A copy with every tensor moved to ``device``."""
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise InputError(f"cannot move the cache to {device!r}: {e}; pass a device such as 'cpu' or 'cuda:0'.") from e
        return ActivationCache({k: v.to(device) for k, v in self._store.items()}, self.n_layers, self.has_batch_dim,
                               self.model)

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the leading batch axis (only for a batch of one)."""
        if not self.has_batch_dim:
            return self
        sizes = {v.shape[0] for v in self._store.values()}
        if sizes - {1}:
            raise InputError(f"remove_batch_dim needs a batch of one, but the cached batch size is "
                             f"{sorted(sizes)[-1]}; run one sequence (tokens[:1]) or index the batch yourself.")
        return ActivationCache({k: v[0] for k, v in self._store.items()}, self.n_layers, has_batch_dim=False,
                               model=self.model)

    def apply_slice_to_batch_dim(self, batch_slice) -> ActivationCache:
        """A cache of some sequences: ``batch_slice`` is an int (drops the batch axis), a slice, a tuple
        ``(start, stop[, step])`` or a list of indices (TransformerLens's ``Slice``)."""
        s = residual.Slice(batch_slice)
        if not self.has_batch_dim:
            if s.mode != "identity":
                raise InputError("this cache has no batch axis (remove_batch_dim was applied), so it cannot be sliced "
                                 "by sequence.")
            return self
        return ActivationCache({k: s.apply(v, 0) for k, v in self._store.items()}, self.n_layers,
                               has_batch_dim=s.mode != "int", model=self.model)

    def toggle_autodiff(self, mode: bool = False) -> None:
        """``torch.set_grad_enabled(mode)``, globally, as in TransformerLens (``torch.inference_mode`` is the local
        alternative)."""
        torch.set_grad_enabled(mode)

    # ------------------------------------------------------------------ residual-stream algebra (residual.py)
    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice=None, mlp_input: bool = False, return_labels: bool = False):
        """The stream entering each block up to ``layer``: ``[layers_covered, *batch_and_pos, d_model]``
        (labels ``{l}_pre``, ``{l}_mid``, ``final_post``). See ``residual.accumulated_resid``."""
        return residual.accumulated_resid(self, layer, incl_mid, apply_ln, pos_slice, mlp_input, return_labels)

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True, return_labels: bool = False):
        """The stream entering ``layer`` as ``embed``, ``pos_embed``, ``{l}_attn_out``, ``{l}_mixer_out``,
        ``{l}_mlp_out``: ``[component, *batch_and_pos, d_model]``. See ``residual.decompose_resid``."""
        return residual.decompose_resid(self, layer, mlp_input, mode, apply_ln, pos_slice, incl_embeds, return_labels)

    def compute_head_results(self) -> None:
        """Cache ``blocks.{l}.attn.hook_result`` (``[batch, pos, head, d_model]``) from ``hook_z`` and ``W_O``."""
        residual.compute_head_results(self)

    def stack_head_results(self, layer: int = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice=None, apply_ln: bool = False):
        """Every head's contribution before ``layer``: ``[layer * head, *batch_and_pos, d_model]`` (``L{l}H{h}``)."""
        return residual.stack_head_results(self, layer, return_labels, incl_remainder, pos_slice, apply_ln)

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> Tensor:
        """One activation stacked over the blocks before ``layer``: ``[layers, ...]``."""
        return residual.stack_activation(self, activation_name, layer, sublayer_type)

    def get_neuron_results(self, layer: int, neuron_slice=None, pos_slice=None,
                           project_output_onto: Tensor | None = None) -> Tensor:
        """Each neuron's contribution in ``layer``: ``[*batch_and_pos, neuron, d_model]`` (or projected)."""
        return residual.get_neuron_results(self, layer, neuron_slice, pos_slice, project_output_onto)

    def stack_neuron_results(self, layer: int, pos_slice=None, neuron_slice=None, return_labels: bool = False,
                             incl_remainder: bool = False, apply_ln: bool = False,
                             project_output_onto: Tensor | None = None):
        """Every neuron's contribution before ``layer``: ``[layer * neuron, *batch_and_pos, d_model]``, ``L{l}N{n}``."""
        return residual.stack_neuron_results(self, layer, pos_slice, neuron_slice, return_labels, incl_remainder,
                                             apply_ln, project_output_onto)

    def apply_ln_to_stack(self, residual_stack: Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice=None, batch_slice=None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> Tensor:
        """A stack as the norm reading ``layer`` sees it, at that norm's cached scale, before its weight."""
        return residual.apply_ln_to_stack(self, residual_stack, layer, mlp_input, pos_slice, batch_slice,
                                          has_batch_dim, recompute_ln)

    def get_full_resid_decomposition(self, layer: int | None = None, mlp_input: bool = False,
                                     expand_neurons: bool = True, apply_ln: bool = False, pos_slice=None,
                                     return_labels: bool = False, project_output_onto: Tensor | None = None):
        """Every head, neuron (or MLP), mixer, ``embed``, ``pos_embed`` and ``bias``: ``[component, ..., d_model]``."""
        return residual.get_full_resid_decomposition(self, layer, mlp_input, expand_neurons, apply_ln, pos_slice,
                                                     return_labels, project_output_onto)

    def logit_attrs(self, residual_stack: Tensor, tokens, incorrect_tokens=None, pos_slice=None, batch_slice=None,
                    has_batch_dim: bool = True) -> Tensor:
        """Each component's direct contribution to the logit of ``tokens`` (minus ``incorrect_tokens``'):
        ``[component, *batch_and_pos]``. See ``residual.logit_attrs``."""
        return residual.logit_attrs(self, residual_stack, tokens, incorrect_tokens, pos_slice, batch_slice,
                                    has_batch_dim)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} tensors, {self.nbytes / 2**20:.1f} MiB)"
