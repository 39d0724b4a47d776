"""GGUF loading: dequantised once into the cache (keyed by the file's identity), then an ordinary folder.

Tests on SmolLM2-135M skip cleanly when its package is absent; the others use a tiny GGUF written here.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mechscope
from mechscope import gguf as ms_gguf
from mechscope import progress
from mechscope.cli import app
from mechscope.zoo import MODELS

SMOLLM2 = MODELS["smollm2-135m"]
needs_smollm2 = pytest.mark.skipif(not SMOLLM2.installed(), reason=f"needs its package: {SMOLLM2.pip}")


@pytest.fixture(scope="module")
def smol():
    if not SMOLLM2.installed():
        pytest.skip(f"needs its package: {SMOLLM2.pip}")
    return mechscope.load("smollm2-135m")


def _tiny_gguf(path, value: float = 1.0):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.full((16, 32), value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@needs_smollm2
def test_named_model_is_a_cached_plain_folder_with_its_source(smol):
    cfg = smol.cfg
    assert (cfg.family, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads) == ("llama", 30, 576, 9, 3)
    assert cfg.dtype == torch.float32 and smol.tokenizer is not None
    src = smol.source
    assert src.quantization == "Q4_1" and src.architecture == "llama"
    assert src.file == str(SMOLLM2.gguf_path().resolve())
    assert src.describe() == f"weights dequantised from a Q4_1 GGUF file: {src.file}"
    folder = ms_gguf.cache_dir(SMOLLM2.gguf_path(), src.key)
    assert smol.hf_model.name_or_path == str(folder)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", ms_gguf.SOURCE_FILE):
        assert (folder / name).is_file(), name
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.parent.glob(f".{folder.name}-*"))  # no staging folder left behind
    assert SMOLLM2.cached_folder() == folder


@needs_smollm2
def test_second_load_reads_the_cache(smol, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("dequantised again")

    monkeypatch.setattr(ms_gguf, "dequantize", fail)
    m = mechscope.load("smollm2-135m", dtype="bfloat16")
    assert m.hf_model.name_or_path == smol.hf_model.name_or_path and m.cfg.dtype == torch.bfloat16
    assert m.source == smol.source


@needs_smollm2
def test_file_and_folder_paths_share_the_cache(smol, tmp_path, monkeypatch):
    monkeypatch.setattr(ms_gguf, "dequantize", lambda *a, **k: pytest.fail("dequantised again"))
    link = tmp_path / SMOLLM2.file
    os.symlink(SMOLLM2.gguf_path(), link)
    for target in (link, tmp_path):  # the file itself, and a folder holding exactly one .gguf
        m = mechscope.load(target)
        assert m.hf_model.name_or_path == smol.hf_model.name_or_path


@needs_smollm2
def test_cached_weights_and_tokenizer_equal_transformers_own_gguf_load(smol):
    """The cache is lossless: every tensor equals transformers' dequantisation of the file, bit for bit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = SMOLLM2.gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    ref = hf.state_dict()
    got = smol.hf_model.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "When Mary and John went to the store, John gave a drink to"
    assert tok(text)["input_ids"] == smol.tokenizer(text)["input_ids"]
    ids = smol.to_tokens(text)
    assert torch.equal(smol(ids), hf(ids).logits)


@needs_smollm2
def test_info_shows_the_quantisation(smol):
    res = CliRunner().invoke(app, ["info", "smollm2-135m", "--pos", "8"])
    assert res.exit_code == 0, res.output
    assert "weights dequantised from a Q4_1 GGUF file" in res.output


def test_models_command_lists_named_models_and_pip_commands():
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    for m in MODELS.values():
        assert m.name in res.output and m.pip in res.output


def test_identity_follows_content_not_path(tmp_path):
    a = _tiny_gguf(tmp_path / "a.gguf")
    b = tmp_path / "copy" / "b.gguf"
    b.parent.mkdir()
    shutil.copy(a, b)
    c = _tiny_gguf(tmp_path / "c.gguf", value=2.0)
    assert ms_gguf.identity(a) == ms_gguf.identity(b) != ms_gguf.identity(c)


def test_header_reader_agrees_with_the_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = _tiny_gguf(tmp_path / "t.gguf")
    from mechscope.gguf_header import data_end, read_header

    header = read_header(path)
    reader = gguf.GGUFReader(path)
    assert header.metadata["general.architecture"] == "llama" and header.metadata["llama.block_count"] == 1
    assert [(t.name, t.offset) for t in header.tensors] == [(t.name, t.data_offset) for t in reader.tensors]
    assert data_end(header) == path.stat().st_size
    assert ms_gguf.read_source(path, "k").quantization == "F32"


def test_interrupted_first_load_leaves_no_cache(tmp_path, monkeypatch):
    path = _tiny_gguf(tmp_path / "t.gguf")

    def interrupted(path, out_dir, source):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(ms_gguf, "dequantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ms_gguf.ensure_dequantized(path, progress=False)
    target = ms_gguf.cache_dir(path, ms_gguf.identity(path))
    assert not target.exists() and not list(target.parent.glob(f".{target.name}-*"))


def test_progress_prints_plain_lines_off_a_terminal(capsys):
    with progress.task("dequantising x.gguf", 3) as t:
        t.update(1, note="half")
        t.update(2)
    err = capsys.readouterr().err
    assert "mechscope: dequantising x.gguf: started, 3 steps" in err
    assert "mechscope: dequantising x.gguf: done in 0 s (half)" in err
