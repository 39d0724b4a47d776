"""Bad input never reaches torch raw: every mistake a user can make is answered with a ``MechscopeError`` whose
message names the input and the fix, before anything runs or with every hook removed, and the model stays usable.

The table ``CASES`` is what a new user tries; each row is its own test, and one more test runs them all and then
checks that the model's logits are bit-identical to before and that no torch hook is left anywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import mechscope
from families import make_pair
from mechscope import (CacheKeyError, HookError, HookFunctionError, HookNameError, HookReturnError, InputError,
                       InputTypeError, MechscopeError, TokenIdError)
from mechscope.attention import _STATE

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "a", "dog", "hello", "world"]


def word_tokenizer(n_words: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer built in memory: ids 0-3 are pad/bos/eos/unk, then words, then w<i>."""
    words = WORDS + [f"w{i}" for i in range(len(WORDS), n_words)]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module")
def model():
    """Tiny Llama (vocab 128, n_ctx 64, 2 layers, eager attention) with a matching tokenizer."""
    return mechscope.Model.from_hf(make_pair("llama", torch.float32)[0], word_tokenizer(128))


@pytest.fixture(scope="module")
def bare():
    """The same architecture without a tokenizer."""
    return mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])


IDS = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(0))


def torch_hooks(m: mechscope.Model) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) + len(x._backward_hooks)
               for x in m.hf_model.modules())


def assert_clean(m: mechscope.Model, n_hooks: int = 0) -> None:
    """Nothing left behind: no torch hooks (beyond ``n_hooks`` that were there before: transformers installs its
    own, for good, the first time a model runs with output_attentions), attention back on its own implementation,
    no pending hook state."""
    assert torch_hooks(m) == n_hooks
    assert m.hf_model.config._attn_implementation == m.cfg.attn_implementation
    assert m._attn_users == 0 and not m._persistent
    assert all(not _STATE[blk.self_attn].entries for blk in m.blocks)
    assert all(getattr(pt.site, "delta", None) is None for pt in m.hook_dict.values())


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[mechscope.Model], object]
    error: type[Exception]
    match: str


def _raise(exc):
    raise exc


def _one_arg(act):
    return None


class _WrongCall:
    def __call__(self, act):
        return None


