"""``mechscope.load``: a hub id, a local folder, or the embedded default model → ``Model``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ModelLoadError
from .families import family_for
from .model import Model

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}, 'auto' or a torch.dtype.")
    return _DTYPES[dtype]


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name`` has exactly one slash and no leading ``.``, ``/`` or ``~``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def load(name_or_path: str | os.PathLike = "default", *, device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, attn_implementation: str | None = None, **hf_kwargs) -> Model:
    """Load a causal LM and its tokenizer and wrap it.

    ``name_or_path``: ``"default"`` (mechscope's embedded model, trained on first use), a local folder, or a
    HuggingFace hub id. ``dtype``: ``"float32"``, ``"bfloat16"``, ... (default: the checkpoint's). ``device``:
    where to put the model. ``attn_implementation``: HF's (``"sdpa"``, ``"eager"``, ...; default HF's choice).
    Other keyword arguments go to HF's ``from_pretrained``, e.g. ``device_map="auto"`` (with ``offload_folder``) to
    spread a model over GPUs, CPU memory and disk; hooks and caches then follow each module's device.
    """
    if device is not None and hf_kwargs.get("device_map") is not None:
        raise ModelLoadError("pass either device= or device_map=, not both: device_map places every module itself.")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name == "default":
        from .default_model import ensure_default_model

        name = str(ensure_default_model())
    elif _looks_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"no model folder at {str(path)!r}; pass a folder with config.json and weights, "
                                 "or a HuggingFace hub id.")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{str(path)!r} has no config.json; it does not look like a HuggingFace model folder.")
        name = str(path)
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "connect" in str(e).lower() or "offline" in str(e).lower()
        why = "the HuggingFace Hub could not be reached (no network?)" if offline else str(e).splitlines()[0]
        raise ModelLoadError(
            f"could not load {name!r}: {why}. Pass a local folder that holds the model (config.json, "
            "*.safetensors and tokenizer files), or 'default' for mechscope's embedded model."
        ) from e
    family_for(config)  # refuse unsupported architectures before fetching any weights
    kwargs = dict(hf_kwargs)
    if dtype is not None:
        kwargs["dtype"] = _dtype(dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    hf_model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if device is not None:
        hf_model = hf_model.to(device)
    hf_model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{name!r} loaded, but its tokenizer did not: {e}") from e
    return Model(hf_model, tokenizer)
