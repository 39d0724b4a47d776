"""The SAE trainer: sources (model + text or tokens, tensors, mappings, streams), transcoders, several SAEs from
one forward pass, the schedule, determinism, saving, bad input, and ``mechscope sae train``."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope
import mechscope.sae as msae
from families import make_pair
from mechscope.errors import InputError, MechscopeError
from mechscope.sae.training import TrainConfig, lr_factor


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request):
    m = mechscope.Model.from_hf(make_pair(request.param, torch.float32)[0])
    rows = torch.randint(0, m.cfg.d_vocab, (64, 16), generator=torch.Generator().manual_seed(0))
    return m, rows


def test_topk_and_relu_train_on_a_tiny_model(tiny, tmp_path):
    m, rows = tiny
    hook = f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"
    for arch in ("topk", "relu"):
        sae = msae.train(m, data=rows, hook=hook, architecture=arch, k=4, expansion=4, n_tokens=256 * 30,
                         batch_size=256, lr=1e-2, context_size=16, show_progress=False, l1_coefficient=0.1,
                         out=str(tmp_path / arch))
        st = sae.cfg.metadata["final_stats"]
        assert sae.cfg.d_sae == 4 * m.cfg.d_model and sae.cfg.hook_name == hook
        assert st["fvu"] < 0.6, st
        if arch == "topk":
            assert st["l0"] <= 4
        # the saved folder holds the folded SAE, which reproduces the model-unit outputs
        back = msae.load(tmp_path / arch)
        x = m.run_with_cache(rows[:2], names_filter=hook)[1][hook].reshape(-1, m.cfg.d_model)
        torch.testing.assert_close(back(x), sae(x))
        assert float(back.norm_scale_in) == 1.0


def test_transcoder_and_train_many_share_one_pass(tiny):
    m, rows = tiny
    inp, out = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
    def forwards(run):
        calls = []
        handle = m.hf_model.register_forward_pre_hook(lambda *a: calls.append(1))
        try:
            return run(), len(calls)
        finally:
            handle.remove()

    kw = dict(data=rows, k=4, expansion=2, n_tokens=256 * 8, batch_size=256, lr=1e-2, context_size=16,
              show_progress=False)
    saes, n_many = forwards(lambda: msae.train_many(
        m, [dict(hook=inp, hook_out=out), dict(hook="blocks.0.hook_resid_post", k=8),
            dict(hook=inp, hook_out=out, skip=True)], **kw))
    _, n_one = forwards(lambda: msae.train(m, hook="blocks.0.hook_resid_post", **kw))
    assert [s.cfg.is_transcoder for s in saes] == [True, False, True] and saes[2].cfg.skip
    assert saes[0].cfg.hook_name_out == out and saes[1].cfg.k == 8
    # three SAEs on three points cost the forward passes of one: harvesting is shared
    assert n_many == n_one
    x = m.run_with_cache(rows[:1], names_filter=[inp, out])[1]
    pred = saes[0](x[inp][0])
    assert torch.isfinite(pred).all() and pred.shape == x[out][0].shape


def test_tensor_mapping_and_stream_sources_agree():
    x = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(d_sae=32, k=4, batch_size=256, n_tokens=256 * 6, show_progress=False, seed=1)
    a = msae.train(x, **kw)
    b = msae.train({"h": x}, hook="h", **kw)
    assert b.cfg.hook_name == "h"
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # same seed, same order
    # a list of tensors is concatenated; a stream is read in order, rebatched across chunk borders
    c = msae.train([x[:300], x[300:]], **kw)
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    d = msae.train(iter([x[i:i + 100] for i in range(0, 2000, 100)]), **kw)
    e = msae.train(iter([x[:1000], x[1000:2000]]), **kw)
    assert all(torch.equal(v, e.state_dict()[k]) for k, v in d.state_dict().items())
    with pytest.raises(InputError, match="ran out after"):
        msae.train(iter([x[:500]]), **kw)


def test_schedule_and_defaults():
    cfg = TrainConfig(n_tokens=100 * 10, batch_size=10, lr_warmup_steps=10, lr_decay=0.2)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1 and f[79] == 1 and f[80] == 1 and f[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f[80:], f[81:]))
    assert cfg.resolved_lr(16384) == pytest.approx(2e-4) and cfg.resolved_lr(2048) == pytest.approx(2e-4 * 8 ** 0.5)
    assert TrainConfig().resolved_dead_tokens == 200_000 and TrainConfig(n_tokens=10**9).resolved_dead_tokens == 10**7
    assert TrainConfig(n_tokens=10_000, batch_size=1000).checkpoint_steps == 1


def test_deterministic_and_schedule_applied():
    x = torch.randn(1024, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(d_sae=32, k=4, batch_size=128, n_tokens=128 * 5, show_progress=False)
    a, b = msae.train(x, **kw), msae.train(x, **kw)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    c = msae.train(x, **{**kw, "seed": 1})
    assert not torch.equal(a.W_enc, c.W_enc)


def test_dead_latents_are_counted_and_auxk_runs():
    x = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0))
    sae = msae.train(x, d_sae=256, k=1, batch_size=256, n_tokens=256 * 12, dead_tokens=256, log_every=12,
                     show_progress=False)
    st = sae.cfg.metadata["final_stats"]
    assert 0 < st["dead"] < 1 and st["auxk"] > 0


@pytest.mark.parametrize("bad, match", [
    (dict(architecture="sparse"), "architecture 'sparse' is not one of"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(lr_decay=2), "lr_decay is the fraction"),
    (dict(skip=True), "needs hook_out"),
    (dict(resume=True), "pass out"),
    (dict(architecture="topk", k=None), "needs k"),
    (dict(l1_coefficient=-1), "l1_coefficient must be a number >= 0"),
])
def test_bad_config_is_a_sentence(bad, match):
    with pytest.raises(InputError, match=match):
        TrainConfig(**bad)


def test_bad_sources_are_sentences(tiny):
    m, rows = tiny
    with pytest.raises(InputError, match="needs data="):
        msae.train(m, hook="blocks.0.hook_resid_post", show_progress=False)
    with pytest.raises(InputError, match="needs hook="):
        msae.train(m, data=rows, show_progress=False)
    with pytest.raises(MechscopeError, match="did you mean 'blocks.0.hook_resid_post'"):
        msae.train(m, data=rows, hook="blocks.0.hook_resid_pots", context_size=16, show_progress=False)
    with pytest.raises(InputError, match="cannot train on str"):
        msae.train("acts.pt", show_progress=False)
    with pytest.raises(InputError, match="several hooks"):
        msae.train({"a": torch.zeros(8, 2), "b": torch.zeros(8, 2)}, batch_size=4, show_progress=False)
    with pytest.raises(InputError, match="train_many"):
        msae.train(torch.zeros(8, 2), hook=["a", "b"], batch_size=4, show_progress=False)
    with pytest.raises(InputError, match="must agree on n_tokens"):
        msae.train_many(torch.zeros(8, 2), [dict(n_tokens=8), dict(n_tokens=16)], batch_size=4)


def test_wandb_missing_is_a_sentence():
    try:
        import wandb  # noqa: F401  (only whether it imports)
        pytest.skip("wandb is installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="pip install wandb"):
        msae.train(torch.zeros(8, 2), batch_size=4, k=1, d_sae=4, wandb_project="p", show_progress=False)


def test_cli_sae_train_and_resume(tinystories, shared, tmp_path):
    from mechscope.cli import app

    stories = shared / "data" / "tinystories-656k-samples" / "samples.jsonl"
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(stories.open().readlines()[:60]))
    out = tmp_path / "sae"
    args = ["sae", "train", str(shared / "models" / "TinyStories-656K"), "--hook", "blocks.1.hook_resid_post",
            "--arch", "topk", "--k", "8", "--expansion", "2", "--tokens", "4096", "--batch-size", "512",
            "--data", str(corpus), "--out", str(out), "--json", str(tmp_path / "r.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["sae"]["d_sae"] == 256 and r["sae"]["k"] == 8 and r["final"]["l0"] <= 8
    assert (out / "cfg.json").is_file() and (out / "sae_weights.safetensors").is_file()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--resume" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*args[:-2], "--k", "4", "--resume"])
    assert res.exit_code == 2 and "k: 8 then, 4 now" in res.output