CASES = [
    # token ids
    Case("id-too-large", lambda m: m(torch.tensor([[1, 5, 128]])), TokenIdError, r"token id 128 .*vocabulary of 128"),
    Case("id-negative", lambda m: m(torch.tensor([[1, -1, 5]])), TokenIdError, r"token id -1"),
    Case("id-too-large-generate", lambda m: m.generate(torch.tensor([[1, 500]]), max_new_tokens=2), TokenIdError,
         "token id 500"),
    Case("float-ids", lambda m: m(IDS.float()), InputTypeError, r"integer token ids, got dtype torch.float32"),
    Case("bool-ids", lambda m: m(IDS > 50), InputTypeError, "torch.bool"),
    Case("3d-ids", lambda m: m(IDS[None]), InputError, r"\(batch, pos\) or \(pos,\), got \(1, 2, 8\).*flatten"),
    Case("0d-ids", lambda m: m(torch.tensor(5)), InputError, r"got \(\)"),
    Case("meta-device-ids", lambda m: m(IDS.to("meta")), InputError, "meta device"),
    Case("empty-batch", lambda m: m(torch.zeros(0, 4, dtype=torch.long)), InputError, "empty batch"),
    Case("no-positions", lambda m: m(torch.zeros(2, 0, dtype=torch.long)), InputError, "0 positions"),
    Case("longer-than-n_ctx", lambda m: m(torch.ones(1, 65, dtype=torch.long)), InputError,
         "65 tokens long but the model's context is 64"),
    # text
    Case("empty-string-no-bos", lambda m: m("", prepend_bos=False), InputError, "empty after tokenisation"),
    Case("empty-list", lambda m: m([]), InputError, "empty list"),
    Case("list-with-non-string", lambda m: m(["the cat", 3]), InputTypeError, "holds int 3"),
    Case("list-of-ids", lambda m: m([4, 5, 6]), InputTypeError, r"torch.tensor\(ids\)"),
    Case("none", lambda m: m(None), InputTypeError, "cannot run on NoneType"),
    Case("text-longer-than-n_ctx", lambda m: m("the cat " * 40), InputError, "81 tokens long"),
    Case("bad-padding-side", lambda m: m.to_tokens(["a", "the cat"], padding_side="middle"), InputError,
         "'left' or 'right'"),
    Case("prepend-bos-not-bool", lambda m: m("the cat", prepend_bos="yes"), InputTypeError, "prepend_bos"),
    # attention mask and HF arguments
    Case("mask-wrong-shape", lambda m: m(IDS, attention_mask=torch.ones(2, 5)), InputError,
         r"shape \(2, 5\) but the tokens are \(2, 8\)"),
    Case("mask-wrong-batch", lambda m: m(IDS, attention_mask=torch.ones(1, 8)), InputError, r"\(1, 8\)"),
    Case("mask-not-0-1", lambda m: m(IDS, attention_mask=torch.full((2, 8), 2)), InputError, "only 0"),
    Case("mask-list", lambda m: m(IDS, attention_mask=[[1] * 8] * 2), InputTypeError, "must be a tensor"),
    Case("position-ids-shape", lambda m: m(IDS, position_ids=torch.zeros(3, 3, dtype=torch.long)), InputError,
         "position_ids"),
    Case("kwarg-typo", lambda m: m(IDS, stop_at_layers=1), InputTypeError, "did you mean 'stop_at_layer'"),
    Case("input-ids-kwarg", lambda m: m(IDS, input_ids=IDS), InputError, "first argument"),
    # hook names and filters
    Case("unknown-hook", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_psot", lambda a, h: None)]),
         HookNameError, "did you mean 'blocks.0.hook_resid_post'"),
    Case("filter-matches-nothing-cache", lambda m: m.run_with_cache(IDS, names_filter=lambda n: n.endswith("attn_output")),
         InputError, r"matches none of the model's .* names_filter=\[\]"),
    Case("filter-matches-nothing-hooks",
         lambda m: m.run_with_hooks(IDS, fwd_hooks=[(lambda n: n.endswith("resid"), lambda a, h: None)]),
         InputError, "matches none"),
    Case("filter-raises", lambda m: m.run_with_cache(IDS, names_filter=lambda n: n.layer), InputError,
         "raised AttributeError"),
    Case("names-filter-int", lambda m: m.run_with_cache(IDS, names_filter=3), InputTypeError, "got int 3"),
    Case("names-filter-list-of-int", lambda m: m.run_with_cache(IDS, names_filter=["hook_embed", 3]), InputTypeError,
         "holds int 3"),
    Case("bwd-filter-only-scale", lambda m: m.run_with_hooks(
        IDS, bwd_hooks=[(lambda n: n.endswith("hook_scale"), lambda g, h: None)]), InputError, "no gradient"),
    Case("hooks-single-pair", lambda m: m.run_with_hooks(IDS, fwd_hooks=("hook_embed", lambda a, h: None)),
         InputTypeError, r"wrap it: fwd_hooks=\[\(name, fn\)\]"),
    Case("hooks-not-pairs", lambda m: m.run_with_hooks(IDS, fwd_hooks=["hook_embed"]), InputTypeError, "pair"),
    Case("hook-not-callable", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", 3)]), HookFunctionError,
         "not a function"),
    # hook function signatures, checked when attached
    Case("hook-one-arg", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", _one_arg)]), HookFunctionError,
         r"_one_arg for 'hook_embed' takes \(act\).*fn\(activation, hook\)"),
    Case("hook-three-args", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_pattern",
                                                                       lambda a, h, extra: None)]),
         HookFunctionError, r"takes \(a, h, extra\)"),
    Case("hook-object-one-arg", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", _WrongCall())]),
         HookFunctionError, "takes"),
    Case("hook-partial-binds-too-much",
         lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", functools.partial(lambda a, h: None, 1))]),
         HookFunctionError, "takes"),
    Case("bwd-hook-one-arg", lambda m: m.run_with_hooks(IDS, bwd_hooks=[("blocks.0.hook_resid_post", _one_arg)]),
         HookFunctionError, "takes"),
    Case("add-hook-one-arg", lambda m: m.add_hook("hook_embed", _one_arg), HookFunctionError, "takes"),
    # ... and when called (builtins have no signature to read)
    Case("hook-builtin-one-arg", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_mlp_out", torch.relu)]),
         HookFunctionError, r"on 'blocks.0.hook_mlp_out' cannot be called as fn\(activation, hook\)"),
    # hooks that raise
    Case("hook-raises", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, h: 1 / 0)]),
         HookError, r"on 'blocks.1.hook_mlp_out' raised ZeroDivisionError: division by zero"),
    Case("attn-hook-raises", lambda m: m.run_with_hooks(
        IDS, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, h: _raise(ValueError("bad pattern")))]),
         HookError, "on 'blocks.0.attn.hook_pattern' raised ValueError: bad pattern"),
    Case("hook-typeerror-inside", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", lambda a, h: a + "x")]),
         HookError, "raised TypeError"),
    Case("hook-raises-in-cache", lambda m: _cache_under_failing_hook(m), HookError, "raised ZeroDivisionError"),
    Case("bwd-hook-raises", lambda m: m.run_with_hooks(IDS, bwd_hooks=[("blocks.0.hook_resid_post",
                                                                       lambda g, h: 1 / 0)]).sum().backward(),
         HookError, r"on 'blocks.0.hook_resid_post' raised ZeroDivisionError"),
    Case("generate-hook-raises", lambda m: m.generate(IDS[:1], max_new_tokens=2, fwd_hooks=[
        ("blocks.0.hook_resid_post", lambda a, h: 1 / 0)]), HookError, "raised ZeroDivisionError"),
    # hooks returning the wrong thing
    Case("hook-returns-wrong-shape", lambda m: m.run_with_hooks(
        IDS, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: a[:, :3])]), HookReturnError,
         r"shape \(2, 3, 64\).*\(2, 8, 64\)"),
    Case("hook-returns-wrong-dtype", lambda m: m.run_with_hooks(
        IDS, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, h: a.double())]), HookReturnError, "float64"),
    Case("hook-returns-wrong-device", lambda m: m.run_with_hooks(
        IDS, fwd_hooks=[("blocks.0.hook_attn_out", lambda a, h: torch.empty_like(a, device="meta"))]),
         HookReturnError, "on meta"),
    Case("hook-returns-non-tensor", lambda m: m.run_with_hooks(IDS, fwd_hooks=[("hook_embed", lambda a, h: 0)]),
         HookReturnError, "returned int"),
    # stop_at_layer, return_type
    Case("stop-at-layer-too-big", lambda m: m(IDS, stop_at_layer=3), InputError, r"out of range .* pass 0 to 2"),
    Case("stop-at-layer-too-negative", lambda m: m(IDS, stop_at_layer=-3), InputError, "out of range"),
    Case("stop-at-layer-float", lambda m: m(IDS, stop_at_layer=1.0), InputTypeError, "got float 1.0"),
    Case("stop-at-layer-str", lambda m: m.run_with_cache(IDS, stop_at_layer="1"), InputTypeError, "got str"),
    Case("stop-at-layer-bool", lambda m: m(IDS, stop_at_layer=True), InputTypeError, "got bool"),
    Case("return-type", lambda m: m(IDS, return_type="logit"), InputError, "'logits', 'loss', 'both' or None"),
    Case("return-type-cache", lambda m: m.run_with_cache(IDS, return_type="probs"), InputError, "return_type"),
    Case("loss-of-one-token", lambda m: m(IDS[:, :1], return_type="loss"), InputError, "at least two tokens"),
    # generation
    Case("max-new-tokens-0", lambda m: m.generate("the cat", max_new_tokens=0), InputError, "positive int"),
    Case("max-new-tokens-negative", lambda m: m.generate("the cat", max_new_tokens=-1), InputError, "positive"),
    Case("max-new-tokens-float", lambda m: m.generate("the cat", max_new_tokens=2.5), InputTypeError, "float 2.5"),
    Case("temperature-0", lambda m: m.generate("the cat", do_sample=True, temperature=0.0), InputError,
         "temperature must be a float > 0"),
    Case("temperature-negative", lambda m: m.generate("the cat", do_sample=True, temperature=-1), InputError,
         "temperature"),
    Case("top-p", lambda m: m.generate("the cat", do_sample=True, top_p=1.5), InputError, r"top_p .*\(0, 1\]"),
    Case("do-sample-str", lambda m: m.generate("the cat", do_sample="yes"), InputTypeError, "do_sample"),
    Case("generate-past-n_ctx", lambda m: m.generate(torch.ones(1, 60, dtype=torch.long), max_new_tokens=10),
         InputError, "lower max_new_tokens to 4"),
    Case("generate-return-type", lambda m: m.generate("the cat", return_type="text"), InputError,
         "'input', 'str' or 'tokens'"),
    # metric and backward
    Case("metric-non-scalar", lambda m: m.run_with_cache(IDS, incl_bwd=True, metric=lambda x: x[:, -1]), InputError,
         r"scalar .* got shape \(2, 128\)"),
    Case("metric-non-tensor", lambda m: m.run_with_cache(IDS, incl_bwd=True, metric=lambda x: 1.0), InputTypeError,
         "got float 1.0"),
    Case("metric-no-grad", lambda m: m.run_with_cache(IDS, incl_bwd=True, metric=lambda x: x.detach().sum()),
         InputError, "no gradient"),
    Case("metric-wrong-signature", lambda m: m.run_with_cache(IDS, incl_bwd=True, metric=lambda: 0), InputTypeError,
         r"metric\(output\)"),
    Case("metric-not-callable", lambda m: m.run_with_cache(IDS, incl_bwd=True, metric=1), InputTypeError, "metric"),
    Case("bwd-with-stop-at-layer", lambda m: m.run_with_cache(IDS, incl_bwd=True, stop_at_layer=1), InputError,
         "no LM loss"),
    Case("cache-device", lambda m: m.run_with_cache(IDS, names_filter="hook_embed", device="gpu"), InputError,
         "cannot cache on device 'gpu'"),
    # cache keys
    Case("cache-unknown-shorthand", lambda m: _cache(m)["patern", 0], CacheKeyError, "did you mean 'pattern'"),
    Case("cache-layer-out-of-range", lambda m: _cache(m)["pattern", 2], CacheKeyError,
         "layer 2 .* out of range for a 2-layer model"),
    Case("cache-layer-too-negative", lambda m: _cache(m)["resid_post", -3], CacheKeyError, "out of range"),
    Case("cache-layer-not-int", lambda m: _cache(m)["pattern", "0"], CacheKeyError, "must be an int"),
    Case("cache-bad-norm", lambda m: _cache(m)["scale", 0, "ln3"], CacheKeyError, "ln1, ln2"),
    Case("cache-missing-grad", lambda m: _cache(m)["resid_post_grad", 0], HookNameError, "incl_bwd=True"),
    Case("cache-not-selected", lambda m: _cache(m, "blocks.0.hook_resid_post")["resid_post", 1], HookNameError,
         "names_filter selected"),
    Case("cache-int-key", lambda m: _cache(m)[3], CacheKeyError, r"cache\['resid_post', 0\]"),
    Case("remove-batch-dim-batch-2", lambda m: m.run_with_cache(IDS, names_filter="hook_embed", remove_batch_dim=True),
         InputError, r"batch of one.* is 2"),
    Case("act-name-needs-layer", lambda m: mechscope.act_name("z"), CacheKeyError, "needs a layer"),
    # tokens <-> text
    Case("single-token-multi", lambda m: m.to_single_token("the cat"), InputError, r"2 tokens \['the', 'cat'\]"),
    Case("single-token-empty", lambda m: m.to_single_token(""), InputError, "0 tokens"),
    Case("single-token-int", lambda m: m.to_single_token(5), InputTypeError, "takes a string"),
    Case("str-tokens-int", lambda m: m.to_str_tokens(5), InputTypeError, "got int 5"),
    Case("str-tokens-3d", lambda m: m.to_str_tokens(IDS[None]), InputError, r"\(pos,\) or \(batch, pos\)"),
    Case("str-tokens-out-of-vocab", lambda m: m.to_str_tokens(torch.tensor([4, 300])), TokenIdError, "300"),
    Case("str-tokens-float", lambda m: m.to_str_tokens(torch.tensor([4.0])), InputError, "integer token ids"),
    Case("to-string-str", lambda m: m.to_string("the cat"), InputTypeError, "got str"),
    Case("to-string-negative", lambda m: m.to_string([4, -2]), TokenIdError, "-2"),
    Case("to-tokens-int", lambda m: m.to_tokens(5), InputTypeError, "int 5"),
    # persistent hooks and run-time points
    Case("add-hook-dir", lambda m: m.add_hook("hook_embed", lambda a, h: None, dir="forward"), InputError,
         "'fwd' .* 'bwd'"),
    Case("add-point-shape-int", lambda m: m.add_point("x.hook_a", 3), InputError, r"axis names .* got 3"),
    Case("add-point-shape-str", lambda m: m.add_point("x.hook_b", "batch pos"), InputError, "got 'batch pos'"),
    Case("add-point-shape-negative", lambda m: m.add_point("x.hook_c", ("batch", -1)), InputError, "positive sizes"),
    Case("add-point-name", lambda m: m.add_point("", ("batch",)), InputTypeError, "non-empty str"),
    Case("add-point-layer", lambda m: m.add_point("x.hook_d", ("batch",), layer=5), InputError, "block index 0 to 1"),
    Case("fire-model-point", lambda m: m.hook_dict["hook_embed"].fire(torch.zeros(1)), InputTypeError, "add_point"),
    Case("use-attn-result-str", lambda m: m.set_use_attn_result("yes"), InputTypeError, "True or False"),
]


