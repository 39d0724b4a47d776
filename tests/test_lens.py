"""Logit lens and tuned lens: exactness of the final layer against the model's logits on several families
(incl. soft-capped and scaled logits), agreement with an independent computation, chunking and padding,
tuned-lens checkpoints (ours and tuned-lens's format), training resume, and the CLI. The TinyStories-656K
tests (marked ``shared``) train a real tuned lens and check it beats the logit lens at every layer."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope
from families import make_pair
from real import real_model
from mechscope.cli import app
from mechscope.lens import LogitLens, TrainConfig, TunedLens, evaluate, layer_labels, logit_lens, resid_names, train
from mechscope.lens.data import split

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "olmo2", "cohere", "granite", "nanochat", "opt",
            "qwen4_exp_text"]
"""gemma2/nanochat soft-cap the final logits, cohere multiplies them by logit_scale, granite divides by
logits_scaling; gpt_neox has parallel blocks; gemma2/3 and olmo2 have sandwich norms; OPT's head calls
model.decoder, not model; Qwen4-exp's final-norm module combines its concatenated hyper-connection streams."""
TOKENS = torch.tensor([[1, 5, 9, 17, 33, 2, 60, 7], [1, 8, 8, 8, 40, 41, 42, 43]])
STORIES = "data/tinystories-656k-samples/samples.jsonl"
runner = CliRunner()


def _model(key: str, dtype=torch.float32) -> mechscope.Model:
    return mechscope.Model.from_hf(make_pair(key, dtype)[0])


@pytest.mark.parametrize("key", FAMILIES)
def test_final_layer_is_the_models_logits(key):
    m = _model(key)
    res = logit_lens(m, TOKENS, k=3, targets=[5, 7])
    assert res.exact_final
    logits = m(TOKENS)
    _, cache = m.run_with_cache(TOKENS, names_filter=resid_names(m.cfg.n_layers))
    final = LogitLens.from_model(m).forward(cache[resid_names(m.cfg.n_layers)[-1]], m.cfg.n_layers)
    assert torch.equal(final, logits)
    assert torch.equal(res.top_indices[-1], logits.float().topk(3, -1).indices)
    assert res.kl[-1].abs().max() < 1e-5
    assert res.layer_labels == layer_labels(m.cfg.n_layers) and res.kl.shape == (m.cfg.n_layers + 1, 2, 8)


@pytest.mark.parametrize("key", ["llama", "gemma2"])
def test_bfloat16_models(key):
    """float32 translators on a bf16 model: the lens casts back to the model's dtype before its head."""
    m = _model(key, torch.bfloat16)
    tuned = TunedLens.from_model(m)
    with torch.no_grad():
        for p in tuned.parameters():
            p.normal_(0, 0.01)
    for res in (logit_lens(m, TOKENS), tuned.run(TOKENS)):
        assert res.exact_final and res.kl.dtype == torch.float32 and torch.isfinite(res.kl).all()


def test_head_after_lm_head_is_applied():
    """Gemma 2's soft-capping of the final logits is part of what the lens reads at every layer."""
    m = _model("gemma2")
    m.hf_model.config.final_logit_softcapping = 0.5  # small, so that capping changes every logit visibly
    _, cache = m.run_with_cache(TOKENS, names_filter=resid_names(m.cfg.n_layers))
    h = cache["blocks.0.hook_resid_pre"]
    z = LogitLens.from_model(m).forward(h, 0)
    raw = m.hf_model.lm_head(m.hf_model.model.norm(h))
    assert z.abs().max() <= 0.5 < raw.abs().max()
    torch.testing.assert_close(z, torch.tanh(raw / 0.5) * 0.5)
    assert logit_lens(m, TOKENS).exact_final


