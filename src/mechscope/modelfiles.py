"""Checks on a local model folder before transformers reads it, so bad files get a sentence, not a traceback.

transformers reports a corrupt ``config.json`` as an unreachable Hub, a truncated safetensors file as a
deserialisation error deep in Rust, and a folder without tokenizer files as a missing ``sentencepiece``.
These checks read only small parts of the files (JSON, safetensors headers) and name the file and the fix.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import ModelLoadError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt", "*.msgpack", "*.h5")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "merges.txt")


def check_config(folder: Path) -> None:
    """``config.json`` exists and is a JSON object."""
    path = folder / "config.json"
    if not path.is_file():
        ggufs = gguf_files(folder)
        hint = (f"; it holds {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)}): pass one of them"
                if ggufs else "; pass a folder with config.json and weights, or a .gguf file")
        raise ModelLoadError(f"{str(folder)!r} has no config.json, so it is not a HuggingFace model folder{hint}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(
            f"{str(path)!r} is corrupt: it is not valid JSON ({e}); restore the file from the model's source."
        ) from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} is corrupt: it holds a JSON {type(data).__name__}, not an object; "
                             "restore the file from the model's source.")


def check_weights(folder: Path) -> None:
    """The folder holds weight files, and every safetensors file is as long as its header says."""
    weights = [p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.name != "training_args.bin"]
    if not weights:
        raise ModelLoadError(
            f"{str(folder)!r} has a config.json but no weights (model.safetensors, pytorch_model.bin or shards); "
            "copy the weight files into it, or pass a .gguf file."
        )
    for path in weights:
        if path.suffix == ".safetensors":
            check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """Raise unless ``path`` has a readable safetensors header and all the tensor bytes it describes."""
    size = path.stat().st_size
    fix = "copy or download it again."
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelLoadError(f"{str(path)!r} is truncated ({size} bytes, too short for a safetensors header); {fix}")
        (n,) = struct.unpack("<Q", raw)
        if 8 + n > size:
            raise ModelLoadError(f"{str(path)!r} is truncated: its header alone should take {8 + n:,} bytes but the "
                                 f"file holds {size:,}; {fix}")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{str(path)!r} is corrupt: its safetensors header is not valid JSON; {fix}") from e
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise ModelLoadError(f"{str(path)!r} is truncated: its tensors need {need:,} bytes but the file holds "
                             f"{size:,}; {fix}")


def has_tokenizer(folder: Path) -> bool:
    """Whether the folder holds any tokenizer vocabulary file."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def gguf_files(folder: Path) -> list[Path]:
    """The ``*.gguf`` files directly in ``folder``, sorted."""
    return sorted(folder.glob("*.gguf"))
