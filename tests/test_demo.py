"""The main job: ``mechscope demo`` on the embedded default model shows its induction behaviour."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

import mechscope
from mechscope.cli import app
from mechscope.demo import report


def test_demo_report_shows_induction():
    model = mechscope.load("default")
    out = io.StringIO()
    r = report(model, Console(file=out, width=120))
    assert r["loss_first"] > 4.0 and r["loss_second"] < 1.5  # in-context learning on repeated random text
    assert r["best_prev"][0] == 0 and r["prev_token"].max() > 0.7  # a previous-token head in layer 0
    assert r["best_induction"][0] == 1 and r["induction"].max() > 0.6  # an induction head in layer 1
    text = out.getvalue()
    assert "in-context learning" in text and "induction heads" in text and "'four'" in text


def test_demo_command_runs():
    res = CliRunner().invoke(app, ["demo"])
    assert res.exit_code == 0, res.output
    assert "strongest induction head: L1" in res.output


def test_default_model_is_exact_like_any_other():
    model = mechscope.load("default", attn_implementation="eager")
    toks = model.to_tokens("the cat sat on the mat .")
    logits, cache = model.run_with_cache(toks)
    import torch

    assert torch.equal(logits, model.hf_model(toks).logits)
    assert model.cfg.family == "gpt2" and "hook_pos_embed" in cache
