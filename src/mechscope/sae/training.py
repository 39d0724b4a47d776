"""Training sparse autoencoders and transcoders: :func:`train` (one SAE) and :func:`train_many` (several SAEs
fed by one activation source, so the model's forward pass, the expensive part of harvesting, is shared).

The loop, per batch of ``batch_size`` tokens: ``training_forward`` (with the dead-latent mask for AuxK and the
L1 warm-up factor), ``backward``, ``prepare_grads_`` (e.g. TopK removes the decoder gradient parallel to its
unit rows), Adam, ``constrain_`` (e.g. renormalise decoder rows), and the per-latent count of tokens since each
latent last fired. The learning rate warms up linearly over ``lr_warmup_steps`` and decays linearly to 0 over
the last ``lr_decay`` fraction of the steps (sparsify's and SAELens's schedule). Statistics stay on the device
and are read (one host sync) every ``log_every`` steps only.

Determinism: the SAE is initialised from ``seed``, the data order depends only on the source's seed and
position, and nothing else draws random numbers; so a run is reproducible, and a checkpoint (see
:mod:`.checkpoint`) taken after any step lets a resumed run continue bit-identically.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .. import progress
from ..errors import InputError
from .activations import ActivationSource, activation_source
from ..optim_state import read_checkpoint
from .checkpoint import CHECKPOINT, restore_states, save_checkpoint, save_sae
from .config import ARCHITECTURES, NEEDS_K, LossConfig, SAEConfig
from .sae import SAE


@dataclass
class TrainConfig:
    """How one SAE is trained; ``train(source, **options)`` and ``mechscope sae train``'s flags are these fields.
    Saved in every checkpoint (a resumed run must match it) and in the SAE's ``cfg.json`` metadata."""

    # --- what is trained
    architecture: Literal["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"] = "topk"
    """Activation and loss (see :class:`SAEConfig`)."""
    d_sae: int | None = None
    """Latents; None means ``expansion * d_in``."""
    expansion: int = 16
    """Latents per input dimension, when ``d_sae`` is None."""
    k: int | None = 32
    """Active latents per token (``topk``, ``batchtopk``, ``matryoshka``); ignored by the others."""
    matryoshka_sizes: list[int] | None = None
    """``matryoshka``'s nested widths; None means ``[d_sae // 16, d_sae // 4, d_sae]``."""
    hook: str | None = None
    """The hook point read (for a model source; for a mapping of tensors, its key). None: the source's only hook."""
    hook_out: str | None = None
    """Transcoders: the hook point predicted. None trains an autoencoder."""
    skip: bool = False
    """Skip-transcoder: add a linear skip ``x @ W_skip`` (needs ``hook_out``)."""
    normalize_activations: Literal["none", "expected_average_only_in"] = "expected_average_only_in"
    """Scale activations to mean norm ``sqrt(d_in)`` while training, so one learning rate and L1 coefficient
    suit every model; folded into the weights on save (the saved SAE takes the model's own units)."""
    # --- loss (the fields of LossConfig)
    l1_coefficient: float = 5.0
    """``relu``/``gated``: weight of the decoder-norm-weighted L1 penalty."""
    l1_warmup_tokens: int = 0
    """Tokens over which the L1 (and L0) penalty ramps linearly from 0 to full (Anthropic's April 2024 update)."""
    l0_coefficient: float = 1.0
    """``jumprelu``: weight of the L0 penalty."""
    jumprelu_bandwidth: float = 0.001
    """``jumprelu``: straight-through estimator bandwidth."""
    auxk_coefficient: float = 1 / 32
    """Weight of the AuxK loss on dead latents (Gao et al.; ``topk``/``batchtopk``/``matryoshka``). 0: off."""
    auxk_k: int | None = None
    """Dead latents used per token by AuxK; None: ``d_in // 2``."""
    dead_tokens: int | None = None
    """A latent is dead after this many tokens without firing. None: ``max(batch_size, min(10M, n_tokens // 10))``
    (sparsify and Gao et al. use 10M tokens, which is the whole of a small run)."""
    # --- optimisation
    n_tokens: int = 2_000_000
    """Tokens to train on (``ceil(n_tokens / batch_size)`` steps)."""
    batch_size: int = 4096
    """Tokens per step."""
    lr: float | None = None
    """Adam's learning rate. None: ``2e-4 / sqrt(d_sae / 16384)`` (Gao et al.'s scaling law, sparsify's default)."""
    lr_warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0."""
    lr_decay: float = 0.2
    """Fraction of the steps, at the end, over which the learning rate decays linearly to 0."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""
    seed: int = 0
    """Seed of the SAE's initialisation and the data order."""
    # --- data from a model
    context_size: int = 128
    """Tokens per sequence when harvesting from a model (BOS included)."""
    exclude_bos: bool = True
    """Skip the BOS position when harvesting (its activations are outliers that no latent should spend on)."""
    holdout_tokens: int = 0
    """Tokens at the end of the text never trained on (kept for evaluation; whole rows, whole documents)."""
    prefetch: bool = True
    """Harvest the next shuffle buffer on a second thread while the SAE trains on the current one (the same
    batches; two buffers in memory). The model must not be run elsewhere while ``train`` runs."""
    # --- running
    out: str | None = None
    """Folder for the checkpoint and the final SAE (``cfg.json`` + ``sae_weights.safetensors``). None: keep nothing."""
    checkpoint_every: int | None = None
    """Tokens between checkpoints (also one at the end). None: 10% of ``n_tokens``."""
    resume: bool = False
    """Continue from the checkpoint in ``out``."""
    device: str | None = None
    """Where to train; None: the source's device (a model's input device), else CPU."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype."""
    autocast: bool = True
    """bf16 mixed precision on CUDA (ignored on CPU, where autocast is slower than fp32)."""
    wandb_project: str | None = None
    """Log to this Weights & Biases project (needs ``pip install wandb``)."""
    log_every: int = 20
    """Steps between progress updates and logged statistics (each costs one host sync)."""

    run_fields = ("n_tokens", "batch_size", "seed", "context_size", "exclude_bos", "holdout_tokens", "prefetch", "out",
                  "checkpoint_every", "resume", "device", "wandb_project", "log_every")
    """Fields that belong to the whole run: :func:`train_many`'s configs must agree on them."""

    def __post_init__(self) -> None:
        if isinstance(self.adam_betas, list):
            self.adam_betas = tuple(self.adam_betas)
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}.")
        ints = dict(expansion=1, n_tokens=1, batch_size=1, lr_warmup_steps=0, l1_warmup_tokens=0, seed=0,
                    context_size=2, holdout_tokens=0, log_every=1)
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"{name} must be an int >= {lo}, got {v!r}.")
        for name in ("d_sae", "dead_tokens", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"{name} must be a positive int or None, got {v!r}.")
        if self.architecture in NEEDS_K and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise InputError(f"architecture {self.architecture!r} needs k, the active latents per token, a positive "
                             f"int; got {self.k!r}.")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            raise InputError(f"lr must be a positive number or None (Gao et al.'s scaling), got {self.lr!r}.")
        d = self.lr_decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1:
            raise InputError(f"lr_decay is the fraction of steps over which the learning rate decays, in [0, 1]; "
                             f"got {self.lr_decay!r}.")
        b = self.adam_betas
        if not (isinstance(b, tuple) and len(b) == 2 and all(isinstance(v, (int, float)) and 0 <= v < 1 for v in b)):
            raise InputError(f"adam_betas must be two numbers in [0, 1), got {b!r}.")
        if self.skip and self.hook_out is None:
            raise InputError("skip=True makes a skip-transcoder, which needs hook_out (the hook point it predicts).")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InputError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}.")
        if self.resume and self.out is None:
            raise InputError("resume=True continues the checkpoint in out; pass out, the run's folder.")
        self.loss_config()  # LossConfig's own checks

    def loss_config(self) -> LossConfig:
        return LossConfig(**{f.name: getattr(self, f.name) for f in fields(LossConfig)})

    @property
    def n_steps(self) -> int:
        return -(-self.n_tokens // self.batch_size)

    def resolved_d_sae(self, d_in: int) -> int:
        return self.d_sae if self.d_sae is not None else self.expansion * d_in

    def resolved_lr(self, d_sae: int) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(d_sae / 16384)

    @property
    def resolved_dead_tokens(self) -> int:
        if self.dead_tokens is not None:
            return self.dead_tokens
        return max(self.batch_size, min(10_000_000, self.n_tokens // 10))

    @property
    def checkpoint_steps(self) -> int:
        every = self.checkpoint_every if self.checkpoint_every is not None else max(1, self.n_tokens // 10)
        return max(1, every // self.batch_size)

    def sae_config(self, d_in: int, d_out: int, hook: str, model_name: str = "", from_model: bool = False) -> SAEConfig:
        d_sae = self.resolved_d_sae(d_in)
        sizes = self.matryoshka_sizes
        if self.architecture == "matryoshka" and sizes is None:
            sizes = sorted({max(1, d_sae // 16), max(1, d_sae // 4), d_sae})
        return SAEConfig(d_in=d_in, d_sae=d_sae, architecture=self.architecture, hook_name=hook,
                         hook_name_out=self.hook_out, d_out=d_out if self.hook_out is not None else None,
                         skip=self.skip, k=self.k if self.architecture in NEEDS_K else None,
                         matryoshka_sizes=sizes if self.architecture == "matryoshka" else None,
                         normalize_activations=self.normalize_activations, dtype=self.dtype, model_name=model_name,
                         context_size=self.context_size if from_model else None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up over ``lr_warmup_steps``, flat, then linear
    decay to 0 over the last ``lr_decay`` fraction of the steps."""
    n = cfg.n_steps
    f = 1.0
    if step < cfg.lr_warmup_steps:
        f = (step + 1) / cfg.lr_warmup_steps
    decay = int(n * cfg.lr_decay)
    if decay and step >= n - decay:
        f = min(f, (n - step) / decay)
    return f


class _Trainer:
    """The state of one SAE in a run: the SAE, its Adam, its dead-latent counter and its running statistics."""

    STATS = ("loss", "mse", "fvu", "l0", "auxk")

    def __init__(self, cfg: TrainConfig, sae_cfg: SAEConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.sae = SAE(sae_cfg, device=device, seed=cfg.seed)
        self.loss = cfg.loss_config()
        self.base_lr = cfg.resolved_lr(sae_cfg.d_sae)
        self.opt = make_optimizer(self.sae, self.base_lr, cfg.adam_betas)
        self.dead_since = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=device)
        self.dead_tokens = cfg.resolved_dead_tokens
        self.acc = torch.zeros(len(self.STATS), dtype=torch.float64, device=device)
        self.acc_n = 0
        self.amp = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.autocast and device.type == "cuda"
                    and sae_cfg.dtype == "float32" else nullcontext())

    @property
    def state(self) -> dict:
        return {"sae": self.sae, "opt": self.opt, "dead_since": self.dead_since}

    def step(self, batch: dict[str, Tensor], step: int, tokens: int) -> None:
        c = self.sae.cfg
        x = batch[c.hook_name]
        y = batch[c.hook_name_out] if c.is_transcoder else None
        f = lr_factor(step, self.cfg)
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * f
        l1_scale = min(1.0, (tokens + 1) / self.cfg.l1_warmup_tokens) if self.cfg.l1_warmup_tokens else 1.0
        dead = self.dead_since >= self.dead_tokens
        with self.amp:
            out = self.sae.training_forward(x, y, loss=self.loss, dead=dead, l1_scale=l1_scale)
        out.loss.backward()
        self.sae.prepare_grads_()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sae.constrain_()
        self.dead_since.add_(x.shape[0]).masked_fill_(out.fired, 0)
        zero = out.fvu.new_zeros(())
        self.acc += torch.stack([out.loss.detach(), out.losses["mse"], out.fvu, out.l0,
                                 out.losses.get("auxk", zero)]).double()
        self.acc_n += 1

    def read_stats(self) -> dict[str, float]:
        """Means since the last read (one host sync), and the dead fraction now."""
        vals = (self.acc / max(self.acc_n, 1)).tolist()
        self.acc.zero_()
        self.acc_n = 0
        stats = dict(zip(self.STATS, vals))
        stats["dead"] = float((self.dead_since >= self.dead_tokens).float().mean())
        return stats


def make_optimizer(sae: SAE, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam over the SAE's parameters; the fused kernel where this torch has it for the device (CUDA, and CPU
    since torch 2.4), else the multi-tensor one. Both are deterministic."""
    params = list(sae.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


# ------------------------------------------------------------------------------------------ sources
def resolve_source(source, cfgs: list[TrainConfig], data=None) -> ActivationSource:
    """An :class:`ActivationSource` for ``source`` (see :func:`~mechscope.sae.activations.activation_source`): a
    ``Model`` with ``data`` is harvested at the configs' hooks (and ``hook_out``s); a tensor ``(n, d)``, a mapping
    ``{hook: (n, d)}``, an iterable of them, an activation store or a source serve activations as they are."""
    run = cfgs[0]
    if is_model(source):
        if data is None:
            raise InputError("training from a model needs data=: a text file, a .jsonl file of {\"text\": ...} "
                             "records, or a token tensor (n, context).")
        hooks: list[str] = []
        for c in cfgs:
            if c.hook is None:
                raise InputError("training from a model needs hook=, the hook point to read (e.g. "
                                 "'blocks.1.hook_resid_post').")
            for h in (c.hook, c.hook_out):
                if h is not None and h not in hooks:
                    hooks.append(h)
        bos = source.tokenizer.bos_token_id if source.tokenizer is not None else None
        return activation_source(data, model=source, hooks=hooks, batch_size=run.batch_size,
                                 context_size=run.context_size, holdout_tokens=run.holdout_tokens, seed=run.seed,
                                 exclude_special_tokens=[bos] if run.exclude_bos and bos is not None else False,
                                 prefetch=run.prefetch)
    if data is not None:
        raise InputError("data= is the text a model is run on; with activations as the source, leave it out.")
    if isinstance(source, (list, tuple)) and source and all(isinstance(t, Tensor) for t in source):
        source = torch.cat(list(source))
    src = activation_source(source, batch_size=run.batch_size, seed=run.seed, hook=run.hook or "x")
    if src.batch_size != run.batch_size:
        raise InputError(f"the activation source yields batches of {src.batch_size} rows but batch_size is "
                         f"{run.batch_size}; pass batch_size={src.batch_size}.")
    return src


def is_model(obj) -> bool:
    """Whether ``obj`` is a mechscope ``Model`` (imported lazily: the SAE package does not need the model code)."""
    from ..model import Model

    return isinstance(obj, Model)

def train(source, *, data=None, show_progress: bool = True, **options) -> SAE:
    """Train one SAE (or transcoder) on ``source`` and return it (normalisation folded in, on ``device``).

    ``source``: a ``Model`` (with ``hook=``, ``hook_out=`` for a transcoder, and ``data=``: a text/.jsonl path or
    token rows ``(n, context)``), an activation tensor ``(n, d_in)``, a mapping ``{hook: (n, d)}``, an iterable of
    those, or an :class:`ActivationSource`. ``options`` are :class:`TrainConfig`'s fields (or ``config=`` one).
    With ``out=``, the run checkpoints there and saves the SAE (``cfg.json`` + ``sae_weights.safetensors``);
    ``resume=True`` continues a killed run and ends with the weights an unbroken run would have."""
    config = options.pop("config", None)
    if config is not None and (options or not isinstance(config, TrainConfig)):
        raise InputError("pass either config=TrainConfig(...) or its fields as keyword options, not both.")
    cfg = config or TrainConfig(**options)
    if isinstance(cfg.hook, (list, tuple)):
        raise InputError("train() trains one SAE; for one per hook from a shared forward pass use "
                         "train_many(source, [dict(hook=h) for h in hooks], ...).")
    return train_many(source, [cfg], data=data, show_progress=show_progress)[0]


def train_many(source, configs: list[TrainConfig | dict], *, data=None, show_progress: bool = True,
               **shared) -> list[SAE]:
    """Train several SAEs on one activation stream: one per hook (``[dict(hook=h) for h in hooks]``, harvested
    from a single forward pass per batch) or a sweep over one hook (``[dict(k=16), dict(k=32)]``). Each config
    is a :class:`TrainConfig` or a dict of fields over ``shared``; run-wide fields (``TrainConfig.run_fields``)
    must agree. With ``out``, SAE ``i`` is saved in ``out/<i>_<hook>`` (or ``out`` itself when there is one)."""
    cfgs = [c if isinstance(c, TrainConfig) else TrainConfig(**{**shared, **c}) for c in configs]
    if not cfgs:
        raise InputError("train_many needs at least one config.")
    for c in cfgs[1:]:
        differ = [n for n in TrainConfig.run_fields if getattr(c, n) != getattr(cfgs[0], n)]
        if differ:
            raise InputError(f"the configs of one run must agree on {', '.join(differ)} (run-wide settings); pass "
                             "them once as shared options.")
    run = cfgs[0]
    src = resolve_source(source, cfgs, data)
    hooks = []
    for c in cfgs:
        h = c.hook if c.hook is not None else (src.hooks[0] if len(src.hooks) == 1 else None)
        if h is None:
            raise InputError(f"the source has several hooks ({', '.join(src.hooks)}); pass hook= to say which to read.")
        for name in (h, c.hook_out):
            if name is not None and name not in src.hooks:
                raise InputError(f"the source has no hook {name!r}; it has {', '.join(src.hooks)}.")
        hooks.append(h)
    device = torch.device(run.device) if run.device else _source_device(source)
    model_name = _model_name(source)
    trainers = [_Trainer(c, c.sae_config(src.d[h], src.d[c.hook_out] if c.hook_out else src.d[h], h,
                                         model_name or "", from_model=is_model(source)), device)
                for c, h in zip(cfgs, hooks)]
    out = Path(run.out) if run.out is not None else None
    ckpt = out / CHECKPOINT if out is not None else None
    step = 0
    meta_cfgs = [c.to_dict() for c in cfgs]
    if ckpt is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt.is_file() and not run.resume:
            raise InputError(f"{str(out)!r} already holds a training checkpoint; pass resume=True (--resume) to "
                             "continue it, or choose another output folder.")
        for stale in out.glob(f".{CHECKPOINT}.*.tmp"):  # a write that a kill interrupted
            stale.unlink(missing_ok=True)
        if run.resume and ckpt.is_file():
            tensors, meta = read_checkpoint(ckpt)
            _check_same_run(meta, meta_cfgs, ckpt)
            restore_states(tensors, meta, [t.state for t in trainers])
            src.load_state_dict(meta["source"])
            step = int(meta["step"])
    n_steps = run.n_steps
    it = iter(src)
    if step == 0 and n_steps:
        first = next(it)
        for t in trainers:
            c = t.sae.cfg
            t.sae.init_from_data_(first[c.hook_name].to(device),
                                  first[c.hook_name_out].to(device) if c.is_transcoder else None)
        it = _chain(first, it)
    log = _wandb(run, cfgs)
    every = run.checkpoint_steps
    tok_s = 0.0
    final: list[dict] = [{} for _ in trainers]
    try:
        with progress.task(f"training {len(trainers)} SAE{'s' * (len(trainers) > 1)}", total=n_steps,
                           enabled=show_progress) as bar:
            bar.update(step)
            t0, s0 = time.perf_counter(), step
            while step < n_steps:
                batch = next(it)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                tokens = step * run.batch_size
                for t in trainers:
                    t.step(batch, step, tokens)
                step += 1
                if step % run.log_every == 0 or step == n_steps:
                    stats = final = [t.read_stats() for t in trainers]
                    now = time.perf_counter()
                    tok_s = (step - s0) * run.batch_size / max(now - t0, 1e-9)
                    s = stats[0]
                    bar.update(step - s0, note=f"loss {s['loss']:.4g} L0 {s['l0']:.1f} FVU {s['fvu']:.3f} "
                                               f"dead {s['dead']:.1%} {tok_s:,.0f} tok/s")
                    if log is not None:
                        log({f"{i}/{k}": v for i, st in enumerate(stats) for k, v in st.items()} |
                            {"tokens": step * run.batch_size, "tokens_per_s": tok_s}, step=step)
                    t0, s0 = now, step
                if ckpt is not None and (step % every == 0 or step == n_steps):
                    save_checkpoint(ckpt, [t.state for t in trainers],
                                    {"step": step, "tokens": step * run.batch_size, "source": src.state_dict(),
                                     "configs": meta_cfgs})
    finally:
        if hasattr(src, "close"):  # a prefetching harvester's background thread
            src.close()
    saes = []
    for i, (t, c) in enumerate(zip(trainers, cfgs)):
        sae = t.sae.fold_norm_scale_()
        sae.cfg.metadata = {**sae.cfg.metadata, "trainer": c.to_dict(), "tokens": n_steps * run.batch_size,
                            "final_stats": final[i] | ({"tokens_per_s": tok_s} if tok_s else {})}
        if out is not None:
            save_sae(sae, out if len(cfgs) == 1 else out / f"{i}_{sae.cfg.hook_name}")
        sae.eval()
        saes.append(sae)
    return saes


def _model_name(source) -> str:
    """The HF name or folder of a model source (SAELens's ``model_name``), else ''."""
    if not is_model(source):
        return ""
    return str(getattr(source.hf_model.config, "_name_or_path", "") or "")


def _chain(first, it):
    yield first
    yield from it


def _source_device(source) -> torch.device:
    if is_model(source):
        return torch.device(source.input_device)
    if isinstance(source, Tensor):
        return source.device
    return torch.device("cpu")


_MAY_CHANGE = {"out", "resume", "checkpoint_every", "log_every", "wandb_project", "device"}


def _check_same_run(meta: dict, cfgs: list[dict], file: Path) -> None:
    saved = meta.get("configs", [])
    if len(saved) != len(cfgs):
        raise InputError(f"{str(file)!r} is a run of {len(saved)} SAEs, this one trains {len(cfgs)}; pass the same "
                         "configs, or use another output folder.")
    for a, b in zip(saved, cfgs):
        differ = sorted(n for n in b if n not in _MAY_CHANGE and a.get(n) != b[n])
        if differ:
            raise InputError(f"cannot resume {str(file)!r} with a different training set-up ("
                             + ", ".join(f"{n}: {a.get(n)!r} then, {b[n]!r} now" for n in differ)
                             + "); pass the same options, or start a new folder.")


def _wandb(run: TrainConfig, cfgs: list[TrainConfig]):
    if run.wandb_project is None:
        return None
    try:
        import wandb
    except ImportError:
        raise InputError(f"wandb_project={run.wandb_project!r} logs to Weights & Biases, which is not installed; "
                         "pip install wandb (or mechscope[wandb]), or leave wandb_project out.") from None
    r = wandb.init(project=run.wandb_project, config={"runs": [c.to_dict() for c in cfgs]},
                   resume="allow" if run.resume else None)
    return r.log
