"""Training checkpoints as one safetensors file: an optimiser's state split into tensors and JSON scalars, and the
file read back with its metadata. Shared by the tuned-lens and SAE trainers (neither pickles anything)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from .errors import ModelLoadError


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict, list]:
    """``(tensors, scalars, param_groups)`` of ``opt.state_dict()``: tensor state as ``{prefix}{param id}.{key}``
    (on CPU), the rest (e.g. Adam's ``step`` when not a tensor) as JSON-able ``{param id: {key: value}}``."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, state in sd["state"].items():
        for key, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}{pid}.{key}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = v
    return tensors, scalars, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str, scalars: dict,
                   param_groups: list) -> None:
    """Restore what :func:`optimizer_tensors` split, into ``opt``."""
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith(prefix):
            pid, key = k[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    for pid, s in scalars.items():
        state.setdefault(int(pid), {}).update(s)
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def read_checkpoint(file: str | Path) -> tuple[dict[str, Tensor], dict]:
    """``(tensors, meta)`` of a checkpoint written with its JSON metadata under the key ``train``; an unreadable
    file is an error naming the fix."""
    try:
        with safe_open(file, "pt") as f:
            meta = json.loads(f.metadata()["train"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"training checkpoint {str(file)!r} could not be read ({type(e).__name__}: {e}); delete "
                             "it to start over.") from None
    return tensors, meta
