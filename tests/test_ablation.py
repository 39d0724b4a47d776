"""Zero, mean and resample ablation of points, heads and neurons, and knock-out sweeps, against plain
``run_with_hooks`` loops on tiny random models of several families (llama, gpt2, parallel-block gpt_neox,
sandwich-norm gemma3 and olmo2)."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError, InputTypeError
from mechscope.patching import Ablation, KnockoutResult, PatchResult, ablate, ablation_hooks, knockout

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text", "olmo2"]


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 6].mean()


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    hf, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(hf)


@pytest.fixture(scope="module")
def llama():
    hf, _ = make_pair("llama", torch.float32)
    return mechscope.Model.from_hf(hf)


def toks(seed, b=3, p=7):
    return torch.randint(3, 128, (b, p), generator=torch.Generator().manual_seed(seed))


def run(model, tokens, hooks):
    with torch.no_grad():
        return float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks)))


def test_head_knockouts_equal_a_plain_loop(model):
    x, ref = toks(0), toks(1, b=5)
    for method in ("zero", "mean", "resample"):
        r = knockout(model, x, metric, "heads", method, None if method == "zero" else ref)
        assert isinstance(r, KnockoutResult) and isinstance(r, PatchResult)
        assert r.dims == ("layer", "head") and r.values.shape == (2, 4)
        assert r.baseline == pytest.approx(run(model, x, []))
        _, rc = model.run_with_cache(ref)
        for l in range(2):
            for h in range(4):
                z = rc[f"blocks.{l}.attn.hook_z"]
                if method == "zero":
                    new = torch.zeros_like(z[:1, :, h])
                elif method == "mean":
                    new = z[:, :, h].mean((0, 1))
                else:
                    new = z[Ablation(model, "resample", ref).perm[:3], :, h]

                def fn(act, hook, h=h, new=new):
                    act = act.clone()
                    act[:, :, h] = new
                    return act
                assert float(r.values[l, h]) == pytest.approx(run(model, x, [(f"blocks.{l}.attn.hook_z", fn)]),
                                                              abs=1e-5)


def test_layer_knockout_makes_the_block_an_identity(model):
    x = toks(2)
    hooks = Ablation(model).hooks(["blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"])
    _, cache = model.run_with_cache(x, names_filter=["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"])
    with model.hooks(hooks):
        _, ablated = model.run_with_cache(x, names_filter=["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"])
    torch.testing.assert_close(ablated["blocks.1.hook_resid_post"], ablated["blocks.1.hook_resid_pre"])
    r = knockout(model, x, metric, "layers")
    assert r.dims == ("layer",) and float(r.values[1]) == pytest.approx(run(model, x, hooks), abs=1e-6)
    assert knockout(model, x, metric, "attn").values.shape == knockout(model, x, metric, "mlps").values.shape == (2,)


def test_resampling_from_itself_changes_nothing_and_reference_rows_are_permuted(llama):
    x = toks(3, b=1)
    r = knockout(llama, x, metric, "heads", "resample", x)  # one row: its own activation, the identity patch
    torch.testing.assert_close(r.values, torch.full_like(r.values, r.baseline))
    ab = Ablation(llama, "resample", toks(4, b=6), seed=3)
    assert sorted(ab.perm.tolist()) == list(range(6)) and not (ab.perm == torch.arange(6)).any()
    assert torch.equal(ab.perm, Ablation(llama, "resample", toks(4, b=6), seed=3).perm)


def test_pooled_mean_is_padding_aware_and_per_position_mean_needs_the_same_length(llama):
    ref = toks(5, b=4, p=7)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    ab = Ablation(llama, "mean", ref, reference_mask=mask)
    ab.prepare(["blocks.0.hook_mlp_out"])
    _, cache = llama.run_with_cache(ref, attention_mask=mask, names_filter="blocks.0.hook_mlp_out")
    act = cache["blocks.0.hook_mlp_out"]
    torch.testing.assert_close(ab._stats["blocks.0.hook_mlp_out"], act[mask.bool()].mean(0))
    with pytest.raises(InputError, match="padded"):
        Ablation(llama, "mean", ref, mean="position", reference_mask=mask).hooks("blocks.0.hook_mlp_out")
    per_pos = Ablation(llama, "mean", toks(6, b=4, p=9), mean="position")
    hooks = per_pos.hooks("blocks.0.hook_attn_out")
    with pytest.raises(InputError, match="same length|input's length"):
        llama.run_with_hooks(toks(0), fwd_hooks=hooks)
    x = toks(0, p=9)
    _, rc = llama.run_with_cache(toks(6, b=4, p=9), names_filter="blocks.0.hook_attn_out")
    assert run(llama, x, hooks) == pytest.approx(
        run(llama, x, [("blocks.0.hook_attn_out", lambda a, h: rc["blocks.0.hook_attn_out"].mean(0).expand_as(a))]))
    with pytest.raises(InputError, match="pooled"):
        Ablation(llama, "mean", ref).hooks(heads=[(0, 1)], head_point="pattern")
    pattern = Ablation(llama, "mean", toks(6, b=4, p=7), mean="position").hooks(heads=[(0, 1)], head_point="pattern")
    run(llama, toks(0), pattern)


def test_neurons_positions_and_gqa_kv_heads(llama):
    x = toks(7)
    hooks = ablation_hooks(llama, neurons=[(1, 3), (1, 50)], positions=[-1, 2])
    _, clean = llama.run_with_cache(x, names_filter="blocks.1.mlp.hook_post")
    with llama.hooks(hooks):
        _, abl = llama.run_with_cache(x, names_filter="blocks.1.mlp.hook_post")
    diff = (abl["blocks.1.mlp.hook_post"] != clean["blocks.1.mlp.hook_post"])
    assert diff.any(-1).any(0).nonzero().flatten().tolist() == [2, 6]
    assert diff.any(1).any(0).nonzero().flatten().tolist() == [3, 50]
    assert llama.cfg.n_kv_heads == 2
    v = ablate(llama, x, metric, heads=[(0, 1)], head_point="k")

    def kill(act, hook):
        act = act.clone()
        act[:, :, 1] = 0
        return act
    assert float(v) == pytest.approx(run(llama, x, [("blocks.0.attn.hook_k", kill)]))
    with pytest.raises(InputError, match="key/value heads"):
        ablation_hooks(llama, heads=[(0, 3)], head_point="k")
    r = knockout(llama, x, metric, "neurons", layers=[1])
    assert r.dims == ("layer", "neuron") and r.values.shape == (1, 96)
    assert float(r.values[0, 50]) == pytest.approx(float(ablate(llama, x, metric, neurons=[(1, 50)])))


def test_component_lists_and_composition(llama):
    x = toks(8)
    r = knockout(llama, x, metric, [(0, 1), "blocks.1.hook_mlp_out"], "mean", toks(9, b=6))
    assert r.dims == ("component",) and r.labels["component"] == ["L0H1", "blocks.1.hook_mlp_out"]
    both = ablation_hooks(llama, "blocks.1.hook_mlp_out", heads=[(0, 1)], method="mean", reference=toks(9, b=6))
    assert [n for n, _ in both] == ["blocks.1.hook_mlp_out", "blocks.0.attn.hook_z"]
    assert r.to_dict()["baseline"] == pytest.approx(r.baseline)
    assert r.effects().shape == (2,)


def test_bad_input_is_a_sentence(llama):
    with pytest.raises(InputError, match="method must be one of"):
        Ablation(llama, "gaussian")
    with pytest.raises(InputError, match="needs a reference"):
        Ablation(llama, "mean")
    with pytest.raises(InputError, match="read-only"):
        ablation_hooks(llama, heads=[(0, 1)], head_point="result")
    with pytest.raises(InputError, match="out of range"):
        ablation_hooks(llama, heads=[(0, 9)])
    with pytest.raises(InputError, match="not a block index"):
        ablation_hooks(llama, heads=[(5, 0)])
    with pytest.raises(InputTypeError, match=r"wrap a single pair"):
        ablation_hooks(llama, heads=(0, 1))
    with pytest.raises(InputError, match="nothing to ablate"):
        ablation_hooks(llama)
    with pytest.raises(InputError, match="components must be"):
        knockout(llama, toks(0), metric, "experts")
    with pytest.raises(KeyError, match="did you mean"):
        ablation_hooks(llama, "blocks.0.hook_atn_out")


def test_cli_knockout_and_path_patch_write_json_and_html(tmp_path):
    import json

    from typer.testing import CliRunner

    from mechscope.cli import app

    runner = CliRunner()
    out, page = tmp_path / "k.json", tmp_path / "k.html"
    r = runner.invoke(app, ["knockout", "default", "Tom had a cat. Tom had a", "--answer", " cat", "--wrong", " dog",
                            "--method", "mean", "--json", str(out), "--html", str(page)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["dims"] == ["layer", "head"] and data["method"] == "mean" and "baseline" in data
    assert "<script" in page.read_text()
    r = runner.invoke(app, ["path-patch", "default", "--clean", "Tom had a cat. Tom had a", "--corrupt",
                            "Tom had a dog. Tom had a", "--answer", " cat", "--receivers", "1.3.qkv",
                            "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["receivers"] == [[1, 3, "qkv"]] and len(data["values"]) == 1
    assert len(data["values"][0]) == len(data["labels"]["head"])
    r = runner.invoke(app, ["path-patch", "default", "--clean", "a b", "--corrupt", "a b c", "--answer", " cat"])
    assert r.exit_code == 2 and "copies position i" in r.output
    r = runner.invoke(app, ["path-patch", "default", "--clean", "a", "--corrupt", "b", "--answer", " cat",
                            "--receivers", "1.q"])
    assert r.exit_code == 2 and "LAYER.HEAD.INPUT" in r.output


def test_cli_mlp_and_mlps_name_the_same_components_in_every_command(tmp_path):
    """``patch --granularity mlp`` but ``knockout --components mlps`` / ``path-patch --senders mlps``: each command
    now takes both spellings."""
    import json

    from typer.testing import CliRunner

    from mechscope.cli import app

    runner = CliRunner()
    out = tmp_path / "o.json"
    common = ["--answer", " cat", "--wrong", " dog", "--json", str(out)]
    r = runner.invoke(app, ["knockout", "default", "Tom had a cat. Tom had a", "--components", "mlp", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["dims"] == ["layer"]
    pair = ["--clean", "Tom had a cat. Tom had a", "--corrupt", "Tom had a dog. Tom had a"]
    r = runner.invoke(app, ["path-patch", "default", *pair, "--senders", "mlp", *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["patch", "default", *pair, "--granularity", "mlps", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["point"] == "mlp_out"
