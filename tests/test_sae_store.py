"""The on-disk activation store: it holds what the model computes, a build killed half-way resumes to the same
files, a store that disagrees with its manifest is refused, and reading it is shuffled and exactly resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from families import make_pair
from typer.testing import CliRunner

import mechscope
from mechscope.errors import InputError
from mechscope.sae import ActivationStore, Harvester, activation_source
from mechscope.sae import store as store_mod

HOOKS = ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def model():
    return mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])


@pytest.fixture(scope="module")
def rows(model):
    return torch.randint(0, model.cfg.d_vocab, (20, 16), generator=torch.Generator().manual_seed(0))


def _build(model, rows, out, **kw):
    kw = dict(context_size=16, shard_tokens=64, progress=False) | kw
    return ActivationStore.build(model, rows, HOOKS, None, out, **kw)


def _all(store, hook):
    return torch.cat([store.read(hook, i) for i in range(len(store.counts))])


def test_store_holds_the_activations(model, rows, tmp_path):
    store = _build(model, rows, tmp_path / "s")
    assert len(store.counts) == 5 and store.n_tokens == 320 and store.d == {h: model.cfg.d_model for h in HOOKS}
    want = Harvester(model, HOOKS)(rows)
    for h in HOOKS:
        assert torch.equal(_all(store, h), want[h])
    assert np.array_equal(store.tokens, rows.numpy())
    assert torch.equal(_all(ActivationStore(tmp_path / "s", verify=True), HOOKS[0]), want[HOOKS[0]])
    for dtype, tdt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        low = _build(model, rows, tmp_path / dtype, dtype=dtype)
        assert torch.equal(_all(low, HOOKS[1]), want[HOOKS[1]].to(tdt).float())


def test_killed_build_resumes_to_identical_files(model, rows, tmp_path, monkeypatch):
    whole = _build(model, rows, tmp_path / "whole")
    real, calls = store_mod._write_shard, []

    def dies(out, name, acts, dtype):
        calls.append(name)
        if len(calls) == 6:  # in the middle of shard 2: its first hook's file is written, the manifest not
            raise KeyboardInterrupt
        return real(out, name, acts, dtype)

    monkeypatch.setattr(store_mod, "_write_shard", dies)
    with pytest.raises(KeyboardInterrupt):
        _build(model, rows, tmp_path / "part")
    monkeypatch.setattr(store_mod, "_write_shard", real)
    with pytest.raises(InputError, match="incomplete .2 of 5 shards"):
        ActivationStore(tmp_path / "part")
    resumed = _build(model, rows, tmp_path / "part")
    assert resumed.manifest["shards"] == whole.manifest["shards"]  # same files, sizes and SHA-256
    assert not list((tmp_path / "part").glob(".*"))  # no temporary leftovers
    with pytest.raises(InputError, match="built with other settings .dtype differ"):
        _build(model, rows, tmp_path / "part", dtype="float16")


def test_disagreeing_store_is_refused(model, rows, tmp_path):
    out = tmp_path / "s"
    store = _build(model, rows, out)
    shard = out / store.manifest["shards"][1]["files"][HOOKS[1]]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    ActivationStore(out)  # same size and header: only hashing sees it
    with pytest.raises(InputError, match="other contents than the manifest's SHA-256"):
        ActivationStore(out, verify=True)
    shard.write_bytes(bytes(data[:-4]))
    with pytest.raises(InputError, match="disagrees with its manifest.*bytes"):
        ActivationStore(out)
    shard.unlink()
    with pytest.raises(InputError, match="is missing"):
        ActivationStore(out)
    (out / "store.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ActivationStore(out)
    with pytest.raises(InputError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_reading_is_shuffled_and_resumes_exactly(model, rows, tmp_path):
    store = _build(model, rows, tmp_path / "s")
    make = lambda: activation_source(tmp_path / "s", batch_size=32, buffer_tokens=96, seed=1)  # noqa: E731
    it = iter(make())
    unbroken = [next(it) for _ in range(25)]  # 10 batches an epoch
    epoch = torch.cat([b[HOOKS[0]] for b in unbroken[:10]])
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    assert torch.equal(key(epoch), key(_all(store, HOOKS[0])))
    assert not torch.equal(epoch, _all(store, HOOKS[0]))
    for stop in (2, 3, 10, 14):  # mid-window, window boundary, epoch boundary, later
        src = make()
        it = iter(src)
        for _ in range(stop):
            next(it)
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(src.state_dict())))
        it = iter(resumed)
        for want in unbroken[stop:]:
            got = next(it)
            assert all(torch.equal(got[h], want[h]) for h in HOOKS)
    one = store.source(32, hooks=HOOKS[1], seed=1, buffer_tokens=96)
    assert torch.equal(next(iter(one))[HOOKS[1]], unbroken[0][HOOKS[1]]) and one.hooks == [HOOKS[1]]
    with pytest.raises(InputError, match="has no 'blocks.1.hook_mlp_out'"):
        store.source(32, hooks=["blocks.1.hook_mlp_out"])


def test_cli_cache_builds_and_resumes(shared, tmp_path):
    from mechscope.cli import app

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"text": f"Tom had a dog called Rex number {i}."}) + "\n" for i in range(200)))
    args = ["sae", "cache", str(shared / "models" / "TinyStories-656K"), "--hook", "blocks.0.hook_resid_post",
            "--hook", "blocks.1.hook_mlp_out", "--data", str(data), "--tokens", "1024", "--context", "64",
            "--out", str(tmp_path / "s"), "--dtype", "float16", "--shard-tokens", "256", "--json",
            str(tmp_path / "r.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_tokens"] == 1024 and report["n_shards"] == 4 and report["dtype"] == "float16"
    res = CliRunner().invoke(app, args)  # re-run: nothing left to do
    assert res.exit_code == 0 and "1024 tokens" in res.output
    res = CliRunner().invoke(app, [*args[:-4], "--dtype", "float32"])
    assert res.exit_code == 2 and "other settings" in res.output
