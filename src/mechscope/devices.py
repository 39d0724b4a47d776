"""Where a model's tensors really are, for models spread over devices or offloaded by accelerate.

A model loaded with ``device_map="auto"`` (or dispatched by hand, or ``accelerate.cpu_offload``) has no single
device: each module runs on its own *execution device*, and an offloaded module holds only ``meta`` tensors outside
its forward, its real weights living in the accelerate hook's ``weights_map`` (CPU memory or a folder on disk).
mechscope never assumes one device: activations are used where they are, and parameters are fetched through
``parameter`` onto the activation's device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _accelerate_hooks(module: nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", (hook,)))  # SequentialHook holds several


def execution_device(module: nn.Module) -> torch.device | None:
    """The device ``module``'s forward runs on: its accelerate hook's execution device, else where its first
    parameter is (None for a module without parameters)."""
    for hook in _accelerate_hooks(module):
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return None


def parameter(module: nn.Module, name: str, device: torch.device) -> Tensor | None:
    """``module.<name>`` (a parameter or buffer of the module itself) on ``device``; None when absent.

    Outside its forward an offloaded module holds a ``meta`` tensor; the real one is read from the accelerate
    hook's ``weights_map``. A tensor already on ``device`` is returned as is (no copy, gradients kept)."""
    t = getattr(module, name, None)
    if not isinstance(t, Tensor):
        return None
    if t.device.type == "meta":
        for hook in _accelerate_hooks(module):
            weights = getattr(hook, "weights_map", None)
            if weights is not None and name in weights:
                t = weights[name]
                break
        else:
            raise RuntimeError(
                f"{type(module).__name__}.{name} is on the meta device and no accelerate hook holds its value; "
                "load the model's weights before hooking it."
            )
    return t if t.device == device else t.to(device)


def input_device(hf_model: nn.Module, embed: nn.Module) -> torch.device:
    """Where token ids must go: the token embedding's execution device (HF's and accelerate's own choice)."""
    dev = execution_device(embed)
    if dev is not None:
        return dev
    return getattr(hf_model, "device", torch.device("cpu"))
