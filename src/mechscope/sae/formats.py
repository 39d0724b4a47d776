"""Reading and writing sparse dictionaries: mechscope's own folder, SAELens 6's and EleutherAI sparsify's.

Every format is a folder of ``cfg.json`` plus one safetensors file; what differs is the file name, the config keys
and the weight layout:

==========  =========================  =====================================================================
format      weights file               layout
==========  =========================  =====================================================================
mechscope   ``sae_weights.safetensors``  the module's ``state_dict()`` (``W_enc (d_in, d_sae)``, ``W_dec (d_sae,
                                         d_out)``, ...); ``cfg.json`` is :meth:`SAEConfig.to_dict` plus
                                         ``"format": "mechscope"`` and ``mechscope_version``
saelens     ``sae_weights.safetensors``  the same orientation; ``W_skip (d_out, d_in)``; gated's ``b_gate/b_mag/
                                         r_mag``; BatchTopK/Matryoshka saved as JumpReLU with a per-latent
                                         ``threshold``; the config names the architecture (``standard``,
                                         ``topk``, ``jumprelu``, ``gated``, ``transcoder``, ...)
sparsify    ``sae.safetensors``          ``encoder.weight (d_sae, d_in)``, ``encoder.bias``, ``W_dec (d_sae,
                                         d_in)``, ``b_dec``, ``W_skip (d_in, d_in)`` applied as ``x @ W_skip.T``;
                                         a run folder holds one subfolder per hook point (``layers.6/``)
==========  =========================  =====================================================================

Saving folds the activation normalisation into the weights of a copy (the live SAE is untouched), writes a staging
folder and renames it into place, so a crash never leaves a half-written folder at the target. Weights are read
only from safetensors: pickle files are refused.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError, ModelLoadError
from ..lens.tuned import atomic_write
from .config import SAEConfig
from .sae import _REGISTRY, SAE

FORMATS: tuple[str, ...] = ("mechscope", "saelens", "sparsify")
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
"""mechscope's and SAELens's weights file."""
SPARSIFY_WEIGHTS_FILE = "sae.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
SAELENS_LAYOUT_VERSION = "6.0.0"
"""Written as ``metadata.sae_lens_version`` so SAELens reads our folders with its version-6 config rules."""

_SAELENS_JUMPRELU = ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder")
_SAELENS_KNOWN = ("standard", "topk", "gated", "batchtopk", "matryoshka_batchtopk", "transcoder", "skip_transcoder",
                  *_SAELENS_JUMPRELU)


# ------------------------------------------------------------------------------------------------ public API
def load(path: str | os.PathLike, *, sae_id: str | None = None, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None, format: str | None = None) -> SAE:
    """Load a sparse dictionary from a folder in any of :data:`FORMATS`, or from the HuggingFace hub.

    ``path`` is a local folder, a hub id ``"org/repo"`` (with ``sae_id`` naming the subfolder, e.g. ``"layers.6"``
    or SAELens's folder name) or ``"org/repo/sub/folder"``; a SAELens ``release`` name works as ``path`` when
    sae_lens is installed. ``format`` is detected from the files unless given. ``dtype`` (``"float32"`` or a torch
    dtype) overrides the saved one. The result is in eval mode with normalisation buffers at 1 (folded)."""
    from .hub import resolve

    folder = resolve(path, sae_id)
    if folder.is_file() and folder.name in (CFG_FILE, WEIGHTS_FILE, SPARSIFY_WEIGHTS_FILE):
        folder = folder.parent  # a file of the folder names the folder
    fmt = format or detect_format(folder)
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}.")
    cfg, state = _READERS[fmt](folder)
    if dtype is not None:
        cfg.dtype = _dtype_name(dtype)
    sae = _build(cfg, state, folder, device)
    sae.eval()
    return sae


def load_many(path: str | os.PathLike, layers: list[str] | None = None, *, device: str | torch.device | None = None,
              dtype: str | torch.dtype | None = None) -> dict[str, SAE]:
    """Every SAE of a run folder (one subfolder per hook point, as sparsify and multi-hook trainers write them),
    ``{subfolder name: SAE}`` in natural order; ``layers`` picks some (sparsify's ``SparseCoder.load_many``).
    A hub id fetches only the chosen subfolders."""
    from .hub import resolve

    if layers is not None:
        return {name: load(path, sae_id=name, device=device, dtype=dtype) for name in layers}
    folder = resolve(path)
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / CFG_FILE).exists()] if folder.is_dir() else []
    if not subs:
        raise ModelLoadError(f"{str(path)!r} holds no SAE subfolders (each with a cfg.json); for one SAE use load().")
    key = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]  # noqa: E731
    return {p.name: load(p, device=device, dtype=dtype) for p in sorted(subs, key=key)}


def save(sae: SAE, path: str | os.PathLike, format: str = "mechscope") -> Path:
    """Write ``sae`` to the folder ``path`` in ``format`` (one of :data:`FORMATS`); returns the folder.

    The normalisation scale is folded into a copy's weights first, so the files hold plain model-unit weights
    and ``sae`` itself is unchanged. An existing SAE folder at ``path`` is replaced; any other existing file or
    folder there is refused rather than overwritten."""
    if not isinstance(sae, SAE):
        raise InputError(f"save takes an SAE, got {type(sae).__name__}.")
    if format not in FORMATS:
        raise InputError(f"format {format!r} is not one of {', '.join(FORMATS)}; e.g. save(path, format='saelens').")
    path = Path(path)
    _check_target(path)
    folded = _folded_copy(sae)
    files = _WRITERS[format](folded)
    _write_folder(path, files)
    return path


def save_files(sae: SAE, folder: str | os.PathLike, format: str = "mechscope") -> Path:
    """Write ``sae``'s files in ``format`` into the existing folder ``folder``, each replaced atomically, leaving
    the folder's other files alone (the trainer keeps its ``checkpoint.safetensors`` beside the final SAE).
    :func:`save` is the whole-folder version for everything else."""
    if format not in FORMATS:
        raise InputError(f"format {format!r} is not one of {', '.join(FORMATS)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in _WRITERS[format](_folded_copy(sae)).items():
        if name.endswith(".json"):
            text = json.dumps(data, indent=1) + "\n"
            atomic_write(folder / name, lambda f, text=text: Path(f).write_text(text))
        else:
            tensors = {k: v.detach().contiguous().cpu() for k, v in data.items()}
            atomic_write(folder / name, lambda f, tensors=tensors: save_file(tensors, f))
    return folder


def detect_format(folder: str | os.PathLike) -> str:
    """Which of :data:`FORMATS` the folder holds, from its files and ``cfg.json``; a sentence when none."""
    folder = Path(folder)
    if not folder.exists():
        raise ModelLoadError(f"no SAE folder at {str(folder)!r}: the path does not exist. Pass a folder holding "
                             f"cfg.json and {WEIGHTS_FILE} (mechscope, SAELens) or {SPARSIFY_WEIGHTS_FILE} (sparsify).")
    if folder.is_file():
        if folder.suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(_pickle_message(folder))
        if folder.name in (CFG_FILE, WEIGHTS_FILE, SPARSIFY_WEIGHTS_FILE):
            return detect_format(folder.parent)
        raise ModelLoadError(f"{str(folder)!r} is a file; an SAE is a folder holding cfg.json and its safetensors "
                             "weights. Pass the folder.")
    names = {p.name for p in folder.iterdir()}
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    has_weights = WEIGHTS_FILE in names or SPARSIFY_WEIGHTS_FILE in names
    if CFG_FILE not in names:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / CFG_FILE).exists())
        if subs:
            raise InputError(f"{str(folder)!r} is a run folder holding several SAEs ({', '.join(subs[:8])}"
                             f"{', ...' if len(subs) > 8 else ''}); choose one with sae_id=, e.g. "
                             f"load({str(folder)!r}, sae_id={subs[0]!r}).")
        if pickles and not has_weights:
            raise ModelLoadError(_pickle_message(folder / pickles[0]))
        raise ModelLoadError(f"{str(folder)!r} is not an SAE folder: it has no cfg.json. mechscope and SAELens "
                             f"folders hold cfg.json + {WEIGHTS_FILE}, sparsify's cfg.json + {SPARSIFY_WEIGHTS_FILE}.")
    if not has_weights:
        if pickles:
            raise ModelLoadError(_pickle_message(folder / pickles[0]))
        raise ModelLoadError(f"{str(folder)!r} has cfg.json but no weights: expected {WEIGHTS_FILE} (mechscope, "
                             f"SAELens) or {SPARSIFY_WEIGHTS_FILE} (sparsify). Copy the weights file beside cfg.json.")
    cfg = _read_json(folder / CFG_FILE)
    if cfg.get("format") == "mechscope":
        return "mechscope"
    if SPARSIFY_WEIGHTS_FILE in names and WEIGHTS_FILE not in names:
        return "sparsify"
    if "architecture" in cfg or "metadata" in cfg or "hook_name" in cfg or "hook_point" in cfg or "d_sae" in cfg:
        return "saelens"
    raise ModelLoadError(f"{str(folder)!r}: cannot tell which format cfg.json is in (no 'format', 'architecture' "
                         "or 'd_sae' key). Pass format='mechscope', 'saelens' or 'sparsify'.")


# ------------------------------------------------------------------------------------------------ helpers
def _pickle_message(p: Path) -> str:
    return (f"{str(p)!r} is a pickle file; mechscope reads weights only from safetensors, because loading a pickle "
            "can run arbitrary code. Convert it where you trust it: state = torch.load(p, weights_only=True); "
            "safetensors.torch.save_file(state, 'sae_weights.safetensors').")


def _read_json(p: Path) -> dict:
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{str(p)!r} is not valid JSON ({e.msg} at line {e.lineno}); restore the SAE's "
                             "cfg.json.") from None
    if not isinstance(d, dict):
        raise ModelLoadError(f"{str(p)!r} holds a JSON {type(d).__name__}, not the object of an SAE config.")
    return d


def _read_tensors(p: Path) -> dict[str, torch.Tensor]:
    if not p.exists():
        raise ModelLoadError(f"missing weights file {str(p)!r}; copy it beside cfg.json.")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
        raise ModelLoadError(f"{str(p)!r} is not a readable safetensors file ({e}); re-save or re-download it."
                             ) from None


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    name = str(dtype).removeprefix("torch.")
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise InputError(f"dtype {dtype!r} is not a torch dtype name; use e.g. 'float32' or 'bfloat16'.")
    return name


def _build(cfg: SAEConfig, state: dict[str, torch.Tensor], folder: Path, device) -> SAE:
    """``SAE(cfg)`` with ``state`` copied in; a sentence for an unregistered architecture or a key/shape mismatch."""
    if cfg.architecture not in _REGISTRY:
        raise ModelLoadError(f"{str(folder)!r} holds a {cfg.architecture!r} SAE, but no class is registered for it "
                             f"in this mechscope (registered: {', '.join(sorted(_REGISTRY))}); update mechscope.")
    sae = SAE(cfg, device=device)
    own = sae.state_dict()
    state = _adapt_threshold(state, own)
    if "b_gate" in state and "b_gate" not in own and "b_enc" in own and "b_enc" not in state:
        state = {("b_enc" if k == "b_gate" else k): v for k, v in state.items()}  # gated keeps the gate bias as b_enc
    missing = sorted(set(own) - set(state) - {"norm_scale_in", "norm_scale_out"})
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                         + ([f"unexpected {', '.join(extra)}"] if extra else []))
        raise ModelLoadError(f"{str(folder)!r}: the weights do not fit a {cfg.architecture!r} SAE ({what}); the "
                             "cfg.json and weights file belong to different SAEs, or the architecture is wrong.")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelLoadError(f"{str(folder)!r}: weight {k!r} has shape {tuple(v.shape)} but cfg.json "
                                 f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}, d_out={cfg.width_out}) needs "
                                 f"{tuple(own[k].shape)}; the config and weights belong to different SAEs.")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    return sae


def _adapt_threshold(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Files carry a JumpReLU-style ``threshold (d_sae,)``; the module may keep it as ``log_threshold`` or a
    scalar buffer (BatchTopK). Convert to what the module holds."""
    if "threshold" not in state or "threshold" in own and own["threshold"].shape == state["threshold"].shape:
        return state
    state = dict(state)
    t = state.pop("threshold")
    if "log_threshold" in own:
        state["log_threshold"] = t.float().clamp_min(torch.finfo(torch.float32).tiny).log().to(t.dtype)
    elif "threshold" in own and own["threshold"].numel() == 1:
        if not torch.all(t == t.flatten()[0]):
            raise ModelLoadError("per-latent thresholds differ, so this is a JumpReLU SAE, not BatchTopK; load it "
                                 "with architecture 'jumprelu'.")
        state["threshold"] = t.flatten()[0].reshape(own["threshold"].shape)
    else:
        state["threshold"] = t
    return state


def _threshold(sae: SAE) -> torch.Tensor:
    """The per-latent inference threshold ``(d_sae,)`` of a JumpReLU/BatchTopK/Matryoshka SAE."""
    sd = sae.state_dict()
    if "threshold" in sd:
        t = sd["threshold"]
    elif "log_threshold" in sd:
        t = sd["log_threshold"].exp()
    else:
        t = getattr(sae, "threshold", None)
        if not isinstance(t, torch.Tensor):
            raise InputError(f"this {sae.cfg.architecture!r} SAE has no inference threshold to save.")
    return t.detach().reshape(-1).expand(sae.cfg.d_sae).clone()


def _folded_copy(sae: SAE) -> SAE:
    out = copy.deepcopy(sae).cpu()
    out.fold_norm_scale_()
    return out


def _is_sae_folder(path: Path) -> bool:
    names = {p.name for p in path.iterdir()}
    return CFG_FILE in names and bool(names & {WEIGHTS_FILE, SPARSIFY_WEIGHTS_FILE}) and all(
        (path / n).is_file() for n in names)


def _check_target(path: Path) -> None:
    if path.is_file():
        raise InputError(f"{str(path)!r} is a file; save writes a folder. Choose a new path.")
    if path.is_dir() and any(path.iterdir()) and not _is_sae_folder(path):
        raise InputError(f"{str(path)!r} exists and is not an SAE folder; save refuses to replace it. Choose a new "
                         "or empty folder.")


def _write_folder(path: Path, files: dict[str, dict[str, torch.Tensor] | dict]) -> None:
    """Write ``{name: tensors or json dict}`` into a staging folder beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(stage, 0o777 & ~_umask())
        for name, data in files.items():
            if name.endswith(".json"):
                (stage / name).write_text(json.dumps(data, indent=1) + "\n")
            else:
                save_file({k: v.detach().contiguous().cpu() for k, v in data.items()}, str(stage / name))
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "x")
            os.replace(stage, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _plain_state(sae: SAE) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sae.state_dict().items() if k not in ("norm_scale_in", "norm_scale_out")}


# ------------------------------------------------------------------------------------------------ mechscope
def _read_mechscope(folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    d = _read_json(folder / CFG_FILE)
    d = {k: v for k, v in d.items() if k not in ("format", "mechscope_version")}
    cfg = SAEConfig.from_dict(d, where=str(folder / CFG_FILE))
    return cfg, _read_tensors(folder / WEIGHTS_FILE)


def _write_mechscope(sae: SAE) -> dict:
    from .. import __version__

    return {CFG_FILE: {**sae.cfg.to_dict(), "format": "mechscope", "mechscope_version": __version__},
            WEIGHTS_FILE: _plain_state(sae)}


# ------------------------------------------------------------------------------------------------ SAELens
def _saelens_v5_keys(d: dict) -> dict:
    """SAELens 5's config keys, renamed to version 6's (as SAELens's own ``handle_pre_6_0_config`` does)."""
    ren = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}
    d = {ren.get(k, k): v for k, v in d.items()}
    if d.get("activation_fn") == "topk" and (d.get("activation_fn_kwargs") or {}).get("k") is not None:
        d.setdefault("architecture", "topk")
        d["k"] = d["activation_fn_kwargs"]["k"]
    if isinstance(d.get("normalize_activations"), bool):
        d["normalize_activations"] = "expected_average_only_in" if d["normalize_activations"] else "none"
    if d.get("normalize_activations") is None:
        d["normalize_activations"] = "none"
    d.setdefault("architecture", "standard")
    return d


def _read_saelens(folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    where = str(folder / CFG_FILE)
    d = _saelens_v5_keys(_read_json(folder / CFG_FILE))
    md = d.get("metadata") or {}
    arch = d["architecture"]
    if arch not in _SAELENS_KNOWN:
        raise ModelLoadError(f"{where}: SAELens architecture {arch!r} has no mechscope equivalent (mechscope reads "
                             f"{', '.join(_SAELENS_KNOWN)}); load it with SAELens instead.")
    for key in ("d_in", "d_sae"):
        if not isinstance(d.get(key), int):
            raise ModelLoadError(f"{where} lacks {key!r}, which every SAELens config has; restore the SAE's cfg.json.")
    norm = d.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in"):
        raise ModelLoadError(f"{where}: normalize_activations={norm!r} normalises each input at run time, which "
                             "mechscope's SAE does not model; fold it with SAELens first or load it with SAELens.")
    state = _read_tensors(folder / WEIGHTS_FILE)
    for k in ("W_enc", "W_dec", "b_dec"):
        if k not in state:
            raise ModelLoadError(f"{str(folder / WEIGHTS_FILE)!r} lacks {k!r}; it is not a SAELens SAE's weights file.")
    hook = d.get("hook_name") or md.get("hook_name") or ""
    hf_hook = None
    if (d.get("model_class_name") or md.get("model_class_name")) == "AutoModelForCausalLM" and "transcoder" not in arch:
        hf_hook, hook = hook, sparsify_hook_names(hook, False)[0]  # an HF module path, e.g. model.layers.1
    training = md.get("training_architecture") or arch
    details = md.get("training_architecture_details") or {}
    transcoder = "transcoder" in arch
    kw: dict = dict(d_in=d["d_in"], d_sae=d["d_sae"], hook_name=hook, dtype=_dtype_name(d.get("dtype", "float32")),
                    model_name=d.get("model_name") or md.get("model_name") or "",
                    context_size=d.get("context_size") or md.get("context_size"),
                    prepend_bos=bool(d.get("prepend_bos", md.get("prepend_bos", True))),
                    apply_b_dec_to_input=bool(d.get("apply_b_dec_to_input", True)) and not transcoder,
                    normalize_activations=norm)
    if transcoder:
        kw.update(hook_name_out=d.get("hook_name_out") or md.get("hook_name_out") or "", d_out=d.get("d_out"),
                  skip="skip" in arch)
    state = dict(state)
    if "W_skip" in state:
        state["W_skip"] = state["W_skip"].T  # SAELens: (d_out, d_in)
    if "scaling_factor" in state or "finetuning_scaling_factor" in state:  # SAELens <= 5: acts scaled before decode
        s = state.pop("scaling_factor", None)
        s = state.pop("finetuning_scaling_factor", s)
        state["W_dec"] = state["W_dec"] * s.to(state["W_dec"].dtype)[:, None]
    if arch == "standard" or arch in ("transcoder", "skip_transcoder"):
        kw["architecture"] = "relu"
    elif arch == "topk":
        kw.update(architecture="topk", k=d.get("k"))
        if d.get("rescale_acts_by_decoder_norm"):
            _fold_decoder_norm(state)
    elif arch == "gated":
        kw["architecture"] = "gated"
    elif arch in ("batchtopk", "matryoshka_batchtopk"):  # a training checkpoint, not an inference export
        kw.update(architecture="batchtopk" if arch == "batchtopk" else "matryoshka", k=_int_k(d.get("k"), where))
        if d.get("rescale_acts_by_decoder_norm", True):
            _fold_decoder_norm(state)
        state["threshold"] = torch.full((d["d_sae"],), float(state.pop("topk_threshold")), dtype=state["W_enc"].dtype)
        if arch == "matryoshka_batchtopk":
            kw["matryoshka_sizes"] = list(d.get("matryoshka_widths") or [])
    else:  # jumprelu family; SAELens exports BatchTopK and Matryoshka this way
        kw["architecture"] = "jumprelu"
        k = details.get("k", d.get("k"))
        mine = {"batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka"}.get(training)
        t = state.get("threshold")
        if mine in _REGISTRY and k is not None and t is not None and torch.all(t == t.flatten()[0]):
            kw.update(architecture=mine, k=_int_k(k, where))
            if mine == "matryoshka":
                kw["matryoshka_sizes"] = list(details.get("matryoshka_widths") or [])
    kw["metadata"] = {}
    if training != arch:
        kw["metadata"].update(saelens_training_architecture=training, saelens_training_details=details)
    if hf_hook is not None:
        kw["metadata"]["saelens_hook_name"] = hf_hook
    try:
        cfg = SAEConfig(**kw)
    except InputError as e:
        raise ModelLoadError(f"{where}: {e}") from None
    if norm == "expected_average_only_in":
        warnings.warn(f"{where} says activations were scaled to mean norm sqrt(d_in), but a SAELens folder does not "
                      "carry the scale: the SAE works in those scaled units. Multiply inputs by the factor (and "
                      "outputs by its inverse), or fold it with SAELens's fold_activation_norm_scaling_factor.",
                      stacklevel=3)
    return cfg, state


def _int_k(k, where: str) -> int:
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if not isinstance(k, int):
        raise ModelLoadError(f"{where}: k={k!r} is not a whole number of latents; mechscope's BatchTopK needs an "
                             "int k.")
    return k


def _fold_decoder_norm(state: dict[str, torch.Tensor]) -> None:
    """SAELens's ``rescale_acts_by_decoder_norm``: pre-activations times ``||W_dec[i]||``, latents divided by it
    before decoding. The same function with unit decoder rows: scale ``W_enc``/``b_enc`` up, ``W_dec`` down."""
    n = state["W_dec"].float().norm(dim=-1).clamp_min(1e-8)
    state["W_enc"] = (state["W_enc"].float() * n).to(state["W_enc"].dtype)
    state["b_enc"] = (state["b_enc"].float() * n).to(state["b_enc"].dtype)
    state["W_dec"] = (state["W_dec"].float() / n[:, None]).to(state["W_dec"].dtype)


def _write_saelens(sae: SAE) -> dict:
    c = sae.cfg
    arch, sd = c.architecture, _plain_state(sae)
    tc, skip = c.is_transcoder, c.skip
    state = {k: sd[k] for k in ("W_enc", "W_dec", "b_dec")}
    if arch == "gated":
        if tc:
            raise InputError("SAELens has no gated transcoder; save a gated transcoder with format='mechscope'.")
        state.update(b_gate=sd["b_gate"] if "b_gate" in sd else sd["b_enc"], b_mag=sd["b_mag"], r_mag=sd["r_mag"])
        name = "gated"
    else:
        state["b_enc"] = sd["b_enc"]
        if arch == "relu":
            name = "skip_transcoder" if skip else "transcoder" if tc else "standard"
        elif arch == "topk":
            if tc:
                raise InputError("SAELens 6 has no TopK transcoder; save it with format='mechscope' or 'sparsify'.")
            name = "topk"
        elif arch in ("jumprelu", "batchtopk", "matryoshka"):
            state["threshold"] = _threshold(sae).to(sd["W_enc"].dtype)
            name = "jumprelu_skip_transcoder" if skip else "jumprelu_transcoder" if tc else "jumprelu"
        else:
            raise InputError(f"SAELens has no architecture for mechscope's {arch!r}; save with format='mechscope'.")
    if skip:
        state["W_skip"] = sd["W_skip"].T.contiguous()  # SAELens: (d_out, d_in)
    md = {"sae_lens_version": SAELENS_LAYOUT_VERSION, "model_name": c.model_name, "hook_name": c.hook_name,
          "context_size": c.context_size, "prepend_bos": c.prepend_bos, "converted_by": "mechscope"}
    if tc:
        md["hook_name_out"] = c.hook_name_out
    if arch in ("batchtopk", "matryoshka"):
        md["training_architecture"] = "batchtopk" if arch == "batchtopk" else "matryoshka_batchtopk"
        md["training_architecture_details"] = {"k": c.k, **({"matryoshka_widths": c.matryoshka_sizes}
                                                             if arch == "matryoshka" else {})}
    cfg = {"architecture": name, "d_in": c.d_in, "d_sae": c.d_sae, "dtype": c.dtype, "device": "cpu",
           "apply_b_dec_to_input": bool(c.apply_b_dec_to_input and not tc), "normalize_activations": "none",
           "reshape_activations": "hook_z" if c.hook_name.endswith("hook_z") else "none", "metadata": md}
    if arch == "topk":
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    if tc:
        cfg["d_out"] = c.width_out
    return {CFG_FILE: cfg, WEIGHTS_FILE: state}


# ------------------------------------------------------------------------------------------------ sparsify
_SPARSIFY_HOOK = re.compile(r"^(?:.*\.)?(?:layers|h|blocks)\.(\d+)(\.mlp)?$")


def sparsify_hook_names(hookpoint: str, transcode: bool) -> tuple[str, str | None]:
    """mechscope's ``(hook_name, hook_name_out)`` for a sparsify hookpoint (a module path): ``layers.6`` is the
    residual stream after block 6; ``layers.6.mlp`` the MLP's output (a transcoder reads the MLP's input, the
    normalised residual). Other module paths are kept as they are."""
    m = _SPARSIFY_HOOK.match(hookpoint)
    if not m:
        return hookpoint, (hookpoint if transcode else None)
    layer, mlp = m.group(1), m.group(2)
    if not mlp:
        return f"blocks.{layer}.hook_resid_post", (f"blocks.{layer}.hook_resid_post" if transcode else None)
    if transcode:
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    return f"blocks.{layer}.hook_mlp_out", None


def _read_sparsify(folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    where = str(folder / CFG_FILE)
    d = _read_json(folder / CFG_FILE)
    if not isinstance(d.get("d_in"), int):
        raise ModelLoadError(f"{where} lacks 'd_in', which sparsify writes beside its SparseCoderConfig.")
    if d.get("activation", "topk") != "topk":
        raise ModelLoadError(f"{where}: sparsify activation {d['activation']!r} has no mechscope equivalent "
                             "(mechscope reads sparsify's 'topk' coders).")
    for flag in ("embed_skip", "gram_lookup"):
        if d.get(flag):
            raise ModelLoadError(f"{where}: {flag}=True makes the coder read activations besides its own input, "
                                 "which mechscope's SAE does not model; load it with sparsify.")
    w = _read_tensors(folder / SPARSIFY_WEIGHTS_FILE)
    for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
        if k not in w:
            raise ModelLoadError(f"{str(folder / SPARSIFY_WEIGHTS_FILE)!r} lacks {k!r}; it is not a sparsify coder's "
                                 "weights file (or it was saved without a decoder).")
    d_in, transcode = d["d_in"], bool(d.get("transcode", False))
    d_sae = d.get("num_latents") or d_in * d.get("expansion_factor", 32)
    hookpoint = folder.resolve().name
    skip = bool(d.get("skip_connection", False))
    hook, hook_out = sparsify_hook_names(hookpoint, transcode)
    state = {"W_enc": w["encoder.weight"].T, "b_enc": w["encoder.bias"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if skip and not transcode:
        # an autoencoder with a linear skip is, to mechscope, a skip-transcoder from the hook point to itself; its
        # input-side b_dec moves into b_enc: (x - b_dec) @ W_enc + b_enc = x @ W_enc + (b_enc - b_dec @ W_enc)
        hook_out = hook
        state["b_enc"] = state["b_enc"] - state["b_dec"] @ state["W_enc"]
    try:
        cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=d.get("k", 32), hook_name=hook,
                        hook_name_out=hook_out, d_out=d_in if hook_out is not None else None,
                        skip=skip, apply_b_dec_to_input=hook_out is None,
                        dtype=_dtype_name(w["encoder.weight"].dtype),
                        metadata={"sparsify_hookpoint": hookpoint, "sparsify_cfg": d})
    except InputError as e:
        raise ModelLoadError(f"{where}: {e}") from None
    if "W_skip" in w:
        state["W_skip"] = w["W_skip"].T
    return cfg, state


def _write_sparsify(sae: SAE) -> dict:
    c = sae.cfg
    if c.architecture != "topk":
        raise InputError(f"sparsify has only TopK coders; this SAE is {c.architecture!r}. Save it with "
                         "format='mechscope' or 'saelens'.")
    if c.is_transcoder and c.width_out != c.d_in:
        raise InputError(f"sparsify transcoders predict an output as wide as their input; this one maps {c.d_in} to "
                         f"{c.width_out}. Save it with format='mechscope'.")
    if not c.is_transcoder and not c.apply_b_dec_to_input:
        raise InputError("sparsify autoencoders always subtract b_dec from their input; this SAE has "
                         "apply_b_dec_to_input=False. Save it with format='mechscope' or 'saelens'.")
    sd = _plain_state(sae)
    state = {"encoder.weight": sd["W_enc"].T.contiguous(), "encoder.bias": sd["b_enc"], "W_dec": sd["W_dec"],
             "b_dec": sd["b_dec"]}
    if c.skip:
        state["W_skip"] = sd["W_skip"].T.contiguous()
    cfg = {"activation": "topk", "expansion_factor": max(c.d_sae // c.d_in, 1), "normalize_decoder": True,
           "num_latents": c.d_sae, "k": c.k, "multi_topk": False, "skip_connection": c.skip,
           "transcode": c.is_transcoder, "d_in": c.d_in}
    return {CFG_FILE: cfg, SPARSIFY_WEIGHTS_FILE: state}


_READERS = {"mechscope": _read_mechscope, "saelens": _read_saelens, "sparsify": _read_sparsify}
_WRITERS = {"mechscope": _write_mechscope, "saelens": _write_saelens, "sparsify": _write_sparsify}


# ------------------------------------------------------------------------------------------------ on the SAE class
def _sae_save(self: SAE, path: str | os.PathLike, format: str = "mechscope") -> Path:
    """Write this SAE to the folder ``path`` (``format``: ``mechscope``, ``saelens`` or ``sparsify``); see
    :func:`mechscope.sae.formats.save`."""
    return save(self, path, format=format)


def _sae_load(cls, path: str | os.PathLike, *, sae_id: str | None = None, device=None, dtype=None,
              format: str | None = None) -> SAE:
    """``SAE.load(path)``: :func:`mechscope.sae.load`."""
    return load(path, sae_id=sae_id, device=device, dtype=dtype, format=format)


def _sae_load_from_disk(cls, path: str | os.PathLike, device: str = "cpu", dtype: str | None = None) -> SAE:
    """SAELens's ``SAE.load_from_disk(path, device, dtype)``: any folder :func:`load` reads."""
    return load(path, device=device, dtype=dtype)


def _sae_from_pretrained(cls, release: str, sae_id: str, device: str = "cpu", dtype: str = "float32") -> SAE:
    """SAELens's ``SAE.from_pretrained(release, sae_id)``: a hub repo (or SAELens release name, when sae_lens is
    installed) and the folder in it."""
    return load(release, sae_id=sae_id, device=device, dtype=dtype)


def _sae_save_model(self: SAE, path: str | os.PathLike) -> tuple[Path, Path]:
    """SAELens's ``sae.save_model(path)``: a SAELens-format folder; returns ``(weights_path, cfg_path)``."""
    p = save(self, path, format="saelens")
    return p / WEIGHTS_FILE, p / CFG_FILE


def attach() -> None:
    """Give :class:`SAE` its file methods: ``save``, ``load``, and SAELens's ``load_from_disk``,
    ``from_pretrained``, ``save_model`` (called once by ``mechscope.sae``)."""
    SAE.save = _sae_save
    SAE.load = classmethod(_sae_load)
    SAE.load_from_disk = classmethod(_sae_load_from_disk)
    SAE.from_pretrained = classmethod(_sae_from_pretrained)
    SAE.save_model = _sae_save_model
