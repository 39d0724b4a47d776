"""An on-disk activation store: harvest once, train a sweep of SAEs on it.

A store is a folder::

    store.json                       the manifest (written atomically after every shard)
    tokens.npy                       the token rows (n_rows, context_size) int32 the activations came from
    <hook>.<shard:05d>.npy           one file per hook and shard: (tokens, d) in the storage dtype

Shards are written to a temporary name and renamed when complete, and the manifest lists a shard (its token
count, and each file's size and SHA-256) only once all its files are in place, so a build killed at any moment
leaves a store that :meth:`ActivationStore.build` continues from the last complete shard (it refuses to continue
a store built with other settings). Storage is float32, float16 or bfloat16 (kept as raw 16-bit words: numpy has
no bfloat16); reads are always float32.

Reading (:meth:`ActivationStore.source`) is an :class:`~mechscope.sae.activations.ActivationSource` that never
loads the store: each epoch the shards are visited in an order drawn from ``(seed, epoch)``, and windows of
``buffer_tokens`` consecutive tokens of that order are read from the memory maps and permuted with ``(seed, epoch,
window)``, so its state is four integers and resume is exact. Opening checks every shard file against the
manifest (present, size, shape, dtype; ``verify=True`` also hashes them) and refuses a store that disagrees.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor

from ..errors import InputError
from ..lens.tuned import atomic_write
from ..progress import task
from .activations import Harvester, _check_batch_size, _seed
from .data import token_rows

MANIFEST = "store.json"
FORMAT = "mechscope-activation-store"
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
"""Storage dtypes and the numpy dtype each is kept as on disk."""


class ActivationStore:
    """A finished activation store, opened for reading: ``hooks``, ``d``, ``n_tokens``, ``tokens`` (the rows,
    memory-mapped) and :meth:`source`."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = False) -> None:
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        m = self.manifest
        if not m["complete"]:
            raise InputError(f"the activation store {str(self.path)!r} is incomplete ({len(m['shards'])} of "
                             f"{m['n_shards']} shards); run the same build again to finish it.")
        self.hooks: list[str] = list(m["hooks"])
        self.d: dict[str, int] = {h: int(m["d"][h]) for h in self.hooks}
        self.dtype: str = m["dtype"]
        self.counts = [int(s["tokens"]) for s in m["shards"]]
        self.n_tokens = sum(self.counts)
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        _check_file(self.path, m["tokens"], verify, np.int32, None)
        for i, shard in enumerate(m["shards"]):
            for h in self.hooks:
                _check_file(self.path, shard["files"][h], verify, DTYPES[self.dtype], (shard["tokens"], self.d[h]))
        self.tokens = np.load(self.path / m["tokens"]["file"], mmap_mode="r")
        """``(n_rows, context_size)`` token ids the activations were harvested from (in store order)."""

    @staticmethod
    def is_store(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and (Path(path) / MANIFEST).is_file()

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, hooks={self.hooks}, n_tokens={self.n_tokens}, "
                f"dtype={self.dtype})")

    def _map(self, hook: str, shard: int) -> np.ndarray:
        key = (hook, shard)
        if key not in self._maps:
            self._maps[key] = np.load(self.path / self.manifest["shards"][shard]["files"][hook]["file"],
                                      mmap_mode="r")
        return self._maps[key]

    def read(self, hook: str, shard: int, start: int = 0, stop: int | None = None) -> Tensor:
        """Tokens ``start:stop`` of one shard of ``hook`` as float32 ``(n, d)`` (a copy out of the memory map)."""
        a = np.asarray(self._map(hook, shard)[start:stop])
        t = torch.from_numpy(np.array(a))
        return t.view(torch.bfloat16).float() if self.dtype == "bfloat16" else t.float()

    def source(self, batch_size: int = 4096, *, seed: int = 0, hooks: Sequence[str] | None = None,
               device: str | torch.device | None = None, buffer_tokens: int | None = None,
               shuffle: bool = True) -> StoreSource:
        """Shuffled float32 batches ``{hook: (batch_size, d)}`` of (some of) this store's hooks; see the module."""
        return StoreSource(self, batch_size, seed=seed, hooks=hooks, device=device, buffer_tokens=buffer_tokens,
                           shuffle=shuffle)

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, model, data, hooks: str | Sequence[str], n_tokens: int | None, out: str | os.PathLike, *,
              context_size: int = 128, dtype: str = "float32", shard_tokens: int = 2 ** 18,
              model_batch_size: int = 32, prepend_bos: bool | None = None, text_column: str = "text",
              holdout_tokens: int = 0, exclude_special_tokens: bool | Sequence[int] = False,
              progress: bool = True) -> ActivationStore:
        """Harvest ``hooks`` of ``model`` on ``n_tokens`` of ``data`` (anything
        :func:`~mechscope.sae.data.token_rows` reads; ``holdout_tokens`` kept back from the end as there) into the
        folder ``out``, in shards of about ``shard_tokens`` tokens. Re-running it on a partly built ``out``
        continues from the last complete shard; on a finished one it just opens it."""
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
            raise InputError(f"shard_tokens must be an int >= 1, got {shard_tokens!r}.")
        out = Path(out)
        rows = token_rows(model, data, context_size=context_size, prepend_bos=prepend_bos, n_tokens=n_tokens,
                          holdout_tokens=holdout_tokens, text_column=text_column)
        if int(rows.max()) >= 2 ** 31:
            raise InputError("token ids >= 2**31 cannot be stored as int32.")
        harvest = Harvester(model, hooks, model_batch_size=model_batch_size,
                            exclude_special_tokens=exclude_special_tokens)
        shard_rows = max(1, shard_tokens // rows.shape[1])
        tokens = rows.numpy().astype(np.int32)
        settings = {
            "format": FORMAT, "version": 1, "model": str(getattr(model.hf_model.config, "_name_or_path", "")),
            "hooks": harvest.hooks, "d": harvest.d, "dtype": dtype, "context_size": context_size,
            "n_rows": rows.shape[0], "shard_rows": shard_rows, "n_shards": math.ceil(rows.shape[0] / shard_rows),
            "stop_at_layer": harvest.stop_at_layer, "exclude_special_tokens": sorted(harvest.exclude),
            "tokens_sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
        }
        manifest = _start(out, settings, tokens)
        done = len(manifest["shards"])
        with task(f"harvesting {', '.join(harvest.hooks)} into {out}", total=settings["n_shards"],
                  enabled=progress) as bar:
            bar.update(done)
            for i in range(done, settings["n_shards"]):
                acts = harvest(rows[i * shard_rows:(i + 1) * shard_rows])
                n = next(iter(acts.values())).shape[0]
                files = {h: _write_shard(out, f"{h}.{i:05d}.npy", acts[h], dtype) for h in harvest.hooks}
                manifest["shards"].append({"index": i, "rows": [i * shard_rows, min((i + 1) * shard_rows,
                                                                                    rows.shape[0])],
                                           "tokens": n, "files": files})
                manifest["complete"] = i + 1 == settings["n_shards"]
                _write_manifest(out, manifest)
                bar.update(1, note=f"{sum(s['tokens'] for s in manifest['shards'])} tokens")
        if not manifest["complete"]:  # zero shards to write: an already finished store
            manifest["complete"] = True
            _write_manifest(out, manifest)
        return cls(out)


# ---------------------------------------------------------------------------------------------- reading
class StoreSource:
    """An :class:`~mechscope.sae.activations.ActivationSource` over an :class:`ActivationStore` (see the module)."""

    def __init__(self, store: ActivationStore, batch_size: int, *, seed: int = 0,
                 hooks: Sequence[str] | None = None, device: str | torch.device | None = None,
                 buffer_tokens: int | None = None, shuffle: bool = True) -> None:
        _check_batch_size(batch_size)
        hooks = store.hooks if hooks is None else [hooks] if isinstance(hooks, str) else list(hooks)
        missing = [h for h in hooks if h not in store.hooks]
        if missing:
            raise InputError(f"the activation store {str(store.path)!r} has no {', '.join(map(repr, missing))}; it "
                             f"holds {store.hooks}.")
        if store.n_tokens < batch_size:
            raise InputError(f"the activation store holds {store.n_tokens} tokens, fewer than one batch of "
                             f"{batch_size}; pass a smaller batch_size.")
        buffer_tokens = 64 * batch_size if buffer_tokens is None else buffer_tokens
        if isinstance(buffer_tokens, bool) or not isinstance(buffer_tokens, int) or buffer_tokens < batch_size:
            raise InputError(f"buffer_tokens must be an int >= batch_size ({batch_size}), got {buffer_tokens!r}.")
        self.store, self.hooks, self.batch_size, self.seed, self.device = store, hooks, batch_size, seed, device
        self.d = {h: store.d[h] for h in hooks}
        self.shuffle = shuffle
        self.window = min(buffer_tokens // batch_size * batch_size, store.n_tokens // batch_size * batch_size)
        self.n_windows = math.ceil(store.n_tokens / self.window)
        self.epoch = self.buffer = self.offset = 0

    def _shard_order(self, epoch: int) -> list[int]:
        n = len(self.store.counts)
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch))).tolist()

    def _window(self, epoch: int, w: int) -> dict[str, Tensor]:
        """Tokens ``w * window : (w + 1) * window`` of the epoch's shard order, ``{hook: (n, d)}`` float32."""
        start, stop = w * self.window, min((w + 1) * self.window, self.store.n_tokens)
        parts: dict[str, list[Tensor]] = {h: [] for h in self.hooks}
        pos = 0
        for shard in self._shard_order(epoch):
            n = self.store.counts[shard]
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if lo < hi:
                for h in self.hooks:
                    parts[h].append(self.store.read(h, shard, lo, hi))
            pos += n
            if pos >= stop:
                break
        return {h: (torch.cat(p) if len(p) > 1 else p[0]) for h, p in parts.items()}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            size = min(self.window, self.store.n_tokens - self.buffer * self.window)
            n_batches = size // self.batch_size
            if self.offset < n_batches:
                acts = self._window(self.epoch, self.buffer)
                perm = (torch.randperm(size, generator=torch.Generator().manual_seed(
                    _seed(self.seed, self.epoch, self.buffer))) if self.shuffle else torch.arange(size))
                while self.offset < n_batches:
                    idx = perm[self.offset * self.batch_size:(self.offset + 1) * self.batch_size]
                    self.offset += 1
                    yield {h: (a[idx] if self.device is None else a[idx].to(self.device)) for h, a in acts.items()}
                del acts
            self.offset, self.buffer = 0, self.buffer + 1
            if self.buffer == self.n_windows:
                self.epoch, self.buffer = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"kind": "store", "epoch": self.epoch, "buffer": self.buffer, "offset": self.offset,
                "seed": self.seed, "batch_size": self.batch_size, "window": self.window, "hooks": self.hooks,
                "n_tokens": self.store.n_tokens, "tokens_sha256": self.store.manifest["tokens_sha256"]}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        bad = [k for k in ("kind", "seed", "batch_size", "window", "hooks", "n_tokens", "tokens_sha256")
               if state.get(k) != mine[k]]
        if bad:
            raise InputError("this checkpoint's data position was taken on another store or settings "
                             f"({', '.join(bad)} differ); resume with the same store, hooks, batch_size, buffer_tokens "
                             "and seed.")
        self.epoch, self.buffer, self.offset = int(state["epoch"]), int(state["buffer"]), int(state["offset"])


