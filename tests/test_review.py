"""Regression tests for defects found reviewing issue 6's merged microscope: a residual stack that does not line up
with the cached scale, models offloaded by accelerate (meta weights outside the forward), the CLI run as a module,
and a tuned-lens path that is a file."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import pytest
import torch
from accelerate import cpu_offload

import mechscope
from families import make_pair
from mechscope.errors import InputError, ModelLoadError
from mechscope.lens import TunedLens, logit_lens

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 5, 9]])


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2"])
def pair(request):
    """(plain model, the same weights with every module offloaded by accelerate.cpu_offload)."""
    plain, _ = make_pair(request.param, torch.float32)
    offloaded = cpu_offload(copy.deepcopy(plain), execution_device=torch.device("cpu"))
    assert any(p.device.type == "meta" for p in offloaded.parameters())
    return mechscope.Model.from_hf(plain), mechscope.Model.from_hf(offloaded)


def test_misaligned_stack_is_refused_not_broadcast():
    model = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    _, cache = model.run_with_cache(IDS)
    full = cache.decompose_resid()  # [component, 1, pos, d_model]: with pos_slice=-1 it would broadcast silently
    with pytest.raises(InputError, match="same pos_slice"):
        cache.logit_attrs(full, 7, pos_slice=-1)
    with pytest.raises(InputError, match="line up"):
        cache.apply_ln_to_stack(full[:, :, :3], pos_slice=-1)
    last = cache.decompose_resid(pos_slice=-1)  # the aligned call still works and sums to the logit
    total = cache.logit_attrs(last, 7, pos_slice=-1).sum(0) + mechscope.residual.final_bias_terms(model, 7)
    torch.testing.assert_close(total, model(IDS)[:, -1, 7], rtol=1e-5, atol=1e-5)


def test_offloaded_model_cfg_device_is_real(pair):
    plain, offloaded = pair
    assert offloaded.cfg.device.type != "meta"
    assert torch.equal(offloaded.W_U, plain.W_U) and torch.equal(offloaded.b_U, plain.b_U)


def test_offloaded_model_residual_and_dla_equal_plain(pair):
    plain, offloaded = pair
    (_, c0), (_, c1) = plain.run_with_cache(IDS), offloaded.run_with_cache(IDS)
    assert torch.equal(c1.get_full_resid_decomposition(), c0.get_full_resid_decomposition())
    assert torch.equal(c1.logit_attrs(c1.stack_head_results(), 7), c0.logit_attrs(c0.stack_head_results(), 7))
    for by in ("full", "neuron", "position"):
        a = mechscope.direct_logit_attribution(offloaded, IDS, 7, by=by)
        b = mechscope.direct_logit_attribution(plain, IDS, 7, by=by)
        assert torch.equal(a.values, b.values), by


def test_offloaded_model_lenses(pair):
    plain, offloaded = pair
    assert logit_lens(offloaded, IDS).exact_final
    tuned = TunedLens.from_model(offloaded)  # placed on cfg.device: was the meta device
    assert tuned.run(IDS).exact_final
    assert torch.equal(tuned.run(IDS).kl, TunedLens.from_model(plain).run(IDS).kl)


def test_cli_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "mechscope.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "attribute" in out.stdout and "lens" in out.stdout


def test_tuned_lens_path_that_is_a_file(tmp_path):
    f = tmp_path / "lens.json"
    f.write_text("{}")
    model = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    with pytest.raises(ModelLoadError, match="is a file, not a folder"):
        TunedLens.load(f, model)


@pytest.mark.parametrize("key", ["llama", "gpt2", "gpt_neox", "gemma3"])
def test_projected_decomposition_into_an_mlp_uses_the_pre_mlp_norm(key):
    """get_full_resid_decomposition(mlp_input=True, apply_ln=True, project_output_onto=p) folds the norm into the
    neurons' projection; it used the pre-attention norm's scale for them (as TransformerLens 3.9 does), so the
    neurons disagreed with the unprojected decomposition times p."""
    model = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
    _, cache = model.run_with_cache(IDS)
    p = torch.randn(model.cfg.d_model, 3, generator=torch.Generator().manual_seed(0))
    folded = cache.get_full_resid_decomposition(1, mlp_input=True, apply_ln=True, project_output_onto=p)
    plain = cache.get_full_resid_decomposition(1, mlp_input=True, apply_ln=True) @ p
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)


def test_stack_without_the_batch_axis_of_a_batch_one_cache_still_lines_up():
    model = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    _, cache = model.run_with_cache(IDS)
    stack = cache.decompose_resid()
    torch.testing.assert_close(cache.apply_ln_to_stack(stack[:, 0], has_batch_dim=False),
                               cache.apply_ln_to_stack(stack)[:, 0])


def test_top_refuses_a_bad_k_with_a_sentence():
    from mechscope.attribution import attribute
    from mechscope.detectors import find_heads

    model = mechscope.load("default")
    heads = find_heads(model, n_seqs=2, seg_len=8)
    attr = attribute(model, "The cat sat", method="saliency")
    for bad in (-1, "3", True):
        with pytest.raises(InputError, match="top takes"):
            heads.top("induction", bad)
        with pytest.raises(InputError, match="top takes"):
            attr.top(bad)
    assert heads.top("induction", 0) == [] and len(attr.top(2)) == 2


def test_cli_json_is_strict(tmp_path):
    """--json files are read by scripts (JSON.parse, jq): NaN and infinities become null instead of bare NaN."""
    import json

    from mechscope.cli.common import write_json

    out = tmp_path / "x.json"
    write_json(str(out), {"kl": [1.0, float("nan")], "top": {"v": float("inf")}, "n": 3, "s": "a"})
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"kl": [1.0, None], "top": {"v": None}, "n": 3, "s": "a"}


def test_attribution_explains_the_real_logit_on_ctrl():
    """CTRL multiplies its embedding output by sqrt(d_model) in place: the runner's embeddings must be the module's
    output before that (they were the scaled tensor, so f(x) was not the model's logit), and the replacement must
    not be a leaf the model writes into."""
    from mechscope.attribution import attribute

    model = mechscope.Model.from_hf(make_pair("ctrl", torch.float32)[0])
    ids = IDS[:, :5]
    with torch.no_grad():
        logit = float(model(ids)[0, -1, 7])
    for method in ("ig", "occlusion", "saliency"):
        attr = attribute(model, ids, 7, method=method, baseline=3) if method != "saliency" else \
            attribute(model, ids, 7, method=method)
        if attr.value is not None:
            assert attr.value == pytest.approx(logit, abs=1e-5), method
    attr = attribute(model, ids, 7, method="ig", baseline=3)
    assert abs(attr.delta) < 0.05


def test_probe_points_of_different_shapes_per_layer_are_refused():
    from mechscope.probes import collect_activations

    model = mechscope.Model.from_hf(make_pair("gemma4_text", torch.float32)[0])
    with pytest.raises(InputError, match="differ in shape across layers"):
        collect_activations(model, torch.randint(3, 50, (4, 6)), hook="z")


def test_algebra_stays_on_the_cache_device():
    """A cache moved to another device (run_with_cache(device=...), cache.to) is worked on where it is; only a cache
    spread over several devices is gathered on cfg.device."""
    for key in ("llama", "gpt2"):
        model = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
        _, cache = model.run_with_cache(IDS)
        want = cache.logit_attrs(cache.get_full_resid_decomposition(pos_slice=-1), 7, pos_slice=-1)
        model.cfg = dataclasses.replace(model.cfg, device=torch.device("meta"))  # as if the model sat on a GPU and the cache had been moved to the CPU
        got = cache.logit_attrs(cache.get_full_resid_decomposition(pos_slice=-1), 7, pos_slice=-1)
        assert got.device.type == "cpu" and torch.equal(got, want)


def test_dla_refuses_a_position_that_is_padding():
    model = mechscope.load("default")
    prompts = ["When Mary and John went to the store", "The cat sat"]
    with pytest.raises(InputError, match="left padding"):
        mechscope.direct_logit_attribution(model, prompts, " the", position=0)
    both = mechscope.direct_logit_attribution(model, prompts, " the", position=-1)
    alone = mechscope.direct_logit_attribution(model, prompts[1], " the", position=-1)
    torch.testing.assert_close(both.values[:, 1], alone.values, rtol=1e-4, atol=1e-4)
