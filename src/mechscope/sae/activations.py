"""Where training batches of activations come from. Every source is an :class:`ActivationSource`: it yields
``{hook_name: (batch_size, d) float tensor}`` batches and can report and restore its position exactly, so a
resumed training run sees the batches an unbroken run would.

- :class:`TensorSource` serves activations already in memory (a tensor ``(n, d)``, or one per hook name): each
  epoch is a fresh permutation drawn from ``(seed, epoch)``; it never ends (the trainer decides how many tokens).
- :class:`ModelSource` harvests them from a model running on token rows (:func:`mechscope.sae.data.token_rows`):
  several hook points per forward pass, the pass stopped after the deepest hooked block, a shuffle buffer.
- :class:`IterableSource` cuts an iterable of activation tensors into batches.
- :func:`activation_source` is the one entry point that turns anything ``train(source)`` accepts into a source;
  an on-disk :class:`~mechscope.sae.store.ActivationStore` reads through it too.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError
from .data import token_rows


@runtime_checkable
class ActivationSource(Protocol):
    """The trainer's view of its data."""

    hooks: list[str]
    """Hook names, in a fixed order; every batch has exactly these keys."""
    d: dict[str, int]
    """Width of each hook's activations."""
    batch_size: int
    """Rows (tokens) per batch."""

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Endless batches ``{hook: (batch_size, d[hook])}`` (float32 unless stated, on the source's device)."""
        ...

    def state_dict(self) -> dict:
        """JSON-serialisable position: after ``load_state_dict`` of it, iteration continues with the batch that
        would have followed the last one yielded before ``state_dict()`` was called."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


class TensorSource:
    """Batches of rows of in-memory activations ``(n, d)`` (one tensor, or a mapping ``{hook: (n, d_hook)}`` with
    the same ``n``, e.g. a transcoder's input and output), shuffled each epoch with ``(seed, epoch)``."""

    def __init__(self, data: Tensor | Mapping[str, Tensor], *, batch_size: int, seed: int = 0, hook: str = "x",
                 device: str | torch.device | None = None, shuffle: bool = True) -> None:
        tensors = {hook: data} if isinstance(data, Tensor) else dict(data)
        if not tensors or not all(isinstance(t, Tensor) and t.ndim == 2 for t in tensors.values()):
            raise InputError("activations must be a 2-d tensor (n, d) or a mapping of hook names to such tensors.")
        ns = {t.shape[0] for t in tensors.values()}
        if len(ns) != 1:
            raise InputError(f"all activation tensors need the same number of rows; got {sorted(ns)}.")
        self.n = ns.pop()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= self.n:
            raise InputError(f"batch_size must be an int from 1 to the number of rows ({self.n}), got {batch_size!r}.")
        self.tensors = tensors
        self.hooks = list(tensors)
        self.d = {k: t.shape[1] for k, t in tensors.items()}
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.shuffle = shuffle
        self.epoch = 0
        self.offset = 0
        self._perm: Tensor | None = None

    def _order(self) -> Tensor:
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
        return self._perm

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            if self.offset + self.batch_size > self.n:  # drop the ragged tail: every batch is full
                self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
            idx = self._order()[self.offset:self.offset + self.batch_size]
            self.offset += self.batch_size
            yield {k: t[idx].to(self.device, torch.float32) if self.device is not None else t[idx].float()
                   for k, t in self.tensors.items()}

    def state_dict(self) -> dict:
        return {"kind": "tensor", "epoch": self.epoch, "offset": self.offset, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "tensor" or state.get("n") != self.n or state.get("seed") != self.seed:
            raise InputError(f"this checkpoint's data position ({state}) is not from this data (n={self.n}, "
                             f"seed={self.seed}); resume with the same activations and seed.")
        self.epoch, self.offset, self._perm = int(state["epoch"]), int(state["offset"]), None


def _seed(*parts: int) -> int:
    """One generator seed from ``(seed, epoch, buffer, ...)``: distinct tuples give unrelated streams."""
    h = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------------ harvesting
class Harvester:
    """Runs a model on token rows and returns the activations at several hook points from one forward pass.

    Only the named points are hooked (one hook each, no full cache) and the pass stops after the deepest hooked
    block (``stop_at_layer=layer + 1``: a point inside the last needed block, such as ``blocks.1.ln2.hook_normalized``,
    still fires). Points after the blocks (``ln_final.*``) or added without a block index run the whole model.
    Each activation ``(batch, pos, ...)`` becomes ``(batch * pos, d)`` rows (trailing axes flattened: ``hook_z``
    gives ``n_heads * d_head``), in float32 (or ``dtype``), without positions whose token is in ``exclude``."""

    def __init__(self, model, hooks: Sequence[str], *, model_batch_size: int = 32,
                 exclude_special_tokens: bool | Sequence[int] = False, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None) -> None:
        if isinstance(hooks, str):
            hooks = [hooks]
        if not hooks or not all(isinstance(h, str) for h in hooks):
            raise InputError(f"hooks must be a non-empty list of hook names, got {hooks!r}.")
        if len(set(hooks)) != len(hooks):
            raise InputError(f"hooks {list(hooks)} name a point twice; name each once.")
        if isinstance(model_batch_size, bool) or not isinstance(model_batch_size, int) or model_batch_size < 1:
            raise InputError(f"model_batch_size (token rows per forward pass) must be an int >= 1, got "
                             f"{model_batch_size!r}.")
        self.model, self.hooks, self.model_batch_size, self.dtype = model, list(hooks), model_batch_size, dtype
        for h in self.hooks:
            model._point(h)  # the model's own sentence (with a did-you-mean) for an unknown name
        self.stop_at_layer = stop_layer(model, self.hooks)
        self.exclude = _special_ids(model, exclude_special_tokens)
        self.device = torch.device(device) if device is not None else model.input_device
        probe = self._forward(torch.full((1, 2), _probe_token(model), dtype=torch.long))
        self.d = {h: probe[h].shape[-1] for h in self.hooks}

    def __call__(self, rows: Tensor) -> dict[str, Tensor]:
        """``rows (n_rows, pos)`` token ids -> ``{hook: (n_tokens, d)}`` (``n_tokens = n_rows * pos`` unless special
        tokens are excluded), on ``device``, with one concatenation per hook."""
        pieces: dict[str, list[Tensor]] = {h: [] for h in self.hooks}
        for start in range(0, rows.shape[0], self.model_batch_size):
            chunk = rows[start:start + self.model_batch_size]
            acts = self._forward(chunk)
            keep = None
            if self.exclude:
                keep = ~torch.isin(chunk, torch.tensor(sorted(self.exclude))).reshape(-1)
            for h in self.hooks:
                a = acts[h]
                pieces[h].append(a if keep is None else a[keep.to(a.device)])
        return {h: (torch.cat(p) if len(p) > 1 else p[0]).to(self.device, self.dtype) for h, p in pieces.items()}

    @torch.no_grad()
    def _forward(self, tokens: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}

        def save(act: Tensor, hook) -> None:
            if act.ndim < 2 or tuple(act.shape[:2]) != tuple(tokens.shape):
                raise InputError(f"{hook.name!r} has shape {tuple(act.shape)}, not (batch, pos, ...) like the tokens "
                                 f"{tuple(tokens.shape)}, so it has no activation per token to train on; hook a "
                                 "point with one vector per token (e.g. hook_resid_post, hook_mlp_out, attn.hook_z).")
            out[hook.name] = act.detach().reshape(act.shape[0] * act.shape[1], -1)

        kwargs = {} if self.stop_at_layer is None else {"stop_at_layer": self.stop_at_layer}
        self.model.run_with_hooks(tokens.to(self.model.input_device), fwd_hooks=[(h, save) for h in self.hooks],
                                  return_type=None, **kwargs)
        return out


def stop_layer(model, hooks: Sequence[str]) -> int | None:
    """The ``stop_at_layer`` that still runs every hooked point: one past the deepest hooked block; ``0`` for
    embedding points only; ``None`` (run everything) for a point after the blocks or without a block index."""
    names = list(model.hook_dict)
    first_block = next((i for i, n in enumerate(names) if n.startswith("blocks.")), len(names))
    deepest = -1
    for h in hooks:
        pt = model._point(h)
        if pt.layer_idx is not None:
            deepest = max(deepest, pt.layer_idx)
        elif h not in names or names.index(h) > first_block:
            return None
    return min(deepest + 1, model.cfg.n_layers)


def _special_ids(model, exclude) -> frozenset[int]:
    if exclude is False or exclude is None:
        return frozenset()
    if exclude is True:
        tok = model.tokenizer
        if tok is None:
            raise InputError("exclude_special_tokens=True needs the model's tokenizer to know them; pass a list of "
                             "token ids instead.")
        return frozenset(int(i) for i in tok.all_special_ids)
    if isinstance(exclude, (list, tuple, set, frozenset)) and all(isinstance(i, int) for i in exclude):
        return frozenset(exclude)
    raise InputTypeError(f"exclude_special_tokens must be True, False or a list of token ids, got {exclude!r}.")


def _probe_token(model) -> int:
    tok = model.tokenizer
    return int(tok.bos_token_id) if tok is not None and tok.bos_token_id is not None else 0


# ------------------------------------------------------------------------------------------------ from a model
class ModelSource:
    """Activations harvested from ``model`` on token rows, through a shuffle buffer.

    An epoch visits every row once, in an order drawn from ``(seed, epoch)``. Rows are harvested ``buffer_rows``
    at a time (about ``buffer_tokens``, default ``64 * batch_size``); each buffer's tokens are permuted with a
    generator seeded by ``(seed, epoch, buffer)`` and served as full batches (a buffer's last ``< batch_size``
    tokens are skipped). After the last row the next epoch starts with a new order: multi-epoch training re-uses
    the text. Everything about a batch is a function of ``(seed, epoch, buffer, batch)`` and the rows, so
    ``load_state_dict`` re-harvests the current buffer and continues with exactly the batches an unbroken run
    would yield (same machine, same model).

    ``data``: anything :func:`~mechscope.sae.data.token_rows` reads (text, a file, token ids); its keyword
    options pass through. ``exclude_special_tokens``: drop positions holding BOS/EOS/pad (``True``) or these ids
    (as SAELens does); the default keeps every position, BOS included. Batches are float32 ``{hook: (batch_size,
    d[hook])}`` on ``device`` (default: the model's).

    ``prefetch=True`` harvests the next buffer in a background thread while the current one is served, so the
    model's forward and the trainer's step run on two cores at once (torch releases the GIL). The batches are
    the same; memory holds two buffers; and the model must not be run elsewhere (an evaluation) meanwhile, since
    its hooks would be shared. Off by default for that reason."""

    def __init__(self, model, data, hooks: str | Sequence[str], batch_size: int = 4096, *, context_size: int = 128,
                 n_tokens: int | None = None, holdout_tokens: int = 0, prepend_bos: bool | None = None,
                 text_column: str = "text", model_batch_size: int = 32, buffer_tokens: int | None = None,
                 seed: int = 0, shuffle: bool = True, device: str | torch.device | None = None,
                 exclude_special_tokens: bool | Sequence[int] = False, prefetch: bool = False) -> None:
        _check_batch_size(batch_size)
        self.prefetch = prefetch
        self._pending: tuple[tuple[int, int], Future] | None = None
        self.rows = token_rows(model, data, context_size=context_size, prepend_bos=prepend_bos, n_tokens=n_tokens,
                               holdout_tokens=holdout_tokens, text_column=text_column)
        self.harvest = Harvester(model, hooks, model_batch_size=model_batch_size,
                                 exclude_special_tokens=exclude_special_tokens, device=device)
        self.hooks, self.d, self.batch_size = self.harvest.hooks, self.harvest.d, batch_size
        self.seed, self.shuffle = seed, shuffle
        n_rows, width = self.rows.shape
        if n_rows * width < batch_size:
            raise InputError(f"the data holds {n_rows * width} tokens, fewer than one batch of {batch_size}; pass "
                             "more text or a smaller batch_size.")
        buffer_tokens = 64 * batch_size if buffer_tokens is None else buffer_tokens
        if isinstance(buffer_tokens, bool) or not isinstance(buffer_tokens, int) or buffer_tokens < batch_size:
            raise InputError(f"buffer_tokens must be an int >= batch_size ({batch_size}), got {buffer_tokens!r}.")
        self.buffer_rows = min(n_rows, math.ceil(buffer_tokens / width))
        self.n_buffers = math.ceil(n_rows / self.buffer_rows)
        self.rows_sha = hashlib.sha256(self.rows.numpy().tobytes()).hexdigest()[:16]
        self.epoch = self.buffer = self.offset = 0

    def _order(self, epoch: int) -> Tensor:
        n = self.rows.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))

    def _buffer(self, epoch: int, buffer: int) -> tuple[dict[str, Tensor], Tensor]:
        """The activations of one buffer ``{hook: (n, d)}`` and the order to serve them in."""
        idx = self._order(epoch)[buffer * self.buffer_rows:(buffer + 1) * self.buffer_rows]
        acts = self.harvest(self.rows[idx])
        n = next(iter(acts.values())).shape[0]
        perm = (torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch, buffer)))
                if self.shuffle else torch.arange(n))
        return acts, perm.to(next(iter(acts.values())).device)

    def _fetch(self, epoch: int, buffer: int) -> tuple[dict[str, Tensor], Tensor]:
        """The buffer, from the background harvest when one was started for it; then start the next one."""
        pending, self._pending = self._pending, None
        got = pending[1].result() if pending is not None else None  # never two harvests on the model at once
        if pending is not None and pending[0] != (epoch, buffer):
            got = None
        if got is None:
            got = self._buffer(epoch, buffer)
        if self.prefetch:
            nxt = (epoch, buffer + 1) if buffer + 1 < self.n_buffers else (epoch + 1, 0)
            if _PREFETCH[0] is None:
                _PREFETCH[0] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mechscope-harvest")
            self._pending = (nxt, _PREFETCH[0].submit(self._buffer, *nxt))
        return got

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        empty_run = 0
        while True:
            known = None if self.harvest.exclude else min(self.buffer_rows, self.rows.shape[0] - self.buffer *
                                                          self.buffer_rows) * self.rows.shape[1]
            if known is None or (self.offset + 1) * self.batch_size <= known:  # else nothing is left in it
                acts, perm = self._fetch(self.epoch, self.buffer)
                n_batches = perm.numel() // self.batch_size
                empty_run = 0 if n_batches else empty_run + 1
                while self.offset < n_batches:
                    idx = perm[self.offset * self.batch_size:(self.offset + 1) * self.batch_size]
                    self.offset += 1
                    yield {h: a[idx] for h, a in acts.items()}
                del acts, perm
            if empty_run > self.n_buffers:
                raise InputError(f"no buffer of this data holds a full batch of {self.batch_size} tokens once special "
                                 "tokens are excluded; pass a smaller batch_size or a larger buffer_tokens.")
            self.offset, self.buffer = 0, self.buffer + 1
            if self.buffer == self.n_buffers:
                self.epoch, self.buffer = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"kind": "model", "epoch": self.epoch, "buffer": self.buffer, "offset": self.offset,
                "seed": self.seed, "batch_size": self.batch_size, "buffer_rows": self.buffer_rows,
                "n_rows": self.rows.shape[0], "rows_sha": self.rows_sha, "hooks": self.hooks}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        keys = ("kind", "seed", "batch_size", "buffer_rows", "n_rows", "rows_sha", "hooks")
        bad = [k for k in keys if state.get(k) != mine[k]]
        if bad:
            raise InputError("this checkpoint's data position was taken on different data or settings "
                             f"({', '.join(bad)} differ); resume with the same model, text, hooks, batch_size, "
                             "buffer_tokens and seed.")
        self.epoch, self.buffer, self.offset = int(state["epoch"]), int(state["buffer"]), int(state["offset"])
        self.close()  # a harvest for the old position uses the model: wait for it, drop it

    def close(self) -> None:
        """Wait for a background harvest (``prefetch``) to finish, so the model is free for other runs."""
        if self._pending is not None:
            self._pending[1].result()
            self._pending = None


