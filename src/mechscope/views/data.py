"""What the views embed: inputs checked and turned into compact JSON-ready data.

Everything a view shows is computed here, in Python, so it is testable without a browser; the JavaScript only
draws. Numbers are kept to 4 significant digits (hover shows them), non-finite values become ``None`` (drawn
blank: hybrids have NaN rows for their non-attention layers), token strings are made visible (``" the"`` shows as
``"·the"``, a newline as ``"⏎"``). Attention patterns, the one large input, are packed as 16-bit integers in
base64 so 30 layers × 9 heads × 64 tokens stay near 1.5 MB.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from ..errors import InputError, InputTypeError, type_name

# shown instead of characters that would be invisible or would break the layout
_VISIBLE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "␍"}
_NAN_CODE = 65535  # attention packing: 0..65534 encode [lo, hi], 65535 is "no value"


def as_array(x, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``x`` (a torch tensor, numpy array or nested lists) as float64 numpy with one of ``ndims`` dimensions."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_complex():
            raise InputTypeError(f"{name} must hold real numbers; got {type_name(x)}.")
        x = x.double().numpy()  # also bfloat16 and float16, which numpy cannot take directly
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputTypeError(
            f"{name} must be numbers in a rectangular tensor, array or nested list; got {type_name(x)} ({e})."
        ) from e
    if a.ndim not in ndims:
        shapes = " or ".join(f"{n}-D" for n in ndims)
        raise InputError(f"{name} must be {shapes}; got shape {tuple(a.shape)}. Index or reshape it first.")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {tuple(a.shape)}); there is nothing to show.")
    return a


def as_tokens(tokens, n: int, what: str) -> list[str]:
    """``tokens`` as a list of ``n`` strings (one per position of ``what``)."""
    if isinstance(tokens, str):
        raise InputTypeError(
            "tokens must be a list of strings, one per position (e.g. model.to_str_tokens(prompt)); got one "
            f"string {tokens[:40]!r}."
        )
    if hasattr(tokens, "shape") or not isinstance(tokens, (list, tuple)) or not all(
            isinstance(t, str) for t in tokens):
        raise InputTypeError(
            "tokens must be a list of strings, one per position; got "
            f"{type_name(tokens)}. For token ids, pass model.to_str_tokens(ids) instead."
        )
    if len(tokens) != n:
        raise InputError(
            f"tokens has {len(tokens)} entries but {what} has {n} positions; pass one token string per position "
            "(the same tokens the values were computed on)."
        )
    return list(tokens)


def as_labels(labels, n: int, name: str, default: str) -> list[str]:
    """``n`` labels as strings (whitespace made visible as :func:`display_label` does); ``None`` gives
    ``default.format(i)``."""
    if labels is None:
        return [default.format(i) for i in range(n)]
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise InputTypeError(f"{name} must be a list of {n} labels; got {type_name(labels)}.")
    labels = [display_label(str(x)) for x in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if len(labels) != n:
        raise InputError(f"{name} has {len(labels)} entries but the values have {n} along that axis; "
                         f"give one label each.")
    return labels


def display_token(token: str) -> str:
    """The token with whitespace and control characters made visible; ``"∅"`` for the empty string."""
    out = []
    for c in token:
        if c in _VISIBLE:
            out.append(_VISIBLE[c])
        elif not c.isprintable():
            out.append(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out) or "∅"


def display_label(label: str) -> str:
    """A row/column label: made visible like a token only when it would otherwise hide characters (``" John"``
    shows as ``"·John"``, ``"layer 3"`` stays as it is)."""
    if label and (label != label.strip() or not label.isprintable()):
        return display_token(label)
    return label


def line_breaks(tokens: list[str]) -> list[int]:
    """Positions whose token contains a newline: the text wraps after them, as it would on the page."""
    return [i for i, t in enumerate(tokens) if "\n" in t]


def rounded(a: np.ndarray) -> list:
    """``a`` as nested lists of floats with 4 significant digits; NaN and ±inf become ``None``."""
    flat = [float(f"{v:.4g}") if math.isfinite(v) else None for v in a.ravel().tolist()]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


@dataclass(frozen=True)
class ColorScale:
    """How values map to colours. ``sequential``: ``lo`` (white) to ``hi`` (dark); ``diverging``: blue below
    ``center``, white at it, red above, symmetric (``lo``/``hi`` are ``center ∓`` the largest deviation)."""

    kind: Literal["sequential", "diverging"]
    lo: float
    hi: float
    center: float


def color_scale(a: np.ndarray, center: float | None = None) -> ColorScale:
    """Diverging around ``center`` (0 when any value is negative), else sequential from 0 to the maximum."""
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return ColorScale("sequential", 0.0, 1.0, 0.0)
    lo, hi = float(finite.min()), float(finite.max())
    if center is None and lo >= 0:
        return ColorScale("sequential", 0.0, _sig(hi) if hi > 0 else 1.0, 0.0)
    center = 0.0 if center is None else float(center)
    half = max(hi - center, center - lo) or 1.0
    return ColorScale("diverging", _sig(center - half), _sig(center + half), center)


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


@dataclass(frozen=True)
class PackedPattern:
    """Attention weights ``[layer, head, q, k]`` as little-endian uint16 codes, base64. Codes 0..65534 are
    ``lo + code * (hi - lo) / 65534``, 65535 is NaN. With ``causal`` only ``k <= q`` is stored, row by row
    (``q * (q + 1) / 2 + k`` within a head), else all ``q * n + k``. ``decimals`` is what the quantisation step
    supports when a weight is shown."""

    packed: str
    causal: bool
    lo: float
    hi: float
    decimals: int


def pack_pattern(p: np.ndarray) -> PackedPattern:
    """Quantise ``p`` (layer, head, q, k) to 16 bits, keeping only the lower triangle when the upper is empty."""
    n = p.shape[-1]
    upper = np.triu_indices(n, 1)
    causal = not np.any(np.nan_to_num(p[..., upper[0], upper[1]], nan=0.0) != 0)
    if causal:
        lower = np.tril_indices(n)
        flat = p[..., lower[0], lower[1]]  # (layer, head, n(n+1)/2) row-major over (q, k<=q)
    else:
        flat = p.reshape(p.shape[0], p.shape[1], n * n)
    finite = np.isfinite(flat)
    lo = min(0.0, float(flat[finite].min())) if finite.any() else 0.0
    hi = float(flat[finite].max()) if finite.any() else 1.0
    hi = hi if hi > lo else lo + 1.0
    codes = np.round((np.where(finite, flat, lo) - lo) / (hi - lo) * (_NAN_CODE - 1))
    codes = np.where(finite, codes, _NAN_CODE).astype("<u2")
    decimals = max(0, math.ceil(-math.log10((hi - lo) / (_NAN_CODE - 1))) - 1)
    return PackedPattern(base64.b64encode(codes.tobytes()).decode("ascii"), causal, lo, hi, decimals)


def unpack_pattern(packed: PackedPattern, n_layers: int, n_heads: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_pattern` (up to its quantisation), as the browser decodes it; for tests."""
    codes = np.frombuffer(base64.b64decode(packed.packed), dtype="<u2").astype(np.float64)
    values = np.where(codes == _NAN_CODE, np.nan, packed.lo + codes * (packed.hi - packed.lo) / (_NAN_CODE - 1))
    values = values.reshape(n_layers, n_heads, -1)
    out = np.full((n_layers, n_heads, n, n), np.nan)
    if packed.causal:
        q, k = np.tril_indices(n)
        out[..., q, k] = values
    else:
        out[:] = values.reshape(n_layers, n_heads, n, n)
    return out


def scale_dict(scale: ColorScale) -> dict:
    return asdict(scale)


def to_json(data: dict) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left
    raw, so a token like ``</script>`` cannot end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
