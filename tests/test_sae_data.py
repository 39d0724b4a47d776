"""mechscope.sae.data.token_rows: every source format packs to the same rows, held-out rows never overlap the
training rows, and bad input is a sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mechscope.errors import InputError, InputTypeError
from mechscope.sae import token_rows

DOCS = [f"Once upon a time there was a cat number {i} who liked {'red blue green'.split()[i % 3]} hats." for i in
        range(60)]


@pytest.fixture(scope="module")
def tok(tinystories):
    return tinystories.tokenizer


def _stream(tok, docs):
    return [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]


def test_jsonl_list_and_datasets_agree(tinystories, tok, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    rows = token_rows(tinystories, f, context_size=16)
    assert rows.shape[1] == 16 and rows.dtype == torch.long
    assert (rows[:, 0] == tok.bos_token_id).all()  # the model prepends BOS; each row holds 15 tokens of the stream
    stream = _stream(tok, DOCS)
    assert rows[:, 1:].reshape(-1).tolist() == stream[:rows.shape[0] * 15]
    assert torch.equal(token_rows(tinystories, DOCS, context_size=16), rows)
    g = tmp_path / "story.jsonl"
    g.write_text("".join(json.dumps({"story": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    assert torch.equal(token_rows(tinystories, g, context_size=16, text_column="story"), rows)
    with pytest.raises(InputError, match="no string field 'text'"):
        token_rows(tinystories, g, context_size=16)


def test_datasets_folders(tinystories, tok, tmp_path):
    datasets = pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    rows = token_rows(tinystories, DOCS, context_size=16)
    # an explicit fingerprint: datasets' own hashing of the table is irrelevant here (and breaks on some versions)
    ds = datasets.Dataset(pa.table({"text": DOCS}), fingerprint="t")
    ds.save_to_disk(str(tmp_path / "ds"))
    assert torch.equal(token_rows(tinystories, tmp_path / "ds", context_size=16), rows)
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    tokenised = datasets.Dataset(pa.table({"input_ids": ids}), fingerprint="i")
    datasets.DatasetDict({"train": tokenised, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    assert torch.equal(token_rows(tinystories, tmp_path / "dd", context_size=16), rows)  # already tokenised
    with pytest.raises(InputError, match="neither 'story' nor 'input_ids'"):
        token_rows(tinystories, tmp_path / "ds", text_column="story")


def test_text_lines_and_tokenizer_alone(tinystories, tok, tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("\n".join(DOCS[:20]) + "\n\n")
    rows = token_rows(tok, f, context_size=16, prepend_bos=False)  # an HF tokenizer is enough
    stream = [t for d in DOCS[:20] for t in tok(d + "\n", add_special_tokens=False)["input_ids"]]  # no separator
    assert rows.reshape(-1).tolist() == stream[:rows.numel()]
    assert torch.equal(token_rows(tinystories, f, context_size=16, prepend_bos=False), rows)


def test_token_arrays(tmp_path):
    stream = torch.arange(1000) % 97
    rows = token_rows(None, stream, context_size=10)
    assert torch.equal(rows, stream.reshape(100, 10))  # no model: no BOS
    np.save(tmp_path / "t.npy", stream.numpy().astype(np.int32))
    assert torch.equal(token_rows(None, tmp_path / "t.npy", context_size=10), rows)
    save_file({"tokens": stream.to(torch.int32)}, tmp_path / "t.safetensors")
    assert torch.equal(token_rows(None, tmp_path / "t.safetensors", context_size=10), rows)
    assert torch.equal(token_rows(None, rows, context_size=10, n_tokens=25), rows[:3])  # 2-d rows: used as is
    with pytest.raises(InputError, match="10 tokens wide but context_size is 8"):
        token_rows(None, rows, context_size=8)
    with pytest.raises(InputTypeError, match="token ids are integers"):
        token_rows(None, stream.float(), context_size=10)


@pytest.mark.parametrize("kind", ["docs", "stream", "rows"])
def test_holdout_from_the_end_never_overlaps_training(tinystories, tok, kind):
    src = {"docs": DOCS, "stream": torch.arange(2000), "rows": torch.arange(2000).reshape(125, 16)}[kind]
    model = tinystories if kind == "docs" else None
    kw = dict(context_size=16, holdout_tokens=40)
    train = token_rows(model, src, **kw)
    hold = token_rows(model, src, **kw, split="holdout")
    assert hold.shape == (3, 16)  # ceil(40 / 16) rows
    full = _stream(tok, DOCS) if kind == "docs" else list(range(2000))
    strip = (lambda r: r[:, 1:]) if kind == "docs" else (lambda r: r)
    tr, ho = strip(train).reshape(-1).tolist(), strip(hold).reshape(-1).tolist()
    assert full[:len(tr)] == tr and full[len(full) - len(ho):] == ho  # a prefix and a suffix ...
    assert len(tr) + len(ho) <= len(full)  # ... that do not meet
    if kind == "docs":  # whole documents apart: no held-out document contributes to training
        assert len(full) - len(ho) - len(tr) >= 0 and tok.eos_token_id in full[len(tr):len(full) - len(ho) + 1]
    assert torch.equal(token_rows(model, src, **kw, n_tokens=33), train[:3])


def test_bad_input_sentences(tinystories, tmp_path):
    with pytest.raises(InputError, match="longer than the model's maximum context of 512"):
        token_rows(tinystories, DOCS, context_size=513)
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="holds no documents"):
        token_rows(tinystories, tmp_path / "e.jsonl")
    with pytest.raises(InputError, match="too little text for 100 held-out rows"):
        token_rows(tinystories, DOCS, context_size=16, holdout_tokens=1600)
    with pytest.raises(InputError, match="is not a file"):
        token_rows(tinystories, tmp_path / "missing.txt")
    with pytest.raises(InputError, match="needs a tokenizer"):
        token_rows(None, DOCS)
    with pytest.raises(InputTypeError, match="cannot read text or tokens"):
        token_rows(tinystories, 3)
