"""The fused / sparse TopK path (mechscope.sae.kernels) agrees with the dense reference: outputs and every
gradient, for autoencoders, transcoders and skip-transcoders, AuxK on and off, fp32 and bf16; topk_exact picks
torch.topk's set."""

import pytest
import torch

from mechscope.sae import SAE, LossConfig, SAEConfig, sparse_decode, topk_exact
from mechscope.sae.kernels import csr_transpose_mm, fused_topk_encode


def _tie_free(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def _pair(kind, dtype, device="cpu", d_in=16, d_sae=128, k=8):
    kw = dict(d_in=d_in, d_sae=d_sae, architecture="topk", k=k, dtype=dtype)
    if kind != "sae":
        kw.update(hook_name_out="blocks.0.hook_mlp_out", d_out=12)
    if kind == "skip":
        kw["skip"] = True
    ref = SAE(SAEConfig(**kw), seed=1, device=device)
    with torch.no_grad():  # non-trivial biases and skip so their gradients are checked too
        ref.b_enc.copy_(_tie_free((d_sae,), 2) * 0.1)
        ref.b_dec.copy_(_tie_free((ref.cfg.width_out,), 3) * 0.1)
        if ref.cfg.skip:
            ref.W_skip.copy_(_tie_free(ref.W_skip.shape, 4) * 0.1)
    fused = SAE(SAEConfig(**kw), device=device)
    fused.load_state_dict(ref.state_dict())
    ref.fused, fused.fused = False, True
    return ref, fused


@pytest.mark.parametrize("kind", ["sae", "transcoder", "skip"])
@pytest.mark.parametrize("auxk", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_matches_reference(kind, auxk, dtype, device="cpu"):
    ref, fused = _pair(kind, dtype, device)
    x = _tie_free((64, 16), 5).to(device)
    y = None if kind == "sae" else _tie_free((64, 12), 6).to(device)
    dead = torch.zeros(128, dtype=torch.bool, device=device)
    dead[::3] = True
    loss = LossConfig(auxk_coefficient=0.5 if auxk else 0.0, auxk_k=6)
    saes = [ref, fused]
    if dtype == "bfloat16":  # the truth: fp32 maths on the same bf16-rounded weights
        truth = SAE(SAEConfig(**{**ref.cfg.to_dict(), "dtype": "float32"}), device=device)
        truth.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
        truth.fused = False
        saes.append(truth)
    outs = []
    for sae in saes:
        o = sae.training_forward(x, y, loss=loss, dead=dead)
        o.loss.backward()
        outs.append(o)
    bf16 = dtype == "bfloat16"
    tol = dict(rtol=2e-2, atol=2e-2) if bf16 else dict(rtol=1e-5, atol=1e-5)
    assert set(outs[0].losses) == set(outs[1].losses) == ({"mse", "auxk"} if auxk else {"mse"})
    for name in outs[0].losses:
        torch.testing.assert_close(outs[1].losses[name], outs[0].losses[name], **tol)
    torch.testing.assert_close(outs[1].l0, outs[0].l0)
    assert torch.equal(outs[1].fired, outs[0].fired)
    for (name, p_ref), (_, p_f) in zip(ref.named_parameters(), fused.named_parameters()):
        assert p_f.grad is not None, name
        if bf16:  # bf16 rounding (and near-ties picked differently): fused no worse than the dense bf16 path
            p_t = dict(truth.named_parameters())[name].grad
            err = lambda g: float((g.float() - p_t).norm() / p_t.norm().clamp_min(1e-6))  # noqa: E731
            assert err(p_f.grad) <= max(2 * err(p_ref.grad), 0.05), (name, err(p_f.grad), err(p_ref.grad))
        else:
            torch.testing.assert_close(p_f.grad, p_ref.grad, **tol, msg=lambda m: f"{name}: {m}")
    if bf16:
        return
    with torch.no_grad():
        torch.testing.assert_close(fused.encode(x), ref.encode(x), **tol)
        torch.testing.assert_close(fused(x), ref(x), **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["sae", "skip"])
def test_fused_matches_reference_cuda(kind):
    test_fused_matches_reference(kind, True, "float32", device="cuda")


def test_input_gradient_and_primitives():
    """Gradient to x itself (as b_dec's input subtraction needs) and the sparse decoder against dense maths."""
    x = _tie_free((32, 10), 7).requires_grad_()
    W = _tie_free((10, 64), 8).requires_grad_()
    b = _tie_free((64,), 9).requires_grad_()
    acts, idx, _, _ = fused_topk_encode(x, W, b, 5)
    (acts * _tie_free(acts.shape, 10)).sum().backward()
    g_fused = [t.grad.clone() for t in (x, W, b)]
    for t in (x, W, b):
        t.grad = None
    pre = x @ W + b
    v, i = pre.topk(5, dim=-1, sorted=False)
    assert torch.equal(i, idx)
    (torch.relu(v) * _tie_free(acts.shape, 10)).sum().backward()
    for gf, t in zip(g_fused, (x, W, b)):
        torch.testing.assert_close(gf, t.grad)

    Wd = _tie_free((64, 6), 11).requires_grad_()
    a = torch.rand(32, 5).requires_grad_()
    out = sparse_decode(idx, a, Wd)
    dense = torch.zeros(32, 64).scatter(1, idx, a)
    torch.testing.assert_close(out, dense @ Wd)
    go = _tie_free(out.shape, 12)
    gd = torch.autograd.grad((dense @ Wd * go).sum(), (a, Wd))
    gs = torch.autograd.grad((sparse_decode(idx, a, Wd) * go).sum(), (a, Wd))
    for u, v in zip(gs, gd):
        torch.testing.assert_close(u, v)
    # duplicate indices in a row add up
    dup = torch.tensor([[1, 1, 3]])
    torch.testing.assert_close(csr_transpose_mm(dup, torch.ones(1, 3), torch.ones(1, 2), 4),
                               torch.tensor([[0., 0.], [2., 2.], [0., 0.], [1., 1.]]))


@pytest.mark.parametrize("shape,k", [((300, 2048), 32), ((7, 256), 8), ((5, 100), 3), ((4, 64), 64)])
def test_topk_exact_matches_torch_topk(shape, k):
    pre = _tie_free(shape, 13)
    v, i = topk_exact(pre, k)
    rv, ri = pre.topk(k, dim=-1, sorted=False)
    assert torch.equal(i.sort(1).values, ri.sort(1).values)
    torch.testing.assert_close(v.sort(1).values, rv.sort(1).values)
    # adversarial: the row's top entries all in one block
    pre2 = pre.clone()
    pre2[:, :k] += 100
    v2, i2 = topk_exact(pre2, k)
    assert torch.equal(i2.sort(1).values, pre2.topk(k, sorted=False).indices.sort(1).values)


def test_fast_topk_training_matches():
    ref, fused = _pair("sae", "float32", d_sae=256, k=8)
    fused.fast_topk = True
    x = _tie_free((64, 16), 14)
    for sae in (ref, fused):
        sae.training_forward(x).loss.backward()
    for p_ref, p_f in zip(ref.parameters(), fused.parameters()):
        torch.testing.assert_close(p_f.grad, p_ref.grad, rtol=1e-5, atol=1e-5)


def test_row_chunks_agree(monkeypatch):
    """The encoder's and decoder-backward's row chunks (512 and 256 rows by default) joined up correctly."""
    import mechscope.sae.kernels as kern
    monkeypatch.setattr(kern, "_ENCODE_ROWS", 24)
    monkeypatch.setattr(kern, "_GATHER_ROWS", 20)
    test_fused_matches_reference("sae", True, "float32")
    test_fused_matches_reference("skip", False, "float32")


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_target_includes_skip_term(arch, fused):
    """AuxK's dead latents model the residual of the *whole* output; for a skip-transcoder that includes the skip
    term (which training_forward adds after the architecture's terms). It used to be left out."""
    cfg = SAEConfig(d_in=16, d_sae=128, architecture=arch, k=8, hook_name_out="blocks.0.hook_mlp_out", d_out=12,
                    skip=True)
    sae = SAE(cfg, seed=1)
    sae.fused = fused if arch == "topk" else False
    with torch.no_grad():
        sae.W_skip.copy_(_tie_free(sae.W_skip.shape, 4))
    x, y = _tie_free((64, 16), 5), _tie_free((64, 12), 6)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[::2] = True
    loss = LossConfig(auxk_coefficient=1.0, auxk_k=6)
    out = sae.training_forward(x, y, loss=loss, dead=dead)
    # the expected AuxK term, by hand
    with torch.no_grad():
        pre = x @ sae.W_enc + sae.b_enc
        f = sae.batch_topk(pre) if arch == "batchtopk" else sae.activation(pre)
        full = f @ sae.W_dec + sae.b_dec + x @ sae.W_skip
        vals, idx = pre.masked_fill(~dead, -torch.inf).topk(6, dim=-1)
        e_hat = torch.zeros_like(pre).scatter_(-1, idx, vals.relu()) @ sae.W_dec
        want = (e_hat - (y - full)).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    torch.testing.assert_close(out.losses["auxk"], want, rtol=1e-4, atol=1e-5)


def test_fused_under_autocast():
    """The trainer runs the forward under bf16 autocast on CUDA (``autocast=True``); there the encoder's matmul
    comes out in bf16 while the top-k buffers are the parameters' fp32, and the fused path raised "Expected out
    tensor to have dtype BFloat16". CPU autocast reproduces it; the fused loss and gradients then track the
    reference's."""
    ref, fused = _pair("sae", "float32")
    x = _tie_free((64, 16), 7)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[::2] = True
    outs = []
    for sae in (ref, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sae.training_forward(x, loss=LossConfig(auxk_coefficient=0.5, auxk_k=6), dead=dead)
        out.loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[1].loss.float(), outs[0].loss.float(), rtol=3e-2, atol=1e-2)
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        assert b.grad is not None and b.grad.dtype == torch.float32, name
        assert torch.nn.functional.cosine_similarity(a.grad.flatten().float(), b.grad.flatten(), 0) > 0.98, name
