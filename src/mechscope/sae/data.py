"""Text as fixed-length token rows for harvesting activations: :func:`token_rows`.

A source is a text file (``.txt``, ``.raw``, ...: read line by line, as WikiText is), a ``.jsonl`` file of
``{"text": ...}`` records (``text_column=`` for another key), a list of strings (one document each), an HF
``datasets`` folder written by ``save_to_disk`` (its ``text_column``, or its ``input_ids`` when already
tokenised; needs the optional ``datasets`` package), or token ids already made: a ``.npy`` / ``.safetensors``
file, a numpy array or a tensor — 1-d (one stream, packed here) or 2-d ``(n_rows, context_size)`` (used as is).

Documents are tokenised in batches (a fast tokenizer does TinyStories' 12.5 MB in seconds), joined into one
stream with the tokenizer's end-of-text token between documents (text-file lines are joined as they are, newline
included, as :mod:`mechscope.lens.data` reads them), cut into rows of ``context_size - 1`` tokens and given the
model's BOS token in front (``prepend_bos``; without it a row is ``context_size`` tokens of the stream). Rows
therefore start mid-document, as in SAELens and sparsify: an SAE sees every position of real text.

Held-out rows come from the back of the corpus and training rows from its front; documents used by the
held-out rows are never used for training (for a token stream, the held-out tokens are its last ones), so an
evaluation is on text the SAE never saw.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, InputTypeError
from ..lens.data import read_documents

TOKENIZE_CHUNK = 1024
"""Documents per tokenizer call: large enough for the fast tokenizer's batching, small enough to stop early."""


def token_rows(model_or_tokenizer, source, *, context_size: int = 128, prepend_bos: bool | None = None,
               n_tokens: int | None = None, holdout_tokens: int = 0, split: Literal["train", "holdout"] = "train",
               text_column: str = "text") -> Tensor:
    """Token rows ``(n_rows, context_size)`` (int64) of ``source`` for one ``split``.

    ``model_or_tokenizer``: a mechscope ``Model`` (its tokenizer, BOS default and context length) or an HF
    tokenizer; ``None`` only for token ids. ``n_tokens``: the training tokens wanted (``ceil(n_tokens /
    context_size)`` rows, fewer when the corpus is shorter; ``None``: all). ``holdout_tokens``: tokens kept back at
    the end of the corpus (``ceil(holdout_tokens / context_size)`` rows), returned with ``split="holdout"`` and
    never part of ``split="train"``; the same arguments give the same rows in both calls."""
    tok, default_bos, n_ctx = _unpack(model_or_tokenizer)
    _check_int("context_size", context_size, 2)
    _check_int("holdout_tokens", holdout_tokens, 0)
    if n_tokens is not None:
        _check_int("n_tokens", n_tokens, 1)
    if split not in ("train", "holdout"):
        raise InputError(f"split must be 'train' or 'holdout', got {split!r}.")
    if n_ctx is not None and context_size > n_ctx:
        raise InputError(f"context_size={context_size} is longer than the model's maximum context of {n_ctx} tokens; "
                         f"pass context_size <= {n_ctx}.")
    n_hold = math.ceil(holdout_tokens / context_size)
    n_train = None if n_tokens is None else math.ceil(n_tokens / context_size)
    kind, data = _read(source, text_column)
    if kind == "rows":
        if data.shape[1] != context_size:
            raise InputError(f"the token rows are {data.shape[1]} tokens wide but context_size is {context_size}; pass "
                             "a 1-d token stream to be packed, or rows of the context size.")
        if n_hold >= data.shape[0]:
            raise InputError(f"{data.shape[0]} token rows leave none for training after holding out {n_hold}; pass "
                             "more rows or a smaller holdout_tokens.")
        rows = data[data.shape[0] - n_hold:] if split == "holdout" else data[:data.shape[0] - n_hold][:n_train]
        return _to_long(rows)
    bos = _bos(tok, default_bos if prepend_bos is None else prepend_bos)
    width = context_size - len(bos)
    if kind == "stream":
        if data.numel() < (n_hold + 1) * width:
            raise InputError(f"the token stream has {data.numel()} tokens, too few for {n_hold} held-out rows and one "
                             f"training row of {context_size}; pass more tokens or a smaller holdout_tokens.")
        cut = data.numel() - n_hold * width
        ids = data[cut:] if split == "holdout" else data[:cut]
        n = n_hold if split == "holdout" else len(ids) // width if n_train is None else min(n_train, len(ids) // width)
        return _rows(_to_long(ids[:n * width]), width, bos)
    docs, tokenized = data
    if not docs:
        raise InputError("the corpus holds no documents (no non-empty lines or records); pass a file with text.")
    if not tokenized and tok is None:
        raise InputError("tokenising text needs a tokenizer; pass a Model loaded with its tokenizer files, or an HF "
                         "tokenizer, as the first argument.")
    sep = [] if kind == "lines" or tok is None or tok.eos_token_id is None else [tok.eos_token_id]
    encode = (lambda chunk: chunk) if tokenized else (lambda chunk: tok(chunk, add_special_tokens=False)["input_ids"])
    hold_ids, used_back = _take(encode, docs[::-1], sep, n_hold * width, reverse=True)
    if len(hold_ids) < n_hold * width:
        raise InputError(f"the corpus has too little text for {n_hold} held-out rows of {context_size} tokens "
                         f"({len(hold_ids)} tokens in all); pass more text or a smaller holdout_tokens.")
    if split == "holdout":
        return _rows(torch.tensor(hold_ids, dtype=torch.long), width, bos)
    front = docs[:len(docs) - used_back]
    ids, _ = _take(encode, front, sep, None if n_train is None else n_train * width, reverse=False)
    n = len(ids) // width if n_train is None else min(n_train, len(ids) // width)
    if n < 1:
        raise InputError(f"the corpus has no text left for a training row of {context_size} tokens after holding out "
                         f"{n_hold} rows ({len(ids)} tokens left); pass more text or a smaller holdout_tokens.")
    return _rows(torch.tensor(ids[:n * width], dtype=torch.long), width, bos)