def _cache(m: mechscope.Model, names="blocks.0.attn.hook_pattern"):
    return m.run_with_cache(IDS, names_filter=names)[1]


def _cache_under_failing_hook(m: mechscope.Model):
    with m.hooks([("blocks.0.hook_attn_out", lambda a, h: 1 / 0)]):
        return m.run_with_cache(IDS, names_filter=lambda n: "pattern" in n)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_sentence_and_leaves_nothing_behind(model, case):
    with pytest.raises(case.error, match=case.match) as info:
        case.call(model)
    err = info.value
    assert isinstance(err, MechscopeError)
    msg = str(err)
    assert (msg[0].islower() or msg[0] in "'\"(") and msg[-1] in ".?", f"not a sentence: {msg!r}"
    assert_clean(model)


def test_model_gives_identical_logits_after_every_error(model):
    """Run every failing call, then the same model must give bit-identical logits, caches and generations."""
    before = model(IDS)
    _, cache_before = model.run_with_cache(IDS, names_filter=lambda n: "pattern" in n or "resid" in n)
    gen_before = model.generate("the cat", max_new_tokens=4)
    for case in CASES:
        with pytest.raises(MechscopeError):
            case.call(model)
    assert_clean(model)
    assert torch.equal(model(IDS), before)
    assert torch.equal(model(IDS), model.hf_model(IDS).logits)
    _, cache = model.run_with_cache(IDS, names_filter=lambda n: "pattern" in n or "resid" in n)
    assert cache.keys() == cache_before.keys() and all(torch.equal(cache[k], cache_before[k]) for k in cache)
    assert model.generate("the cat", max_new_tokens=4) == gen_before


