"""Tests for the embedded default model.

The full model is trained once per test session (about 75 s), into a temporary cache unless
MECHSCOPE_CACHE is already set; the other tests use a tiny recipe that trains in well under a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechscope import default_model as dm
from mechscope.errors import ModelLoadError

TINY = dm.DefaultModelRecipe(
    steps=4, d_model=32, n_heads=2, d_mlp=64, n_ctx=32, batch_size=4, warmup_steps=2, decay_steps=2
)


@pytest.fixture(scope="session")
def default_model_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The trained default model; MECHSCOPE_CACHE points at a temporary folder unless already set."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("MECHSCOPE_CACHE"):
            patch.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.mktemp("mechscope-cache")))
        yield dm.ensure_default_model(progress=False)


@pytest.fixture
def model_and_tokenizer(default_model_path: Path):
    """The default model (eager attention, so it can return attention patterns) and its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(
        default_model_path, attn_implementation="eager", local_files_only=True
    )
    return model.eval(), AutoTokenizer.from_pretrained(default_model_path, local_files_only=True)


@pytest.fixture
def tiny_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Point the cache at ``tmp_path`` and make ensure_default_model train TINY; returns the folders trained."""
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    trained: list[Path] = []
    train = dm.train_default_model

    def train_tiny(out_dir: Path, *, progress: bool = True) -> dm.TrainReport:
        trained.append(out_dir)
        return train(out_dir, TINY, progress=progress)

    monkeypatch.setattr(dm, "train_default_model", train_tiny)
    return trained


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MECHSCOPE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert dm.cache_root() == Path.home() / ".cache" / "mechscope"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dm.cache_root() == tmp_path / "xdg" / "mechscope"
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "own"))
    assert dm.cache_root() == tmp_path / "own"
    assert dm.default_model_dir() == tmp_path / "own" / f"default-v{dm.DEFAULT_MODEL_VERSION}"


def test_loads_with_plain_auto_classes(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    assert model.config.model_type == "gpt2"
    assert model.config.n_layer == dm.DefaultModelRecipe().n_layers
    assert model.config.vocab_size == len(tokenizer)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|bos|>", "<|eos|>")
    assert (tokenizer.pad_token, tokenizer.unk_token) == ("<|pad|>", "<|unk|>")
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer("the cat sat on the bed").input_ids]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_tokenizer_round_trips_and_adds_no_bos(model_and_tokenizer) -> None:
    _, tokenizer = model_and_tokenizer
    ids = tokenizer("The cat sat on the old bed, then it slept.").input_ids
    assert tokenizer.bos_token_id not in ids and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "the cat sat on the old bed, then it slept."
    assert tokenizer.decode(tokenizer("the cat sat").input_ids) == "the cat sat"
    assert tokenizer("the zyzzyva sat").input_ids[1] == tokenizer.unk_token_id


def test_make_repeated_tokens(model_and_tokenizer) -> None:
    _, tokenizer = model_and_tokenizer
    tokens = dm.make_repeated_tokens(tokenizer, 3, 7, seed=5)
    assert tokens.shape == (3, 15) and tokens.dtype == torch.long
    assert (tokens[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:])
    assert not set(tokens[:, 1:].flatten().tolist()) & set(tokenizer.all_special_ids)
    assert torch.equal(tokens, dm.make_repeated_tokens(tokenizer, 3, 7, seed=5))


def test_metadata_records_recipe_and_report(default_model_path: Path) -> None:
    metadata = json.loads((default_model_path / dm.METADATA_FILE).read_text())
    assert metadata["version"] == dm.DEFAULT_MODEL_VERSION
    assert dm.DefaultModelRecipe(**metadata["recipe"]) == dm.DefaultModelRecipe()
    report = metadata["report"]
    assert report["steps"] == dm.DefaultModelRecipe().steps
    assert report["repeat_loss_second"] < 1.0 < 4.0 < report["repeat_loss_first"]


def test_repeat_loss_drops_on_held_out_sequences(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    first, second = dm.repeat_losses(model, tokenizer, seed=1234)
    assert second < 1.0
    assert first - second > 3.0


@torch.no_grad()
def test_previous_token_and_induction_heads(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    seg_len = 20
    tokens = dm.make_repeated_tokens(tokenizer, 16, seg_len, seed=99)
    layer0, layer1 = model(tokens, output_attentions=True).attentions  # (batch, head, query, key)
    previous = layer0.diagonal(offset=-1, dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2))
    queries = torch.arange(seg_len + 1, 2 * seg_len + 1)
    induction = layer1[:, :, queries, queries - seg_len + 1].mean(dim=(0, 2))
    assert previous.max() > 0.7, previous
    assert induction.max() > 0.6, induction


def test_second_call_reuses_the_folder(default_model_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in default_model_path.iterdir()}
    start = time.perf_counter()
    assert dm.ensure_default_model(progress=False) == default_model_path
    assert time.perf_counter() - start < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in default_model_path.iterdir()} == before


def test_training_is_deterministic(tmp_path: Path) -> None:
    torch.manual_seed(1)  # the caller's random state must not matter
    first = dm.train_default_model(tmp_path / "a", TINY, progress=False)
    torch.manual_seed(2)
    second = dm.train_default_model(tmp_path / "b", TINY, progress=False)
    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert first.final_loss == second.final_loss


def test_incomplete_folder_is_retrained(tiny_training: list[Path], tmp_path: Path) -> None:
    folder = dm.ensure_default_model(progress=False)
    assert len(tiny_training) == 1 and tiny_training[0].parent == tmp_path
    (folder / dm.METADATA_FILE).unlink()
    assert dm.ensure_default_model(progress=False) == folder
    assert len(tiny_training) == 2
    assert json.loads((folder / dm.METADATA_FILE).read_text())["recipe"]["steps"] == TINY.steps
    assert dm.ensure_default_model(progress=False) == folder and len(tiny_training) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, f"{folder.name}.lock"]


_TRAIN_TINY_IN_A_CHILD = """
import os, sys
from pathlib import Path
from mechscope import default_model as dm
train = dm.train_default_model
def train_tiny(out_dir, *, progress=True):
    (Path(sys.argv[1]) / f"trained-{os.getpid()}").touch()
    return train(out_dir, dm.%r, progress=progress)
dm.train_default_model = train_tiny
print(dm.ensure_default_model(progress=False))
"""


def test_concurrent_processes_train_once(tmp_path: Path) -> None:
    env = {**os.environ, "MECHSCOPE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-c", _TRAIN_TINY_IN_A_CHILD % (TINY,), str(tmp_path)]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert len({output.strip() for output in outputs}) == 1
    assert len(list(tmp_path.glob("trained-*"))) == 1


def test_failed_training_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))

    def crash(out_dir: Path, *, progress: bool = True) -> dm.TrainReport:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(dm, "train_default_model", crash)
    with pytest.raises(KeyboardInterrupt):
        dm.ensure_default_model(progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [f"{dm.default_model_dir().name}.lock"]


def test_unwritable_cache_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MECHSCOPE_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelLoadError, match="set MECHSCOPE_CACHE to a writable folder"):
        dm.ensure_default_model(progress=False)
