"""Every architecture x {autoencoder, transcoder, skip-transcoder} trains on synthetic sparse data to a low FVU
with a sensible L0; folding the normalisation keeps outputs; BatchTopK's inference threshold; the JumpReLU
straight-through gradient by hand; bad configs give sentences."""

import math

import pytest
import torch

from mechscope.errors import InputError
from mechscope.sae import SAE, GatedSAE, JumpReLUSAE, LossConfig, SAEConfig
from mechscope.sae.architectures import jumprelu, step

D_IN, D_OUT, N_FEAT, D_SAE, K = 32, 24, 128, 128, 4


def _data(n, sample_seed):
    """32-d activations from 128 unit ground-truth directions, ~3 active per row; the transcoder target is a
    fixed linear map of them (24-d)."""
    g = torch.Generator().manual_seed(0)
    F = torch.randn(N_FEAT, D_IN, generator=g)
    F = F / F.norm(dim=1, keepdim=True)
    M = torch.randn(D_IN, D_OUT, generator=g) / D_IN ** 0.5
    gs = torch.Generator().manual_seed(sample_seed)
    on = torch.rand(n, N_FEAT, generator=gs) < 3 / N_FEAT
    x = (on * (torch.rand(n, N_FEAT, generator=gs) + 0.5)) @ F
    return x, x @ M


def _cfg(arch, kind, **kw):
    c = dict(d_in=D_IN, d_sae=D_SAE, architecture=arch, normalize_activations="expected_average_only_in")
    if arch in ("topk", "batchtopk", "matryoshka"):
        c["k"] = K
    if arch == "matryoshka":
        c["matryoshka_sizes"] = [32, D_SAE]
    if kind != "sae":
        c.update(hook_name_out="blocks.0.hook_mlp_out", d_out=D_OUT)
    if kind == "skip":
        c["skip"] = True
    return SAEConfig(**{**c, **kw})


LOSS = {"relu": LossConfig(l1_coefficient=0.5), "gated": LossConfig(l1_coefficient=2.0),
        "jumprelu": LossConfig(l0_coefficient=0.1, jumprelu_bandwidth=0.05)}


def _train(arch, kind, steps=300):
    x, y = _data(8192, 1)
    torch.manual_seed(0)
    extra = {"init_threshold": 0.5} if arch == "jumprelu" else {}
    sae = SAE(_cfg(arch, kind), seed=0, **extra)
    target = None if kind == "sae" else y
    sae.init_from_data_(x[:2048], None if target is None else y[:2048])
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(3)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    loss = LOSS.get(arch, LossConfig())
    for i in range(steps):
        b = torch.randint(0, 8192, (256,), generator=g)
        out = sae.training_forward(x[b], None if target is None else y[b], loss=loss, dead=dead,
                                   l1_scale=min(1.0, (i + 1) / (steps / 4)))
        opt.zero_grad()
        out.loss.backward()
        sae.prepare_grads_()
        opt.step()
        sae.constrain_()
        dead = ~out.fired  # a crude dead tracker, enough to exercise AuxK
    return sae.eval()


def _fvu_l0(sae, kind):
    xt, yt = _data(2048, 10)
    tgt = xt if kind == "sae" else yt
    with torch.no_grad():
        out, f = sae(xt), sae.encode(xt)
    return float((out - tgt).pow(2).sum() / (tgt - tgt.mean(0)).pow(2).sum()), float((f != 0).sum(-1).float().mean())


@pytest.mark.parametrize("kind", ["sae", "transcoder", "skip"])
@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"])
def test_trains(arch, kind):
    sae = _train(arch, kind)
    fvu, l0 = _fvu_l0(sae, kind)
    bound = {"sae": 0.3, "transcoder": 0.4, "skip": 0.05}[kind]
    assert fvu < bound, (arch, kind, fvu, l0)
    if arch == "topk":
        assert l0 <= K
    elif arch in ("batchtopk", "matryoshka"):  # the inference threshold gives about k per token
        assert 0.4 * K <= l0 <= 2 * K, l0
    else:
        assert 0 < l0 < 0.6 * D_SAE, l0
    # folding the normalisation into the weights keeps the outputs
    x, _ = _data(64, 20)
    assert float(sae.norm_scale_in) != 1.0
    with torch.no_grad():
        before, f_before = sae(x), sae.encode(x)
        sae.fold_norm_scale_()
        torch.testing.assert_close(sae(x), before, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sae.encode(x), f_before, rtol=1e-4, atol=1e-4)
    assert float(sae.norm_scale_in) == float(sae.norm_scale_out) == 1.0


