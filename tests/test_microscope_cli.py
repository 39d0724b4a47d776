"""The microscope's results as views and from the shell: every result object renders (``view()``,
``_repr_html_``), and every command writes ``--json`` and ``--html`` files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import mechscope
from mechscope.attribution import attribute
from mechscope.cli import app
from mechscope.detectors import find_heads
from mechscope.lens import logit_lens

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def model():
    return mechscope.load("default")


def _is_view(html: str) -> bool:
    return "msv-root" in html and "<script" in html


def test_every_result_renders(model):
    lens = logit_lens(model, PROMPT, targets=" cat")
    assert _is_view(lens._repr_html_()) and '"kl"' in lens.view().html and 'p(' in lens.view().html
    attr = attribute(model, PROMPT, " cat", method="ig")
    assert _is_view(attr._repr_html_()) and "completeness delta" in attr.view().html
    heads = find_heads(model, n_seqs=2, seg_len=8)
    assert _is_view(heads._repr_html_()) and heads.view().html.count('"kind":"heatmap"') == 5
    for by in ("head", "layer", "position", "full", "neuron"):
        res = mechscope.direct_logit_attribution(model, PROMPT, target=" cat", by=by)
        assert _is_view(res._repr_html_()), by


def test_dla_view_needs_one_prompt_at_one_position(model):
    res = mechscope.direct_logit_attribution(model, [PROMPT, "i saw one two"], target=" cat", by="head")
    with pytest.raises(mechscope.InputError, match="one prompt"):
        res.view()


@pytest.mark.parametrize("args", [
    ["heads", "default", "--n-seqs", "2", "--seg-len", "8"],
    ["dla", "default", PROMPT, "--target", " cat", "--by", "head"],
    ["lens", "default", PROMPT],
    ["attribute", "default", PROMPT, "--target", " cat", "--method", "ig", "--steps", "16"],
])
def test_commands_write_json_and_html(args, tmp_path):
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    res = CliRunner().invoke(app, [*args, "--json", str(out_json), "--html", str(out_html)])
    assert res.exit_code == 0, res.output
    assert json.loads(out_json.read_text())
    html = out_html.read_text()
    assert html.startswith("<!DOCTYPE html>") and "msv-root" in html and "https://" not in html


def test_unwritable_output_is_a_sentence(tmp_path):
    res = CliRunner().invoke(app, ["lens", "default", PROMPT, "--json", str(tmp_path / "missing" / "x.json")])
    assert res.exit_code == 2 and "cannot write" in res.output and "Traceback" not in res.output


def test_demo_and_lens_train_write_json(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--no-real", "--json", str(tmp_path / "demo.json"), "--html", ""])
    assert res.exit_code == 0, res.output
    numbers = json.loads((tmp_path / "demo.json").read_text())["default"]
    assert numbers["loss_second"] < numbers["loss_first"] and numbers["lens"]["prompts"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the big red ball . she saw one two three four .\n" * 40)
    res = CliRunner().invoke(app, ["lens", "train", "default", "--data", str(corpus), "--out", str(tmp_path / "lens"),
                                   "--steps", "3", "--seq-len", "16", "--batch-size", "2", "--holdout-rows", "2",
                                   "--json", str(tmp_path / "train.json")])
    assert res.exit_code == 0, res.output
    history = json.loads((tmp_path / "train.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 1, 2] and all(h["mean_kl"] >= 0 for h in history)


def test_results_label_tokens_without_a_tokenizer():
    """A model wrapped without a tokenizer: every result names its tokens '#id' (one convention for all of them),
    and their views render."""
    import torch
    from families import make_pair

    bare = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    ids = torch.tensor([[3, 17, 5, 9]])
    lens = logit_lens(bare, ids, targets=7)
    assert lens.tokens == [["#3", "#17", "#5", "#9"]] and lens.target_strings == ["#7"] and lens.view().html
    pos = mechscope.direct_logit_attribution(bare, ids, target=7, by="position")
    assert pos.labels == ["0:#3", "1:#17", "2:#5", "3:#9"] and pos.tokens == [["#3", "#17", "#5", "#9"]]
    assert pos.view().html
    attr = attribute(bare, ids, 7, method="grad_x_input", include_bos=True)
    assert attr.tokens == ["#3", "#17", "#5", "#9"] and attr.view().html


def test_attribute_steps_only_where_a_method_has_them(model):
    res = CliRunner().invoke(app, ["attribute", "default", PROMPT, "--method", "rollout", "--steps", "8"])
    assert res.exit_code == 2 and "drop --steps" in res.output
    with pytest.raises(mechscope.InputError, match="takes"):
        attribute(model, PROMPT, method="rollout", n_samples=8)