_PREFETCH: list[ThreadPoolExecutor | None] = [None]
"""One background harvesting thread for the process, started on first use."""


# ------------------------------------------------------------------------------------------------ from an iterable
class IterableSource:
    """Batches cut from an iterable of activation tensors ``(n_i, d)`` (or mappings ``{hook: (n_i, d_hook)}``),
    in the order given: pieces are joined and split into full batches. A re-iterable (a list, a dataset) starts
    again when it runs out (a new epoch; the ragged tail is skipped); a one-shot iterator that runs out is an
    error, since training would otherwise end early. ``state_dict`` counts rows: resuming re-iterates the
    iterable (for a one-shot iterator, pass a fresh one over the same stream) and skips what was served."""

    def __init__(self, data: Iterable, *, batch_size: int, hook: str = "x",
                 device: str | torch.device | None = None) -> None:
        _check_batch_size(batch_size)
        self.data, self.batch_size, self.hook, self.device = data, batch_size, hook, device
        self.one_shot = iter(data) is data
        it = iter(data)
        first = next(it, None)
        if first is None:
            raise InputError("the iterable of activations is empty; pass tensors (n, d) or mappings of them.")
        first = self._piece(first)
        self.hooks, self.d = list(first), {h: t.shape[1] for h, t in first.items()}
        self._head = itertools.chain([first], it) if self.one_shot else None
        self.epoch = self.rows = 0

    def _piece(self, item) -> dict[str, Tensor]:
        piece = {self.hook: item} if isinstance(item, Tensor) else dict(item) if isinstance(item, Mapping) else None
        if piece is None or not piece or not all(isinstance(t, Tensor) and t.ndim == 2 for t in piece.values()):
            raise InputError(f"each item of the activation iterable must be a 2-d tensor (n, d) or a mapping of hook "
                             f"names to such tensors, got {type(item).__name__}.")
        if len({t.shape[0] for t in piece.values()}) != 1:
            raise InputError("the tensors of one item of the activation iterable have different numbers of rows.")
        if hasattr(self, "d") and {h: t.shape[1] for h, t in piece.items()} != self.d:
            raise InputError(f"an item of the activation iterable has widths "
                             f"{ {h: t.shape[1] for h, t in piece.items()} }, the first had {self.d}.")
        return piece

    def _stream(self) -> Iterator:
        if self.one_shot:
            it, self._head = self._head, None
            return it if it is not None else self.data
        return iter(self.data)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            skip, pending, have = self.rows, [], 0
            for item in self._stream():
                piece = self._piece(item)
                n = next(iter(piece.values())).shape[0]
                if skip >= n:
                    skip -= n
                    continue
                if skip:
                    piece, n, skip = {h: t[skip:] for h, t in piece.items()}, n - skip, 0
                pending.append(piece)
                have += n
                while have >= self.batch_size:
                    joined = {h: torch.cat([p[h] for p in pending]) for h in self.hooks}
                    batch = {h: t[:self.batch_size] for h, t in joined.items()}
                    pending = [{h: t[self.batch_size:] for h, t in joined.items()}]
                    have -= self.batch_size
                    self.rows += self.batch_size
                    yield {h: t.to(self.device or t.device, torch.float32) for h, t in batch.items()}
            if self.one_shot:
                raise InputError(f"the activation iterator ran out after {self.rows} rows; pass a list (re-iterated "
                                 "each epoch), a longer stream, or train on fewer tokens.")
            if self.rows == 0:
                raise InputError(f"the activation iterable holds fewer rows than one batch of {self.batch_size}.")
            self.epoch, self.rows = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"kind": "iterable", "epoch": self.epoch, "rows": self.rows, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "iterable" or state.get("batch_size") != self.batch_size:
            raise InputError(f"this checkpoint's data position ({state}) is not from an activation iterable with "
                             f"batch_size {self.batch_size}; resume with the same data and batch size.")
        self.epoch, self.rows = int(state["epoch"]), int(state["rows"])


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1 (tokens per batch), got {batch_size!r}.")