# ---------------------------------------------------------------------------------------------- files
def _start(out: Path, settings: dict, tokens: np.ndarray) -> dict:
    """The manifest to continue from: a fresh one (writing ``tokens.npy``), or the existing one if its settings
    match; leftover temporary files of a killed build are removed."""
    if (out / MANIFEST).is_file():
        manifest = _read_manifest(out)
        diff = [k for k, v in settings.items() if manifest.get(k) != v]
        if diff:
            raise InputError(f"{str(out)!r} already holds an activation store built with other settings "
                             f"({', '.join(diff)} differ); pass a new output folder, or delete it to rebuild.")
        for leftover in out.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        for shard in manifest["shards"]:
            for f in shard["files"].values():
                _check_file(out, f, False, None, None)
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{str(out)!r} exists and is not an activation store; pass a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    manifest = dict(settings, tokens=_write_array(out, "tokens.npy", tokens), shards=[], complete=False)
    _write_manifest(out, manifest)
    return manifest


def _write_shard(out: Path, name: str, acts: Tensor, dtype: str) -> dict:
    """``acts (n, d)`` float32 -> the file ``name`` in the storage ``dtype``; its manifest entry."""
    if dtype == "bfloat16":
        arr = acts.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    else:
        arr = acts.to(torch.float16 if dtype == "float16" else torch.float32).cpu().numpy()
    return _write_array(out, name, arr)


