"""Linear probes on activations: which layer (or head) linearly encodes a property of the input, and along which
direction.

Two probes, both fitted on every *unit* (a layer, or a layer's head) at once on one ``(*units, n, d)`` tensor:

- **logistic regression** (multinomial, L2-penalised, full-batch L-BFGS on one ``(*units, d, classes)`` weight
  tensor): the best linear read-out. Features are standardised per unit on the training split (residual streams
  have a few huge dimensions that would otherwise dominate the penalty and the conditioning); the returned
  classifier ``W, b`` is mapped back to the original coordinates.
- **difference of means** (Marks & Tegmark 2023, "The Geometry of Truth"): the direction from one class's mean
  activation to the other's. It classifies by the nearest class mean, and it is the better direction for steering:
  it follows the data's own geometry rather than whatever direction best separates a finite training set.

Both return a :class:`ProbeResult`: train and test accuracy per unit, unit directions for steering
(``(*units, d)`` for two classes, ``(*units, classes, d)`` for more) and the linear classifier itself. The
train/test split is stratified and seeded.

Activations come from a model and prompts (:func:`collect_activations`, one position per prompt, gathered in
batches by hooks: nothing else is kept) or from an ``ActivationCache`` (:func:`activations_from_cache`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .attention_analysis import as_batch
from .cache import _SHORT, act_name
from .errors import InputError, InputTypeError, type_name
from .tokens import Batch

Method = Literal["logistic", "diff_means"]
Position = int | Sequence[int] | Tensor
"""An index into every prompt (negative: from each prompt's own end, so -1 is its last real token), or one index
per prompt."""


# ----------------------------------------------------------------------------------------------- activations
def _hook_names(model, hook: str, layers: Sequence[int] | None) -> tuple[list[str], list[str]]:
    """(hook names, unit labels) for a shorthand over ``layers`` (default: every block that has it) or one full
    hook name."""
    if not isinstance(hook, str):
        raise InputTypeError(f"hook must be a shorthand such as 'resid_post' or a full hook name, got "
                             f"{type_name(hook)}.")
    if hook in model.hook_dict:
        if layers is not None:
            raise InputError(f"{hook!r} is one hook point, so layers= does not apply; pass a shorthand "
                             f"('resid_post', 'z', ...) to probe several layers.")
        _check_probeable(model, hook)
        return [hook], [hook]
    if hook not in _SHORT or hook in ("embed", "pos_embed", "scale", "normalized"):
        raise InputError(f"hook {hook!r} is neither a hook point of this model nor a per-layer shorthand; use "
                         "'resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out', 'z', 'post', ... or a full "
                         "name from model.hook_names().")
    n = model.cfg.n_layers
    if layers is None:
        layers = [layer for layer in range(n) if act_name(hook, layer) in model.hook_dict]
    else:
        layers = [int(layer) + n if int(layer) < 0 else int(layer) for layer in layers]
    missing = [layer for layer in layers if not 0 <= layer < n or act_name(hook, layer) not in model.hook_dict]
    if missing or not layers:
        raise InputError(f"no {hook!r} point in block(s) {missing or layers} of this {n}-layer model; pass layers "
                         f"that have it (attention points exist only in blocks {list(model.cfg.attn_layers)}).")
    names = [act_name(hook, layer) for layer in layers]
    _check_probeable(model, names[0])
    return names, [f"L{layer}" for layer in layers]


def _check_probeable(model, name: str) -> None:
    """Probes read one position's vector: the point must be ``(batch, pos, d)`` or ``(batch, pos, head, d_head)``."""
    shape = model.hook_dict[name].shape
    if len(shape) not in (3, 4) or tuple(shape[:2]) != ("batch", "pos") or "k_pos" in shape:
        raise InputError(f"{name!r} has axes {shape}; a probe reads one position's vector from a point of shape "
                         "(batch, pos, d) or (batch, pos, head, d_head), such as resid_post, mlp_out or z.")


def _positions(position: Position, lengths: Tensor, offset: int = 0) -> Tensor:
    """(batch,) absolute indices: ``position`` against each row's length; rows ``offset ..`` of the whole input."""
    b = lengths.shape[0]
    if isinstance(position, bool):
        raise InputTypeError(f"position must be an int or one int per prompt, got {type_name(position)}.")
    if isinstance(position, int):
        pos = torch.full((b,), position)
    else:
        pos = torch.as_tensor(position)
        if pos.dtype.is_floating_point or pos.ndim != 1:
            raise InputTypeError(f"position must be an int or one int per prompt, got {type_name(position)}.")
        pos = pos[offset: offset + b]
    pos = torch.where(pos < 0, pos + lengths, pos)
    bad = ((pos < 0) | (pos >= lengths)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise InputError(f"position {int(pos[i])} is outside prompt {offset + i}, which has {int(lengths[i])} tokens "
                         "(BOS included); pass an index within each prompt, or -1 for its last token.")
    return pos


def collect_activations(model, prompts: str | list[str] | Tensor, *, hook: str = "resid_post",
                        layers: Sequence[int] | None = None, position: Position = -1,
                        batch_size: int = 16) -> Tensor:
    """Activations at one position per prompt, for probing.

    Returns ``(layer, n, d)`` float32 on the CPU for points of shape ``(batch, pos, d)`` (``resid_post``,
    ``mlp_out``, ...), ``(layer, head, n, d_head)`` for per-head points (``z``, ``q``, ``v``); with a full hook
    name, the leading axis has length 1. ``position``: an index into every prompt (``-1``: each prompt's last real
    token, padding accounted for) or one index per prompt (e.g. the subject's last token). Prompts run in batches of
    ``batch_size``, right-padded, with hooks that keep only the chosen positions."""
    names, _ = _hook_names(model, hook, layers)
    if isinstance(position, Tensor) and position.ndim == 0:
        position = int(position)
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputTypeError(f"batch_size must be a positive int, got {type_name(batch_size)}.")
    n = prompts.shape[0] if isinstance(prompts, Tensor) else len(prompts)
    if not isinstance(position, int) and len(position) != n:
        raise InputError(f"position has {len(position)} entries but there are {n} prompts; pass one per prompt.")
    out: dict[str, list[Tensor]] = {name: [] for name in names}
    layer_of = [model.hook_dict[name].layer_idx for name in names]
    stop = max(layer_of) + 1 if None not in layer_of and max(layer_of) + 1 < model.cfg.n_layers else None
    for start in range(0, n, batch_size):
        chunk = prompts[start: start + batch_size]
        batch = as_batch(model, chunk) if isinstance(chunk, Tensor) else model._batch(chunk, None, "right")
        lengths = (batch.attention_mask.sum(-1) if batch.attention_mask is not None
                   else torch.full((batch.tokens.shape[0],), batch.tokens.shape[1])).cpu()
        pos = _positions(position, lengths, start)
        rows = torch.arange(len(pos))

        def save(act, hook):
            out[hook.name].append(act.detach()[rows.to(act.device), pos.to(act.device)].float().cpu())

        with torch.no_grad():
            model.run_with_hooks(Batch(*batch), fwd_hooks=[(name, save) for name in names], stop_at_layer=stop)
    acts = _stack_layers(names, [torch.cat(out[name]) for name in names])  # (layer, n, ...)
    return acts.movedim(1, -2) if acts.ndim == 4 else acts  # per-head: (layer, head, n, d_head)


def activations_from_cache(cache, hook: str = "resid_post", *, layers: Sequence[int] | None = None,
                           position: Position = -1) -> Tensor:
    """:func:`collect_activations` for a cache already recorded: ``(layer, n, d)`` (or ``(layer, head, n, d_head)``)
    float32, at ``position`` (an int for every row, or one per row; a negative int counts from the end of the
    cached sequence, so with right padding pass each row's own last index). ``hook``: a shorthand over ``layers``
    (default: every layer the cache holds it for) or one full hook name."""
    if hook in cache and layers is None and not (hook in _SHORT):
        names = [hook]
    else:
        n_layers = cache.n_layers or 0
        layers = [l for l in range(n_layers) if (hook, l) in cache] if layers is None else list(layers)
        names = [cache._resolve((hook, layer)) for layer in layers]
        if not names:
            raise InputError(f"the cache holds no {hook!r} activations; record them with names_filter, or pass a "
                             "full hook name it holds.")
    acts = []
    for name in names:
        a = cache[name]
        if not cache.has_batch_dim:
            a = a[None]
        pos = _positions(position, torch.full((a.shape[0],), a.shape[1]))
        acts.append(a[torch.arange(a.shape[0]), pos].float().cpu())
    out = _stack_layers(names, acts)
    return out.movedim(1, -2) if out.ndim == 4 else out


def _stack_layers(names: list[str], acts: list[Tensor]) -> Tensor:
    """``acts`` (one per hook point) stacked on a new leading ``layer`` axis; refused, naming the points, where the
    layers differ in shape (Gemma 4's and Inkling's layers have different head counts or head sizes)."""
    shapes = {tuple(a.shape[1:]) for a in acts}
    if len(shapes) > 1:
        by_shape = {}
        for name, a in zip(names, acts):
            by_shape.setdefault(tuple(a.shape[1:]), []).append(name)
        groups = "; ".join(f"{s}: {', '.join(n[:3])}{' ...' if len(n) > 3 else ''}" for s, n in by_shape.items())
        raise InputError(f"the chosen points differ in shape across layers ({groups}), so they cannot be stacked "
                         "into one (layer, ...) tensor; pass layers= with layers of one shape, or one full hook name.")
    return torch.stack(acts)


# ------------------------------------------------------------------------------------------------- probes
@dataclass
class ProbeResult:
    """A probe per unit (layer or head). ``*units`` is the activations' leading shape: ``(layer,)`` or
    ``(layer, head)``. Predictions are ``argmax(x @ W + b)`` over classes."""

    method: Method
    classes: list
    """Label values in class order (sorted); class ``i`` is ``classes[i]``. With two, ``classes[1]`` is positive."""
    train_acc: Tensor
    """(*units,) accuracy on the training split."""
    test_acc: Tensor
    """(*units,) accuracy on the held-out split (NaN when it is empty)."""
    directions: Tensor
    """Unit vectors in activation space for steering and reading: ``(*units, d)`` for two classes (towards
    ``classes[1]``), ``(*units, classes, d)`` for more (towards each class). Logistic: the classifier's weight (its
    difference, for two classes); diff-of-means: class mean minus the mean of the other class means."""
    W: Tensor
    """(*units, d, classes) the classifier's weights, in the activations' own coordinates."""
    b: Tensor
    """(*units, classes) the classifier's biases."""
    train_idx: Tensor
    """(n_train,) examples used to fit."""
    test_idx: Tensor
    """(n_test,) examples held out."""
    unit_labels: list[str] = field(default_factory=list)
    """Names of the units along the first axis (``L0``, ``L1``, ...), when known."""

    def predict(self, acts: Tensor) -> Tensor:
        """``(*units, n)`` class indices for ``acts (*units, n, d)``."""
        return (acts.to(self.W) @ self.W + self.b[..., None, :]).argmax(-1)

    def best(self) -> tuple[int, float]:
        """(unit index along the flattened units, test accuracy) of the best unit (train accuracy if no test)."""
        acc = self.test_acc if self.test_acc.isfinite().all() else self.train_acc
        i = int(acc.flatten().argmax())
        return i, float(acc.flatten()[i])

    def to_dict(self) -> dict:
        """JSON-ready per-unit accuracies."""
        return {"method": self.method, "classes": [str(c) for c in self.classes], "units": self.unit_labels,
                "train_acc": self.train_acc.tolist(), "test_acc": self.test_acc.tolist(),
                "n_train": len(self.train_idx), "n_test": len(self.test_idx)}


def _check(acts: Tensor, labels) -> tuple[Tensor, Tensor, list]:
    """(acts (*units, n, d), label indices (n,), classes)."""
    if not isinstance(acts, Tensor) or acts.ndim < 2 or not acts.dtype.is_floating_point:
        raise InputTypeError(f"acts must be a float tensor (*units, n, d), e.g. from collect_activations; got "
                             f"{type_name(acts)}.")
    if acts.ndim == 2:
        acts = acts[None]
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    if len(values) != acts.shape[-2]:
        raise InputError(f"there are {len(values)} labels for {acts.shape[-2]} examples (acts {tuple(acts.shape)}, "
                         "examples on the second-to-last axis); pass one label per example.")
    try:
        classes = sorted(set(values))
    except TypeError:
        raise InputTypeError("labels must be comparable values of one kind (ints, strings or bools).") from None
    if len(classes) < 2:
        raise InputError(f"the labels hold only {classes}; a probe needs at least two classes.")
    index = {c: i for i, c in enumerate(classes)}
    if not acts.isfinite().all():
        raise InputError("acts contain NaN or inf; probe finite activations (a bfloat16 overflow upstream?).")
    return acts, torch.tensor([index[v] for v in values]), classes


def train_test_split(y: Tensor, test_frac: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Stratified, seeded split of example indices: ``round(test_frac * n_c)`` of each class ``c`` held out (at least
    one of each class is kept for training). Returns sorted ``(train_idx, test_idx)``."""
    if not 0 <= test_frac < 1:
        raise InputError(f"test_frac must be in [0, 1), got {test_frac!r}.")
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(int(y.max()) + 1):
        idx = (y == c).nonzero()[:, 0]
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = min(round(test_frac * len(idx)), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _accuracy(W: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
    if x.shape[-2] == 0:
        return torch.full(W.shape[:-2], float("nan"))
    return ((x @ W + b[..., None, :]).argmax(-1) == y).float().mean(-1)


def _unit_directions(v: Tensor) -> Tensor:
    """(*units, classes, d) per-class vectors → unit directions; two classes: class 1 minus class 0."""
    if v.shape[-2] == 2:
        v = v[..., 1, :] - v[..., 0, :]
    return v / v.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(v.dtype).tiny)


def fit_logistic(acts: Tensor, labels, *, l2: float = 1e-3, test_frac: float = 0.2, seed: int = 0,
                 max_iter: int = 500, dtype: torch.dtype = torch.float64) -> ProbeResult:
    """Multinomial logistic regression on every unit at once.

    ``acts``: ``(*units, n, d)`` (``(n, d)`` is one unit); ``labels``: ``n`` values. Minimises, per unit, the mean
    cross-entropy on the training split plus ``l2 / 2 * ||W||²`` on standardised features (bias unpenalised), by
    full-batch L-BFGS with strong-Wolfe line search on a single ``(*units, d, classes)`` weight tensor: the units'
    objectives are independent, so their sum has the same minimiser. The problem is strictly convex in ``W``, so
    the answer does not depend on the optimiser (tests compare it with a Newton solver)."""
    acts, y, classes = _check(acts, labels)
    train, test = train_test_split(y, test_frac, seed)
    x = acts.to(dtype)
    x_tr, y_tr = x[..., train, :], y[train].to(x.device)
    mean = x_tr.mean(-2, keepdim=True)
    std = x_tr.std(-2, keepdim=True, correction=0).clamp(min=1e-8)
    z = (x_tr - mean) / std
    units, d, c = acts.shape[:-2], acts.shape[-1], len(classes)
    Ws = torch.zeros(*units, d, c, dtype=dtype, device=x.device, requires_grad=True)
    bs = torch.zeros(*units, c, dtype=dtype, device=x.device, requires_grad=True)
    onehot = torch.nn.functional.one_hot(y_tr, c).to(dtype)

    def objective() -> Tensor:
        logits = z @ Ws + bs[..., None, :]  # (*units, n_train, classes)
        ce = -(logits.log_softmax(-1) * onehot).sum(-1).mean(-1)  # (*units,)
        return (ce + l2 / 2 * Ws.pow(2).sum((-2, -1))).sum()

    opt = torch.optim.LBFGS([Ws, bs], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        opt.zero_grad()
        objective().backward()
    worst = max(Ws.grad.abs().max().item(), bs.grad.abs().max().item())
    if worst > 1e-4:
        warnings.warn(f"logistic probe: L-BFGS stopped after max_iter={max_iter} iterations with a gradient entry of "
                      f"{worst:.1e}; raise max_iter, or l2 (separable data with a tiny penalty converges slowly).",
                      stacklevel=2)
    Ws, bs = Ws.detach(), bs.detach()
    W = Ws / std.transpose(-2, -1)  # x @ W + b == z @ Ws + bs
    b = bs - (mean @ W)[..., 0, :]
    return ProbeResult("logistic", classes, _accuracy(W, b, x_tr, y_tr).float(),
                       _accuracy(W, b, x[..., test, :], y[test].to(x.device)).float(),
                       _unit_directions(W.transpose(-2, -1)).float(), W.float(), b.float(), train, test)


def fit_diff_means(acts: Tensor, labels, *, test_frac: float = 0.2, seed: int = 0) -> ProbeResult:
    """Difference-of-means probe on every unit at once: class means ``μ_c`` on the training split; classifies by
    the nearest mean (``W[:, c] = μ_c``, ``b_c = -|μ_c|² / 2``, which for two classes thresholds the projection on
    ``μ_1 - μ_0`` at the midpoint). Directions: ``μ_1 - μ_0`` normalised for two classes; for more, each
    ``μ_c`` minus the mean of the other class means, normalised."""
    acts, y, classes = _check(acts, labels)
    train, test = train_test_split(y, test_frac, seed)
    x = acts.to(torch.float64)
    x_tr, y_tr = x[..., train, :], y[train].to(x.device)
    onehot = torch.nn.functional.one_hot(y_tr, len(classes)).to(x)  # (n_train, classes)
    mu = (onehot.T @ x_tr) / onehot.sum(0)[:, None]  # (*units, classes, d)
    c = len(classes)
    others = (mu.sum(-2, keepdim=True) - mu) / (c - 1)
    directions = _unit_directions(mu if c == 2 else mu - others)
    W, b = mu.transpose(-2, -1), -mu.pow(2).sum(-1) / 2
    return ProbeResult("diff_means", classes, _accuracy(W, b, x_tr, y_tr).float(),
                       _accuracy(W, b, x[..., test, :], y[test].to(x.device)).float(),
                       directions.float(), W.float(), b.float(), train, test)


def train_probe(model, prompts, labels, *, method: Method = "logistic", hook: str = "resid_post",
                layers: Sequence[int] | None = None, position: Position = -1, batch_size: int = 16,
                **fit_kwargs) -> ProbeResult:
    """Collect activations (:func:`collect_activations`) and fit a probe per layer (per head for ``hook="z"``):
    the one-call path from prompts and labels to per-layer accuracies and steering directions.
    ``fit_kwargs`` go to :func:`fit_logistic` (``l2``, ``test_frac``, ``seed``, ``max_iter``) or
    :func:`fit_diff_means` (``test_frac``, ``seed``)."""
    if method not in ("logistic", "diff_means"):
        raise InputError(f"method must be 'logistic' or 'diff_means', got {method!r}.")
    acts = collect_activations(model, prompts, hook=hook, layers=layers, position=position, batch_size=batch_size)
    result = (fit_logistic if method == "logistic" else fit_diff_means)(acts, labels, **fit_kwargs)
    _, result.unit_labels = _hook_names(model, hook, layers)
    return result


def probe_cache(cache, labels, *, hook: str = "resid_post", layers: Sequence[int] | None = None,
                position: Position = -1, method: Method = "logistic", **fit_kwargs) -> ProbeResult:
    """:func:`train_probe` for activations already in an ``ActivationCache`` (one example per cached row):
    :func:`activations_from_cache` then :func:`fit_logistic` or :func:`fit_diff_means`."""
    if method not in ("logistic", "diff_means"):
        raise InputError(f"method must be 'logistic' or 'diff_means', got {method!r}.")
    acts = activations_from_cache(cache, hook, layers=layers, position=position)
    return (fit_logistic if method == "logistic" else fit_diff_means)(acts, labels, **fit_kwargs)
