"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens").

One affine translator per hidden state except the last: ``h -> h + A h + b`` (``nn.Linear(d_model, d_model)``,
zero-initialised, so an untrained tuned lens *is* the logit lens), then the model's own final norm and head.
Translator ``i`` reads hidden state ``i`` (``{i}_pre``: the residual stream entering block ``i``; 0 is the
embedding); the last hidden state (``final_post``) needs none. This is the ``tuned-lens`` package's layout.

Saved as ``cfg.json`` (:class:`TunedLensConfig`) + ``params.safetensors`` with tensors
``layer_translators.{i}.weight`` ``(d_model, d_model)`` and ``layer_translators.{i}.bias`` ``(d_model,)``.
:meth:`TunedLens.load` also reads a tuned-lens checkpoint folder (``config.json`` + ``params.pt``, read with
``torch.load(weights_only=True)``, keys ``{i}.weight``/``{i}.bias`` as tuned-lens saves
``layer_translators.state_dict()``, or with the ``layer_translators.`` prefix).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import InputError, ModelLoadError
from .logit import DEFAULT_MAX_BYTES, LensResult, run_lens
from .unembed import Unembed

CONFIG = "cfg.json"
PARAMS = "params.safetensors"


@dataclass
class TunedLensConfig:
    """What a tuned lens was built for (tuned-lens's ``TunedLensConfig`` fields, so its ``config.json`` loads)."""

    d_model: int
    """Residual stream width of the model."""
    num_hidden_layers: int
    """Number of decoder blocks: one translator per block input (hidden states 0 … n_layers - 1)."""
    bias: bool = True
    """Whether the translators have a bias (``b``)."""
    base_model_name_or_path: str = ""
    """The model the lens was trained on (informational)."""
    base_model_revision: str | None = None
    """Its revision, where known (informational)."""
    unembed_hash: str | None = None
    """tuned-lens's hash of the unembedding (kept when read, not checked: mechscope checks shapes instead)."""
    lens_type: str = "linear_tuned_lens"
    """tuned-lens's lens kind; only ``linear_tuned_lens`` exists."""

    def __post_init__(self) -> None:
        for name in ("d_model", "num_hidden_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"a tuned lens's {name} must be a positive int, got {v!r}.")
        if self.lens_type != "linear_tuned_lens":
            raise InputError(f"lens_type {self.lens_type!r} is not a linear tuned lens; only 'linear_tuned_lens' "
                             "checkpoints can be loaded.")

    @classmethod
    def from_dict(cls, d: dict, where: str = "the lens config") -> TunedLensConfig:
        """Build from a saved dict; unknown keys are ignored with a warning, so newer files keep loading."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown keys {unknown}.", stacklevel=3)
        missing = [n for n in ("d_model", "num_hidden_layers") if n not in d]
        if missing:
            raise ModelLoadError(f"{where} lacks {missing}; a tuned lens config needs d_model and num_hidden_layers.")
        return cls(**{k: v for k, v in d.items() if k in known})


class TunedLens(nn.Module):
    """Per-layer affine translators before the model's own final norm and head (tuned-lens's ``TunedLens``).

    ``lens.forward(h, idx)``: logits ``(batch, pos, d_vocab)`` of hidden state ``idx`` ``(batch, pos, d_model)``;
    ``idx == n_layers`` (the final residual stream) goes through the head unchanged."""

    name = "tuned"

    def __init__(self, config: TunedLensConfig, unembed: Unembed | None = None) -> None:
        super().__init__()
        self.config = config
        self.history: list[tuple[int, float]] = []
        """``(step, mean KL)`` of the training steps run by the ``train`` call that returned this lens."""
        translator = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        nn.init.zeros_(translator.weight)
        if translator.bias is not None:
            nn.init.zeros_(translator.bias)
        self.layer_translators = nn.ModuleList(
            [_copy(translator) for _ in range(config.num_hidden_layers)])
        self.__dict__["unembed"] = unembed  # not a submodule: the model's weights stay out of the state dict

    @classmethod
    def from_model(cls, model, bias: bool = True) -> TunedLens:
        """An identity (untrained) tuned lens for ``model``."""
        cfg = TunedLensConfig(d_model=model.cfg.d_model, num_hidden_layers=model.cfg.n_layers, bias=bias,
                              base_model_name_or_path=str(getattr(model.hf_model, "name_or_path", "") or ""))
        return cls(cfg, Unembed(model)).to(model.cfg.device)

    @property
    def model(self):
        if self.unembed is None:
            raise InputError("this tuned lens is not attached to a model; load it with TunedLens.load(path, model).")
        return self.unembed.model

    def __len__(self) -> int:
        return len(self.layer_translators)

    def __getitem__(self, idx: int) -> nn.Module:
        return self.layer_translators[idx]

    def transform_hidden(self, h: Tensor, idx: int) -> Tensor:
        """``h + A_idx h + b_idx`` for hidden state ``idx``; the final hidden state (``idx == n_layers``) as is.
        Computed in the translators' dtype (float32) and cast back to the residual stream's."""
        if idx == len(self.layer_translators):
            return h
        t = self.layer_translators[idx]
        if h.shape[-1] != self.config.d_model:
            raise InputError(f"hidden state {idx} is {h.shape[-1]} wide but this tuned lens's translators are "
                             f"{self.config.d_model} wide (its d_model); pass the residual stream of its model.")
        x = h.to(t.weight.device, t.weight.dtype)  # a multi-device model's early layers sit elsewhere
        return (x + t(x)).to(h.dtype)

    def forward(self, h: Tensor, idx: int) -> Tensor:
        """Logits ``(batch, pos, d_vocab)`` of hidden state ``idx`` (``(batch, pos, d_model)``)."""
        return self.unembed(self.transform_hidden(h, idx))

    def run(self, input, *, k: int = 5, targets=None, max_bytes: int = DEFAULT_MAX_BYTES, **kwargs) -> LensResult:
        """Read every layer out for ``input`` through the tuned lens; see ``lens.run_lens``."""
        return run_lens(self, input, k=k, targets=targets, max_bytes=max_bytes, **kwargs)

    # ------------------------------------------------------------------------------------ saving and loading
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``cfg.json`` and ``params.safetensors`` into folder ``path`` (created), each atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer_translators.{k}": v.detach().contiguous().cpu()
                   for k, v in self.layer_translators.state_dict().items()}
        atomic_write(path / PARAMS, lambda f: save_file(tensors, f, metadata={"format": "pt"}))
        atomic_write(path / CONFIG, lambda f: Path(f).write_text(json.dumps(asdict(self.config), indent=2) + "\n"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model) -> TunedLens:
        """Load a lens folder for ``model``: mechscope's (``cfg.json`` + ``params.safetensors``) or a tuned-lens
        checkpoint (``config.json`` + ``params.pt``). Refused, with the numbers, when its width, layer count or
        tensor shapes do not fit the model."""
        path = Path(path)
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise ModelLoadError(f"tuned lens folder {str(path)!r} {what}; pass the folder written by "
                                 "TunedLens.save or `mechscope lens train --out DIR`.")
        cfg_file = next((path / n for n in (CONFIG, "config.json") if (path / n).is_file()), None)
        params = next((path / n for n in (PARAMS, "params.pt") if (path / n).is_file()), None)
        if cfg_file is None or params is None:
            raise ModelLoadError(f"{str(path)!r} is not a tuned lens folder: it needs cfg.json + params.safetensors "
                                 "(mechscope) or config.json + params.pt (tuned-lens), and has "
                                 f"{sorted(p.name for p in path.iterdir())}.")
        try:
            raw = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{str(cfg_file)!r} is corrupt: it is not valid JSON ({e}).") from None
        config = TunedLensConfig.from_dict(raw, where=str(cfg_file))
        state = _read_params(params)
        check_fits(config, state, model, str(path))
        lens = cls(config, Unembed(model))
        lens.layer_translators.load_state_dict(state)
        return lens.to(model.cfg.device)


def _copy(m: nn.Linear) -> nn.Linear:
    c = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    c.load_state_dict(m.state_dict())
    return c


def _read_params(file: Path) -> dict[str, Tensor]:
    try:
        if file.suffix == ".safetensors":
            state = load_file(file)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise ModelLoadError(f"{str(file)!r} could not be read as lens parameters ({type(e).__name__}: {e}); "
                             "re-save the lens or re-convert the checkpoint.") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{str(file)!r} does not hold a state dict of tensors.")
    prefix = "layer_translators."
    return {k[len(prefix):] if k.startswith(prefix) else k: v.float() for k, v in state.items()}


def check_fits(config: TunedLensConfig, state: dict[str, Tensor], model, where: str) -> None:
    """Refuse a lens that does not fit ``model``: width, layer count, and every translator tensor's shape."""
    c = model.cfg
    if config.d_model != c.d_model:
        raise InputError(f"the tuned lens in {where!r} is for d_model {config.d_model}, but this {c.family} model's "
                         f"residual stream is {c.d_model} wide; use a lens trained on this model.")
    if config.num_hidden_layers != c.n_layers:
        raise InputError(f"the tuned lens in {where!r} has {config.num_hidden_layers} translators, but this model has "
                         f"{c.n_layers} layers (one translator per layer); use a lens trained on this model.")
    d = config.d_model
    want = {f"{i}.weight": (d, d) for i in range(config.num_hidden_layers)}
    if config.bias:
        want |= {f"{i}.bias": (d,) for i in range(config.num_hidden_layers)}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise InputError(f"the parameters in {where!r} do not match its config ({config.num_hidden_layers} "
                         f"translators, bias={config.bias}): missing {missing[:4]}, unexpected {extra[:4]}.")
    for name, shape in want.items():
        if tuple(state[name].shape) != shape:
            raise InputError(f"translator tensor {name!r} in {where!r} has shape {tuple(state[name].shape)}, expected "
                             f"{shape} for d_model {d}.")


def atomic_write(target: Path, write) -> None:
    """Write a file through ``write(tmp_path)`` into a temporary file beside ``target``, then rename it over
    ``target``: a crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make a shared lens folder unreadable to others
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
