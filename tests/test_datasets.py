"""Task datasets: IOI prompts with ABC corruptions (Wang et al. 2022) and known_1000 facts (Meng et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from mechscope.datasets import ioi_dataset, ioi_reference
from mechscope.datasets.ioi import ABBA_TEMPLATES, BABA_TEMPLATES
from mechscope.errors import InputError


@pytest.fixture(scope="module")
def gpt2_tok(shared):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared / "models" / "gpt2-tokenizer")


def _check_aligned(ds, tok):
    """Clean and corrupted differ exactly at IO and S1; the named positions hold the names; end is the last token."""
    assert ds.tokens.shape == ds.corrupted_tokens.shape
    rows = torch.arange(len(ds))
    assert torch.equal(ds.tokens[rows, ds.positions["IO"]], ds.answer)
    assert torch.equal(ds.tokens[rows, ds.positions["S1"]], ds.wrong)
    assert torch.equal(ds.tokens[rows, ds.positions["S2"]], ds.wrong)
    assert torch.equal(ds.corrupted_tokens[rows, ds.positions["S2"]], ds.wrong)  # S2 is kept
    diff = ds.tokens != ds.corrupted_tokens
    assert torch.equal(diff.sum(1), torch.full((len(ds),), 2))
    assert diff[rows, ds.positions["IO"]].all() and diff[rows, ds.positions["S1"]].all()
    for i, p in enumerate(ds.prompts):
        end = int(ds.positions["end"][i])
        assert tok.decode(ds.tokens[i, end]) == " to"
        assert p.io not in p.corrupted_text.split() and p.s in p.corrupted_text
        if ds.attention_mask is not None:
            assert int(ds.attention_mask[i, end]) == 1
            assert ds.padding_side != "right" or end + 1 == int(ds.attention_mask[i].sum())


def test_ioi_generator_aligned_seeded_and_ordered(gpt2_tok):
    ds = ioi_dataset(gpt2_tok, 30, seed=3)
    assert len(ds) == 30 and ds.dropped_names == [] and ds.dropped_prompts == []
    _check_aligned(ds, gpt2_tok)
    assert [p.order for p in ds.prompts[:4]] == ["ABBA", "BABA", "ABBA", "BABA"]
    for p in ds.prompts:  # ABBA names IO first, BABA the subject first
        first = p.text.index(p.io) < p.text.index(p.s)
        assert first == (p.order == "ABBA")
    again = ioi_dataset(gpt2_tok, 30, seed=3)
    assert again.texts == ds.texts and torch.equal(again.corrupted_tokens, ds.corrupted_tokens)
    assert ioi_dataset(gpt2_tok, 30, seed=4).texts != ds.texts
    assert all(p.order == "BABA" for p in ioi_dataset(gpt2_tok, 6, order="BABA").prompts)
    assert len(ABBA_TEMPLATES) == len(BABA_TEMPLATES) == 15


def test_ioi_padding_and_template_groups(gpt2_tok):
    right = ioi_dataset(gpt2_tok, 24, seed=0)
    left = ioi_dataset(gpt2_tok, 24, seed=0, padding_side="left")
    assert right.attention_mask is not None  # several templates, several lengths
    _check_aligned(left, gpt2_tok)
    assert bool((left.positions["end"] == left.tokens.shape[1] - 1).all())
    groups = right.by_template()
    assert sum(len(g) for g in groups.values()) == 24
    for (template, length), g in groups.items():
        assert g.attention_mask is None and g.tokens.shape[1] == length
        assert len({int(x) for x in g.positions["S2"]}) == 1  # one template: every word at one position
        _check_aligned(g, gpt2_tok)


def test_ioi_metric_is_the_logit_difference_at_end(gpt2_tok):
    ds = ioi_dataset(gpt2_tok, 5, seed=1)
    logits = torch.randn(5, ds.tokens.shape[1], len(gpt2_tok), requires_grad=True)
    want = torch.stack([logits[i, ds.positions["end"][i], ds.answer[i]] - logits[i, ds.positions["end"][i], ds.wrong[i]]
                        for i in range(5)])
    assert torch.equal(ds.logit_diff(logits), want)
    value = ds.metric()(logits)
    assert value.dim() == 0 and torch.allclose(value, want.mean())
    value.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(InputError, match="batch 3 but the dataset has 5"):
        ds.metric()(logits[:3])
    assert torch.equal(ds[1:3].logit_diff(logits[1:3]), want[1:3])


def test_ioi_drops_names_that_are_not_one_token(gpt2_tok):
    ds = ioi_dataset(gpt2_tok, 8, names=["Mary", "John", "Alice", "Bob", "Xyzzyqx", "Kristofferson"])
    assert set(ds.dropped_names) == {"Xyzzyqx", "Kristofferson"}
    assert {p.io for p in ds.prompts} | {p.s for p in ds.prompts} <= {"Mary", "John", "Alice", "Bob"}
    with pytest.raises(InputError, match="at least four"):
        ioi_dataset(gpt2_tok, 4, names=["Mary", "John", "Xyzzyqx"])
    with pytest.raises(InputError, match="order must be"):
        ioi_dataset(gpt2_tok, 4, order="AABB")
    with pytest.raises(InputError, match="must hold \\[A\\]"):
        ioi_dataset(gpt2_tok, 4, templates=["[A] gave [B] a ball"])


def test_ioi_reference_file(gpt2_tok, shared):
    path = shared / "data" / "ioi" / "ioi.json"
    if not path.is_file():
        pytest.skip("shared/data/ioi/ioi.json is not present")
    ds = ioi_reference(gpt2_tok, path, n=40)
    assert len(ds) == 40
    _check_aligned(ds, gpt2_tok)
    import json

    answers = {r["prompt"]: r["answer"] for r in json.loads(path.read_text())}
    for q in ds.prompts:
        assert q.io == answers[q.text] and q.template == -1
        assert q.text.count(q.s) == 2 and q.text.count(q.io) == 1
    with pytest.raises(InputError, match="no IOI reference file"):
        ioi_reference(gpt2_tok, shared / "nope.json")


def test_names_the_tokenizer_does_not_know_are_not_single_tokens():
    """A word-level tokenizer maps an unknown name to one id, its unknown token: that passed as 'one token', so
    IOI prompts on such a model had IO and S both '<unk>' and a logit difference of exactly 0 (``mechscope circuit
    default --task ioi`` printed a circuit of 0 edges and faithfulness nan). Unknown names are dropped now."""
    import mechscope
    from mechscope.datasets.ioi import ioi_dataset, single_token_names
    from mechscope.datasets.spans import single_token
    from mechscope.errors import InputError

    model = mechscope.load("default")
    tok = model.tokenizer
    assert single_token(tok, " Crystal") is None and single_token(tok, " cat") is not None
    assert single_token_names(tok, ["Crystal", "Bradley"]) == ([], ["Crystal", "Bradley"])
    with pytest.raises(InputError, match="single tokens"):
        ioi_dataset(model, n=2)
