"""What a sparse dictionary is (:class:`SAEConfig`, saved as ``cfg.json``) and how its training loss is weighted
(:class:`LossConfig`, part of the trainer's config).

One config serves sparse autoencoders (read and reconstruct one hook point), transcoders (read ``hook_name``,
predict ``hook_name_out``) and skip-transcoders (a transcoder plus a linear skip ``x @ W_skip``)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from ..errors import InputError, ModelLoadError

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka")
NEEDS_K: tuple[str, ...] = ("topk", "batchtopk", "matryoshka")


@dataclass
class SAEConfig:
    """A sparse dictionary's shape, architecture and provenance. Saved as ``cfg.json`` beside the weights."""

    d_in: int
    """Width of the activation read (``d_model`` for the residual stream, ``d_mlp`` for ``mlp.hook_post``)."""
    d_sae: int
    """Number of latents (dictionary size)."""
    architecture: Architecture = "topk"
    """Activation function and loss: ``relu`` (L1 weighted by decoder norms), ``topk``, ``batchtopk`` (with a
    threshold used at inference), ``jumprelu`` (straight-through estimator), ``gated``, ``matryoshka`` (BatchTopK
    latents with nested prefix losses)."""
    hook_name: str = ""
    """The hook point read, e.g. ``blocks.1.hook_resid_post``."""
    hook_name_out: str | None = None
    """Transcoders: the hook point predicted (e.g. ``blocks.1.hook_mlp_out`` from ``blocks.1.ln2.hook_normalized``);
    None for an autoencoder, which reconstructs ``hook_name``."""
    d_out: int | None = None
    """Width of the output; None means ``d_in`` (always so for an autoencoder)."""
    skip: bool = False
    """Skip-transcoder: the output adds a linear map of the input, ``x @ W_skip`` (``W_skip (d_in, d_out)``)."""
    k: int | None = None
    """Active latents per token for ``topk``; the mean per token across a batch for ``batchtopk``/``matryoshka``."""
    matryoshka_sizes: list[int] | None = None
    """``matryoshka``: the nested prefix widths, ascending, the last equal to ``d_sae`` (e.g. ``[128, 512, 2048]``)."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding (autoencoders; SAELens's name)."""
    normalize_activations: Literal["none", "expected_average_only_in"] = "none"
    """How the trainer scaled activations: ``expected_average_only_in`` scales them so their mean norm is
    ``sqrt(d_in)``. The scale lives in the ``norm_scale_in``/``norm_scale_out`` buffers until folded into the
    weights (:meth:`SAE.fold_norm_scale_`), as every export does; encode/decode always take the model's own units."""
    dtype: str = "float32"
    """Parameter dtype."""
    model_name: str = ""
    """The model the dictionary was trained on (informational; also SAELens's ``model_name``)."""
    context_size: int | None = None
    """Tokens per training sequence, where known."""
    prepend_bos: bool = True
    """Whether training sequences began with BOS."""
    metadata: dict = field(default_factory=dict)
    """Anything else worth keeping: dataset, tokens trained on, evaluation figures, the trainer's config."""

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"an SAE's {name} must be a positive int, got {v!r}.")
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}.")
        if self.hook_name_out is None:
            if self.d_out not in (None, self.d_in):
                raise InputError(f"an autoencoder reconstructs its input, so d_out must equal d_in ({self.d_in}); "
                                 f"got {self.d_out}. Set hook_name_out for a transcoder.")
            if self.skip:
                raise InputError("skip=True makes a skip-transcoder, which needs hook_name_out (the point it predicts).")
        if self.d_out is not None and (isinstance(self.d_out, bool) or not isinstance(self.d_out, int) or self.d_out < 1):
            raise InputError(f"d_out must be a positive int or None, got {self.d_out!r}.")
        if self.architecture in NEEDS_K:
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
                raise InputError(f"architecture {self.architecture!r} needs k, the active latents per token, an int "
                                 f"from 1 to d_sae ({self.d_sae}); got {self.k!r}.")
        if self.architecture == "matryoshka":
            s = self.matryoshka_sizes
            if (not isinstance(s, list) or not s or any(isinstance(v, bool) or not isinstance(v, int) for v in s)
                    or s != sorted(set(s)) or s[0] < 1 or s[-1] != self.d_sae):
                raise InputError(f"matryoshka_sizes must be ascending distinct positive ints ending at d_sae "
                                 f"({self.d_sae}), e.g. [{self.d_sae // 16}, {self.d_sae // 4}, {self.d_sae}]; got {s!r}.")
        elif self.matryoshka_sizes is not None:
            raise InputError(f"matryoshka_sizes only applies to architecture 'matryoshka', not {self.architecture!r}.")
        if self.normalize_activations not in ("none", "expected_average_only_in"):
            raise InputError(f"normalize_activations must be 'none' or 'expected_average_only_in', "
                             f"got {self.normalize_activations!r}.")

    @property
    def width_out(self) -> int:
        """``d_out``, or ``d_in`` when None."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def is_transcoder(self) -> bool:
        return self.hook_name_out is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "the SAE config") -> SAEConfig:
        """Build from a saved dict; unknown keys are ignored with a warning, so newer files keep loading."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown keys {unknown}.", stacklevel=3)
        missing = [n for n in ("d_in", "d_sae") if n not in d]
        if missing:
            raise ModelLoadError(f"{where} lacks {missing}; an SAE config needs at least d_in and d_sae.")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class LossConfig:
    """How :meth:`SAE.training_forward` weighs its loss terms. Fields an architecture does not use are ignored.
    The trainer's config carries these fields (so the CLI flags and ``train(**options)`` reach them)."""

    l1_coefficient: float = 5.0
    """``relu``/``gated``: weight of the sparsity penalty ``sum_i f_i * ||W_dec[i]||`` (on normalised activations)."""
    l0_coefficient: float = 1.0
    """``jumprelu``: weight of the L0 penalty (through the threshold's straight-through estimator)."""
    jumprelu_bandwidth: float = 0.001
    """``jumprelu``: width of the rectangle kernel of the straight-through estimator."""
    auxk_coefficient: float = 1 / 32
    """``topk``/``batchtopk``/``matryoshka``: weight of the AuxK loss (dead latents reconstruct the residual error;
    Gao et al. 2024). 0 turns it off."""
    auxk_k: int | None = None
    """Dead latents used by AuxK per token; None means ``d_in // 2``."""

    def __post_init__(self) -> None:
        for name in ("l1_coefficient", "l0_coefficient", "auxk_coefficient"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"{name} must be a number >= 0, got {v!r}.")
        if not isinstance(self.jumprelu_bandwidth, (int, float)) or self.jumprelu_bandwidth <= 0:
            raise InputError(f"jumprelu_bandwidth must be > 0, got {self.jumprelu_bandwidth!r}.")
        if self.auxk_k is not None and (isinstance(self.auxk_k, bool) or not isinstance(self.auxk_k, int)
                                        or self.auxk_k < 1):
            raise InputError(f"auxk_k must be a positive int or None, got {self.auxk_k!r}.")
