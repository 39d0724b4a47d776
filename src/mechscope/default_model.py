"""The embedded default model: a tiny GPT-2 that mechscope trains itself, offline.

mechscope must work out of the box without network access, so it ships a *recipe* rather than
weights. On first use, :func:`ensure_default_model` trains a small GPT-2-architecture model
(learned positional embeddings, LayerNorm, attention + MLP blocks) on text that mechscope
generates itself, saves it as an ordinary HuggingFace checkpoint together with its tokenizer, and
caches it in the user's cache folder. From then on it is loaded like any other model, with plain
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

Design:

* **Tokenizer** - a word-level tokenizer (``tokenizers`` WordLevel model, lowercase normaliser,
  whitespace pre-tokenizer) over a few hundred common short English words and two punctuation
  marks, plus the special tokens ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` and ``<|unk|>``. It never
  adds special tokens itself (mechscope prepends BOS), and it decodes ids back to words joined by
  spaces, with the space before punctuation removed.
* **Data** - every training sequence is BOS followed by text from a small probabilistic grammar
  (sentence templates, Zipf-distributed word choices, counting), into which one segment of 5 to
  15 tokens is inserted two to six times. Nine segments in ten are uniformly random words, which
  can only be predicted by copying from an earlier occurrence: this makes the model grow a
  previous-token head in layer 0 and induction heads in layer 1. The grammar makes predictions
  on ordinary text non-trivial.
* **Training** - a plain AdamW loop (linear warm-up, constant rate, cosine decay) for a fixed
  number of steps with seeded numpy / torch random generators, so a given machine always
  produces the same weights. It takes about 75 seconds on two CPU cores: half-width MLPs make
  the steps cheap, and dense repetitions bring the induction phase change early.
* **Cache** - the model lives in ``cache_root() / "default-v{DEFAULT_MODEL_VERSION}"``. It is
  trained into a temporary sibling folder and renamed into place, under a file lock, so concurrent
  processes train it at most once and never see a half-written folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from .store import build_once
from .progress import task

DEFAULT_MODEL_NAME = "default"
DEFAULT_MODEL_VERSION = 1
METADATA_FILE = "mechscope_default.json"

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK)

# The grammar's word classes; together with the punctuation they form the vocabulary.
_DETERMINERS = "the a this that my your his her our their every some no one".split()
_SUBJECT_PRONOUNS = "he she it they we i you".split()
_OBJECT_PRONOUNS = "him her it them us me you".split()
_NOUNS = """
    cat dog man woman boy girl king queen bird fish tree house car ship book door road city town
    river hill sea sun moon star day night bed box cup hat ball key bag pen map cake bread milk tea
    egg apple horse cow pig mouse fox wolf bear lion duck frog baby child friend teacher doctor
    farmer baker table chair window garden field forest room wall floor shop school park boat
    train bus song game story letter ring coat shoe lamp clock rock sand snow rain wind fire water
    stone bell drum hand head face""".split()
_TRANSITIVE_VERBS = """
    saw found took gave made had liked loved wanted needed kept held lost got bought sold ate drank
    read wrote opened closed moved pushed pulled carried washed painted built broke fixed watched
    heard called helped met knew left hit caught threw chased fed""".split()
_INTRANSITIVE_VERBS = """
    sat ran walked slept jumped swam sang smiled laughed cried waited fell stood played danced
    stayed came went flew rested""".split()
_ADJECTIVES = """
    big small old new good bad red blue green black white hot cold long short happy sad fast slow
    warm dark bright soft hard young tall little nice quiet loud kind wild clean dirty full empty
    rich poor strong weak brown pink gray round sweet""".split()
_PREPOSITIONS = "in on under over near by with to from behind into at across through".split()
_OPENERS = "then later today soon so now but and".split()
_ADVERBS = "quickly slowly again too here there away home".split()
_NUMBERS = "one two three four five six seven eight nine ten".split()
_PUNCTUATION = [".", ","]
_MISC = "was is very not all also who what".split()


def _vocabulary() -> list[str]:
    """Special tokens first, then every word of the grammar once, in a fixed order."""
    words: list[str] = []
    for group in (
        _PUNCTUATION, _DETERMINERS, _SUBJECT_PRONOUNS, _OBJECT_PRONOUNS, _NOUNS, _TRANSITIVE_VERBS,
        _INTRANSITIVE_VERBS, _ADJECTIVES, _PREPOSITIONS, _OPENERS, _ADVERBS, _NUMBERS, _MISC,
    ):
        words.extend(w for w in group if w not in words)
    return [*SPECIAL_TOKENS, *words]


def build_tokenizer(model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """The default model's word-level tokenizer, built locally (no download)."""
    vocab = {token: i for i, token in enumerate(_vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # No word starts with "##", so this joins words with spaces; cleanup drops the space before "." and ",".
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


@dataclass(frozen=True)
class DefaultModelRecipe:
    """Everything that determines the default model's weights (on a given machine)."""

    seed: int = 0
    """Seed of the torch (initialisation) and numpy (data) random generators."""
    n_layers: int = 2
    """Number of transformer blocks."""
    d_model: int = 128
    """Width of the residual stream."""
    n_heads: int = 4
    """Attention heads per layer."""
    d_mlp: int = 256
    """Hidden width of the MLPs (half GPT-2's usual 4 * d_model, which trains faster)."""
    n_ctx: int = 128
    """Context length: every training sequence has exactly this many tokens."""
    steps: int = 1000
    """Optimiser steps."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate of AdamW."""
    warmup_steps: int = 50
    """Steps of linear learning-rate warm-up at the start."""
    decay_steps: int = 250
    """Steps of cosine learning-rate decay to zero at the end; the rate is constant in between."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    min_segment_len: int = 5
    """Shortest repeated segment, in tokens."""
    max_segment_len: int = 15
    """Longest repeated segment, in tokens."""
    min_copies: int = 2
    """Fewest occurrences of the segment in a training sequence (1 means it may not repeat)."""
    max_copies: int = 6
    """Most occurrences of the segment in a training sequence (uniform in between)."""
    random_segment_fraction: float = 0.9
    """Fraction of segments made of uniformly random words; the others are grammatical text."""
    tie_word_embeddings: bool = False
    """Whether the unembedding shares the embedding matrix."""


@dataclass
class TrainReport:
    """What :func:`train_default_model` measured."""

    final_loss: float
    """Mean training loss over the last 20 steps (nats per token)."""
    repeat_loss_first: float
    """Held-out loss on the first copy of a random segment that is then repeated (nats per token)."""
    repeat_loss_second: float
    """Held-out loss on the second copy of that segment (nats per token)."""
    seconds: float
    """Wall time of the whole training run, saving included."""
    steps: int
    """Optimiser steps taken."""


def cache_root() -> Path:
    """``$MECHSCOPE_CACHE`` if set, else ``$XDG_CACHE_HOME/mechscope``, else ``~/.cache/mechscope``."""
    if os.environ.get("MECHSCOPE_CACHE"):
        return Path(os.environ["MECHSCOPE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "mechscope"
    return Path.home() / ".cache" / "mechscope"


def default_model_dir() -> Path:
    """Folder of the cached default model (it may not exist yet; see :func:`ensure_default_model`)."""
    return cache_root() / f"default-v{DEFAULT_MODEL_VERSION}"


def make_repeated_tokens(
    tokenizer: PreTrainedTokenizerBase, n_seqs: int, seg_len: int, *, seed: int = 0
) -> torch.LongTensor:
    """Sequences ``BOS + segment + segment`` of uniformly random non-special tokens.

    Returns a tensor of shape ``(n_seqs, 1 + 2 * seg_len)``. The second copy can only be predicted
    by induction, so it is the standard probe for induction heads. BOS is the tokenizer's BOS
    token, or its EOS token when it has no BOS (as in GPT-2).
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("make_repeated_tokens needs a tokenizer with a BOS or an EOS token.")
    special = set(tokenizer.all_special_ids)
    candidates = np.array([i for i in range(len(tokenizer)) if i not in special])
    segments = candidates[np.random.default_rng(seed).integers(0, len(candidates), (n_seqs, seg_len))]
    tokens = np.concatenate([np.full((n_seqs, 1), bos), segments, segments], axis=1)
    return torch.from_numpy(tokens).long()


class _Grammar:
    """A tiny probabilistic sentence grammar over the vocabulary, with Zipf-distributed word choices."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, rng: np.random.Generator) -> None:
        self.rng = rng
        self.ids = {w: tokenizer.convert_tokens_to_ids(w) for w in _vocabulary()}

    def _word(self, words: list[str]) -> int:
        weights = 1.0 / np.arange(1, len(words) + 1) ** 0.8
        return self.ids[words[self.rng.choice(len(words), p=weights / weights.sum())]]

    def _noun_phrase(self, pronouns: list[str]) -> list[int]:
        if self.rng.random() < 0.25:
            return [self._word(pronouns)]
        phrase = [self._word(_DETERMINERS)]
        if self.rng.random() < 0.15:
            phrase.append(self.ids["very"])
        if len(phrase) == 2 or self.rng.random() < 0.4:
            phrase.append(self._word(_ADJECTIVES))
        return [*phrase, self._word(_NOUNS)]

    def sentence(self) -> list[int]:
        """One sentence, ending with "."."""
        r = self.rng.random()
        if r < 0.05:  # counting, e.g. "i saw two three four five ."
            start = int(self.rng.integers(0, 5))
            length = int(self.rng.integers(3, 6))
            count = [self.ids[w] for w in _NUMBERS[start:start + length]]
            return [self.ids["i"], self._word(_TRANSITIVE_VERBS), *count, self.ids["."]]
        words = [self._word(_OPENERS)] if self.rng.random() < 0.2 else []
        words += self._noun_phrase(_SUBJECT_PRONOUNS)
        if r < 0.45:
            words += [self._word(_TRANSITIVE_VERBS), *self._noun_phrase(_OBJECT_PRONOUNS)]
        elif r < 0.8:
            words.append(self._word(_INTRANSITIVE_VERBS))
            if self.rng.random() < 0.3:
                words.append(self._word(_ADVERBS))
        else:
            words += [self.ids["was"], *([self.ids["not"]] if self.rng.random() < 0.2 else [])]
            words.append(self._word(_ADJECTIVES))
        if self.rng.random() < 0.4:
            words += [self._word(_PREPOSITIONS), *self._noun_phrase(_OBJECT_PRONOUNS)]
        if self.rng.random() < 0.15:
            return [*words, self.ids[","], *self.sentence()]
        return [*words, self.ids["."]]

    def text(self, n_tokens: int) -> np.ndarray:
        """At least ``n_tokens`` tokens of consecutive sentences."""
        tokens: list[int] = []
        while len(tokens) < n_tokens:
            tokens += self.sentence()
        return np.array(tokens)


def _training_batch(
    rng: np.random.Generator, corpus: np.ndarray, recipe: DefaultModelRecipe, bos: int, word_ids: np.ndarray
) -> torch.LongTensor:
    """``batch_size`` sequences of BOS + grammar text, each holding one segment several times."""

    def text(n: int) -> np.ndarray:
        start = int(rng.integers(0, len(corpus) - n + 1))
        return corpus[start:start + n]

    body = recipe.n_ctx - 1
    rows = []
    for _ in range(recipe.batch_size):
        seg_len = int(rng.integers(recipe.min_segment_len, recipe.max_segment_len + 1))
        copies = min(int(rng.integers(recipe.min_copies, recipe.max_copies + 1)), body // seg_len)
        if rng.random() < recipe.random_segment_fraction:
            segment = word_ids[rng.integers(0, len(word_ids), seg_len)]
        else:
            segment = text(seg_len)
        filler = body - copies * seg_len
        cuts = np.sort(rng.integers(0, filler + 1, copies))
        gaps = np.diff(np.concatenate([[0], cuts, [filler]]))
        parts = [text(int(gaps[0]))]
        for gap in gaps[1:]:
            parts += [segment, text(int(gap))]
        rows.append(np.concatenate(parts))
    tokens = np.concatenate([np.full((recipe.batch_size, 1), bos), np.stack(rows)], axis=1)
    return torch.from_numpy(tokens).long()


@torch.no_grad()
def repeat_losses(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *, n_seqs: int = 64, seg_len: int = 25, seed: int = 1
) -> tuple[float, float]:
    """Mean loss on the first and on the second copy of random repeated segments.

    Uses :func:`make_repeated_tokens`; each copy's first token is left out of its mean (it follows
    BOS or the end of the first copy, so it cannot be predicted by either copy).
    """
    tokens = make_repeated_tokens(tokenizer, n_seqs, seg_len, seed=seed)
    logits = model(tokens).logits[:, :-1]
    losses = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    # losses[:, p - 1] is the loss on token p; the copies are tokens 1..L and L+1..2L.
    return losses[:, 1:seg_len].mean().item(), losses[:, seg_len + 1:].mean().item()


def train_default_model(
    out_dir: Path, recipe: DefaultModelRecipe = DefaultModelRecipe(), *, progress: bool = True
) -> TrainReport:
    """Train the default model from ``recipe`` and save it, its tokenizer and a report to ``out_dir``.

    ``out_dir`` receives an ordinary HuggingFace checkpoint (``config.json``,
    ``model.safetensors``), the tokenizer files, and ``mechscope_default.json`` with the recipe
    and the :class:`TrainReport`, written last.
    """
    start_time = time.perf_counter()
    rng = np.random.default_rng(recipe.seed)
    tokenizer = build_tokenizer(recipe.n_ctx)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_ctx,
        n_embd=recipe.d_model,
        n_layer=recipe.n_layers,
        n_head=recipe.n_heads,
        n_inner=recipe.d_mlp,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=recipe.tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's generator
        torch.manual_seed(recipe.seed)
        model = GPT2LMHeadModel(config)
    word_ids = np.array(sorted(set(range(len(tokenizer))) - set(tokenizer.all_special_ids)))
    corpus = _Grammar(tokenizer, rng).text(400 * recipe.n_ctx)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay
    )

    def lr_factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        decay_start = recipe.steps - recipe.decay_steps
        if step < decay_start:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - decay_start) / recipe.decay_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    losses: list[float] = []
    with task("training mechscope's default model (first use only)", recipe.steps, enabled=progress) as bar:
        model.train()
        for _ in range(recipe.steps):
            batch = _training_batch(rng, corpus, recipe, tokenizer.bos_token_id, word_ids)
            logits = model(batch).logits[:, :-1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(1, note=f"loss {losses[-1]:.3f}")
    model.eval()
    first, second = repeat_losses(
        model, tokenizer, seg_len=min(25, (recipe.n_ctx - 1) // 2), seed=recipe.seed + 1
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own "Writing model shards" bar
    try:
        model.save_pretrained(out_dir)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out_dir)
    report = TrainReport(
        final_loss=float(np.mean(losses[-20:])),
        repeat_loss_first=first,
        repeat_loss_second=second,
        seconds=time.perf_counter() - start_time,
        steps=recipe.steps,
    )
    metadata = {
        "name": DEFAULT_MODEL_NAME,
        "version": DEFAULT_MODEL_VERSION,
        "recipe": asdict(recipe),
        "report": asdict(report),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return report


def _is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a fully written default model of the current version."""
    required = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not all((folder / name).is_file() for name in required):
        return False
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("version") == DEFAULT_MODEL_VERSION


def ensure_default_model(*, progress: bool = True) -> Path:
    """Return the default model's folder, training it first (about 75 s) if it is missing.

    Safe with concurrent processes: training runs under a file lock, into a temporary sibling
    folder that is renamed into place only once complete. An incomplete or corrupt folder is
    trained again.
    """
    return build_once(default_model_dir(), lambda staging: train_default_model(staging, progress=progress),
                      _is_complete)