@pytest.mark.parametrize("key", ["llama", "gpt2"])
def test_logit_lens_matches_independent_computation(key):
    m = _model(key)
    res = logit_lens(m, TOKENS, k=4, targets=[5, 9])
    logits, cache = m.run_with_cache(TOKENS)
    norm = m.hf_model.get_submodule(m.family.ln_final)
    final_logp = logits.float().log_softmax(-1)
    for l, name in enumerate(resid_names(m.cfg.n_layers)):
        logp = (norm(cache[name]) @ m.W_U + m.b_U).float().log_softmax(-1)
        top = logp.topk(4, -1)
        torch.testing.assert_close(res.top_probs[l], top.values.exp())
        assert torch.equal(res.top_indices[l], top.indices)
        torch.testing.assert_close(res.kl[l], (final_logp.exp() * (final_logp - logp)).sum(-1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res.entropy[l], -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=1e-5)
        t = logp[..., [5, 9]]
        torch.testing.assert_close(res.target_probs[l], t.exp())
        ranks = torch.stack([(logp > logp[..., i:i + 1]).sum(-1) + 1 for i in (5, 9)], -1)
        assert torch.equal(res.target_ranks[l], ranks)


def test_chunked_equals_whole_and_padding_is_masked():
    m = _model("llama")
    whole = logit_lens(m, TOKENS, k=3)
    chunked = logit_lens(m, TOKENS, k=3, max_bytes=1)  # one prompt at a time
    assert torch.equal(whole.top_indices, chunked.top_indices)
    torch.testing.assert_close(whole.kl, chunked.kl)
    # a shorter prompt, left-padded in a batch, reads as it does alone at its real positions
    mask = torch.ones_like(TOKENS)
    mask[1, :3] = 0
    padded = logit_lens(m, TOKENS, k=3, attention_mask=mask)
    alone = logit_lens(m, TOKENS[1:, 3:], k=3)
    assert padded.mask[1].tolist() == [False] * 3 + [True] * 5
    assert torch.equal(padded.top_indices[:, 1, 3:], alone.top_indices[:, 0])
    torch.testing.assert_close(padded.kl[:, 1, 3:], alone.kl[:, 0], atol=1e-4, rtol=1e-4)


def test_multi_stream_residual_is_refused():
    m = _model("hy_v4")  # hyper-connections: (batch, pos, stream, d_model), combined before the final norm
    with pytest.raises(mechscope.UnsupportedModelError, match="several streams"):
        logit_lens(m, TOKENS)


def test_bad_lens_input_is_refused():
    m = _model("llama")
    with pytest.raises(mechscope.InputError, match="k .* must be an int from 1"):
        logit_lens(m, TOKENS, k=0)
    with pytest.raises(mechscope.InputError, match="outside the model's vocabulary"):
        logit_lens(m, TOKENS, targets=[10_000])
    with pytest.raises(mechscope.InputTypeError, match="token string"):
        logit_lens(m, TOKENS, targets=[1.5])
    with pytest.raises(mechscope.InputError, match="max_bytes"):
        logit_lens(m, TOKENS, max_bytes=0)
    with pytest.raises(mechscope.InputError, match="prompt index"):
        logit_lens(m, TOKENS).view_args(batch=5)


def test_untrained_tuned_lens_is_the_logit_lens_and_saves_round_trip(tmp_path):
    m = _model("gemma3_text")
    tuned = TunedLens.from_model(m)
    a, b = logit_lens(m, TOKENS), tuned.run(TOKENS)
    assert torch.equal(a.top_indices, b.top_indices) and torch.equal(a.kl, b.kl)
    with torch.no_grad():
        for p in tuned.parameters():
            p.normal_(0, 0.02)
    tuned.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "params.safetensors"]
    loaded = TunedLens.load(tmp_path, m)
    assert set(loaded.state_dict()) == {f"layer_translators.{i}.{w}" for i in range(2) for w in ("weight", "bias")}
    h = torch.randn(2, 8, m.cfg.d_model)
    assert torch.equal(loaded.forward(h, 1), tuned.forward(h, 1))
    assert torch.equal(loaded.transform_hidden(h, 1), h + tuned[1](h))
    assert torch.equal(loaded.forward(h, 2), LogitLens.from_model(m).forward(h, 2))  # final state: no translator


def test_tuned_lens_package_checkpoint_loads(tmp_path):
    """tuned-lens saves config.json + params.pt holding ``layer_translators.state_dict()`` ({i}.weight)."""
    m = _model("llama")
    d, n = m.cfg.d_model, m.cfg.n_layers
    state = {f"{i}.{w}": torch.randn((d, d) if w == "weight" else (d,)) for i in range(n) for w in ("weight", "bias")}
    torch.save(state, tmp_path / "params.pt")
    cfg = {"base_model_name_or_path": "x", "d_model": d, "num_hidden_layers": n, "bias": True,
           "base_model_revision": None, "unembed_hash": "abc", "lens_type": "linear_tuned_lens", "future_key": 1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="future_key"):
        lens = TunedLens.load(tmp_path, m)
    assert torch.equal(lens.layer_translators[1].weight, state["1.weight"])
    # mismatches with the model are refused with the numbers
    del cfg["future_key"]
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"d_model": d + 1}))
    with pytest.raises(mechscope.InputError, match=f"d_model {d + 1}.*{d} wide"):
        TunedLens.load(tmp_path, m)
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": n + 1}))
    with pytest.raises(mechscope.InputError, match=f"{n + 1} translators.*{n} layers"):
        TunedLens.load(tmp_path, m)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    state["1.weight"] = torch.randn(d, d + 1)
    torch.save(state, tmp_path / "params.pt")
    with pytest.raises(mechscope.InputError, match="'1.weight'.*shape"):
        TunedLens.load(tmp_path, m)
    with pytest.raises(mechscope.ModelLoadError, match="does not exist"):
        TunedLens.load(tmp_path / "nope", m)


def test_train_config_is_checked():
    with pytest.raises(mechscope.InputError, match="optimizer must be"):
        TrainConfig(optimizer="lion")
    with pytest.raises(mechscope.InputError, match="steps must be"):
        TrainConfig(steps=0)


