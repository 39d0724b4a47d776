"""Path patching against activation patching (where they must agree) and against ARENA's hand-written three-step
loop, on tiny random models of several families."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError, InputTypeError
from mechscope.patching import PathPatchResult, path_patch

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text"]


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 6].mean()


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    hf, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(hf)


def pair(seed=0, b=2, p=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (b, p), generator=g), torch.randint(3, 128, (b, p), generator=g)


def activation_patch_z(model, clean, corrupted):
    """Exact denoising activation patching of every head's z: a plain loop."""
    _, cc = model.run_with_cache(clean)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            def fn(act, hook, l=l, h=h):
                act = act.clone()
                act[:, :, h] = cc[f"blocks.{l}.attn.hook_z"][:, :, h]
                return act
            with torch.no_grad():
                out[l, h] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{l}.attn.hook_z", fn)]))
    return out


def three_step(model, base, source, sender, receivers, freeze_mlps):
    """ARENA's path patching, written out: cache, sender run with other heads frozen, receiver run."""
    _, bc = model.run_with_cache(base)
    _, sc = model.run_with_cache(source)
    n = model.cfg.n_layers

    def freeze_z(act, hook):
        new = bc[hook.name].clone()
        if hook.layer() == sender[0]:
            new[:, :, sender[1]] = sc[hook.name][:, :, sender[1]]
        return new
    hooks = [(f"blocks.{l}.attn.hook_z", freeze_z) for l in range(n)]
    if freeze_mlps:
        hooks += [(f"blocks.{l}.hook_mlp_out", lambda act, hook: bc[hook.name]) for l in range(n)]
    names = sorted({f"blocks.{l}.attn.hook_{c}" for l, _, c in receivers})
    with model.hooks(hooks):
        _, step2 = model.run_with_cache(base, names_filter=names)

    def receive(act, hook):
        act = act.clone()
        for l, h, c in receivers:
            if hook.name == f"blocks.{l}.attn.hook_{c}":
                act[:, :, h] = step2[hook.name][:, :, h]
        return act
    with torch.no_grad():
        return float(metric(model.run_with_hooks(base, fwd_hooks=[(nm, receive) for nm in names])))


def test_to_the_logits_with_nothing_frozen_is_activation_patching(model):
    clean, corrupted = pair(0)
    r = path_patch(model, clean, corrupted, metric, freeze_heads=False)
    assert isinstance(r, PathPatchResult) and r.dims == ("layer", "head")
    torch.testing.assert_close(r.values, activation_patch_z(model, clean, corrupted), rtol=0, atol=1e-5)
    # the last block's heads reach the logits only directly: freezing the others changes nothing
    frozen = path_patch(model, clean, corrupted, metric)
    torch.testing.assert_close(frozen.values[-1], r.values[-1], rtol=0, atol=1e-5)
    with torch.no_grad():
        assert r.baseline == pytest.approx(float(metric(model(corrupted))), abs=1e-6)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("freeze_mlps", [False, True])
def test_receivers_equal_the_hand_written_three_step_loop(model, direction, freeze_mlps):
    clean, corrupted = pair(1)
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    receivers = [(1, 0, "q"), (1, 2, "q"), (1, 1, "k"), (1, 0, "v")]
    r = path_patch(model, clean, corrupted, metric, receivers=receivers, freeze_mlps=freeze_mlps,
                   direction=direction)
    assert r.values.shape == (1, model.cfg.n_heads)  # senders before the receivers' block only
    for h in range(model.cfg.n_heads):
        assert float(r.values[0, h]) == pytest.approx(
            three_step(model, base, source, (0, h), receivers, freeze_mlps), abs=1e-5)


def test_identical_runs_give_the_baseline_everywhere(model):
    clean, _ = pair(2)
    r = path_patch(model, clean, clean, metric, receivers=[(1, 1, "qkv")], senders=[(0, 1), ("mlp", 0), ("layer", 0)])
    assert r.dims == ("sender",) and r.labels["sender"] == ["L0H1", "MLP0", "LAYER0"]
    torch.testing.assert_close(r.values, torch.full_like(r.values, r.baseline))


def test_mlp_senders_with_nothing_frozen_are_activation_patching_of_mlp_out(model):
    clean, corrupted = pair(3)
    r = path_patch(model, clean, corrupted, metric, senders="mlps", freeze_heads=False)
    _, cc = model.run_with_cache(clean)
    for l in range(model.cfg.n_layers):
        name = f"blocks.{l}.hook_mlp_out"
        with torch.no_grad():
            exact = float(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, lambda a, h: cc[h.name])])))
        assert float(r.values[l]) == pytest.approx(exact, abs=1e-5)


def test_bad_input_is_a_sentence():
    hf, _ = make_pair("llama", torch.float32)
    m = mechscope.Model.from_hf(hf)
    clean, corrupted = pair(4)
    with pytest.raises(InputError, match="same number of prompts and tokens"):
        path_patch(m, clean, corrupted[:, :5], metric)
    with pytest.raises(InputError, match="key/value heads"):
        path_patch(m, clean, corrupted, metric, receivers=[(1, 3, "k")])
    with pytest.raises(InputTypeError, match="triple"):
        path_patch(m, clean, corrupted, metric, receivers=[(1, 3)])
    with pytest.raises(InputTypeError, match="senders must be"):
        path_patch(m, clean, corrupted, metric, senders="experts")
    with pytest.raises(InputError, match="direction"):
        path_patch(m, clean, corrupted, metric, direction="sideways")
    with pytest.raises(InputError, match="no block before the receivers"):
        path_patch(m, clean, corrupted, metric, receivers=[(0, 1, "q")])
    assert path_patch(m, clean, corrupted, metric, receivers=[(1, 1, "q")]).to_dict()["receivers"] == [[1, 1, "q"]]