# ------------------------------------------------------------------------------------------------ reading
def _read(source, text_column: str):
    """(kind, data): ``("rows", (n, w) tensor)``, ``("stream", (n,) tensor)``, or ``("docs"|"lines", (documents,
    already_tokenised))``."""
    if isinstance(source, (Tensor, np.ndarray)):
        return _tokens(torch.as_tensor(source), "the token array")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _read_dataset(path, text_column)
        if path.suffix == ".npy" and path.is_file():
            return _tokens(torch.from_numpy(np.load(path, mmap_mode="r", allow_pickle=False).copy()), str(path))
        if path.suffix == ".safetensors" and path.is_file():
            from safetensors.torch import load_file

            tensors = load_file(path)
            key = next((k for k in ("tokens", "input_ids") if k in tensors), None)
            if key is None and len(tensors) != 1:
                raise InputError(f"{str(path)!r} holds tensors {sorted(tensors)}; a token file holds one tensor, or "
                                 "one named 'tokens' or 'input_ids'.")
            return _tokens(tensors[key] if key else next(iter(tensors.values())), str(path))
        docs = read_documents(path, text_column)
        return ("docs" if path.suffix == ".jsonl" else "lines"), (docs, False)
    if isinstance(source, Sequence) and all(isinstance(d, str) for d in source):
        return "docs", ([d for d in source if d], False)
    raise InputTypeError(f"cannot read text or tokens from {type(source).__name__}; pass a .txt/.jsonl/.npy/"
                         ".safetensors path, an HF datasets folder, a list of strings, or a tensor of token ids.")


