"""Every decoder-only text model type in transformers' causal-LM mapping is either wrapped or excluded with a reason.

A new transformers release that adds a family fails here, so new architectures are announced in CI rather than
discovered by users.
"""

from __future__ import annotations

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from families import CONFIGS, make_config, model_type_of
from mechscope.families import EXCLUDED, supported_model_types


def test_every_causal_lm_type_is_supported_or_excluded():
    supported = set(supported_model_types())
    missing = sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - supported - set(EXCLUDED))
    assert not missing, (
        f"{len(missing)} model types in transformers' causal-LM mapping are neither supported nor excluded: "
        f"{missing}. Add a Family entry (mechscope/families/) or an EXCLUDED entry with the reason."
    )


def test_supported_and_excluded_are_disjoint():
    assert not set(supported_model_types()) & set(EXCLUDED)


def test_every_supported_type_has_a_tiny_config():
    tested = {model_type_of(k) for k in CONFIGS}
    tested |= {make_config(k).get_text_config().model_type for k in CONFIGS}  # a wrapper builds its text model (Emu3)
    untested = sorted(set(supported_model_types()) - tested)
    assert not untested, f"supported model types without a config in tests/family_configs/: {untested}"


def test_exclusion_reasons_are_sentences():
    for mt, why in EXCLUDED.items():
        assert len(why) > 15, f"EXCLUDED[{mt!r}] needs a reason"
