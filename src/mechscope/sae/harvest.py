"""Activations harvested from a model while training: :class:`ModelSource`, an :class:`ActivationSource`.

Text is tokenised and packed into rows of ``context_size`` tokens (BOS first where the model prepends one;
``lens.data``'s reader, which also holds the last ``holdout_rows`` rows out for evaluation). Rows are visited in
a fresh permutation each epoch, drawn from ``(seed, epoch)``; ``buffer_batches`` batches' worth of rows at a time
go through the model once, with every requested hook recorded in that one pass and the forward stopped after the
deepest hooked block, and their tokens are shuffled (from ``(seed, chunk)``) before being cut into batches, so a
batch mixes many sequences.

The position is ``(chunk, batch within it)``; resuming re-runs the model on that chunk's rows, which on a given
device gives the same activations bit for bit, so a resumed run sees exactly the batches an unbroken one would.
(The acts module's ``activation_source`` generalises this: token arrays, HF datasets, on-disk stores.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

from ..errors import InputError
from ..lens import data as corpus


def is_model(obj) -> bool:
    """Whether ``obj`` is a mechscope ``Model`` (imported lazily: the SAE package does not need the model code)."""
    from ..model import Model

    return isinstance(obj, Model)


class ModelSource:
    """Batches ``{hook: (batch_size, d_hook)}`` of a model's activations on a corpus (see the module docstring).

    ``data``: a text file, a ``.jsonl`` file of ``{"text": ...}`` records, or token rows ``(n, context_size)``."""

    def __init__(self, model, hooks: list[str], data: str | os.PathLike | Tensor, *, batch_size: int,
                 context_size: int = 128, seed: int = 0, holdout_rows: int = 0, exclude_bos: bool = True,
                 buffer_batches: int = 8, forward_rows: int = 64) -> None:
        unknown = [h for h in hooks if h not in model.hook_dict]
        if unknown:
            from ..errors import closest

            hints = closest(unknown[0], list(model.hook_dict), n=1)
            raise InputError(f"unknown hook point {unknown[0]!r}" + (f"; did you mean {hints[0]!r}?" if hints else
                             "; list them with `mechscope info MODEL` or model.hook_names()."))
        self.model, self.hooks, self.batch_size, self.seed = model, list(hooks), batch_size, seed
        self.forward_rows = forward_rows
        # HF models build a KV cache by default: wasted copies (torch.cat per layer) when nothing is generated
        self._no_kv = {"use_cache": False} if "use_cache" in getattr(model, "_hf_kwargs", ()) else {}
        if isinstance(data, Tensor):
            if data.ndim != 2 or data.dtype not in (torch.int32, torch.int64):
                raise InputError(f"token rows must be an integer tensor (n, context_size); got {data.dtype} "
                                 f"{tuple(data.shape)}.")
            rows = data[: len(data) - holdout_rows].long().cpu()
        else:
            rows = corpus.split(model, data, context_size, 10**12 // context_size, holdout_rows).train
        bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
        self.skip = int(exclude_bos and bos is not None and bool((rows[:, 0] == bos).all()))
        self.rows = rows
        used = rows.shape[1] - self.skip
        self.rows_per_chunk = min(len(rows), -(-buffer_batches * batch_size // used))
        if self.rows_per_chunk * used < batch_size:
            raise InputError(f"the data has {len(rows) * used} tokens, fewer than one batch of {batch_size}; pass more "
                             "text or a smaller batch_size.")
        self.batches_per_chunk = self.rows_per_chunk * used // batch_size
        self.chunks_per_epoch = len(rows) // self.rows_per_chunk
        layers = [model.hook_dict[h].layer_idx for h in hooks]
        self.stop = None if any(l is None for l in layers) else max(layers) + 1
        self.d = {h: _width(model.hook_dict[h].shape) for h in hooks}
        self.fingerprint = hashlib.sha1(rows.numpy().tobytes()).hexdigest()[:16]
        self.chunk, self.batch = 0, 0
        self._buf: dict[str, Tensor] | None = None
        if any(v <= 0 for v in self.d.values()):  # shape unknown until run: measure on one row
            self.d = {h: v.shape[-1] for h, v in self._harvest(rows[:1]).items()}

    @property
    def tokens_per_epoch(self) -> int:
        return self.chunks_per_epoch * self.batches_per_chunk * self.batch_size

    @torch.inference_mode()
    def _harvest(self, rows: Tensor) -> dict[str, Tensor]:
        """``{hook: (len(rows) * used, d)}`` activations, BOS positions dropped, in row-major order."""
        stop = self.stop if self.stop is not None and self.stop <= self.model.cfg.n_layers else None
        parts: dict[str, list[Tensor]] = {h: [] for h in self.hooks}
        for i in range(0, len(rows), self.forward_rows):
            _, cache = self.model.run_with_cache(rows[i:i + self.forward_rows], names_filter=self.hooks,
                                                 stop_at_layer=stop, check_memory=False, **self._no_kv)
            for h in self.hooks:
                a = cache[h]
                parts[h].append(a[:, self.skip:].reshape(-1, a.shape[-1]).float())
        return {h: torch.cat(v) for h, v in parts.items()}

    def _load_chunk(self, c: int) -> dict[str, Tensor]:
        epoch, j = divmod(c, self.chunks_per_epoch)
        perm = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        acts = self._harvest(self.rows[perm[j * self.rows_per_chunk:(j + 1) * self.rows_per_chunk]])
        n = next(iter(acts.values())).shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7_919 + c + 1))
        order = order.to(next(iter(acts.values())).device)
        return {h: a[order] for h, a in acts.items()}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            if self.batch >= self.batches_per_chunk:
                self.chunk, self.batch, self._buf = self.chunk + 1, 0, None
            if self._buf is None:
                self._buf = self._load_chunk(self.chunk)
            s = self.batch * self.batch_size
            self.batch += 1
            yield {h: a[s:s + self.batch_size] for h, a in self._buf.items()}

    def state_dict(self) -> dict:
        return {"kind": "model", "chunk": self.chunk, "batch": self.batch, "data": self.fingerprint,
                "hooks": self.hooks, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "model" or state.get("data") != self.fingerprint or state.get("hooks") != self.hooks:
            raise InputError("this checkpoint's data position is not from this text and these hooks (the token rows "
                             "or hook list differ); resume with the same model, data, context_size and hooks.")
        self.chunk, self.batch, self._buf = int(state["chunk"]), int(state["batch"]), None


def _width(shape) -> int:
    """The last axis of a hook point's declared shape when it is a number, else 0 (measured by a run)."""
    last = shape[-1] if shape else None
    return last if isinstance(last, int) and not isinstance(last, bool) else 0
