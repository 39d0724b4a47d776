"""``ActivationCache``: the activations (and gradients) recorded by ``Model.run_with_cache``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from .errors import InputError, unknown_hook

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


def act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """Full hook name from TransformerLens-style shorthand: ``act_name("pattern", 4)`` → ``blocks.4.attn.hook_pattern``.

    ``scale``/``normalized`` take ``layer_type`` (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``); with no layer they
    refer to ``ln_final``. A ``_grad`` suffix (``resid_post_grad``) names the gradient."""
    grad = name.endswith("_grad")
    base = name[:-5] if grad else name
    if base not in _SHORT:
        raise InputError(f"unknown shorthand {name!r}; use one of {', '.join(sorted(_SHORT))}, or a full hook name.")
    suffix = _SHORT[base]
    if base in ("scale", "normalized"):
        prefix = "ln_final" if layer is None else f"blocks.{layer}.{layer_type or 'ln1'}"
        full = f"{prefix}.{suffix}"
    elif base in ("embed", "pos_embed"):
        full = suffix
    else:
        if layer is None:
            raise InputError(f"shorthand {name!r} needs a layer: cache[{name!r}, 3].")
        full = f"blocks.{layer}.{suffix}"
    return full + ("_grad" if grad else "")


class ActivationCache(Mapping[str, Tensor]):
    """Hook name → tensor. Index by full name (``cache["blocks.4.attn.hook_pattern"]``) or by shorthand
    (``cache["pattern", 4]``, ``cache["scale", 2, "ln2"]``, negative layers count from the end).

    Gradients recorded with ``incl_bwd=True`` are stored under ``<name>_grad``. Tensors keep the layout of their
    hook point (see ``docs/hook-points.md``); with ``has_batch_dim`` false the leading batch axis was removed.
    """

    def __init__(self, store: dict[str, Tensor], n_layers: int | None = None, has_batch_dim: bool = True):
        self._store = store
        self.n_layers = n_layers
        self.has_batch_dim = has_batch_dim

    def _resolve(self, key) -> str:
        if isinstance(key, str):
            if key in self._store or (key.removesuffix("_grad") not in _SHORT):
                return key
            return act_name(key)  # "embed", "pos_embed", "normalized" (ln_final) need no layer
        if isinstance(key, tuple) and key and isinstance(key[0], str):
            name, layer, *rest = (*key, None) if len(key) == 1 else key
            if isinstance(layer, int) and layer < 0 and self.n_layers is not None:
                layer += self.n_layers
            return act_name(name, layer, rest[0] if rest else None)
        raise InputError(f"index the cache with a hook name or (shorthand, layer), not {key!r}.")

    def __getitem__(self, key) -> Tensor:
        name = self._resolve(key)
        try:
            return self._store[name]
        except KeyError:
            raise unknown_hook(name, self._store) from None

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
        return ActivationCache({k: v.to(device) for k, v in self._store.items()}, self.n_layers, self.has_batch_dim)

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the leading batch axis (only for a batch of one)."""
        if not self.has_batch_dim:
            return self
        sizes = {v.shape[0] for v in self._store.values()}
        if sizes - {1}:
            raise InputError(f"remove_batch_dim needs a batch of one, but the cached batch size is {sorted(sizes)}.")
        return ActivationCache({k: v[0] for k, v in self._store.items()}, self.n_layers, has_batch_dim=False)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} tensors, {self.nbytes / 2**20:.1f} MiB)"
