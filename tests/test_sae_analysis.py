"""Latent statistics (mechscope.sae.analysis): the streaming pass against brute force on dense activations."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError, ModelLoadError
from mechscope.sae import SAE, LatentStats, SAEConfig, latent_stats, logit_weights
from mechscope.sae.analysis import HIST_EDGES, _bottom_m

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    return mechscope.Model.from_hf(make_pair(request.param, torch.float32)[0])


def _sae(model, arch="topk", hook=HOOK, seed=0):
    d = model.cfg.d_model
    cfg = SAEConfig(d_in=d, d_sae=48, architecture=arch, k=6 if arch == "topk" else None, hook_name=hook)
    sae = SAE(cfg, seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    return sae


def _tokens(n=12, T=10, seed=0):
    t = torch.randint(3, 128, (n, T), generator=torch.Generator().manual_seed(seed))
    t[:, 0] = 1  # BOS
    return t


def _dense(model, sae, toks, bos=1):
    _, cache = model.run_with_cache(toks, names_filter=sae.cfg.hook_name)
    f = sae.encode(cache[sae.cfg.hook_name]).detach()
    return f * (toks != bos)[..., None]  # (n, T, d_sae)


def test_top_examples_match_brute_force(model):
    sae, toks = _sae(model), _tokens()
    st = latent_stats(sae, model, toks, k=5, context=(3, 2), batch_size=5)  # 3 batches: merges are exercised
    f = _dense(model, sae, toks)
    n, T, d = f.shape
    flat = f.reshape(n * T, d)
    assert st.n_tokens == int((toks != 1).sum())
    for i in range(d):
        vals, idx = flat[:, i].topk(5)
        firing = vals > 0
        torch.testing.assert_close(st.top_acts[i][firing], vals[firing])
        assert (st.top_acts[i][~firing] == 0).all() and (st.top_pos[i][~firing] == -1).all()
        assert st.top_rows[i][firing].tolist() == (idx[firing] // T).tolist()
        assert st.top_pos[i][firing].tolist() == (idx[firing] % T).tolist()
        for s in range(int(firing.sum())):  # the context window: tokens and this latent's activations
            r, p = int(st.top_rows[i, s]), int(st.top_pos[i, s])
            for o in range(-3, 3):
                q = p + o
                want_t = int(toks[r, q]) if 0 <= q < T else -1
                want_a = float(f[r, q, i]) if 0 <= q < T else 0.0
                assert int(st.top_tokens[i, s, o + 3]) == want_t
                assert float(st.top_ctx_acts[i, s, o + 3]) == pytest.approx(want_a, abs=1e-6)
    # density, frequency, mean, max, histogram
    fired = flat > 0
    assert st.frequency.tolist() == fired.sum(0).tolist()
    torch.testing.assert_close(st.density, fired.sum(0).float() / st.n_tokens)
    torch.testing.assert_close(st.max_act, flat.max(0).values.clamp_min(0))
    torch.testing.assert_close(st.mean_act, flat.sum(0) / fired.sum(0).clamp_min(1), rtol=1e-5, atol=1e-6)
    for i in range(d):
        v = flat[:, i][fired[:, i]]
        want = torch.histogram(v.clamp(HIST_EDGES[0], HIST_EDGES[-1] * 0.999), HIST_EDGES).hist.long()
        assert st.hist_counts[i].sum() == len(v)
        assert (st.hist_counts[i] - want).abs().sum() <= 2  # at most a float edge case at a bin boundary


def test_latent_subset_and_bos_option(model):
    sae, toks = _sae(model), _tokens()
    full = latent_stats(sae, model, toks, k=4, batch_size=4)
    sub = latent_stats(sae, model, toks, latents=[7, 3, 40], k=4, batch_size=6)
    for j, i in enumerate([7, 3, 40]):
        torch.testing.assert_close(sub.top_acts[j], full.top_acts[i])
        assert sub.top_pos[j].tolist() == full.top_pos[i].tolist()
    assert sub.index(40) == 2
    with pytest.raises(InputError, match="was not analysed"):
        sub.index(5)
    with_bos = latent_stats(sae, model, toks, k=4, exclude_bos=False)
    assert with_bos.n_tokens == toks.numel() and full.n_tokens == toks.numel() - len(toks)


def test_quantile_samples_are_uniform_in_their_intervals_and_seeded(model):
    sae, toks = _sae(model), _tokens(n=24)
    st = latent_stats(sae, model, toks, k=3, n_quantiles=4, samples_per_quantile=3, batch_size=7, seed=1)
    again = latent_stats(sae, model, toks, k=3, n_quantiles=4, samples_per_quantile=3, batch_size=7, seed=1)
    other = latent_stats(sae, model, toks, k=3, n_quantiles=4, samples_per_quantile=3, batch_size=7, seed=2)
    assert torch.equal(st.q_pos, again.q_pos) and torch.equal(st.q_acts, again.q_acts)
    assert not torch.equal(st.q_pos, other.q_pos)
    f = _dense(model, sae, toks)
    ratio = float(HIST_EDGES[1] / HIST_EDGES[0])
    n_filled = 0
    for i in range(sae.cfg.d_sae):
        for j in range(4):
            for s in range(3):
                p = int(st.q_pos[i, j, s])
                if p < 0:
                    continue
                n_filled += 1
                a = float(st.q_acts[i, j, s])
                assert a == pytest.approx(float(f[int(st.q_rows[i, j, s]), p, i]), abs=1e-6)
                lo, hi = float(st.q_edges[i, j]), float(st.q_edges[i, j + 1])
                assert lo / ratio <= a <= hi * ratio  # the interval, resolved to a histogram bin
            # an interval's slots are filled as far as its tokens allow
            v = f[..., i][f[..., i] > 0]
            lo, hi = float(st.q_edges[i, j]) * ratio, float(st.q_edges[i, j + 1]) / ratio
            if int(((v > lo) & (v < hi)).sum()) >= 3:
                assert (st.q_pos[i, j] >= 0).all()
    assert n_filled > 50


def test_bottom_m_against_a_loop():
    g = torch.Generator().manual_seed(0)
    group, key = torch.randint(0, 7, (200,), generator=g), torch.rand(200, generator=g)
    mask = _bottom_m(group, key, 3)
    for q in range(7):
        idx = (group == q).nonzero().flatten()
        want = set(idx[key[idx].argsort()[:3]].tolist())
        assert set(idx[mask[idx]].tolist()) == want


def test_logit_weights_are_W_dec_times_W_U(model):
    sae = _sae(model)
    lw = logit_weights(sae, model, [0, 5], n=4)
    full = sae.W_dec.detach()[[0, 5]] @ model.W_U.detach().float()
    torch.testing.assert_close(lw["logit_top_values"], full.topk(4).values)
    torch.testing.assert_close(lw["logit_bottom_values"], full.topk(4, largest=False).values)
    assert lw["logit_top_ids"].tolist() == full.topk(4).indices.tolist()


def test_transcoder_reads_its_input_point(model):
    d = model.cfg.d_model
    cfg = SAEConfig(d_in=d, d_sae=16, architecture="relu", hook_name="blocks.1.hook_resid_mid",
                    hook_name_out="blocks.1.hook_mlp_out")
    tc = SAE(cfg, seed=0)
    toks = _tokens(n=4)
    st = latent_stats(tc, model, toks, k=2)
    _, cache = model.run_with_cache(toks, names_filter="blocks.1.hook_resid_mid")
    f = tc.encode(cache["blocks.1.hook_resid_mid"]).detach() * (toks != 1)[..., None]
    torch.testing.assert_close(st.max_act, f.flatten(0, 1).max(0).values.clamp_min(0))


def test_save_load_round_trip(model, tmp_path):
    st = latent_stats(_sae(model), model, _tokens(n=4), k=3, latents=[1, 2, 3])
    st.save(tmp_path / "s")
    back = LatentStats.load(tmp_path / "s")
    assert back.hook_name == st.hook_name and back.context == st.context and back.n_tokens == st.n_tokens
    for name in ("latents", "top_acts", "top_tokens", "q_acts", "hist_counts", "logit_top_ids"):
        assert torch.equal(getattr(back, name), getattr(st, name))
    with pytest.raises(ModelLoadError, match="not a latent-stats folder"):
        LatentStats.load(tmp_path)


def test_bad_input_is_a_sentence(model):
    sae = _sae(model)
    with pytest.raises(InputError, match="latent indices must be in"):
        latent_stats(sae, model, _tokens(), latents=[99])
    with pytest.raises(InputError, match="context must be"):
        latent_stats(sae, model, _tokens(), context=(2,))
    with pytest.raises(InputError, match="token ids must be an int tensor"):
        latent_stats(sae, model, torch.zeros(2, 3))
    with pytest.raises(InputError, match="takes a mechscope SAE"):
        latent_stats(object(), model, _tokens())
    bad = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=4, architecture="relu", hook_name="blocks.0.hook_resid_pots"))
    with pytest.raises(KeyError, match="did you mean"):
        latent_stats(bad, model, _tokens())


def test_tinystories_corpus_file(tinystories, shared):
    m = tinystories
    sae = SAE(SAEConfig(d_in=128, d_sae=64, architecture="topk", k=8, hook_name="blocks.1.hook_resid_post"), seed=0)
    data = shared / "data" / "tinystories-656k-samples" / "samples.jsonl"
    st = latent_stats(sae, m, data, n_tokens=2048, seq_len=64, k=4, batch_size=8)
    assert st.n_tokens == 32 * 63 and st.vocab is not None and len(st.vocab) == 2048
    centre = st.top_tokens[..., 8][st.top_pos >= 0]  # the example token itself: never BOS, never padding
    assert len(centre) and (centre >= 0).all() and (centre != 1).all()


def test_save_writes_utf8_whatever_the_locale(model, tmp_path, monkeypatch):
    """stats.json holds token strings unescaped and is read back as UTF-8, so it must be written as UTF-8 too, not
    in the locale's encoding (simulated here as ASCII)."""
    from pathlib import Path

    st = latent_stats(_sae(model), model, _tokens(n=4), k=3, latents=[1, 2])
    st.vocab = ["Ġthe", "café", "日本"] + list(st.vocab or [])[3:]
    orig = Path.write_text

    def locale_ascii(self, data, encoding=None, errors=None, newline=None):
        return orig(self, data, encoding=encoding or "ascii", errors=errors, newline=newline)

    monkeypatch.setattr(Path, "write_text", locale_ascii)
    st.save(tmp_path / "s")
    assert LatentStats.load(tmp_path / "s").vocab[:3] == ["Ġthe", "café", "日本"]


def test_logit_weights_are_in_model_units_before_folding(model):
    """An SAE still holding its normalisation scale gives the same logit weights as the folded one (decode's units),
    not W_dec in normalised units."""
    sae = _sae(model)
    sae.norm_scale_in.fill_(4.0)
    sae.norm_scale_out.fill_(4.0)
    before = logit_weights(sae, model, [0, 5], n=4)
    after = logit_weights(sae.fold_norm_scale_(), model, [0, 5], n=4)
    for k in before:
        torch.testing.assert_close(before[k], after[k])