# ---------------------------------------------------------------------------------------- TinyStories-656K
@pytest.mark.shared
def test_tuned_lens_beats_logit_lens_on_tinystories(tinystories, shared, tmp_path):
    data = shared / STORIES
    cfg = TrainConfig(steps=60, batch_size=8, positions_per_step=512, train_rows=512, holdout_rows=32,
                      checkpoint_every=30)
    lens = train(tinystories, data, tmp_path, cfg, show_progress=False)
    rows = split(tinystories, data, cfg.seq_len, 0, 32).eval
    ev = evaluate({"logit": LogitLens.from_model(tinystories), "tuned": lens}, rows)
    n = tinystories.cfg.n_layers
    assert all(ev.kl["tuned"][l] < ev.kl["logit"][l] for l in range(n))
    assert ev.kl["tuned"][0] < 0.5 * ev.kl["logit"][0]
    assert ev.kl["tuned"][n] == ev.kl["logit"][n] and ev.kl["logit"][n] < 1e-5
    loaded = TunedLens.load(tmp_path, tinystories)
    assert torch.equal(loaded.layer_translators[0].weight, lens.layer_translators[0].weight)


@pytest.mark.shared
def test_resumed_training_equals_unbroken(tinystories, shared, tmp_path, monkeypatch):
    import mechscope.lens.training as lens_train

    data = shared / STORIES
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=32, positions_per_step=32, train_rows=64, holdout_rows=4,
                      checkpoint_every=2, optimizer="adam")
    whole = train(tinystories, data, tmp_path / "a", cfg, show_progress=False)
    step_fn = lens_train.train_step

    def crash_at_3(model, lens, opt, rows, cfg, step):
        if step == 3:
            raise KeyboardInterrupt  # killed after the checkpoint at step 2, one step later
        return step_fn(model, lens, opt, rows, cfg, step)

    monkeypatch.setattr(lens_train, "train_step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(tinystories, data, tmp_path / "b", cfg, show_progress=False)
    monkeypatch.setattr(lens_train, "train_step", step_fn)
    assert all(p.requires_grad for p in tinystories.hf_model.parameters())  # the model is unfrozen even then
    with pytest.raises(mechscope.InputError, match="already holds a training checkpoint"):
        train(tinystories, data, tmp_path / "b", cfg, show_progress=False)
    with pytest.raises(mechscope.InputError, match="seq_len"):
        train(tinystories, data, tmp_path / "b", TrainConfig(**{**cfg.__dict__, "seq_len": 16}), resume=True,
              show_progress=False)
    resumed = train(tinystories, data, tmp_path / "b", cfg, resume=True, show_progress=False)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert (tmp_path / "b" / lens_train.CHECKPOINT).is_file()


@pytest.mark.shared
def test_lens_cli(tinystories, shared, tmp_path):
    model = str(shared / "models" / "TinyStories-656K")
    out = tmp_path / "lens.json"
    r = runner.invoke(app, ["lens", model, "Once upon a time", "--k", "3", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "final_post" in r.output
    res = json.loads(out.read_text())
    assert res["exact_final"] and res["layer_labels"] == ["0_pre", "1_pre", "final_post"]
    row = res["prompts"][0]["layers"][0]["positions"][1]
    assert len(row["top"]) == 3 and {"kl", "entropy", "token", "pos"} <= set(row)
    lens_dir = tmp_path / "tl"
    data = str(shared / STORIES)
    r = runner.invoke(app, ["lens", "train", model, "--data", data, "--out", str(lens_dir), "--steps", "3",
                            "--batch-size", "2", "--seq-len", "32", "--holdout-rows", "4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["lens", "train", model, "--data", data, "--out", str(lens_dir), "--steps", "4",
                            "--batch-size", "2", "--seq-len", "32", "--holdout-rows", "4", "--resume"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["lens", model, "Once upon a time", "--tuned", str(lens_dir)])
    assert r.exit_code == 0 and "tuned lens" in r.output, r.output
    ev = tmp_path / "eval.json"
    r = runner.invoke(app, ["lens", "eval", model, "--tuned", str(lens_dir), "--data", data, "--rows", "2",
                            "--seq-len", "32", "--json", str(ev)])
    assert r.exit_code == 0, r.output
    assert [l["layer"] for l in json.loads(ev.read_text())["layers"]] == ["0_pre", "1_pre", "final_post"]
    r = runner.invoke(app, ["lens", model, "Once upon a time", "--tuned", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output


# ------------------------------------------------------------------------------------------ real models
@pytest.mark.real_models
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_model_final_layer_exact(name):
    m = real_model(name)
    res = logit_lens(m, "When Mary and John went to the store, John gave a drink to", targets=[" Mary", " John"])
    assert res.exact_final
    assert res.top_strings[-1][0][-1][0] == " Mary" and res.target_ranks[-1, 0, -1, 0] == 1
    assert res.kl[: m.cfg.n_layers // 2, 0, 1:].mean() > res.kl[-2, 0, 1:].mean()  # later layers are closer
