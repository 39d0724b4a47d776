"""The exactness suite of ``test_exactness.py`` on real pretrained models (SmolLM2-135M, Gemma-3-270M), fp32 and
bf16, plus what the models know. Each model is dequantised from its package's GGUF file once per test run (into
the run's cache) and skipped cleanly when its package is absent.

The test functions are imported from ``test_exactness`` and run here against this module's ``case`` fixture:
one eager and one SDPA HF model loaded from the same cached folder, and two short rows of real tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import mechscope
from mechscope.loading import resolve
from mechscope.zoo import MODELS
from test_exactness import (  # noqa: F401 - collected here with this module's `case`
    test_cache_everything_equals_eager,
    test_cache_matches_independent_reading,
    test_identity_replacement_everywhere_equals_eager,
    test_kv_cache_step,
    test_left_padding,
    test_no_hooks_equals_hf,
    test_parameter_gradients,
    test_reading_outside_attention_keeps_fast_attention,
)

pytestmark = pytest.mark.real_models
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CASES = [(name, dt) for name in ("smollm2-135m", "gemma3-270m") for dt in DTYPES]
TEXT = ("The quick brown fox jumps over the lazy dog near the river bank today.",
        "In 1492, Columbus sailed across the Atlantic Ocean with three small ships.")
IOI = "When Mary and John went to the store, John gave a drink to"


def _folder(name: str) -> str:
    if not MODELS[name].installed():
        pytest.skip(f"{name} needs its package: {MODELS[name].pip}")
    return resolve(name)[0]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{d}" for n, d in CASES])
def case(request):
    name, dt = request.param
    folder = _folder(name)
    eager_hf, sdpa_hf = (AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dt], attn_implementation=impl)
                         .eval() for impl in ("eager", "sdpa"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eager, fast = mechscope.Model.from_hf(eager_hf, tokenizer), mechscope.Model.from_hf(sdpa_hf, tokenizer)
    ids = torch.stack([eager.to_tokens(t)[0, :12] for t in TEXT])  # (2, 12) real tokens, BOS first
    return eager, fast, ids


@pytest.fixture(scope="module")
def smollm2():
    _folder("smollm2-135m")
    return mechscope.load("smollm2-135m")


@pytest.fixture(scope="module")
def gemma3():
    _folder("gemma3-270m")
    return mechscope.load("gemma3-270m")


def test_smollm2_knows_the_capital_of_france(smollm2):
    text = smollm2.generate("The capital of France is", max_new_tokens=1)
    assert text == "The capital of France is Paris"


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_indirect_object_identification(which, request):
    model = request.getfixturevalue(which)
    logits = model(IOI)[0, -1]
    assert model.to_string([int(logits.argmax())]) == " Mary"
    assert logits[model.to_single_token(" Mary")] > logits[model.to_single_token(" John")]


def test_gemma3_is_gemma3_text(gemma3):
    cfg = gemma3.cfg
    assert (cfg.model_type, cfg.n_layers, cfg.d_model) == ("gemma3_text", 18, 640)
    assert gemma3.source.quantization == "Q4_K_M" and gemma3.to_str_tokens("Hi")[0] == "<bos>"
