"""Semantics specific to the newest generations that the shared exactness suite does not pin down: replacing a point
on a multi-stream residual reaches what it should, the eager stand-in is undone, and stacked weight views refuse
models whose blocks differ."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair

IDS = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(3))


def _model(key: str) -> mechscope.Model:
    return mechscope.Model.from_hf(make_pair(key, torch.float32)[0])


@torch.no_grad()
def test_qwen4_exp_resid_mid_replacement_reaches_mlp_and_residual():
    """The hyper-connection returns its input for the residual add, so a replaced resid_mid feeds both paths once."""
    model = _model("qwen4_exp_text")
    _, clean = model.run_with_cache(IDS)
    with model.hooks([("blocks.0.hook_resid_mid", lambda act, hook: act * 0.5)]):
        _, cache = model.run_with_cache(IDS)
    block = model.blocks[0]
    mixed, hyper, weights = block.mlp_hyper_connection(clean["blocks.0.hook_resid_mid"] * 0.5)
    expected = hyper + (block.mlp(mixed).unsqueeze(-2) * weights.unsqueeze(-1)).flatten(-2)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], expected)


@torch.no_grad()
def test_gemma3n_resid_pre_is_the_active_stream_and_replacing_it_touches_only_that_stream():
    model = _model("gemma3n_text")
    seen = []

    def record(module, args):  # registered after mechscope's hook, so it sees the block's input as replaced
        seen.append(args[0].clone())

    for hooks in ([], [("blocks.1.hook_resid_pre", lambda act, hook: act * 0.5)]):
        with model.hooks(hooks):
            handle = model.blocks[1].register_forward_pre_hook(record)
            try:
                _, cache = model.run_with_cache(IDS, names_filter="blocks.1.hook_resid_pre")
            finally:
                handle.remove()
    clean, replaced = seen  # (streams, batch, pos, d_model)
    assert torch.equal(cache["blocks.1.hook_resid_pre"], replaced[0])  # the cache, attached last, sees the new value
    assert torch.equal(replaced[0], clean[0] * 0.5)
    assert torch.equal(replaced[1:], clean[1:])


def test_eager_stand_in_is_restored():
    import transformers.models.minimax_m3_vl.modeling_minimax_m3_vl as modeling

    original = modeling.eager_attention_forward
    model = _model("minimax_m3_vl_text")
    _, cache = model.run_with_cache(IDS, names_filter=lambda n: n.endswith("hook_pattern"))
    assert modeling.eager_attention_forward is original
    assert model.hf_model.config._attn_implementation == "eager"
    assert (cache["pattern", 0] == 0).any()  # the indexer's block selection masked some keys


@pytest.mark.parametrize("key, what, message", [
    ("gemma4_text_shared_moe", "W_Q", "kv heads"),
    ("gemma4_text_shared_moe", "W_in", "differ by block"),
    ("dots3_note_text", "W_Q", "reads a latent"),
    ("qwen3_5_text", "W_O", "attention only in blocks"),
])
def test_weight_views_refuse_non_uniform_blocks(key, what, message):
    model = _model(key)
    with pytest.raises(AttributeError, match=message):
        getattr(model, what)


def test_multimodal_wrapper_config_reads_the_text_model():
    cfg = _model("gemma4").cfg
    assert (cfg.model_type, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp) == (
        "gemma4", 2, 64, 4, 2, 16, 96)