# ------------------------------------------------------------------------------------------------ one entry point
def activation_source(source, *, model=None, hooks: str | Sequence[str] | None = None, batch_size: int = 4096,
                      context_size: int = 128, n_tokens: int | None = None, holdout_tokens: int = 0, seed: int = 0,
                      device: str | torch.device | None = None, buffer_tokens: int | None = None,
                      prepend_bos: bool | None = None, text_column: str = "text", model_batch_size: int = 32,
                      exclude_special_tokens: bool | Sequence[int] = False, shuffle: bool = True,
                      prefetch: bool = False, hook: str = "x") -> ActivationSource:
    """An :class:`ActivationSource` for anything ``train(source)`` accepts:

    - with ``model`` and ``hooks``: text or tokens (a path, a list of strings, token ids) -> :class:`ModelSource`;
    - an :class:`~mechscope.sae.store.ActivationStore` (or its folder, with ``model=None``) -> its reader;
    - a tensor ``(n, d)`` or a mapping ``{hook: (n, d)}`` -> :class:`TensorSource` (``hook`` names a lone tensor);
    - an iterable of such tensors -> :class:`IterableSource`;
    - an :class:`ActivationSource` -> itself.
    """
    from .store import ActivationStore

    if isinstance(source, ActivationSource) and not isinstance(source, (Tensor, Mapping)):
        return source
    if model is not None:
        if hooks is None:
            raise InputError("harvesting activations from a model needs hooks=[...] (e.g. 'blocks.1.hook_resid_post').")
        return ModelSource(model, source, hooks, batch_size, context_size=context_size, n_tokens=n_tokens,
                           holdout_tokens=holdout_tokens, prepend_bos=prepend_bos, text_column=text_column,
                           model_batch_size=model_batch_size, buffer_tokens=buffer_tokens, seed=seed,
                           shuffle=shuffle, device=device, exclude_special_tokens=exclude_special_tokens,
                           prefetch=prefetch)
    if isinstance(source, ActivationStore) or ActivationStore.is_store(source):
        store = source if isinstance(source, ActivationStore) else ActivationStore(source)
        return store.source(batch_size, seed=seed, hooks=hooks, device=device, buffer_tokens=buffer_tokens,
                            shuffle=shuffle)
    if isinstance(source, (Tensor, Mapping)):
        return TensorSource(source, batch_size=batch_size, seed=seed, hook=hook, device=device, shuffle=shuffle)
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise InputTypeError(f"cannot train on {type(source).__name__} {source!r:.80}: pass activations (a tensor "
                             "(n, d), a mapping or an iterable of them), an ActivationStore folder, or text with "
                             "model= and hooks=.")
    return IterableSource(source, batch_size=batch_size, hook=hook, device=device)