def _write_array(out: Path, name: str, arr: np.ndarray) -> dict:
    def write(tmp: str) -> None:
        mm = open_memmap(tmp, mode="w+", dtype=arr.dtype, shape=arr.shape)
        mm[...] = arr
        mm.flush()
        del mm

    atomic_write(out / name, write)
    return {"file": name, "bytes": (out / name).stat().st_size, "sha256": _sha256(out / name)}


def _write_manifest(out: Path, manifest: dict) -> None:
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"))


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if not file.is_file():
        raise InputError(f"{str(path)!r} is not an activation store (no {MANIFEST}); build one with "
                         "ActivationStore.build or `mechscope sae cache`.")
    try:
        m = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"the manifest {str(file)!r} is not valid JSON ({e}); the store is damaged: rebuild "
                         "it.") from None
    keys = ("hooks", "d", "dtype", "shards", "tokens", "complete", "n_shards", "tokens_sha256")
    if not isinstance(m, dict) or m.get("format") != FORMAT or any(k not in m for k in keys):
        raise InputError(f"{str(file)!r} is not a mechscope activation-store manifest (format {FORMAT!r} with "
                         f"{', '.join(keys)}); rebuild the store.")
    if m["dtype"] not in DTYPES:
        raise InputError(f"the manifest {str(file)!r} names storage dtype {m['dtype']!r}; expected one of "
                         f"{', '.join(DTYPES)}.")
    return m


def _check_file(root: Path, entry: dict, verify: bool, dtype, shape) -> None:
    """Refuse a file the manifest does not describe: missing, another size, shape or dtype, or (``verify``)
    other contents."""
    file = root / entry["file"]
    problem = None
    if not file.is_file():
        problem = "is missing"
    elif file.stat().st_size != entry["bytes"]:
        problem = f"is {file.stat().st_size} bytes, the manifest says {entry['bytes']}"
    elif dtype is not None:
        try:
            arr = np.load(file, mmap_mode="r")
        except ValueError as e:
            problem = f"is not a readable .npy file ({e})"
        else:
            if arr.dtype != np.dtype(dtype) or (shape is not None and tuple(arr.shape) != tuple(shape)):
                problem = f"holds {arr.dtype} {tuple(arr.shape)}, the manifest says {np.dtype(dtype)} {shape}"
    if problem is None and verify and _sha256(file) != entry["sha256"]:
        problem = "has other contents than the manifest's SHA-256"
    if problem:
        raise InputError(f"the activation store {str(root)!r} disagrees with its manifest: {entry['file']} {problem}; "
                         "the store is damaged: rebuild it into a new folder.")


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
