"""Character spans → token positions, for any tokenizer.

A word's tokens are found from character offsets, not by tokenising the word alone: BPE merges at a boundary
(" Vinson" → " V" + "inson", a name glued to its comma) make the word's own tokens differ from its tokens in
context. Fast tokenizers report each token's character span (``return_offsets_mapping``); for the others the
span is found by tokenising the text up to the word's start and end (exact whenever tokenisation is
prefix-stable, which is checked).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def shared_data(*parts: str) -> Path:
    """A file under ``shared/data``: ``$MECHSCOPE_SHARED/data/...`` when set, else the ``shared`` folder beside the
    checkout (``../shared``) or beside the working directory; the first that exists (else the first candidate,
    for the error message)."""
    roots = [Path(os.environ["MECHSCOPE_SHARED"])] if os.environ.get("MECHSCOPE_SHARED") else []
    roots += [Path(__file__).resolve().parents[3].parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"]
    paths = [r.joinpath("data", *parts) for r in roots]
    return next((p for p in paths if p.is_file()), paths[0])


def encode(tokenizer, text: str, prepend_bos: bool) -> list[int]:
    """``text``'s ids with BOS first when ``prepend_bos`` (as ``Model.to_tokens`` does)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise InputError("prepend_bos=True, but the tokenizer has no BOS token; pass prepend_bos=False.")
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def encode_with_spans(tokenizer, text: str, spans: list[tuple[int, int]], prepend_bos: bool
                      ) -> tuple[list[int], list[tuple[int, int]]]:
    """``text``'s ids and, for each character span ``[start, end)``, the token positions ``[first, last + 1)``
    of the tokens that overlap it (positions count the BOS when ``prepend_bos``)."""
    ids = encode(tokenizer, text, False)
    shift = 1 if prepend_bos else 0
    out = []
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise InputError(f"character span ({start}, {end}) is not inside the text {text!r} "
                             f"(length {len(text)}); give 0 <= start < end <= {len(text)}.")
        if offsets is not None:
            hit = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
            if not hit:
                raise InputError(f"no token of {text!r} covers characters {start}..{end} ({text[start:end]!r}).")
            out.append((hit[0] + shift, hit[-1] + 1 + shift))
        else:
            first = len(encode(tokenizer, text[:start], False)) if start else 0
            last = len(encode(tokenizer, text[:end], False))
            if encode(tokenizer, text[:end], False) != ids[:last] or last <= first:
                raise InputError(f"cannot locate {text[start:end]!r} in the tokens of {text!r}: this tokenizer "
                                 "reports no character offsets and tokenises the prefix differently; use the "
                                 "model's fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)).")
            out.append((first + shift, last + shift))
    if prepend_bos:
        ids = [tokenizer.bos_token_id, *ids]
    return ids, out


def single_token(tokenizer, word: str) -> int | None:
    """The id of ``word`` (with its leading space, if any) when it is exactly one token, else None. A word the
    tokenizer does not know (it becomes the unknown token) is not a token of its own: None."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk and word.strip() != getattr(tokenizer, "unk_token", None):
        return None
    return ids[0]
