"""The synthetic ground-truth benchmark (Sharkey et al. 2022): trained SAEs recover known features."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import InputError
from mechscope.sae import SyntheticFeatures, mmcs, train


@pytest.mark.parametrize("arch, kw", [("topk", dict(k=5)), ("relu", dict(l1_coefficient=1.0))])
def test_trained_sae_recovers_the_true_features(arch, kw):
    sf = SyntheticFeatures(d=32, n_features=64, avg_active=5, seed=0)
    x, _ = sf.sample(60_000)
    sae = train(x, architecture=arch, d_sae=128, n_tokens=150_000, batch_size=1024, lr=3e-3, show_progress=False,
                **kw)
    assert mmcs(sae, sf) >= 0.9
    assert mmcs(torch.randn(128, 32), sf) < 0.7  # a random dictionary does not


def test_samples_are_sparse_superpositions_of_the_features():
    sf = SyntheticFeatures(d=16, n_features=48, avg_active=3, seed=1)
    x, coef = sf.sample(20_000)
    assert x.shape == (20_000, 16) and coef.shape == (20_000, 48)
    torch.testing.assert_close(x, coef @ sf.features)
    assert abs((coef > 0).sum(1).float().mean().item() - 3) < 0.1
    torch.testing.assert_close(sf.features.norm(dim=1), torch.ones(48))
    assert mmcs(sf.features, sf) == pytest.approx(1.0)


def test_correlated_and_decaying_features():
    sf = SyntheticFeatures(d=16, n_features=32, avg_active=3, decay=0.95, correlated=True, seed=2)
    _, coef = sf.sample(40_000)
    freq = (coef > 0).float().mean(0)
    assert freq[:4].mean() > 2 * freq[-4:].mean()  # decaying frequencies
    torch.testing.assert_close(freq, sf.p, atol=0.02, rtol=0.1)  # the copula keeps the marginals
    act = (coef > 0).float()
    corr = torch.corrcoef(act.T)
    assert corr.fill_diagonal_(0).abs().max() > 0.1  # activity is correlated


def test_bad_input_is_a_sentence():
    with pytest.raises(InputError, match="avg_active"):
        SyntheticFeatures(d=8, n_features=4, avg_active=10)
    with pytest.raises(InputError, match="same d"):
        mmcs(torch.randn(10, 7), SyntheticFeatures(d=8, n_features=16, avg_active=2))