def test_batchtopk_threshold_and_training_l0():
    sae = SAE(_cfg("batchtopk", "sae"), seed=0)
    x, _ = _data(512, 2)
    sae.init_from_data_(x)
    assert float(sae.threshold) == 0
    out = sae.training_forward(x)
    assert float(out.l0) == pytest.approx(K)  # k * batch kept across the batch
    with torch.no_grad():
        f = sae.batch_topk(sae._encode_pre_n(sae._in(x)))
    assert float(sae.threshold) == pytest.approx(float(f[f > 0].min()))  # the first update sets it
    sae.eval()
    sae.training_forward(x)
    assert float(sae.threshold) == pytest.approx(float(f[f > 0].min()))  # no update in eval mode
    assert "threshold" in sae.state_dict()


def test_jumprelu_ste_by_hand():
    """pre = [0.30, 0.52, 0.58, 0.90], threshold 0.5, bandwidth 0.1: the rectangle K((pre - θ)/ε) is 1 for
    |pre - θ| < ε/2, i.e. for 0.52 only. d/dθ sum(JumpReLU) = -(θ/ε) * 1 = -5; d/dθ sum(H) = -(1/ε) = -10;
    d/dpre JumpReLU = H(pre - θ) = [0, 1, 1, 1]."""
    pre = torch.tensor([[0.30, 0.52, 0.58, 0.90]], requires_grad=True)
    th = torch.full((4,), 0.5, requires_grad=True)
    out = jumprelu(pre, th, 0.1)
    assert out.tolist() == [[0.0, pytest.approx(0.52), pytest.approx(0.58), pytest.approx(0.90)]]
    out.sum().backward()
    torch.testing.assert_close(th.grad, torch.tensor([0.0, -5.0, 0.0, 0.0]))
    torch.testing.assert_close(pre.grad, torch.tensor([[0.0, 1.0, 1.0, 1.0]]))
    th.grad = None
    step(pre, th, 0.1).sum().backward()
    torch.testing.assert_close(th.grad, torch.tensor([0.0, -10.0, 0.0, 0.0]))
    sae = JumpReLUSAE(_cfg("jumprelu", "sae"))
    torch.testing.assert_close(sae.threshold, torch.full((D_SAE,), 0.001))
    assert math.isclose(float(sae.log_threshold[0].detach()), math.log(0.001), rel_tol=1e-6)


def test_gated_names_and_alias():
    sae = SAE(_cfg("gated", "sae"), seed=0)
    assert isinstance(sae, GatedSAE)
    assert set(sae.state_dict()) >= {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"}
    assert "b_enc" not in sae.state_dict()
    assert sae.b_enc is sae.b_gate
    x, _ = _data(16, 3)
    with torch.no_grad():  # the magnitude path is the gate's matmul rescaled
        sae.r_mag.fill_(0.3)
        sae.b_mag.fill_(-0.05)
        sae.b_gate.fill_(0.02)
        xn = sae._in(x) - sae.b_dec
        expect = ((xn @ sae.W_enc + sae.b_gate) > 0) * torch.relu(xn @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        torch.testing.assert_close(sae.encode(x), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,words", [
    (dict(architecture="topk"), "needs k"),
    (dict(architecture="batchtopk", k=0), "needs k"),
    (dict(architecture="matryoshka", k=4, matryoshka_sizes=[64, 32]), "ascending"),
    (dict(architecture="matryoshka", k=4, matryoshka_sizes=[32, 64]), "ending at d_sae"),
    (dict(architecture="jumprelu", matryoshka_sizes=[128]), "only applies"),
    (dict(architecture="gated", skip=True), "needs hook_name_out"),
    (dict(architecture="swish"), "not one of"),
])
def test_bad_configs(kw, words):
    with pytest.raises(InputError, match=words):
        SAEConfig(d_in=D_IN, d_sae=D_SAE, **kw)


def test_bad_constructor_and_inputs():
    with pytest.raises(InputError, match="threshold must start > 0"):
        SAE(_cfg("jumprelu", "sae"), init_threshold=0.0)
    sae = SAE(_cfg("batchtopk", "sae"))
    with pytest.raises(InputError, match="d_in=32"):
        sae.encode(torch.zeros(3, 7))
    with pytest.raises(InputError, match="transcoder trains on pairs"):
        SAE(_cfg("matryoshka", "transcoder")).training_forward(torch.zeros(4, D_IN))


def test_fold_refuses_two_scales_on_an_autoencoder_without_changing_it():
    """An autoencoder subtracting b_dec from its input cannot fold two different scales; the refusal is a sentence
    and comes before any weight is touched (it used to raise AssertionError after scaling W_enc, W_dec, b_dec)."""
    sae = SAE(_cfg("relu", "sae"), seed=0)
    sae.norm_scale_in.fill_(2.0)
    sae.norm_scale_out.fill_(3.0)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(InputError, match="one normalisation scale"):
        sae.fold_norm_scale_()
    assert all(torch.equal(v, sae.state_dict()[k]) for k, v in before.items())
