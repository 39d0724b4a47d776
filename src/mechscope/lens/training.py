"""Training a tuned lens: per-layer translators fitted to KL(model ‖ lens) on a text corpus.

As in the tuned-lens package: the loss of translator ``i`` is KL from the model's final next-token
distribution to the lens's at the same position, averaged over positions; all translators are trained together
(each layer's loss is backpropagated separately, so only one layer's logits are alive at a time); gradients are
clipped to norm 1; the optimiser is SGD with Nesterov momentum (lr ``lr * (1 - momentum)``, linear decay to 0)
or AMSGrad Adam (``lr * 1e-3``, linear warm-up then decay); weight decay pulls the translators towards the
identity (they are added residually).

CPU cost is dominated by the unembedding: each position of each layer costs two ``d_model × d_vocab`` products
(forward, and the gradient to the translator's output). Hence: the model's residual streams are computed once
per step with no gradient; the lens loss uses ``positions_per_step`` positions sampled from the step's rows; the
model's parameters are frozen during training so no gradient is ever computed for its unembedding.

Checkpoints (every ``checkpoint_every`` steps, and at the end) hold the translators, the optimiser state, the
step and this config in one ``checkpoint.safetensors`` written atomically; ``resume=True`` continues from it,
and the data order depends only on ``(seed, step)``, so a resumed run sees the batches an unbroken run would.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import Tensor

from .. import progress
from ..errors import InputError
from ..optim_state import load_optimizer, optimizer_tensors, read_checkpoint
from . import data as corpus
from .logit import hidden_states
from .tuned import TunedLens, atomic_write

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    """How a tuned lens is trained. Saved in every checkpoint; the CLI's ``lens train`` options are these."""

    steps: int = 100
    """Optimiser steps."""
    seq_len: int = 128
    """Tokens per row (BOS included)."""
    batch_size: int = 8
    """Rows run through the model per step."""
    positions_per_step: int | None = 256
    """Positions sampled from the step's ``batch_size × seq_len`` for the lens loss (None: all of them)."""
    optimizer: Literal["sgd", "adam"] = "sgd"
    """``sgd`` (Nesterov momentum, tuned-lens's default) or ``adam`` (AMSGrad)."""
    lr: float = 1.0
    """tuned-lens's ``lr_scale``: SGD's learning rate is ``lr * (1 - momentum)``, Adam's ``lr * 1e-3``."""
    momentum: float = 0.9
    """SGD momentum, or Adam's beta1."""
    weight_decay: float = 1e-3
    """Decay towards the identity translator."""
    warmup_steps: int | None = None
    """Linear warm-up (None: 0 for SGD, ``min(1000, steps // 5)`` for Adam, as tuned-lens)."""
    clip_grad_norm: float = 1.0
    """Gradient norm clip over all translators."""
    holdout_rows: int = 320
    """Rows of ``seq_len`` at the end of the corpus never trained on (kept for evaluation)."""
    train_rows: int = 8192
    """Most rows read from the front of the corpus (sampled with replacement each step)."""
    checkpoint_every: int = 10
    """Steps between checkpoints."""
    seed: int = 0
    """Seed of the data order and position sampling."""

    def __post_init__(self) -> None:
        ints = dict(steps=1, seq_len=2, batch_size=1, holdout_rows=0, train_rows=1, checkpoint_every=1, seed=0)
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"{name} must be an int >= {lo}, got {v!r}.")
        if self.positions_per_step is not None and (not isinstance(self.positions_per_step, int)
                                                    or self.positions_per_step < 1):
            raise InputError(f"positions_per_step must be a positive int or None (all), got {self.positions_per_step!r}.")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        for name in ("lr", "weight_decay", "clip_grad_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or (
                    name == "lr" and v == 0):
                raise InputError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got {v!r}.")
        if not 0 <= self.momentum < 1:
            raise InputError(f"momentum must be in [0, 1), got {self.momentum!r}.")

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(1000, self.steps // 5) if self.optimizer == "adam" else 0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then linear decay to 0 at ``cfg.steps`` (tuned-lens's schedule)."""
    w = cfg.warmup
    if step < w:
        return (step + 1) / w
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - w))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr * (1 - cfg.momentum), momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr * 1e-3, betas=(cfg.momentum, 0.999), amsgrad=True,
                            weight_decay=cfg.weight_decay)


def kl_loss(lens_logits: Tensor, final_logp: Tensor) -> Tensor:
    """Mean over positions of KL(final ‖ lens); ``lens_logits`` and ``final_logp`` ``(…, d_vocab)``."""
    logq = lens_logits.float().log_softmax(-1)
    return (final_logp.exp() * (final_logp - logq)).sum(-1).mean()