def _read_dataset(path: Path, text_column: str):
    try:
        import datasets
    except ImportError:
        raise InputError(f"{str(path)!r} is a folder; reading an HF datasets folder needs the optional 'datasets' "
                         "package: pip install 'mechscope[datasets]' (or pass a .txt/.jsonl file).") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise InputError(f"{str(path)!r} is not a datasets folder written by save_to_disk ({e}); pass such a "
                         "folder or a .txt/.jsonl file.") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise InputError(f"the datasets folder {str(path)!r} has splits {sorted(ds)} and none is 'train'; save "
                             "one split (ds['name'].save_to_disk(...)).")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if text_column in ds.column_names:
        return "docs", ([d for d in ds[text_column] if d], False)
    if "input_ids" in ds.column_names:
        return "docs", ([list(d) for d in ds["input_ids"] if len(d)], True)
    raise InputError(f"the datasets folder {str(path)!r} has columns {ds.column_names}, neither {text_column!r} nor "
                     "'input_ids'; pass text_column= naming its text column.")


def _tokens(t: Tensor, what: str):
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InputTypeError(f"{what} holds {t.dtype} values; token ids are integers.")
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise InputError(f"{what} has shape {tuple(t.shape)}; pass a non-empty 1-d token stream or 2-d rows "
                         "(n_rows, context_size).")
    if int(t.min()) < 0:
        raise InputError(f"{what} holds negative token ids; token ids are >= 0.")
    return ("stream" if t.ndim == 1 else "rows"), t


def _take(encode, docs: list, sep: list[int], n_tokens: int | None, reverse: bool) -> tuple[list[int], int]:
    """At least ``n_tokens`` ids of ``docs`` in order (all with ``None``), and how many documents they took; with
    ``reverse`` (``docs`` given back to front) the corpus's last ``n_tokens`` ids, in reading order."""
    if n_tokens == 0:
        return [], 0
    chunks: list[list[int]] = []
    total = used = 0
    for start in range(0, len(docs), TOKENIZE_CHUNK):
        for ids in encode(docs[start:start + TOKENIZE_CHUNK]):
            chunks.append(list(ids) + sep)
            total += len(chunks[-1])
            used += 1
            if n_tokens is not None and total >= n_tokens:
                break
        if n_tokens is not None and total >= n_tokens:
            break
    if reverse:
        flat = [t for ids in chunks[::-1] for t in ids]
        return flat[-n_tokens:], used
    return [t for ids in chunks for t in ids], used


def _rows(ids: Tensor, width: int, bos: list[int]) -> Tensor:
    n = ids.numel() // width
    rows = ids[:n * width].reshape(n, width)
    if bos:
        rows = torch.cat([torch.full((n, 1), bos[0], dtype=torch.long), rows], dim=1)
    return rows


# ------------------------------------------------------------------------------------------------ helpers
def _unpack(obj):
    """(tokenizer, default prepend_bos, maximum context) of a Model, an HF tokenizer or None."""
    if obj is None:
        return None, False, None
    if hasattr(obj, "hook_dict") and hasattr(obj, "cfg"):  # a mechscope Model
        return obj.tokenizer, bool(obj.default_prepend_bos), obj.cfg.n_ctx
    if callable(obj) and hasattr(obj, "bos_token_id"):
        return obj, obj.bos_token_id is not None, None
    raise InputTypeError(f"the first argument must be a mechscope Model, an HF tokenizer or None (for token ids), "
                         f"got {type(obj).__name__}.")


def _bos(tok, prepend: bool) -> list[int]:
    if not isinstance(prepend, bool):
        raise InputTypeError(f"prepend_bos must be True, False or None (the model's default), got {prepend!r}.")
    if not prepend:
        return []
    if tok is None or tok.bos_token_id is None:
        raise InputError("prepend_bos=True needs a tokenizer with a BOS token; pass prepend_bos=False.")
    return [tok.bos_token_id]


def _check_int(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(f"{name} must be an int >= {lo}, got {v!r}.")


def _to_long(t: Tensor) -> Tensor:
    return t.to(torch.long).contiguous()
