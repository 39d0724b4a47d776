"""Indirect Object Identification (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to"
→ " Mary". The name said once (the indirect object, IO) is the answer; the name said twice (the subject: S1, S2)
is the wrong answer. The logit difference ``logit(IO) − logit(S)`` at the last token is the task's metric.

``ioi_dataset`` generates prompts from Wang et al.'s templates, names, places and objects (as released with the
paper in redwoodresearch/Easy-Transformer's ``ioi_dataset.py``), in both orders: ABBA ("Mary and John ... John
gave ... to") and BABA ("John and Mary ... John gave ... to"). Each prompt comes with its **ABC corruption**
(Wang et al.'s "ABC distribution"): the first two names replaced by two other names, S2 and everything else
unchanged, so the corrupted prompt says no name twice and carries no IOI signal, and — every name being one
token — clean and corrupted align token for token. ``ioi_reference`` reads ``shared/data/ioi/ioi.json`` (841
prompts from the same templates with other names) and builds the same corruption.

Layout of an :class:`IOIDataset` of ``n`` prompts (``pos`` = the longest prompt in tokens):

- ``tokens``, ``corrupted_tokens``: ``(n, pos)`` int64, BOS first when the tokenizer has one.
- ``attention_mask``: ``(n, pos)`` 1 on real tokens, or None when no prompt is padded.
- ``answer`` (IO), ``wrong`` (S): ``(n,)`` token ids of the names with their leading space.
- ``positions``: ``{"IO", "S1", "S2", "end"}`` → ``(n,)`` token positions; ``end`` is the last real token (" to"),
  where the answer is predicted.

Prompts from different templates differ in length. They are right-padded by default: a causal model's
outputs at real positions do not see later padding, and ``positions["end"]`` says where each prompt ends. With
``padding_side="left"`` every prompt ends at ``pos − 1`` instead (positions shift; the mask gives position ids).
``dataset.by_template()`` splits the set into groups of one template each, which need no padding at all.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError
from .spans import encode_with_spans, single_token

# Wang et al. 2022's names, places, objects and BABA templates (Easy-Transformer's ioi_dataset.py).
NAMES = [
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda", "Daniel", "David",
    "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason", "Justin", "Sarah", "William",
    "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam",
    "Megan", "Melissa", "Kevin", "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren",
    "Amber", "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany",
    "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen", "Patrick", "Sean",
    "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul", "Angela", "Tyler", "Scott",
    "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen",
    "Jose", "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia",
    "Cody", "Allison", "Bradley", "Samuel",
]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]

# [A] is the indirect object, [B] the subject; the prompt stops before the final [A].
BABA_TEMPLATES = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
]
ABBA_TEMPLATES = [t.replace("[B] and [A]", "[A] and [B]", 1) for t in BABA_TEMPLATES]
"""The same templates with the first two names in the other order (IO first)."""

REFERENCE_PATH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ioi" / "ioi.json"
"""``shared/data/ioi/ioi.json`` beside the checkout (841 prompts, Wang et al.'s templates, other names)."""

POSITIONS = ("IO", "S1", "S2", "end")


@dataclass(frozen=True)
class IOIPrompt:
    """One prompt, its ABC corruption and what it is made of."""

    text: str
    corrupted_text: str
    io: str
    """The indirect object (the answer), without its leading space."""
    s: str
    """The subject (the wrong answer)."""
    corrupt_names: tuple[str, str]
    """The names that replace IO and S1 in the corrupted prompt."""
    order: str
    """``"ABBA"`` (IO first) or ``"BABA"`` (S first)."""
    template: int
    """Index into the template list (``-1`` for reference prompts, whose template is not recorded)."""


@dataclass
class IOIDataset:
    """IOI prompts as aligned clean/corrupted token tensors; see the module docstring for the layout."""

    prompts: list[IOIPrompt]
    tokens: Tensor                  # (n, pos) int64
    corrupted_tokens: Tensor        # (n, pos) int64
    attention_mask: Tensor | None   # (n, pos) or None
    answer: Tensor                  # (n,) IO ids
    wrong: Tensor                   # (n,) S ids
    positions: dict[str, Tensor]    # name → (n,) token positions
    padding_side: str = "right"
    dropped_names: list[str] = field(default_factory=list)
    """Names refused because they are not one token (with their leading space) for this tokenizer."""
    dropped_prompts: list[str] = field(default_factory=list)
    """Prompts refused because clean and corrupted did not align token for token (a name merged with a neighbour)."""

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def corrupted_texts(self) -> list[str]:
        return [p.corrupted_text for p in self.prompts]

    def logit_diff(self, logits: Tensor, *, corrupted: bool = False) -> Tensor:
        """``logit(IO) − logit(S)`` at each prompt's ``end``: ``logits (n, pos, vocab)`` → ``(n,)``.

        Differentiable. With ``corrupted=True`` the same two ids are read (the corrupted prompt's IO and S are
        other names, so its logit difference says how much the clean answer is preferred without the signal)."""
        if not isinstance(logits, Tensor) or logits.dim() != 3:
            raise InputTypeError(f"logits must be a tensor (batch, pos, vocab), got "
                                 f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}.")
        if logits.shape[0] != len(self):
            raise InputError(f"logits have batch {logits.shape[0]} but the dataset has {len(self)} prompts; run the "
                             "model on dataset.tokens (or take dataset[i:j] to match a smaller batch).")
        if logits.shape[1] != self.tokens.shape[1]:
            raise InputError(f"logits have {logits.shape[1]} positions but the dataset's tokens have "
                             f"{self.tokens.shape[1]}; run the model on dataset.tokens.")
        rows = torch.arange(len(self), device=logits.device)
        end = self.positions["end"].to(logits.device)
        last = logits[rows, end]                                        # (n, vocab)
        return last[rows, self.answer.to(logits.device)] - last[rows, self.wrong.to(logits.device)]

    def metric(self) -> Callable[[Tensor], Tensor]:
        """The patching metric: ``logits (n, pos, vocab)`` → the mean logit difference (0-d, differentiable)."""
        return lambda logits: self.logit_diff(logits).mean()

    def __getitem__(self, index) -> IOIDataset:
        """A sub-dataset (``int``, slice, list of indices or bool mask), trimmed of columns that are all padding."""
        idx = torch.arange(len(self))[index]
        idx = idx.reshape(-1).tolist()
        if not idx:
            raise InputError("that selection holds no prompts; select at least one.")
        mask = self.attention_mask[idx] if self.attention_mask is not None else None
        tokens, corrupted = self.tokens[idx], self.corrupted_tokens[idx]
        positions = {k: v[idx].clone() for k, v in self.positions.items()}
        if mask is not None:
            keep = mask.bool().any(0)
            first, last = int(keep.nonzero()[0]), int(keep.nonzero()[-1]) + 1
            tokens, corrupted, mask = tokens[:, first:last], corrupted[:, first:last], mask[:, first:last]
            positions = {k: v - first for k, v in positions.items()}
            if bool(mask.all()):
                mask = None
        return IOIDataset([self.prompts[i] for i in idx], tokens, corrupted, mask, self.answer[idx],
                          self.wrong[idx], positions, self.padding_side, self.dropped_names, self.dropped_prompts)

    def by_template(self) -> dict[tuple[int, int], IOIDataset]:
        """``(template, length in tokens)`` → the prompts of that template and length: groups without padding,
        where every word sits at the same position in every prompt (reference prompts: grouped by length)."""
        lengths = (self.attention_mask.sum(1) if self.attention_mask is not None
                   else torch.full((len(self),), self.tokens.shape[1]))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(self.prompts):
            groups.setdefault((p.template, int(lengths[i])), []).append(i)
        return {k: self[v] for k, v in sorted(groups.items())}

    def to(self, device) -> IOIDataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return IOIDataset(self.prompts, move(self.tokens), move(self.corrupted_tokens), move(self.attention_mask),
                          move(self.answer), move(self.wrong), {k: move(v) for k, v in self.positions.items()},
                          self.padding_side, self.dropped_names, self.dropped_prompts)


def _tokenizer_of(model_or_tokenizer):
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if tok is None or not callable(tok):
        raise InputError("IOI prompts need a tokenizer: pass a mechscope Model that has one, or a HF tokenizer.")
    return tok


def _prepend_bos(model_or_tokenizer, tok, prepend_bos: bool | None) -> bool:
    if prepend_bos is not None:
        return prepend_bos
    default = getattr(model_or_tokenizer, "default_prepend_bos", None)
    return default if default is not None else tok.bos_token_id is not None


def single_token_names(tokenizer, names) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: the names that are one token with a leading space for ``tokenizer``, and the rest."""
    kept, dropped = [], []
    for n in names:
        (kept if single_token(tokenizer, " " + n) is not None else dropped).append(n)
    return kept, dropped


def _fill(template: str, a: str, b: str, place: str, obj: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The text and the character spans of IO (first [A]), S1 (first [B]) and S2 (second [B])."""
    text, spans, seen_b = "", {}, 0
    for piece in re.split(r"(\[A\]|\[B\]|\[PLACE\]|\[OBJECT\])", template):
        word = {"[A]": a, "[B]": b, "[PLACE]": place, "[OBJECT]": obj}.get(piece, piece)
        if piece == "[A]":
            spans.setdefault("IO", (len(text), len(text) + len(word)))
        elif piece == "[B]":
            spans["S1" if seen_b == 0 else "S2"] = (len(text), len(text) + len(word))
            seen_b += 1
        text += word
    return text, spans


def _abc(template: str, io: str, s: str, c: str, d: str, place: str = "", obj: str = ""):
    """The clean prompt and its ABC corruption (IO → c, S1 → d, S2 kept), with the character spans of IO, S1
    and S2 in each."""
    text, spans = _fill(template, io, s, place, obj)
    ctext, cspans = _fill(template, c, d, place, obj)
    a, b = cspans["S2"]
    ctext = ctext[:a] + s + ctext[b:]
    cspans["S2"] = (a, a + len(s))
    return text, spans, ctext, cspans


def _build(tok, items, prepend_bos: bool, padding_side: str, dropped_names: list[str]) -> IOIDataset:
    """Tokenise ``(IOIPrompt, spans, corrupted spans)`` items into an :class:`IOIDataset`."""
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    rows, prompts, dropped = [], [], []
    for prompt, spans, cspans in items:
        keys = ("IO", "S1", "S2")
        ids, where = encode_with_spans(tok, prompt.text, [spans[k] for k in keys], prepend_bos)
        cids, cwhere = encode_with_spans(tok, prompt.corrupted_text, [cspans[k] for k in keys], prepend_bos)
        io_id, s_id = single_token(tok, " " + prompt.io), single_token(tok, " " + prompt.s)
        aligned = (len(ids) == len(cids) and where == cwhere and all(b - a == 1 for a, b in where)
                   and ids[where[0][0]] == io_id and ids[where[1][0]] == s_id and ids[where[2][0]] == s_id
                   and sum(x != y for x, y in zip(ids, cids)) <= 2)
        if not aligned:
            dropped.append(prompt.text)
            continue
        rows.append((ids, cids, {k: w[0] for k, w in zip(keys, where)} | {"end": len(ids) - 1}, io_id, s_id))
        prompts.append(prompt)
    if not rows:
        raise InputError("no IOI prompt survived tokenisation (names must be single tokens and align between clean "
                         f"and corrupted prompts); {len(dropped)} were dropped, e.g. {dropped[:1]}.")
    n, longest = len(rows), max(len(r[0]) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    tokens = torch.full((n, longest), pad, dtype=torch.long)
    corrupted = tokens.clone()
    mask = torch.zeros((n, longest), dtype=torch.long)
    positions = {k: torch.zeros(n, dtype=torch.long) for k in POSITIONS}
    for i, (ids, cids, pos, _, _) in enumerate(rows):
        shift = longest - len(ids) if padding_side == "left" else 0
        tokens[i, shift:shift + len(ids)] = torch.tensor(ids)
        corrupted[i, shift:shift + len(ids)] = torch.tensor(cids)
        mask[i, shift:shift + len(ids)] = 1
        for k, v in pos.items():
            positions[k][i] = v + shift
    return IOIDataset(prompts, tokens, corrupted, None if bool(mask.all()) else mask,
                      torch.tensor([r[3] for r in rows]), torch.tensor([r[4] for r in rows]), positions,
                      padding_side, dropped_names, dropped)


def ioi_dataset(model_or_tokenizer, n: int = 100, *, seed: int = 0, order: str = "mixed",
                templates: list[str] | None = None, names: list[str] | None = None,
                places: list[str] | None = None, objects: list[str] | None = None,
                prepend_bos: bool | None = None, padding_side: str = "right") -> IOIDataset:
    """``n`` IOI prompts with their ABC corruptions, seeded.

    ``order``: ``"ABBA"``, ``"BABA"`` or ``"mixed"`` (alternating, Wang et al.'s mix). ``templates`` replace the
    built-in ones (BABA form, ``[A]`` the IO, ``[B]`` the subject, ending before the answer; ABBA is made by
    swapping the first two names). Names that are not a single token for the tokenizer are dropped and listed in
    ``dataset.dropped_names``; at least four must remain (IO, S and two corruption names)."""
    if order not in ("ABBA", "BABA", "mixed"):
        raise InputError(f"order must be 'ABBA', 'BABA' or 'mixed', got {order!r}.")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of prompts, got {n!r}.")
    tok = _tokenizer_of(model_or_tokenizer)
    baba = list(templates) if templates is not None else BABA_TEMPLATES
    for t in baba:
        if t.count("[A]") != 1 or t.count("[B]") != 2:
            raise InputError(f"template {t!r} must hold [A] (the IO) once and [B] (the subject) twice, ending "
                             "before the answer, like 'Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to'.")
    abba = [t.replace("[B] and [A]", "[A] and [B]", 1) if "[B] and [A]" in t else _swap_first(t) for t in baba]
    kept, dropped = single_token_names(tok, names if names is not None else NAMES)
    if len(kept) < 4:
        raise InputError(f"only {len(kept)} of the names are single tokens for this tokenizer ({kept}); IOI needs "
                         "at least four (IO, S and two for the corruption): pass names=[...] that are.")
    places, objects = places or PLACES, objects or OBJECTS
    rng = random.Random(seed)
    items = []
    for i in range(n):
        k = rng.randrange(len(baba))
        which = order if order != "mixed" else ("ABBA" if i % 2 == 0 else "BABA")
        template = abba[k] if which == "ABBA" else baba[k]
        io, s, c, d = rng.sample(kept, 4)
        place, obj = rng.choice(places), rng.choice(objects)
        text, spans, ctext, cspans = _abc(template, io, s, c, d, place, obj)
        items.append((IOIPrompt(text, ctext, io, s, (c, d), which, k), spans, cspans))
    return _build(tok, items, _prepend_bos(model_or_tokenizer, tok, prepend_bos), padding_side, dropped)


def _swap_first(template: str) -> str:
    """ABBA form of a BABA template whose first two names are not joined by ' and ': swap the first [B] and [A]."""
    i, j = template.index("[B]"), template.index("[A]")
    if j < i:
        return template
    return template[:i] + "[A]" + template[i + 3:j] + "[B]" + template[j + 3:]


def ioi_reference(model_or_tokenizer, path: str | Path | None = None, *, n: int | None = None, seed: int = 0,
                  prepend_bos: bool | None = None, padding_side: str = "right") -> IOIDataset:
    """``shared/data/ioi/ioi.json`` as an :class:`IOIDataset`, with ABC corruptions built by swapping names.

    Each record gives a prompt and its answer (the IO); the subject is the other name, the one said twice. The
    corruption replaces the first mention of IO and of S with two other single-token names drawn (seeded) from the
    file's own names, keeping S2. Records whose IO or S is not one token for the tokenizer are dropped
    (``dataset.dropped_names`` lists those names). ``n`` takes the first ``n`` records that survive."""
    path = Path(path) if path is not None else REFERENCE_PATH
    if not path.is_file():
        raise InputError(f"no IOI reference file at {str(path)!r}; pass path= to ioi.json (shared/data/ioi/).")
    records = json.loads(path.read_text())
    tok = _tokenizer_of(model_or_tokenizer)
    parsed = []
    for r in records:
        prompt, io = r["prompt"], r["answer"]
        counts = Counter(re.findall(r"\b[A-Z][a-z]+\b", prompt))
        subjects = [w for w, k in counts.items() if k >= 2 and w != io]
        if counts[io] != 1 or len(subjects) != 1:
            continue  # not an IOI prompt of the expected shape (none in the shipped file)
        parsed.append((prompt, io, subjects[0]))
    all_names = sorted({x for _, io, s in parsed for x in (io, s)})
    kept, dropped = single_token_names(tok, all_names)
    ok = set(kept)
    if len(kept) < 4:
        raise InputError(f"only {len(kept)} of the reference file's names are single tokens for this tokenizer; "
                         "the ABC corruption needs at least four.")
    rng = random.Random(seed)
    items = []
    for prompt, io, s in parsed:
        if io not in ok or s not in ok:
            continue
        # the prompt as a template: IO → [A], both mentions of S → [B] (right to left keeps the offsets valid)
        marks = sorted([(m.span(), "[A]") for m in re.finditer(rf"\b{io}\b", prompt)]
                       + [(m.span(), "[B]") for m in re.finditer(rf"\b{s}\b", prompt)], reverse=True)
        template = prompt
        for (a, b), mark in marks:
            template = template[:a] + mark + template[b:]
        c, d = rng.sample([x for x in kept if x not in (io, s)], 2)
        text, spans, ctext, cspans = _abc(template, io, s, c, d)
        order = "ABBA" if spans["IO"][0] < spans["S1"][0] else "BABA"
        items.append((IOIPrompt(text, ctext, io, s, (c, d), order, -1), spans, cspans))
        if n is not None and len(items) >= n:
            break
    return _build(tok, items, _prepend_bos(model_or_tokenizer, tok, prepend_bos), padding_side, dropped)
