"""GGUF files (llama.cpp's format) as ordinary HuggingFace folders, dequantised once and cached.

transformers can read a GGUF file (``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` and
``accelerate`` packages): it dequantises every tensor to float and converts the tokenizer, which takes tens of
seconds, and the model it returns refuses ``save_pretrained``. mechscope does that once per file: it copies the
dequantised weights into a plain model built from the same config, saves it with the tokenizer as an ordinary
folder (``config.json``, ``model.safetensors``, tokenizer files) in ``cache_root() / "gguf"``, and from then on
loads that folder in about a second. The folder also holds ``mechscope_source.json`` (:class:`GGUFSource`),
written last, which records where the weights came from and marks the folder complete.

The cache is keyed by the file's identity: its size and a SHA-256 over three 1 MiB samples (start, middle,
end). The start holds the metadata and tokenizer, the end the last tensors' data, so another model or
quantisation gives another key, while a copied or reinstalled file (new path, new mtime) keeps its cache.

Weights are dequantised to float32, which holds every value a GGUF block format decodes to exactly;
``mechscope.load(..., dtype="bfloat16")`` casts at load time, like any other folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from .errors import ModelLoadError
from .progress import task
from .store import build_once

SOURCE_FILE = "mechscope_source.json"
GGUF_CACHE_VERSION = 1
_MAGIC = b"GGUF"
_SAMPLE = 1 << 20
PIP_GGUF = "pip install gguf accelerate"


@dataclass(frozen=True)
class GGUFSource:
    """Where a model's weights came from when they were dequantised from a GGUF file (``Model.source``)."""

    file: str
    """Absolute path of the GGUF file when it was dequantised."""
    quantization: str
    """llama.cpp's name for the file's quantisation (``general.file_type``), e.g. ``Q4_1`` or ``Q4_K_M``."""
    architecture: str
    """``general.architecture`` (llama.cpp's name: ``llama``, ``gemma3``, ...)."""
    name: str
    """``general.name`` from the file's metadata ('' when absent)."""
    size: int
    """File size in bytes."""
    key: str
    """Identity key of the file (size + sampled SHA-256), which names its cache folder."""
    dequantized_to: str = "float32"
    """dtype the cached weights were written in."""
    seconds: float = 0.0
    """Wall time of the dequantisation (reading, converting, saving)."""
    version: int = GGUF_CACHE_VERSION
    """Cache-format version; folders of another version are rebuilt."""

    def describe(self) -> str:
        """One line for ``mechscope info``: ``weights dequantised from a Q4_1 GGUF file: /path/to/x.gguf``."""
        return f"weights dequantised from a {self.quantization} GGUF file: {self.file}"


def check_gguf_file(path: Path) -> None:
    """Raise a :class:`ModelLoadError` naming ``path`` unless it is a complete GGUF file (magic and size only)."""
    if not path.is_file():
        raise ModelLoadError(f"no GGUF file at {str(path)!r}; check the path.")
    with path.open("rb") as f:
        head = f.read(4)
    if head != _MAGIC:
        raise ModelLoadError(
            f"{str(path)!r} is not a GGUF file (it starts with {head!r}, not {_MAGIC!r}); pass a .gguf file as "
            "written by llama.cpp's converters, or a HuggingFace model folder."
        )


