"""TinyStories-656K (real pretrained Llama weights, GQA) from ../shared: loading, tokens, cache, generation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import mechscope
from mechscope import InputError, ModelLoadError

pytestmark = pytest.mark.shared
PROMPT = "Once upon a time, there was a little girl named Lily."
GEN = "Once upon a time, there was a"  # continues for a while before the end-of-story token


def test_loads_from_local_folder(tinystories):
    m = tinystories
    assert (m.cfg.family, m.cfg.n_layers, m.cfg.d_model, m.cfg.n_heads, m.cfg.n_kv_heads) == ("llama", 2, 128, 8, 4)
    assert m.cfg.d_mlp == 384 and m.cfg.d_vocab == 2048 and m.cfg.n_ctx == 512 and m.cfg.tied_embeddings
    assert m.hf_model is not None and m.tokenizer is not None


def test_tokens_roundtrip(tinystories):
    m = tinystories
    toks = m.to_tokens(PROMPT)
    assert toks[0, 0].item() == m.tokenizer.bos_token_id
    assert toks[0].tolist() == m.tokenizer(PROMPT)["input_ids"]  # this tokenizer adds BOS itself
    assert m.to_tokens(PROMPT, prepend_bos=False)[0, 0].item() != m.tokenizer.bos_token_id
    assert m.to_string(toks[0, 1:]).strip() == PROMPT
    strs = m.to_str_tokens(PROMPT)
    assert len(strs) == toks.shape[1] and "".join(strs[1:]).strip().startswith("Once")
    tok = m.to_single_token(" girl") if len(m.tokenizer(" girl", add_special_tokens=False)["input_ids"]) == 1 else None
    if tok is not None:
        assert m.to_string([tok]).strip() == "girl"
    with pytest.raises(InputError, match="not one"):
        m.to_single_token("Once upon a time")


def test_ragged_batch_matches_single_prompts(tinystories):
    m = tinystories
    prompts = [PROMPT, "The dog ran."]
    for side in ("left", "right"):
        toks = m.to_tokens(prompts, padding_side=side)
        batch_logits = m(prompts, padding_side=side)
        for i, p in enumerate(prompts):
            single = m(p)[0]
            n = single.shape[0]
            rows = batch_logits[i, -n:] if side == "left" else batch_logits[i, :n]
            torch.testing.assert_close(rows, single, atol=1e-4, rtol=1e-4)
        assert toks.shape[0] == 2


def test_cache_agrees_with_hidden_states_and_attentions(tinystories):
    m = tinystories
    toks = m.to_tokens(PROMPT)
    out = m.hf_model(toks, output_hidden_states=True, output_attentions=True)
    logits, cache = m.run_with_cache(toks)
    assert torch.equal(logits, out.logits)
    for layer in range(2):
        assert torch.equal(cache["resid_pre", layer], out.hidden_states[layer])
        assert torch.equal(cache["pattern", layer], out.attentions[layer])
        torch.testing.assert_close(cache["pattern", layer].sum(-1), torch.ones(1, 8, toks.shape[1]))
    assert torch.equal(cache["ln_final.hook_out"], out.hidden_states[-1])
    # resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out
    torch.testing.assert_close(cache["resid_post", 0], cache["resid_pre", 0] + cache["attn_out", 0] + cache["mlp_out", 0])


def test_sdpa_model_is_exact_without_internal_hooks(shared):
    path = shared / "models" / "TinyStories-656K"
    m = mechscope.load(path, attn_implementation="sdpa")
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    toks = m.to_tokens(PROMPT)
    assert torch.equal(m(toks), hf(toks).logits)
    logits, _ = m.run_with_cache(toks, names_filter=lambda n: "resid" in n or "mlp" in n)
    assert torch.equal(logits, hf(toks).logits)


def test_greedy_generation_matches_hf(tinystories, shared):
    m = tinystories
    tok = AutoTokenizer.from_pretrained(shared / "models" / "TinyStories-656K")
    ids = tok(GEN, return_tensors="pt")["input_ids"]
    ref = m.hf_model.generate(ids, max_new_tokens=20, do_sample=False)
    assert torch.equal(m.generate(ids, max_new_tokens=20), ref)
    text = m.generate(GEN, max_new_tokens=20)
    assert text.startswith(GEN) and text == tok.decode(ref[0], skip_special_tokens=True)


def test_hooks_active_on_every_generation_step(tinystories):
    m = tinystories
    seen = []
    m.generate(GEN, max_new_tokens=5, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda p, h: seen.append(p.shape))])
    n = m.to_tokens(GEN).shape[1]
    assert [s[-2:] for s in seen] == [(n, n)] + [(1, n + i) for i in range(1, 5)]
    # steering every step changes the continuation
    plain = m.generate(GEN, max_new_tokens=10)
    steered = m.generate(GEN, max_new_tokens=10,
                         fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: a + 5 * m.W_E[100])])
    assert plain != steered


def test_batched_generation_left_pads(tinystories):
    m = tinystories
    outs = m.generate([GEN, "The dog"], max_new_tokens=8)
    assert outs[0] == m.generate(GEN, max_new_tokens=8)
    assert outs[1] == m.generate("The dog", max_new_tokens=8)


def test_input_errors(tinystories):
    m = tinystories
    with pytest.raises(InputError, match="empty"):
        m("", prepend_bos=False)
    with pytest.raises(InputError, match="context is 512 tokens"):
        m(torch.zeros(1, 600, dtype=torch.long))
    with pytest.raises(InputError, match="string"):
        m([1, 2, 3])


def test_missing_folder_and_bad_dtype(tmp_path):
    with pytest.raises(ModelLoadError, match="no model folder"):
        mechscope.load(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no config.json"):
        mechscope.load(tmp_path)
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        mechscope.loading._dtype("float8")


def test_hub_id_without_network_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local folder"):
        mechscope.load("EleutherAI/pythia-70m-not-cached")


def test_bf16_load(shared):
    m = mechscope.load(shared / "models" / "TinyStories-656K", dtype="bfloat16", attn_implementation="eager")
    hf = AutoModelForCausalLM.from_pretrained(shared / "models" / "TinyStories-656K", dtype=torch.bfloat16,
                                              attn_implementation="eager").eval()
    toks = m.to_tokens(PROMPT)
    logits, cache = m.run_with_cache(toks)
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, hf(toks).logits)
