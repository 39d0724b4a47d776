"""Models dispatched by accelerate: hooks, caches, patching, gradients and generation with accelerate's hooks really
in place. There is no GPU here, so the spread is over CPU execution with weights offloaded to CPU memory and to a
folder on disk: each module is wrapped in an ``AlignDevicesHook`` and holds only ``meta`` tensors outside its
forward, which is what breaks code that assumes one device or reads ``module.weight`` directly."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload
from transformers import AutoModelForCausalLM

import mechscope
from families import make_pair
from mechscope.hooks import HookPoint, Whole, _check

IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
KEYS = ["gpt2", "llama", "gemma2", "gpt_neox"]


def _split_map(model: mechscope.Model) -> dict[str, str]:
    """Block 1 on disk, everything else in CPU memory (through accelerate's hooks)."""
    fam = model.family
    paths = [fam.embed, fam.ln_final, fam.unembed, f"{fam.layers}.0", *([fam.pos_embed] if fam.pos_embed else [])]
    return {**{p: "cpu" for p in paths}, f"{fam.layers}.1": "disk"}


@pytest.fixture(scope="module", params=[(k, how) for k in KEYS for how in ("device_map", "cpu_offload")],
                ids=[f"{k}-{how}" for k in KEYS for how in ("device_map", "cpu_offload")])
def pair(request, tmp_path_factory):
    """(plain model, the same weights dispatched by accelerate)."""
    key, how = request.param
    plain, _ = make_pair(key, torch.float32)
    ref = mechscope.Model.from_hf(plain)
    if how == "device_map":
        folder = tmp_path_factory.mktemp(key)
        plain.save_pretrained(folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, device_map=_split_map(ref), offload_folder=folder / "offload",
                                                  attn_implementation="eager").eval()
    else:
        hf, _ = make_pair(key, torch.float32)
        cpu_offload(hf, execution_device="cpu")
    assert any(p.device.type == "meta" for p in hf.parameters())  # weights really live outside the modules
    ref.set_use_attn_result(True)
    model = mechscope.Model.from_hf(hf)
    model.set_use_attn_result(True)
    return ref, model


def test_forward_and_full_cache_equal_the_plain_model(pair):
    ref, model = pair
    want_logits, want = ref.run_with_cache(IDS)
    logits, cache = model.run_with_cache(IDS)
    assert torch.equal(logits, want_logits)
    assert cache.keys() == want.keys()
    assert [n for n in want if not torch.equal(cache[n], want[n])] == []


def test_identity_and_real_replacements_match(pair):
    ref, model = pair
    writable = lambda n: not n.endswith("hook_result")  # noqa: E731
    same = model.run_with_hooks(IDS, fwd_hooks=[(writable, lambda a, h: a.clone())])
    assert torch.equal(same, ref(IDS))
    # patch a norm's normalized value and a head from another prompt: needs the offloaded norm weight and o_proj
    other = torch.randint(3, 128, IDS.shape, generator=torch.Generator().manual_seed(7))
    names = [n for n in ref.hook_names() if n.startswith("blocks.1.") and n.endswith(("hook_normalized", "hook_z"))]
    _, donor = ref.run_with_cache(other, names_filter=names)
    hooks = [(n, lambda a, h: donor[h.name]) for n in names]
    assert torch.equal(model.run_with_hooks(IDS, fwd_hooks=hooks), ref.run_with_hooks(IDS, fwd_hooks=hooks))


def test_gradients_match(pair):
    ref, model = pair
    _, want = ref.run_with_cache(IDS, incl_bwd=True)
    _, got = model.run_with_cache(IDS, incl_bwd=True)
    grads = [n for n in want if n.endswith("_grad")]
    assert grads and all(torch.equal(got[n], want[n]) for n in grads)


def test_generation_with_hooks_matches(pair):
    ref, model = pair

    def steer(resid, hook):
        return resid + 0.5

    kwargs = dict(max_new_tokens=6, fwd_hooks=[("blocks.1.hook_resid_pre", steer)])
    assert torch.equal(model.generate(IDS[:, :5], **kwargs), ref.generate(IDS[:, :5], **kwargs))


def test_cache_device_and_memory_estimate_follow_the_modules(pair):
    ref, model = pair
    assert model.input_device == torch.device("cpu")  # the embedding's execution device, not its meta weight
    assert {model.point_device(n) for n in model.hook_names()} == {torch.device("cpu")}
    _, cache = model.run_with_cache(IDS, names_filter="blocks.1.hook_resid_post", device="cpu")
    assert cache["resid_post", 1].device == torch.device("cpu")
    assert model.cache_bytes(model.hook_names(), *IDS.shape) == ref.cache_bytes(ref.hook_names(), *IDS.shape)


def test_replacement_on_another_device_is_moved_to_the_activation():
    """Decided behaviour: a hook may return its replacement on any device; it is moved to the activation's device
    (e.g. a value patched in from a cache kept on CPU into a model on GPU). Shown with the meta device, the only
    second device a CPU-only machine has."""
    point = HookPoint("blocks.0.hook_resid_post", Whole("out", torch.nn.Identity()), 0, ("batch", "pos", 4), "")
    old = torch.empty(2, 3, 4, device="meta")
    moved = _check(torch.ones(2, 3, 4), old, point)
    assert moved.device.type == "meta" and moved.shape == old.shape


@pytest.mark.shared
def test_load_passes_device_map_through(shared, tmp_path):
    path = shared / "models" / "TinyStories-656K"
    plain = mechscope.load(path, attn_implementation="eager")
    spread = mechscope.load(path, attn_implementation="eager", device_map={"model.embed_tokens": "cpu",
                            "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"},
                            offload_folder=str(tmp_path))
    assert hasattr(spread.hf_model, "hf_device_map")
    logits, cache = spread.run_with_cache("Once upon a time")
    want_logits, want = plain.run_with_cache("Once upon a time")
    assert torch.equal(logits, want_logits) and all(torch.equal(cache[n], want[n]) for n in want)
    with pytest.raises(mechscope.ModelLoadError, match="device_map"):
        mechscope.load(path, device="cpu", device_map="auto")