def test_errors_keep_the_builtin_types_users_catch(model):
    """TransformerLens-era code catches KeyError, TypeError, IndexError, ValueError: those still work."""
    with pytest.raises(IndexError):
        model(torch.tensor([[1, 128]]))
    with pytest.raises(TypeError):
        model(IDS.float())
    with pytest.raises(ValueError):
        model(IDS.float())  # InputTypeError is an InputError too
    with pytest.raises(KeyError):
        _cache(model)["patern", 0]
    with pytest.raises(TypeError):
        model.run_with_hooks(IDS, fwd_hooks=[("hook_embed", _one_arg)])
    with pytest.raises(RuntimeError):
        model.run_with_hooks(IDS, fwd_hooks=[("hook_embed", lambda a, h: 1 / 0)])
    cache = _cache(model)
    assert cache.get(("patern", 0), "absent") == "absent" and cache.get("blocks.1.hook_z") is None
    assert ("pattern", 7) not in cache and ("pattern", 0) in cache


def test_hook_error_chains_the_original(model):
    class Boom(Exception):
        pass

    def fn(act, hook):
        raise Boom("inside the hook")

    with pytest.raises(HookError) as info:
        model.run_with_hooks(IDS, fwd_hooks=[("blocks.1.attn.hook_z", fn)])
    err = info.value
    assert isinstance(err.__cause__, Boom) and err.original is err.__cause__
    assert err.point == "blocks.1.attn.hook_z" and "fn" in str(err)
    assert_clean(model)


