"""Wrapped model vs plain HuggingFace, bit for bit (torch.equal), for every supported family in fp32 and bf16.

Reference semantics: with no hooks, or hooks that only read points outside attention, the model runs its own
attention implementation (SDPA here) and must equal it; hooking an attention internal switches to mechscope's
eager-equivalent attention, which must equal HF's eager implementation.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import CONFIGS, make_pair

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CASES = [(k, d) for k in CONFIGS for d in DTYPES]
ATTN_INTERNAL = ("hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern")


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{d}" for k, d in CASES])
def case(request):
    key, dt = request.param
    eager, fast = make_pair(key, DTYPES[dt])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (2, 12), generator=g)
    return mechscope.Model.from_hf(eager), mechscope.Model.from_hf(fast), ids


def test_no_hooks_equals_hf(case):
    _, fast, ids = case
    assert torch.equal(fast(ids), fast.hf_model(ids).logits)


def test_reading_outside_attention_keeps_fast_attention(case):
    _, fast, ids = case
    impl = fast.hf_model.config._attn_implementation
    seen = []

    def read(act, hook):
        seen.append(fast.hf_model.config._attn_implementation)

    names = [n for n in fast.hook_names() if not n.endswith(ATTN_INTERNAL)]
    logits = fast.run_with_hooks(ids, fwd_hooks=[(n, read) for n in names])
    assert torch.equal(logits, fast.hf_model(ids).logits)
    assert set(seen) == {impl} and len(seen) == len(names)


def test_cache_everything_equals_eager(case):
    eager, _, ids = case
    logits, cache = eager.run_with_cache(ids)
    assert torch.equal(logits, eager.hf_model(ids).logits)
    assert set(cache) == set(eager.hook_names())
    assert eager.hf_model.config._attn_implementation == "eager"  # switched back


def test_identity_replacement_everywhere_equals_eager(case):
    eager, _, ids = case
    logits = eager.run_with_hooks(ids, fwd_hooks=[(lambda n: True, lambda act, hook: act.clone())])
    assert torch.equal(logits, eager.hf_model(ids).logits)


def test_left_padding(case):
    eager, _, ids = case
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    kwargs = {"attention_mask": mask}
    if eager._takes_position_ids:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    ref = eager.hf_model(ids, **kwargs).logits
    logits, _ = eager.run_with_cache(ids, attention_mask=mask)
    assert torch.equal(logits, ref)


def test_kv_cache_step(case):
    eager, _, ids = case
    hf = eager.hf_model
    if not hasattr(hf(ids[:, :8], use_cache=True), "past_key_values"):
        # RecurrentGemma keeps its cache on the modules and returns none: cached steps happen only inside generate
        ref = hf.generate(ids[:, :8], max_new_tokens=3, do_sample=False, pad_token_id=0)
        got = eager.generate(ids[:, :8], max_new_tokens=3, fwd_hooks=[(lambda n: True, lambda act, hook: act.clone())])
        assert torch.equal(got, ref)
        return
    if getattr(hf(ids[:, :8], use_cache=True), "past_key_values", None) is None:
        pytest.skip(f"{type(hf).__name__} has no KV cache")
    ref = hf(ids[:, 8:9], past_key_values=hf(ids[:, :8], use_cache=True).past_key_values).logits
    pkv = hf(ids[:, :8], use_cache=True).past_key_values
    logits, cache = eager.run_with_cache(ids[:, 8:9], past_key_values=pkv, use_cache=True)
    assert torch.equal(logits, ref)
    if not eager.cfg.attn_layers:
        return
    q_pos, k_pos = cache["pattern", eager.cfg.attn_layers[0]].shape[-2:]
    assert q_pos == 1 and k_pos > 1  # the new query attends to cached keys (a sliding window may cap them)


def test_parameter_gradients(case):
    eager, _, ids = case
    hf = eager.hf_model
    hf.zero_grad()
    mechscope.lm_loss(hf(ids).logits, ids).backward()
    ref = {n: p.grad.clone() for n, p in hf.named_parameters() if p.grad is not None}
    hf.zero_grad()
    _, cache = eager.run_with_cache(ids, incl_bwd=True)
    got = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    hf.zero_grad()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[n], got[n]) for n in ref)
    assert cache["resid_post_grad", 0].shape == cache["resid_post", 0].shape
    for layer in eager.cfg.attn_layers[:1]:  # hybrids: the first block with attention
        assert cache["pattern_grad", layer].shape == cache["pattern", layer].shape


def test_cache_matches_independent_reading(case):
    """resid_pre == output_hidden_states, ln_final output (or, without a final norm, the last block's output) ==
    last hidden state, pattern == output_attentions (hybrids report attentions for their attention blocks only)."""
    eager, _, ids = case
    out = eager.hf_model(ids, output_hidden_states=True, output_attentions=True)
    _, cache = eager.run_with_cache(ids)

    def same(ours, ref):  # HF may return a cast copy (a float32 sink softmax or final norm, cast to the model dtype)
        return torch.equal(ours.to(ref.dtype), ref)

    stream = eager.family.resid_stream  # Gemma 3n: HF reports every AltUp stream, resid_pre is one of them
    for layer in range(eager.cfg.n_layers):
        hidden = out.hidden_states[layer] if stream is None else out.hidden_states[layer][stream]
        assert same(cache["resid_pre", layer], hidden)
    attentions = [a for a in out.attentions if a is not None] if out.attentions else []
    if len(attentions) == eager.cfg.n_layers:  # every block reports something (MiniMax: linear attention too)
        attentions = [attentions[layer] for layer in eager.cfg.attn_layers]
    assert len(attentions) == len(eager.cfg.attn_layers)
    for layer, pattern in zip(eager.cfg.attn_layers, attentions):
        assert same(cache["pattern", layer], pattern)
    if stream is not None:  # HF's last entry is the last block's streams, before they are merged and normed
        assert same(cache["resid_post", -1], out.hidden_states[-1][stream])
    else:
        final = cache["ln_final.hook_out"] if eager.family.ln_final else cache["resid_post", -1]
        assert same(final, out.hidden_states[-1])


@pytest.mark.parametrize("key", ["gpt2", "gpt_neox", "gptj", "llama", "qwen2", "gemma2", "phi3"])
def test_train_mode_dropout_same_seed(key):
    """In train mode, mechscope's attention draws the same dropout masks as HF eager under the same seed."""
    from families import make_config
    from transformers import AutoModelForCausalLM

    cfg = make_config(key, "eager")
    for attr in ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout", "attention_probs_dropout_prob"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, 0.2)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg).train()
    model = mechscope.Model.from_hf(hf)
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    ref = hf(ids).logits
    torch.manual_seed(5)
    logits, cache = model.run_with_cache(ids)
    assert torch.equal(logits, ref)
    torch.manual_seed(6)
    assert not torch.equal(hf(ids).logits, ref)  # dropout is really active
