"""Text corpora as fixed-length token sequences, for training and evaluating lenses.

A corpus is a text file (``.txt``, ``.raw``, ...: WikiText-style, read line by line) or a ``.jsonl`` file of
``{"text": ...}`` records (one document each). Documents are tokenised in order and joined into one stream
(``.jsonl`` documents separated by the tokenizer's end-of-text token where it has one), cut into rows of
``seq_len - 1`` tokens, and each row gets the model's BOS token in front when the model prepends one.

Training reads from the front of the corpus and held-out evaluation from its back; :func:`split` refuses to let
the two overlap, so an evaluation is always on text the lens never saw.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError


def read_documents(path: str | os.PathLike, text_column: str = "text") -> list[str]:
    """The documents of a corpus file: ``.jsonl`` records' ``text`` (or ``text_column``), else the file's non-empty
    lines."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"corpus {str(path)!r} is not a file; pass a text file or a .jsonl file of "
                         '{"text": ...} records.')
    if path.suffix == ".jsonl":
        docs = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"line {n} of {str(path)!r} is not valid JSON ({e.msg}); a .jsonl corpus holds "
                                     'one {"text": ...} object per line.') from None
                if not isinstance(rec, dict) or not isinstance(rec.get(text_column), str):
                    raise InputError(f"line {n} of {str(path)!r} has no string field {text_column!r}; a .jsonl corpus "
                                     f'holds one {{"{text_column}": ...}} object per line.')
                docs.append(rec[text_column])
        return docs
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line + "\n" for line in text.split("\n") if line.strip()]


@dataclass
class Split:
    """Token rows for training (from the corpus's front) and held-out evaluation (from its back)."""

    train: Tensor
    """``(n_train, seq_len)`` token ids."""
    eval: Tensor
    """``(n_eval, seq_len)`` token ids."""


def split(model, path: str | os.PathLike, seq_len: int, n_train: int, n_eval: int) -> Split:
    """``n_train`` rows from the front of the corpus and ``n_eval`` rows from its back, never sharing a document.

    Fewer training rows are returned when the corpus is short (at least one); too little text for even that is
    an error naming how much there is."""
    if model.tokenizer is None:
        raise InputError("training or evaluating a lens on a text corpus needs the model's tokenizer; load the model "
                         "with its tokenizer files.")
    for name, v in (("seq_len", seq_len), ("n_train", n_train), ("n_eval", n_eval)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "seq_len" else 0):
            raise InputError(f"{name} must be a {'int >= 2' if name == 'seq_len' else 'non-negative int'}, got {v!r}.")
    if model.cfg.n_ctx is not None and seq_len > model.cfg.n_ctx:
        raise InputError(f"seq_len={seq_len} is longer than the model's context of {model.cfg.n_ctx} tokens.")
    docs = read_documents(path)
    sep = _separator(model, path)
    bos = [model.tokenizer.bos_token_id] if model.default_prepend_bos else []
    width = seq_len - len(bos)
    eval_ids, used_back = _take(model, docs[::-1], sep, n_eval * width, reverse=True)
    front = docs[: len(docs) - used_back]
    train_ids, _ = _take(model, front, sep, n_train * width, reverse=False)
    n_tr = min(n_train, len(train_ids) // width)
    if n_eval and len(eval_ids) < n_eval * width:
        raise InputError(f"{str(path)!r} has too little text for {n_eval} held-out rows of {seq_len} tokens.")
    if n_train and n_tr < 1:
        raise InputError(f"{str(path)!r} has no text left for training after holding out {n_eval} rows of {seq_len} "
                         "tokens for evaluation; use a longer corpus or fewer evaluation rows.")
    return Split(_rows(train_ids[: n_tr * width], width, bos), _rows(eval_ids, width, bos))


def _separator(model, path) -> list[int]:
    eos = model.tokenizer.eos_token_id
    return [eos] if Path(path).suffix == ".jsonl" and eos is not None else []


def _take(model, docs: list[str], sep: list[int], n_tokens: int, reverse: bool) -> tuple[list[int], int]:
    """At least ``n_tokens`` ids from ``docs`` in order (or, ``reverse``, the last ``n_tokens`` of the corpus, with
    ``docs`` given back to front), and how many documents they took."""
    if n_tokens == 0:
        return [], 0
    chunks, total, used = [], 0, 0
    for doc in docs:
        ids = model.tokenizer(doc, add_special_tokens=False)["input_ids"] + sep
        chunks.append(ids)
        total += len(ids)
        used += 1
        if total >= n_tokens:
            break
    if reverse:
        flat = [t for ids in chunks[::-1] for t in ids]
        return flat[-n_tokens:], used
    return [t for ids in chunks for t in ids], used


def _rows(ids: list[int], width: int, bos: list[int]) -> Tensor:
    n = len(ids) // width
    rows = torch.tensor(ids[: n * width], dtype=torch.long).reshape(n, width)
    if bos:
        rows = torch.cat([torch.full((n, 1), bos[0], dtype=torch.long), rows], dim=1)
    return rows