def train(model, data: str | os.PathLike, out: str | os.PathLike, cfg: TrainConfig | None = None, *,
          resume: bool = False, show_progress: bool = True) -> TunedLens:
    """Train a tuned lens for ``model`` on corpus ``data`` (see ``lens.data``) and save it in folder ``out``
    (``cfg.json`` + ``params.safetensors``, plus ``checkpoint.safetensors`` for resuming). Returns the lens, with
    ``lens.history``: ``[(step, mean KL over layers before that step)]`` for the steps this call ran."""
    cfg = cfg or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lens = TunedLens.from_model(model)
    opt = make_optimizer(list(lens.parameters()), cfg)
    step = 0
    ckpt = out / CHECKPOINT
    if resume and ckpt.is_file():
        step = load_checkpoint(ckpt, lens, opt, cfg, model)
    elif not resume and ckpt.is_file():
        raise InputError(f"{str(out)!r} already holds a training checkpoint; pass resume=True (--resume) to continue "
                         "it, or choose another output folder.")
    rows = corpus.split(model, data, cfg.seq_len, cfg.train_rows, cfg.holdout_rows).train
    frozen = [p for p in model.hf_model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)  # the unembedding's weight gradient would double the cost of every step
    history: list[tuple[int, float]] = []
    try:
        with progress.task("training tuned lens", total=cfg.steps, enabled=show_progress) as bar:
            bar.update(step)
            while step < cfg.steps:
                loss = train_step(model, lens, opt, rows, cfg, step)
                history.append((step, loss))
                step += 1
                bar.update(1, note=f"KL {loss:.3f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    save_checkpoint(ckpt, lens, opt, cfg, step)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    lens.save(out)
    lens.history = history
    return lens


def train_step(model, lens: TunedLens, opt: torch.optim.Optimizer, rows: Tensor, cfg: TrainConfig, step: int) -> float:
    """One optimiser step on a batch drawn by ``(seed, step)``; returns the mean KL over layers before the step."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    pick = torch.randint(len(rows), (cfg.batch_size,), generator=gen)
    tokens = rows[pick].to(model.input_device)
    logits, states, _, _ = hidden_states(model, tokens)
    n = tokens.numel()
    where = torch.randperm(n, generator=gen)[: cfg.positions_per_step or n].sort().values
    final_logp = logits.reshape(n, -1)[where.to(logits.device)].float().log_softmax(-1)[None]
    for g in opt.param_groups:
        g["lr"] = g.setdefault("initial_lr", g["lr"]) * lr_factor(step, cfg)
    total = 0.0
    for idx in range(len(lens)):
        h = states[idx].reshape(n, -1)[where.to(states[idx].device)][None]
        loss = kl_loss(lens.forward(h, idx), final_logp)
        loss.backward()
        total += float(loss.detach())
    if cfg.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(lens.parameters(), cfg.clip_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total / len(lens)


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(file: Path, lens: TunedLens, opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Translators, optimiser state, step and config in one safetensors file, replaced atomically."""
    tensors = {f"layer_translators.{k}": v.detach().contiguous().cpu()
               for k, v in lens.layer_translators.state_dict().items()}
    opt_tensors, scalars, groups = optimizer_tensors(opt, "optim.")
    tensors.update(opt_tensors)
    meta = {"step": step, "config": asdict(cfg), "param_groups": groups, "scalars": scalars,
            "d_model": lens.config.d_model, "num_hidden_layers": lens.config.num_hidden_layers}
    atomic_write(file, lambda f: save_file(tensors, f, metadata={"train": json.dumps(meta)}))


def load_checkpoint(file: Path, lens: TunedLens, opt: torch.optim.Optimizer, cfg: TrainConfig, model) -> int:
    """Restore translators and optimiser state from ``file`` into ``lens``/``opt``; returns the step reached.
    Refused when the checkpoint is for another model shape or another optimiser set-up."""
    tensors, meta = read_checkpoint(file)
    if (meta["d_model"], meta["num_hidden_layers"]) != (lens.config.d_model, lens.config.num_hidden_layers):
        raise InputError(f"checkpoint {str(file)!r} is for d_model {meta['d_model']} with {meta['num_hidden_layers']} "
                         f"layers, but this model has d_model {model.cfg.d_model} with {model.cfg.n_layers}; use "
                         "another output folder.")
    saved = meta["config"]
    fixed = [f.name for f in fields(TrainConfig) if f.name not in ("steps", "checkpoint_every")]
    differ = [n for n in fixed if saved.get(n) != getattr(cfg, n)]
    if differ:
        raise InputError(f"cannot resume {str(file)!r} with a different training set-up ({', '.join(differ)} changed: "
                         f"{ {n: saved.get(n) for n in differ} }); pass the same options, or start a new folder.")
    prefix = "layer_translators."
    lens.layer_translators.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    load_optimizer(opt, tensors, "optim.", meta["scalars"], meta["param_groups"])
    return int(meta["step"])
