"""``mechscope.load``: the default model, a named real model, a GGUF file, a local folder or a hub id → ``Model``.

Every source ends as an ordinary HuggingFace folder (or hub id) loaded with plain ``from_pretrained``:
``"default"`` is trained into mechscope's cache on first use, a GGUF file (or a named model's) is dequantised
into it on first use (:mod:`mechscope.gguf`). Local folders are checked first (:mod:`mechscope.modelfiles`)
so a bad file is reported by name with its fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from . import modelfiles
from .errors import ModelLoadError, closest
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
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf")
            or Path(name).exists())


def _choices() -> str:
    from .zoo import MODELS

    return f"'default', a named model ({', '.join(repr(n) for n in MODELS)}), a local folder, a .gguf file"


def resolve(name_or_path: str | os.PathLike, *, progress: bool = True) -> tuple[str, bool]:
    """``(folder or hub id, is_local)`` that ``from_pretrained`` can read, building cached folders if needed."""
    from .gguf import ensure_dequantized
    from .zoo import named

    name = str(name_or_path)
    if name == "default":
        from .default_model import ensure_default_model

        return str(ensure_default_model(progress=progress)), True
    if (entry := named(name)) is not None:
        return str(ensure_dequantized(entry.gguf_path(progress=progress), progress=progress)), True
    if not _looks_local(name):
        return name, False
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelLoadError(f"no model folder or file at {str(path)!r}; pass {_choices()} or a hub id.")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{str(path)!r} is a file but not a .gguf file; pass the folder that holds it "
                                 "(with config.json and weights) or a .gguf file.")
        return str(ensure_dequantized(path, progress=progress)), True
    if not (path / "config.json").exists() and len(ggufs := modelfiles.gguf_files(path)) == 1:
        return str(ensure_dequantized(ggufs[0], progress=progress)), True
    modelfiles.check_config(path)
    modelfiles.check_weights(path)
    return str(path), True


def _config(name: str, local: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if local:
            raise ModelLoadError(f"{name}/config.json could not be read as a model config ({first}); restore it "
                                 "from the model's source.") from e
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "connect" in first.lower() or "offline" in first.lower()
        why = "it is not a local path and the HuggingFace Hub could not be reached (offline?)" if offline else first
        from .zoo import MODELS

        hint = closest(name.lower(), [*MODELS, "default"])
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ModelLoadError(f"could not load {name!r}: {why}. Pass {_choices()}, or a hub id that is in the local "
                             f"HuggingFace cache.{did_you_mean}") from e


def load(name_or_path: str | os.PathLike = "default", *, device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, attn_implementation: str | None = None, progress: bool = True,
         **hf_kwargs) -> Model:
    """Load a causal LM and its tokenizer and wrap it.

    ``name_or_path``: ``"default"`` (mechscope's embedded model, trained on first use, ~75 s); a named real
    model (``"smollm2-135m"``, ``"gemma3-270m"``: see ``mechscope models``; needs its package installed); a
    ``.gguf`` file or a folder holding exactly one (dequantised on first use, then cached); a local HF folder;
    or a HuggingFace hub id. ``dtype``: ``"float32"``, ``"bfloat16"``, ... (default: the checkpoint's; float32
    for GGUF). ``device``: where to put the model. ``attn_implementation``: HF's (``"sdpa"``, ``"eager"``, ...;
    default HF's choice). ``progress``: show first-use work (training, dequantising) on stderr. Other keyword
    arguments go to HF's ``from_pretrained``, e.g. ``device_map="auto"`` (with ``offload_folder``) to spread a
    model over GPUs, CPU memory and disk; hooks and caches then follow each module's device.

    A model dequantised from GGUF has ``model.source`` (a :class:`mechscope.gguf.GGUFSource`: file,
    quantisation, ...); other models have ``model.source = None``. A folder without tokenizer files loads with a
    warning and ``model.tokenizer = None`` (pass token ids).
    """
    if device is not None and hf_kwargs.get("device_map") is not None:
        raise ModelLoadError("pass either device= or device_map=, not both: device_map places every module itself.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf import load_source

    name, local = resolve(name_or_path, progress=progress)
    config = _config(name, local)
    family_for(config)  # refuse unsupported architectures before reading any weights
    kwargs = dict(hf_kwargs)
    if dtype is not None:
        kwargs["dtype"] = _dtype(dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    hf_model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if device is not None:
        hf_model = hf_model.to(device)
    hf_model.eval()
    tokenizer = None
    if local and not modelfiles.has_tokenizer(Path(name)):
        warnings.warn(f"{name!r} has no tokenizer files ({', '.join(modelfiles.TOKENIZER_FILES[:3])}, ...), so the "
                      "model is loaded without a tokenizer: pass token ids, or attach one with "
                      "mechscope.Model.from_hf(model.hf_model, tokenizer).", stacklevel=2)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError, ImportError) as e:
            raise ModelLoadError(f"{name!r} loaded, but its tokenizer did not: {e}") from e
    model = Model(hf_model, tokenizer)
    model.source = load_source(Path(name)) if local else None
    return model
