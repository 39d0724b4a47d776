"""Training checkpoints with exact resume, and the final SAE folder.

One checkpoint is one ``checkpoint.safetensors`` file, replaced atomically (temporary file + rename, so a
SIGKILL at any moment leaves the previous checkpoint or the new one, never half of one). It holds, for every
SAE trained in the run (prefix ``{i}.``): parameters and buffers, Adam's state, the per-latent counter of tokens
since each latent last fired; and once for the run: the CPU (and CUDA) RNG states, and as JSON metadata the
step, the tokens seen, the activation source's ``state_dict()``, Adam's param groups and the trainer configs.
Restoring all of it makes the next step bit-identical to the one an unbroken run would take.

The final SAE is saved beside the checkpoint in mechscope's format (``cfg.json`` + ``sae_weights.safetensors``, the
normalisation folded in; :func:`save_sae`), which :func:`mechscope.sae.load` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..errors import InputError
from ..lens.tuned import atomic_write
from ..optim_state import load_optimizer, optimizer_tensors
from .sae import SAE

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(file: Path, states: list[dict], meta: dict) -> None:
    """Write ``states`` (one per SAE: ``sae``, ``opt``, ``dead_since``) and the run's ``meta`` (JSON-serialisable)
    to ``file`` atomically, with the RNG states."""
    tensors: dict[str, Tensor] = {}
    groups, scalars = [], []
    for i, st in enumerate(states):
        for k, v in st["sae"].state_dict().items():
            tensors[f"{i}.sae.{k}"] = v.detach().contiguous().cpu()
        opt_tensors, sc, pg = optimizer_tensors(st["opt"], f"{i}.optim.")
        tensors.update(opt_tensors)
        groups.append(pg)
        scalars.append(sc)
        tensors[f"{i}.dead_since"] = st["dead_since"].detach().contiguous().cpu()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{d}"] = s
    meta = {**meta, "param_groups": groups, "scalars": scalars, "n_saes": len(states)}
    atomic_write(file, lambda f: save_file(tensors, f, metadata={"train": json.dumps(meta)}))


def restore_states(tensors: dict[str, Tensor], meta: dict, states: list[dict]) -> None:
    """Load SAE weights, Adam state and dead counters from a checkpoint into ``states`` (built by the trainer
    with the same configs), and the RNG states."""
    if meta.get("n_saes") != len(states):
        raise InputError(f"the checkpoint holds {meta.get('n_saes')} SAEs but this run trains {len(states)}; resume "
                         "with the same hooks and configs, or use another output folder.")
    for i, st in enumerate(states):
        pre = f"{i}.sae."
        sae_sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        st["sae"].load_state_dict(sae_sd)
        load_optimizer(st["opt"], tensors, f"{i}.optim.", meta["scalars"][i], meta["param_groups"][i])
        st["dead_since"].copy_(tensors[f"{i}.dead_since"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_sae(sae: SAE, out: str | os.PathLike) -> Path:
    """Save ``sae`` in mechscope's format (a copy with the normalisation folded in) into folder ``out``, each file
    written atomically, beside the checkpoint (which stays, so a finished run can be extended or inspected)."""
    from .formats import save_files

    return save_files(sae, out)