def test_signature_failure_at_call_chains_the_type_error(model):
    with pytest.raises(HookFunctionError) as info:
        model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_mlp_out", torch.relu)])
    assert isinstance(info.value.__cause__, TypeError)


def test_mechscope_errors_inside_hooks_are_not_wrapped_twice(model):
    """A hook that fires a run-time point whose own hook fails: the inner point is named, once."""
    name = "blocks.0.hook_resid_post.probe.hook_out"
    pt = model.add_point(name, ("batch", "pos", 64), layer=0)
    try:
        def splice(x, hook):
            pt.fire(x)

        with pytest.raises(HookError, match=name) as info:
            model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_post", splice), (name, lambda a, h: 1 / 0)])
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        with pytest.raises(HookReturnError, match=name):
            model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_post", splice), (name, lambda a, h: a[:1])])
    finally:
        model.remove_point(name)
    assert_clean(model)


def test_accepted_hook_signatures(model):
    """What TransformerLens users write must still attach: defaults, *args, partials, methods, objects."""
    seen = []

    class Recorder:
        def __call__(self, act, hook):
            seen.append(hook.name)

        def method(self, act, hook, tag="m"):
            seen.append(tag)

    def with_default(act, hook, scale=1.0):
        seen.append(scale)

    def star(*args, **kwargs):
        seen.append(len(args))

    def extra(act, hook, *, layer):
        seen.append(layer)

    hooks = [("hook_embed", Recorder()), ("hook_embed", Recorder().method), ("hook_embed", with_default),
             ("hook_embed", star), ("hook_embed", functools.partial(extra, layer=3)),
             ("hook_embed", functools.partial(lambda k, act, hook: seen.append(k), "k"))]
    assert torch.equal(model.run_with_hooks(IDS, fwd_hooks=hooks), model(IDS))
    assert seen == ["hook_embed", "m", 1.0, 2, 3, "k"]
    with pytest.raises(HookFunctionError):  # a required keyword-only argument is never passed
        model.run_with_hooks(IDS, fwd_hooks=[("hook_embed", extra)])


