"""Factual recall: the ``known_1000`` facts of Meng et al. 2022 ("Vinson Massif is located in the continent of" →
"Antarctica"), the subject's token span for a tokenizer, and which facts a model knows.

Causal tracing corrupts the *subject's* tokens, so their span must be exact for every tokenizer. It is found from
character offsets (``datasets.spans``), not by tokenising the subject alone: " Vinson Massif" after "The" may
split differently from "Vinson Massif" at the start, and a subject can merge with the next character
(a possessive "'s"). The span is every token that overlaps the subject's characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from .spans import encode_with_spans, shared_data

KNOWN_1000_PATH = shared_data("known_1000", "known_1000.json")
"""``shared/data/known_1000/known_1000.json`` beside the checkout (1,209 records, from ROME)."""


@dataclass(frozen=True)
class Fact:
    """One known_1000 record: ``prompt`` = ``template.format(subject)``; ``attribute`` is the true completion."""

    known_id: int
    subject: str
    attribute: str
    prompt: str
    relation_id: str = ""
    template: str = ""


@dataclass(frozen=True)
class KnownFact:
    """A fact the model knows: its top-1 next token (``answer``) begins the attribute, or has probability ≥ the
    threshold given to :func:`known_by`."""

    fact: Fact
    answer: int
    """The token id the model predicts (the first token of ``" " + attribute``)."""
    p: float
    """Its probability after the prompt."""


def load_facts(path: str | Path | None = None) -> list[Fact]:
    """The known_1000 records (default: ``shared/data/known_1000/known_1000.json``) as :class:`Fact` s."""
    path = Path(path) if path is not None else KNOWN_1000_PATH
    if not path.is_file():
        raise InputError(f"no known_1000 file at {str(path)!r}; pass path= to known_1000.json (shared/data/known_1000/).")
    facts = []
    for r in json.loads(path.read_text()):
        if r["subject"] not in r["prompt"]:
            continue  # every shipped record contains its subject; a hand-edited one might not
        facts.append(Fact(int(r["known_id"]), r["subject"], r["attribute"], r["prompt"], r.get("relation_id", ""),
                          r.get("template", "")))
    return facts


def fact(known_id: int, path: str | Path | None = None) -> Fact:
    """The known_1000 record with this ``known_id``."""
    for f in load_facts(path):
        if f.known_id == known_id:
            return f
    raise InputError(f"no known_1000 fact has known_id {known_id}; ids run from 0 to 1208.")


def subject_span(tokenizer, prompt: str, subject: str, prepend_bos: bool) -> tuple[list[int], tuple[int, int]]:
    """``prompt``'s token ids and the token positions ``[start, end)`` of ``subject`` (its first occurrence),
    BOS counted when ``prepend_bos``."""
    at = prompt.find(subject)
    if at < 0 or not subject:
        raise InputError(f"the subject {subject!r} does not occur in the prompt {prompt!r}; give the subject exactly "
                         "as it is written in the prompt.")
    ids, [span] = encode_with_spans(tokenizer, prompt, [(at, at + len(subject))], prepend_bos)
    return ids, span


def _answer_prefix_ok(token: str, attribute: str) -> bool:
    """Whether the predicted token begins the attribute (``" Ant"`` begins ``" Antarctica"``)."""
    text = " " + attribute.strip()
    return bool(token.strip()) and (text.startswith(token) or text.strip().startswith(token.strip()))


def known_by(model, facts: list[Fact] | None = None, *, threshold: float | None = None, batch_size: int = 32
             ) -> list[KnownFact]:
    """The facts ``model`` knows: its top-1 next token after the prompt begins the attribute (``" Ant"`` for
    "Antarctica"), or, when ``threshold`` is given, the first token of ``" " + attribute`` has at least that
    probability. Runs ``batch_size`` prompts per forward (left-padded, masked)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("known_by needs a model with a tokenizer (it reads text prompts).")
    facts = load_facts() if facts is None else list(facts)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    out = []
    with torch.no_grad():
        for i in range(0, len(facts), batch_size):
            chunk = facts[i:i + batch_size]
            logits = model([f.prompt for f in chunk], padding_side="left")[:, -1].float()
            probs = logits.softmax(-1)
            top = probs.argmax(-1)
            for f, row, t in zip(chunk, probs, top.tolist()):
                if threshold is None:
                    if _answer_prefix_ok(tok.decode([t]), f.attribute):
                        out.append(KnownFact(f, t, float(row[t])))
                else:
                    first = tok(" " + f.attribute.strip(), add_special_tokens=False)["input_ids"][0]
                    if float(row[first]) >= threshold:
                        out.append(KnownFact(f, first, float(row[first])))
    return out
