"""SAE evaluation against hand computations on tiny models, the BOS choice, transcoders, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import mechscope
from families import make_pair
from mechscope.errors import InputError
from mechscope.model import lm_loss
from mechscope.sae import SAE, SAEConfig, evaluate, evaluate_activations
from mechscope.sae.data import token_rows

TOKENS = torch.randint(0, 100, (6, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def llama():
    hf, _ = make_pair("llama", torch.float32)
    return mechscope.Model.from_hf(hf)


def topk(hook: str, d_in: int, seed: int = 0, **kw) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=80, architecture="topk", k=5, hook_name=hook, **kw), seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    return sae


def kl(clean, other):
    p, q = torch.log_softmax(clean, -1), torch.log_softmax(other, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@torch.no_grad()
def test_evaluate_matches_hand_computation(llama):
    hook = "blocks.1.hook_resid_post"
    sae = topk(hook, llama.cfg.d_model)
    ev = evaluate(sae, llama, TOKENS, batch_size=4)  # two batches: the sums must stream correctly
    clean, cache = llama.run_with_cache(TOKENS, names_filter=hook)
    x = cache[hook].reshape(-1, llama.cfg.d_model).double()
    f = sae.encode(x.float())
    y_hat = sae(x.float()).double()
    assert ev.n_tokens == TOKENS.numel() and ev.n_predictions == 6 * 8
    assert ev.l0 == pytest.approx(float((f != 0).sum(-1).double().mean()))
    assert ev.mse == pytest.approx(float((x - y_hat).pow(2).mean()), rel=1e-6)
    ev_hand = 1 - float((x - y_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert ev.explained_variance == pytest.approx(ev_hand, rel=1e-6) and ev.fvu == pytest.approx(1 - ev_hand, rel=1e-6)
    spliced = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, lambda a, h: sae(a))])
    zero = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, lambda a, h: torch.zeros_like(a))])
    mean = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, lambda a, h: x.mean(0).float().expand_as(a))])
    assert ev.ce_clean == pytest.approx(float(lm_loss(clean, TOKENS)), rel=1e-5)
    assert ev.ce_spliced == pytest.approx(float(lm_loss(spliced, TOKENS)), rel=1e-5)
    assert ev.ce_zero_ablated == pytest.approx(float(lm_loss(zero, TOKENS)), rel=1e-5)
    assert ev.ce_mean_ablated == pytest.approx(float(lm_loss(mean, TOKENS)), rel=1e-5)
    assert ev.ce_spliced_error == ev.ce_clean and ev.kl_spliced_error == 0
    assert ev.kl_spliced == pytest.approx(kl(clean, spliced), rel=1e-5)
    assert ev.ce_loss_recovered == pytest.approx((ev.ce_zero_ablated - ev.ce_spliced)
                                                 / (ev.ce_zero_ablated - ev.ce_clean))
    assert ev.ce_loss_recovered_by["mean"] == pytest.approx((ev.ce_mean_ablated - ev.ce_spliced)
                                                            / (ev.ce_mean_ablated - ev.ce_clean))
    density = (f != 0).double().mean(0)
    assert ev.density == pytest.approx(density.tolist())
    assert ev.dead_fraction == pytest.approx(float((density == 0).double().mean()))
    assert ev.dense_fraction == pytest.approx(float((density > 0.1).double().mean()))
    assert sum(ev.histogram_counts) == int((density > 0).sum())
    assert "explained variance" in str(ev) and json.dumps(ev.to_dict())
    assert ev.view().figures[0].kind == "line_chart"
    assert evaluate(sae, llama, TOKENS, ablation="mean").ce_loss_recovered == pytest.approx(
        ev.ce_loss_recovered_by["mean"])


@torch.no_grad()
def test_evaluate_activations_and_transcoder(llama):
    src, dst = "blocks.0.ln2.hook_out", "blocks.0.hook_mlp_out"
    d = llama.cfg.d_model
    tc = SAE(SAEConfig(d_in=d, d_out=d, d_sae=40, architecture="relu", hook_name=src, hook_name_out=dst), seed=2)
    _, cache = llama.run_with_cache(TOKENS, names_filter=[src, dst])
    x, y = cache[src].reshape(-1, d), cache[dst].reshape(-1, d)
    stats = evaluate_activations(tc, x, y)
    y_hat = tc(x).double()
    assert stats["mse"] == pytest.approx(float((y.double() - y_hat).pow(2).mean()), rel=1e-6)
    assert stats["explained_variance"] == pytest.approx(
        1 - float((y.double() - y_hat).pow(2).sum() / (y.double() - y.double().mean(0)).pow(2).sum()), rel=1e-6)
    with pytest.raises(InputError, match="pass target"):
        evaluate_activations(tc, x)
    ev = evaluate(tc, llama, TOKENS)
    assert ev.mse == pytest.approx(stats["mse"], rel=1e-6) and ev.hook_name_out == dst
    store = {}
    spliced = llama.run_with_hooks(TOKENS, fwd_hooks=[(src, lambda a, h: store.update(x=a)),
                                                      (dst, lambda a, h: tc(store["x"]))])
    assert ev.ce_spliced == pytest.approx(float(lm_loss(spliced, TOKENS)), rel=1e-5)
    assert ev.ce_spliced_error == ev.ce_clean
    with pytest.raises(InputError, match="ablation"):
        evaluate(tc, llama, TOKENS, ablation="resample")
    with pytest.raises(InputError, match="batch_size"):
        evaluate(tc, llama, TOKENS, batch_size=0)


@torch.no_grad()
def test_bos_is_left_out_and_bypassed(tinystories):
    m = tinystories
    hook = "blocks.1.hook_resid_post"
    sae = topk(hook, m.cfg.d_model)
    text = "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. " * 6
    ev = evaluate(sae, m, text, context_size=32, batch_size=8)
    rows = token_rows(m, [text], context_size=32)
    bos = m.tokenizer.bos_token_id
    assert (rows[:, 0] == bos).all() and ev.n_tokens == int((rows != bos).sum())
    keep = (rows == bos)[..., None]
    spliced = m.run_with_hooks(rows, fwd_hooks=[(hook, lambda a, h: torch.where(keep, a, sae(a)))])
    assert ev.ce_spliced == pytest.approx(float(lm_loss(spliced, rows)), rel=1e-5)
    every = evaluate(sae, m, rows, exclude_bos=False)
    assert every.n_tokens == rows.numel()


def test_cli_sae_eval(tinystories, shared, tmp_path):
    from mechscope.cli import app

    sae = topk("blocks.1.hook_resid_post", tinystories.cfg.d_model, context_size=64)
    (tmp_path / "cfg.json").write_text(json.dumps(sae.cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, str(tmp_path / "sae_weights.safetensors"))
    data = shared / "data" / "tinystories-656k-samples" / "samples.jsonl"
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["sae", "eval", str(tmp_path), str(shared / "models" / "TinyStories-656K"),
                                   "--data", str(data), "--tokens", "256", "--holdout", "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["n_tokens"] == 4 * 63 and got["ce_spliced_error"] == got["ce_clean"] and len(got["density"]) == 80
    bad = CliRunner().invoke(app, ["sae", "eval", str(tmp_path / "nope"), str(shared / "models" / "TinyStories-656K"),
                                   "--data", str(data)])
    assert bad.exit_code == 2 and "no SAE folder" in " ".join(bad.output.split())
