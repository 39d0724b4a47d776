"""Exact resume: a training run killed with SIGKILL at random moments (during steps and during checkpoint
writes) and resumed ends with bit-identical weights and optimiser state to an unbroken run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mechscope.sae as msae
from mechscope.errors import InputError

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Every step checkpoints, so a random kill often lands inside a checkpoint write.
WORKER = """
import sys, torch
from mechscope.sae import train
g = torch.Generator().manual_seed(0)
x = torch.randn(8192, 32, generator=g) * torch.linspace(0.2, 3, 32)
train(x, architecture=sys.argv[2], k=8, d_sae=256, n_tokens=int(sys.argv[3]), batch_size=256, out=sys.argv[1],
      checkpoint_every=256, resume=True, dead_tokens=2048, lr_warmup_steps=5, show_progress=False)
"""


def _step(ckpt: Path) -> int:
    from safetensors import safe_open

    with safe_open(ckpt, "pt") as f:
        return json.loads(f.metadata()["train"])["step"]


def _env():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return env


def _start(script: Path, out: Path, arch: str, n_tokens: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out), arch, str(n_tokens)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("arch", ["topk"])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, arch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    n_tokens = 256 * 400
    whole = tmp_path / "whole"
    unbroken = _start(script, whole, arch, n_tokens)  # runs beside the first broken attempt

    broken = tmp_path / "broken"
    ckpt = broken / "checkpoint.safetensors"
    rng = random.Random(1234)
    kills, steps = 0, []
    for _ in range(3):
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        p = _start(script, broken, arch, n_tokens)
        deadline = time.monotonic() + 60  # wait until this attempt is training (a new checkpoint was written)
        while p.poll() is None and time.monotonic() < deadline and (
                not ckpt.exists() or ckpt.stat().st_mtime_ns == before):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            kills += 1
            steps.append(_step(ckpt))
    assert kills >= 2, "the worker finished before it could be killed; make its run longer"
    assert steps == sorted(steps) and steps[-1] < 400, steps  # killed mid-run, each attempt after progress
    p = _start(script, broken, arch, n_tokens)
    assert p.wait(120) == 0, p.stderr.read().decode()
    assert unbroken.wait(120) == 0, unbroken.stderr.read().decode()

    a, b = load_file(whole / "sae_weights.safetensors"), load_file(broken / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca, cb = load_file(whole / "checkpoint.safetensors"), load_file(broken / "checkpoint.safetensors")
    for k in ca:
        if not k.startswith("rng."):
            assert torch.equal(ca[k], cb[k]), k
    assert not list(broken.glob(".*.tmp"))


class _Dies(msae.activations.TensorSource):
    """A source that raises after ``n`` batches, as a crash would (no checkpoint after the last batch)."""

    def __init__(self, *a, die_at: int, **kw):
        super().__init__(*a, **kw)
        self.die_at = die_at

    def __iter__(self):
        for i, b in enumerate(super().__iter__()):
            if i == self.die_at:
                raise KeyboardInterrupt
            yield b


def test_resume_in_process_matches_unbroken(tmp_path):
    x = torch.randn(4096, 16, generator=torch.Generator().manual_seed(3))
    kw = dict(architecture="relu", d_sae=64, batch_size=128, lr_warmup_steps=3, l1_warmup_tokens=1000,
              show_progress=False, l1_coefficient=1.0, n_tokens=128 * 40)
    whole = msae.train(x, **kw)
    with pytest.raises(KeyboardInterrupt):  # dies at step 23; the last checkpoint is step 21
        msae.train(_Dies(x, batch_size=128, die_at=23), out=str(tmp_path), checkpoint_every=128 * 7, **kw)
    resumed = msae.train(x, out=str(tmp_path), checkpoint_every=128 * 7, resume=True, **kw)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    saved = load_file(tmp_path / "sae_weights.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in whole.state_dict().items() if not k.startswith("norm_scale"))


def test_resume_refuses_another_config_or_data(tmp_path):
    x = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    kw = dict(d_sae=64, k=4, batch_size=128, show_progress=False, out=str(tmp_path))
    msae.train(x, n_tokens=128 * 4, **kw)
    with pytest.raises(InputError, match="already holds a training checkpoint"):
        msae.train(x, n_tokens=128 * 4, **kw)
    with pytest.raises(InputError, match=r"different training set-up \(k: 4 then, 8 now"):
        msae.train(x, n_tokens=128 * 4, resume=True, **{**kw, "k": 8})
    with pytest.raises(InputError, match="not from this data"):
        msae.train(x[:1024], n_tokens=128 * 4, resume=True, **kw)


