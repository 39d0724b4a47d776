"""``mechscope patch`` from the shell: a table of the top components, --json and --html files, clean errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from mechscope.cli import app

ARGS = ["default", "--clean", "the cat ran and the", "--corrupt", "the dog ran and the", "--answer", "cat",
        "--wrong", "dog"]


def test_patch_heads_writes_json_and_html(tmp_path):
    out, page = tmp_path / "p.json", tmp_path / "p.html"
    r = CliRunner().invoke(app, ["patch", *ARGS, "--json", str(out), "--html", str(page)])
    assert r.exit_code == 0, r.output
    assert "clean prompt" in r.output and "normalised" in r.output
    data = json.loads(out.read_text())
    assert data["dims"] == ["layer", "head"] and data["point"] == "z"
    assert set(data["baselines"]) == {"clean", "corrupted"}
    assert len(data["values"]) == len(data["labels"]["layer"])
    assert "msv-root" in page.read_text()


@pytest.mark.parametrize("extra", [["--granularity", "resid"], ["--point", "mlp_out", "--all-pos", "--noising"]])
def test_patch_other_granularities(tmp_path, extra):
    out = tmp_path / "p.json"
    r = CliRunner().invoke(app, ["patch", *ARGS, *extra, "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    if "--granularity" in extra:
        assert data["dims"] == ["layer", "pos"] and data["labels"]["pos"][1] == "the"
    else:
        assert data["dims"] == ["layer"] and data["direction"] == "noise"


def test_patch_errors_are_sentences():
    r = CliRunner().invoke(app, ["patch", *ARGS, "--granularity", "everything"])
    assert r.exit_code == 2 and "unknown granularity" in r.output
    r = CliRunner().invoke(app, ["patch", *ARGS[:4], "the dog ran off and the", *ARGS[5:]])
    assert r.exit_code == 2 and "same number of prompts and tokens" in r.output


def test_patch_attribution_method():
    r = CliRunner().invoke(app, ["patch", *ARGS, "--method", "attribution"])
    if importlib.util.find_spec("mechscope.patching.attribution") is None:
        assert r.exit_code == 2 and "not part of this install" in r.output
        pytest.skip("mechscope.patching.attribution is not on this branch yet")
    assert r.exit_code == 0, r.output


def test_patch_takes_direction_like_path_patch(tmp_path):
    """``mechscope path-patch`` says ``--direction noise``; ``mechscope patch`` takes the same flag (``--noising``
    stays as its shorthand), and a bad value is a sentence."""
    out = tmp_path / "p.json"
    r = CliRunner().invoke(app, ["patch", *ARGS, "--granularity", "attn", "--direction", "noise", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["direction"] == "noise"
    r = CliRunner().invoke(app, ["patch", *ARGS, "--direction", "noising"])
    assert r.exit_code != 0 and "--direction must be" in r.output and "Traceback" not in r.output
