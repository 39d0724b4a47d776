"""The main job: ``mechscope demo`` on the embedded default model shows its induction behaviour."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

import mechscope
from mechscope.cli import app
from mechscope.demo import real_model_report, report
from mechscope.zoo import MODELS

SMOLLM2 = MODELS["smollm2-135m"]


def test_demo_report_shows_induction():
    model = mechscope.load("default")
    out = io.StringIO()
    r = report(model, Console(file=out, width=120))
    assert r["loss_first"] > 4.0 and r["loss_second"] < 1.5  # in-context learning on repeated random text
    assert r["best_prev"][0] == 0 and r["prev_token"].max() > 0.7  # a previous-token head in layer 0
    assert r["best_induction"][0] == 1 and r["induction"].max() > 0.6  # an induction head in layer 1
    # activation patching agrees: the head restoring most of the induction metric is the detectors' layer-1 head
    label, value = r["patching"].top(1, by_abs=False)[0]
    assert label == f"L1 H{r['best_induction'][1]}" or (label.startswith("L1 ") and value > 0.3)
    text = out.getvalue()
    assert "activation patching" in text
    assert "in-context learning" in text and "induction heads" in text and "'four'" in text


def test_demo_report_adds_lens_and_attribution():
    r = report(mechscope.load("default"), Console(file=io.StringIO(), width=120))
    assert r["lens"].exact_final and r["attribution"].delta < 0.05
    assert len(r["views"]) == 5 and all(v.html for v in r["views"])


def test_demo_command_runs(tmp_path):
    page = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["demo", "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert "strongest induction head: L1" in res.output
    assert "logit lens" in res.output and "integrated gradients" in res.output
    html = page.read_text()
    assert html.count('class="msv-root') >= 5 and "mechscope demo" in html
    if SMOLLM2.installed():
        assert "a real model: smollm2-135m" in res.output and "weights dequantised from a Q4_1 GGUF" in res.output
    else:
        assert SMOLLM2.pip in res.output


@pytest.mark.skipif(not SMOLLM2.installed(), reason=f"needs its package: {SMOLLM2.pip}")
def test_real_model_report_on_smollm2():
    out = io.StringIO()
    r = real_model_report(mechscope.load("smollm2-135m"), Console(file=out, width=120))
    fact, ioi = r["predictions"].values()
    assert fact[0][0] == " Paris" and ioi[0][0] == " Mary"
    assert r["loss_second"] < r["loss_first"] - 5  # induction on repeated random tokens
    assert r["top_induction"][0][2] > 0.5 and r["induction"].shape == (30, 9)
    assert "strongest induction heads: L" in out.getvalue()
    assert r["answer_top_from"] is not None and r["lens"].exact_final  # ' Paris' emerges in the late layers
    assert r["attribution"].delta < 0.05 and r["dla"].top(1)[0].label.startswith("L")
    assert len(r["views"]) == 5


def test_default_model_is_exact_like_any_other():
    model = mechscope.load("default", attn_implementation="eager")
    toks = model.to_tokens("the cat sat on the mat .")
    logits, cache = model.run_with_cache(toks)
    import torch

    assert torch.equal(logits, model.hf_model(toks).logits)
    assert model.cfg.family == "gpt2" and "hook_pos_embed" in cache