def identity(path: Path) -> str:
    """Cache key of a GGUF file: 16 hex digits of SHA-256 over its size and three 1 MiB samples."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()[:16]


def read_source(path: Path, key: str) -> GGUFSource:
    """Read quantisation, architecture and name from a GGUF file's header, and check that no tensor data is
    missing (a truncated file)."""
    from .gguf_header import HeaderError, data_end, read_header

    try:
        import gguf
    except ImportError as e:
        raise ModelLoadError(f"reading {str(path)!r} needs the gguf package; install it with: {PIP_GGUF}") from e
    try:
        header = read_header(path)
        end = data_end(header)
    except (HeaderError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{str(path)!r} could not be read as a GGUF file ({e}); it is probably truncated or "
                             "corrupt: copy or download it again.") from e
    size = path.stat().st_size
    if end > size:
        raise ModelLoadError(f"{str(path)!r} is truncated: its tensors need {end:,} bytes but the file holds "
                             f"{size:,}; copy or download it again.")
    meta = header.metadata
    try:
        quantization = gguf.LlamaFileType(meta["general.file_type"]).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError):  # no or unknown file type: name it after the most common tensor type
        counts: dict[str, int] = {}
        for t in header.tensors:
            kind = gguf.GGMLQuantizationType(t.ggml_type).name
            counts[kind] = counts.get(kind, 0) + 1
        quantization = max(counts, key=counts.get) if counts else "unknown"
    return GGUFSource(file=str(path.resolve()), quantization=quantization,
                      architecture=str(meta.get("general.architecture", "")), name=str(meta.get("general.name", "")),
                      size=size, key=key)


def load_source(folder: Path) -> GGUFSource | None:
    """The :class:`GGUFSource` recorded in a cached folder, or None (not a dequantised GGUF, or unreadable)."""
    try:
        data = json.loads((Path(folder) / SOURCE_FILE).read_text())
        return GGUFSource(**data)
    except (OSError, ValueError, TypeError):
        return None


def cache_dir(path: Path, key: str) -> Path:
    """Cached folder of the GGUF file ``path`` with identity ``key``."""
    from .default_model import cache_root

    return cache_root() / "gguf" / f"{path.stem}-{key}"


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a fully written dequantised GGUF folder of the current cache version."""
    source = load_source(folder)
    return source is not None and source.version == GGUF_CACHE_VERSION and (folder / "config.json").is_file()


def dequantize(path: Path, out_dir: Path, source: GGUFSource) -> GGUFSource:
    """Dequantise the GGUF file ``path`` into the HF folder ``out_dir`` (weights in float32, tokenizer, source)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    try:
        import accelerate  # noqa: F401 - transformers needs it for GGUF, and says so less clearly
    except ImportError as e:
        raise ModelLoadError(f"loading {str(path)!r} needs the accelerate package; install it with: {PIP_GGUF}") from e
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own status line says what is happening
    try:
        try:
            with _quiet_gguf_conversion():
                hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except (ValueError, KeyError, NotImplementedError) as e:
            why = (str(e).splitlines() or [type(e).__name__])[0].rstrip(".")
            raise ModelLoadError(
                f"transformers could not load {str(path)!r} ({source.architecture}, {source.quantization}): {why}. "
                "Only architectures and quantisations that transformers can dequantise are supported "
                "(transformers.integrations.ggml lists them)."
            ) from e
        config = hf.config
        del config.quantization_config  # the plain copy is an ordinary float model
        # Built on the meta device and given the dequantised tensors (no copy, no random init). Non-persistent
        # buffers (rotary inv_freq) stay on meta, so this model is only for save_pretrained, which skips them.
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(hf.state_dict(), assign=True)
        plain.tie_weights()
        plain.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    done = GGUFSource(**{**asdict(source), "seconds": round(time.perf_counter() - start, 1)})
    (out_dir / SOURCE_FILE).write_text(json.dumps(asdict(done), indent=2) + "\n")  # last: marks it complete
    return done


@contextmanager
def _quiet_gguf_conversion():
    """Silence transformers' per-tensor GGUF bar (plain tqdm, deaf to ``disable_progress_bar``), which would
    fight with mechscope's own status line."""
    try:
        from transformers import modeling_gguf_pytorch_utils as ggml
        from tqdm.auto import tqdm
    except ImportError:
        yield
        return
    if not hasattr(ggml, "tqdm"):
        yield
        return
    saved = ggml.tqdm
    ggml.tqdm = partial(tqdm, disable=True)
    try:
        yield
    finally:
        ggml.tqdm = saved


def ensure_dequantized(path: str | Path, *, progress: bool = True) -> Path:
    """Folder holding the GGUF file ``path`` dequantised (built on first use: tens of seconds; then cached)."""
    path = Path(path).expanduser()
    check_gguf_file(path)
    key = identity(path)
    target = cache_dir(path, key)

    def build(staging: Path) -> None:
        mb = path.stat().st_size / 1e6
        with task(f"dequantising {path.name} ({mb:.0f} MB) to float32 (first use only)", enabled=progress) as t:
            t.update(note="reading metadata")
            source = read_source(path, key)
            t.update(note=f"{source.quantization}, converting tensors and tokenizer")
            dequantize(path, staging, source)
            t.note = f"cached in {target}"

    return build_once(target, build, is_complete)
