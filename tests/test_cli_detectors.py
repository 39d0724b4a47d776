"""CLI commands and head detectors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import mechscope
from families import make_pair
from mechscope.cli import app
from mechscope.detectors import detection_pattern, head_scores

runner = CliRunner()


def test_detection_patterns():
    toks = torch.tensor([[0, 5, 6, 7, 5, 6, 7]])
    prev = detection_pattern(toks, "previous_token")[0]
    assert prev[3, 2] and prev.sum() == 6
    dup = detection_pattern(toks, "duplicate_token")[0]
    assert dup[4, 1] and dup[6, 3] and dup.sum() == 3
    ind = detection_pattern(toks, "induction")[0]
    assert ind[4, 2] and ind[5, 3] and ind[6, 4] and ind.sum() == 3  # the token after the earlier copy


def test_head_scores_measure_attention_mass():
    m = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    toks = torch.tensor([[1, 5, 6, 7, 5, 6, 7]])

    def attend_previous(p, hook):  # every query attends to the token before it (position 0 to itself)
        out = torch.zeros_like(p)
        idx = (torch.arange(p.shape[-2]) - 1).clamp(min=0)
        out[..., torch.arange(p.shape[-2]), idx] = 1
        return out

    with m.hooks([(lambda n: n.endswith("hook_pattern"), attend_previous)]):
        prev = head_scores(m, toks, "previous_token")
        ind = head_scores(m, toks, "induction")
    assert torch.allclose(prev, torch.ones(2, 4))
    assert torch.allclose(ind, torch.zeros(2, 4))


@pytest.mark.shared
def test_info_lists_points_and_memory(shared):
    res = runner.invoke(app, ["info", str(shared / "models" / "TinyStories-656K"), "--pos", "64"])
    assert res.exit_code == 0, res.output
    assert "blocks.0.attn.hook_pattern" in res.output and "48 hook points" in res.output
    assert "n_kv_heads" in res.output


@pytest.mark.shared
def test_run_prints_predictions(shared):
    res = runner.invoke(app, ["run", str(shared / "models" / "TinyStories-656K"), "Once upon a time", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    assert "rank" in res.output and "prob" in res.output


def test_missing_model_is_a_sentence_not_a_traceback(tmp_path):
    res = runner.invoke(app, ["run", str(tmp_path / "missing"), "hi"])
    assert res.exit_code == 2
    assert "no model folder" in res.output and "Traceback" not in res.output