def test_pairs_may_be_lists_and_empty_selection_is_deliberate(model):
    """TransformerLens iterates ``for name, fn in fwd_hooks``: a list pair works. ``names_filter=[]`` caches nothing
    on purpose (unlike a filter function that matches nothing, which is an error)."""
    seen = []
    model.run_with_hooks(IDS, fwd_hooks=[["hook_embed", lambda a, h: seen.append(h.name)]])
    assert seen == ["hook_embed"]
    logits, cache = model.run_with_cache(IDS, names_filter=[])
    assert len(cache) == 0 and torch.equal(logits, model(IDS))


def test_int32_ids_and_bool_masks_are_accepted(model):
    assert torch.equal(model(IDS.int()), model(IDS))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :3] = 0
    assert torch.equal(model(IDS, attention_mask=mask.bool()), model(IDS, attention_mask=mask))


def test_stale_resid_mid_delta_is_dropped_after_a_failure(model):
    """A resid_mid replacement followed by a failing hook must not leak into the next forward."""
    model.add_hook("blocks.0.hook_resid_mid", lambda a, h: a * 2)
    try:
        ref = model(IDS)
        with pytest.raises(HookError):
            model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_mlp_out", lambda a, h: 1 / 0)])
        assert torch.equal(model(IDS), ref)
    finally:
        model.reset_hooks()
    assert_clean(model)


def test_stale_resid_mid_delta_is_dropped_in_flattening_blocks():
    """The same for OPT, whose MLP half runs on flattened positions (its resid_mid site is wrapped)."""
    m = mechscope.Model.from_hf(make_pair("opt", torch.float32)[0])
    ref = m.hf_model(IDS).logits
    with pytest.raises(HookError):
        m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_mid", lambda a, h: a + 1),
                                         ("blocks.0.mlp.hook_pre", lambda a, h: 1 / 0)])
    assert torch.equal(m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_mid", lambda a, h: None)]), ref)


def test_mismatched_tokenizer_is_named():
    m = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0], word_tokenizer(300))
    with pytest.raises(TokenIdError, match="tokenizer does not belong to this model"):
        m("the cat w200")
    assert torch.equal(m("the cat w100"), m.hf_model(m.to_tokens("the cat w100")).logits)


@pytest.mark.parametrize("call", [
    lambda m: m("the cat"), lambda m: m.to_tokens("the cat"), lambda m: m.to_str_tokens(IDS),
    lambda m: m.to_string(IDS[0]), lambda m: m.to_single_token("cat"), lambda m: m.generate("the cat"),
    lambda m: m.generate(IDS[:1], max_new_tokens=2, return_type="str"), lambda m: m.run_with_cache(["a", "b"]),
], ids=["forward", "to_tokens", "to_str_tokens", "to_string", "to_single_token", "generate", "generate-str",
        "run_with_cache"])
def test_text_without_a_tokenizer(bare, call):
    with pytest.raises(InputError, match="no tokenizer"):
        call(bare)
    assert_clean(bare)
    assert torch.equal(bare(IDS), bare.hf_model(IDS).logits)


def test_real_model_answers_the_two_reported_cases(tinystories):
    """The issue's two cases on a real checkpoint loaded with mechscope.load."""
    ids = tinystories.to_tokens("Once upon a time")
    before, n_hooks = tinystories(ids), torch_hooks(tinystories)
    with pytest.raises(TokenIdError, match=f"vocabulary of {tinystories.cfg.d_vocab}"):
        tinystories(torch.tensor([[1, tinystories.cfg.d_vocab]]))
    with pytest.raises(HookFunctionError, match=r"fn\(activation, hook\)"):
        tinystories.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda pattern: None)])
    assert_clean(tinystories, n_hooks)
    assert torch.equal(tinystories(ids), before)


def test_single_token_outside_the_vocabulary_is_refused():
    """A word-level tokenizer maps unknown words to its unk token: a target must not silently become '<|unk|>'."""
    model = mechscope.load("default")
    with pytest.raises(InputError, match="not in this tokenizer's vocabulary"):
        model.to_single_token(" mat")
    assert model.to_single_token(model.tokenizer.unk_token) == model.tokenizer.unk_token_id
