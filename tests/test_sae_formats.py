"""mechscope.sae.formats: mechscope's own folder, SAELens 6 and sparsify folders, hub ids, bad input.

SAELens -> mechscope runs against fixtures SAELens itself wrote (``bench/saelens_fixtures.py``, committed under
``tests/data/sae_fixtures``); mechscope -> SAELens runs the real SAELens in its own venv when one is there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mechscope.sae as ms
from mechscope.errors import InputError, ModelLoadError
from mechscope.sae import SAE, SAEConfig
from mechscope.sae import formats as F
from mechscope.sae.sae import _REGISTRY

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "data" / "sae_fixtures"
SAELENS_PY = Path(os.environ.get("MECHSCOPE_SAELENS_PYTHON", "/tmp/saelens-venv/bin/python"))

# fixture -> (mechscope architecture, transcoder, skip)
SAELENS_FIXTURES = {
    "standard": ("relu", False, False), "standard_no_b_dec_in": ("relu", False, False), "topk": ("topk", False, False),
    "topk_rescaled": ("topk", False, False), "jumprelu": ("jumprelu", False, False), "gated": ("gated", False, False),
    "batchtopk": ("batchtopk", False, False), "matryoshka": ("matryoshka", False, False),
    "transcoder": ("relu", True, False), "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False), "jumprelu_skip_transcoder": ("jumprelu", True, True),
}


def need(arch: str) -> None:
    if arch not in _REGISTRY:
        pytest.skip(f"architecture {arch!r} is not registered on this branch (the arch engineer's)")


def make(arch: str = "topk", kind: str = "ae", seed: int = 0, scale: float = 2.0) -> SAE:
    """A random SAE with non-trivial weights and normalisation scales (so saving must fold them)."""
    need(arch)
    extra = dict(k=4) if arch in ("topk", "batchtopk", "matryoshka") else {}
    if arch == "matryoshka":
        extra["matryoshka_sizes"] = [4, 8, 16]
    if kind != "ae":
        extra.update(hook_name_out="blocks.0.hook_mlp_out", d_out=6, skip=kind == "skip")
    cfg = SAEConfig(d_in=8, d_sae=16, architecture=arch, hook_name="blocks.0.hook_resid_post", model_name="tiny",
                    context_size=128, **extra)
    sae = SAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        for name, b in sae.named_buffers():
            if "threshold" in name:
                b.copy_(torch.rand(b.shape, generator=g) * 0.3 + 0.05)
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.3 + 0.05)
            if name == "log_threshold":
                p.copy_((torch.rand(p.shape, generator=g) * 0.3 + 0.05).log())
        sae.norm_scale_in.fill_(scale)
        sae.norm_scale_out.fill_(scale if kind == "ae" else scale * 1.5)
    return sae.eval()


X = torch.randn(7, 8, generator=torch.Generator().manual_seed(5))


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "batchtopk", "gated", "matryoshka"])
@pytest.mark.parametrize("kind", ["ae", "transcoder", "skip"])
@pytest.mark.parametrize("fmt", ["mechscope", "saelens", "sparsify"])
def test_round_trip(tmp_path, arch, kind, fmt):
    sae = make(arch, kind)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    try:
        sae.save(tmp_path / "s", format=fmt)
    except InputError as e:  # the combinations a format cannot hold are refused with a sentence
        assert fmt != "mechscope" and "format=" in str(e)
        assert not (tmp_path / "s").exists()
        return
    for k, v in sae.state_dict().items():  # the live SAE keeps its scales and weights
        assert torch.equal(v, before[k]), k
    back = ms.load(tmp_path / "s")
    assert ms.detect_format(tmp_path / "s") == fmt
    assert back.norm_scale_in.item() == 1 and back.norm_scale_out.item() == 1
    torch.testing.assert_close(back(X), sae(X), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back.encode(X), sae.encode(X), rtol=1e-5, atol=1e-5)
    assert back.cfg.is_transcoder == sae.cfg.is_transcoder and back.cfg.skip == sae.cfg.skip
    if fmt != "sparsify":  # sparsify names hook points by module path; the folder name stands in for it
        assert back.cfg.hook_name == sae.cfg.hook_name and back.cfg.k == sae.cfg.k
    if fmt == "mechscope":
        assert back.cfg.architecture == arch and back.cfg.to_dict() == {**sae.cfg.to_dict()}
        cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
        assert cfg["format"] == "mechscope" and "mechscope_version" in cfg


def test_class_methods_and_saelens_names(tmp_path):
    sae = make("topk")
    assert SAE.load(sae.save(tmp_path / "a")).cfg.k == 4
    weights, cfg = sae.save_model(tmp_path / "b")
    assert weights.name == "sae_weights.safetensors" and json.loads(cfg.read_text())["architecture"] == "topk"
    torch.testing.assert_close(SAE.load_from_disk(tmp_path / "b", device="cpu")(X), sae(X), rtol=1e-5, atol=1e-5)
    assert ms.load(tmp_path / "a" / "cfg.json").cfg.k == 4  # a file of the folder names the folder
    half = ms.load(tmp_path / "a", dtype="bfloat16")
    assert half.W_enc.dtype == torch.bfloat16 and half.cfg.dtype == "bfloat16"


def test_save_replaces_an_sae_folder_and_refuses_anything_else(tmp_path):
    a, b = make("topk", seed=1), make("topk", seed=2)
    a.save(tmp_path / "s")
    b.save(tmp_path / "s", format="saelens")  # replacing an SAE folder is fine
    torch.testing.assert_close(ms.load(tmp_path / "s")(X), b(X), rtol=1e-5, atol=1e-5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an SAE folder"):
        a.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        a.save(tmp_path / "f")
    with pytest.raises(InputError, match="format 'onnx'"):
        a.save(tmp_path / "t", format="onnx")


def test_save_is_atomic(tmp_path, monkeypatch):
    a = make("topk", seed=1)
    a.save(tmp_path / "s")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(F, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        make("topk", seed=2).save(tmp_path / "s")
    with pytest.raises(OSError):
        make("topk", seed=2).save(tmp_path / "new")
    monkeypatch.undo()
    torch.testing.assert_close(ms.load(tmp_path / "s")(X), a(X))  # the old folder is intact
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no staging folder left behind


# ------------------------------------------------------------------------------------------------ SAELens -> mechscope
@pytest.mark.parametrize("name", sorted(SAELENS_FIXTURES))
def test_saelens_fixtures_load_with_equal_outputs(name):
    arch, tc, skip = SAELENS_FIXTURES[name]
    need(arch)
    folder = FIX / "saelens" / name
    io = load_file(str(folder / "io.safetensors"))
    sae = ms.load(folder)
    assert ms.detect_format(folder) == "saelens"
    assert (sae.cfg.architecture, sae.cfg.is_transcoder, sae.cfg.skip) == (arch, tc, skip)
    assert sae.cfg.hook_name == "blocks.0.hook_resid_post"
    if tc:
        assert sae.cfg.hook_name_out == "blocks.0.hook_mlp_out" and sae.cfg.d_out == 6
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(io["x"]), io["feature_acts"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(io["x"]), io["sae_out"], rtol=1e-5, atol=1e-5)


def test_saelens_v5_config_keys(tmp_path):
    src = FIX / "saelens" / "standard"
    d = json.loads((src / "cfg.json").read_text())
    v5 = {"d_in": d["d_in"], "d_sae": d["d_sae"], "dtype": "float32", "hook_point": "blocks.0.hook_resid_post",
          "hook_point_layer": 0, "apply_b_dec_to_input": True, "normalize_activations": False,
          "activation_fn_str": "relu", "model_name": "tiny", "context_size": 128}
    (tmp_path / "v5").mkdir()
    (tmp_path / "v5" / "cfg.json").write_text(json.dumps(v5))
    state = load_file(str(src / "sae_weights.safetensors"))
    state["scaling_factor"] = torch.full((d["d_sae"],), 2.0)  # SAELens 5's finetuning scale, folded into W_dec
    save_file(state, str(tmp_path / "v5" / "sae_weights.safetensors"))
    io = load_file(str(src / "io.safetensors"))
    sae = ms.load(tmp_path / "v5")
    assert sae.cfg.hook_name == "blocks.0.hook_resid_post" and sae.cfg.architecture == "relu"
    b_dec = state["b_dec"]
    torch.testing.assert_close(sae(io["x"]), 2 * (io["sae_out"] - b_dec) + b_dec, rtol=1e-5, atol=1e-5)


def test_saelens_hf_module_hook_names_map_to_hook_points(tmp_path):
    import shutil

    shutil.copytree(FIX / "saelens" / "topk", tmp_path / "t")
    d = json.loads((tmp_path / "t" / "cfg.json").read_text())
    d["metadata"].update(hook_name="model.layers.1", model_class_name="AutoModelForCausalLM")
    (tmp_path / "t" / "cfg.json").write_text(json.dumps(d))
    sae = ms.load(tmp_path / "t")
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post"
    assert sae.cfg.metadata["saelens_hook_name"] == "model.layers.1"


# ------------------------------------------------------------------------------------------------ sparsify
@pytest.mark.parametrize("name", ["sae/layers.1", "skip/layers.1", "transcoder/layers.0.mlp"])
def test_sparsify_fixtures(name, tmp_path):
    folder = FIX / "sparsify" / name
    io = load_file(str(folder / "io.safetensors"))
    sae = ms.load(folder)
    assert ms.detect_format(folder) == "sparsify" and sae.cfg.architecture == "topk" and sae.cfg.k == 4
    dense = torch.zeros(len(io["x"]), 16).scatter_(-1, io["top_indices"], io["top_acts"])
    torch.testing.assert_close(sae.encode(io["x"]), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(io["x"]), io["sae_out"], rtol=1e-5, atol=1e-5)
    if name.startswith("transcoder"):
        assert (sae.cfg.hook_name, sae.cfg.hook_name_out) == ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out")
    else:
        assert sae.cfg.hook_name == "blocks.1.hook_resid_post" and sae.cfg.skip == name.startswith("skip")
    sae.save(tmp_path / "w", format="sparsify")
    torch.testing.assert_close(ms.load(tmp_path / "w")(io["x"]), io["sae_out"], rtol=1e-5, atol=1e-5)
    if name.startswith("skip"):  # held as a skip-transcoder (b_dec folded into b_enc), written back as one
        return
    # writing it back gives sparsify's own files: same keys, shapes and values
    mine, theirs = load_file(str(tmp_path / "w" / "sae.safetensors")), load_file(str(folder / "sae.safetensors"))
    assert mine.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k])
    cfg, theirs_cfg = (json.loads((p / "cfg.json").read_text()) for p in (tmp_path / "w", folder))
    assert {k: cfg[k] for k in ("d_in", "k", "num_latents", "transcode", "skip_connection")} == \
        {k: theirs_cfg[k] for k in ("d_in", "k", "num_latents", "transcode", "skip_connection")}


def test_sparsify_run_folder_needs_sae_id():
    with pytest.raises(InputError, match=r"run folder .*sae_id='layers.1'"):
        ms.load(FIX / "sparsify" / "sae")
    assert ms.load(FIX / "sparsify" / "sae", sae_id="layers.1").cfg.hook_name == "blocks.1.hook_resid_post"
    with pytest.raises(ModelLoadError, match="has no folder 'layers.9'; it holds layers.1"):
        ms.load(FIX / "sparsify" / "sae", sae_id="layers.9")


# ------------------------------------------------------------------------------------------------ mechscope -> SAELens
@pytest.mark.skipif(not SAELENS_PY.exists(), reason="no SAELens venv (/tmp/saelens-venv or $MECHSCOPE_SAELENS_PYTHON)")
def test_saelens_loads_what_mechscope_writes(tmp_path):
    n = 0
    for arch in ("relu", "topk", "jumprelu", "batchtopk", "gated", "matryoshka"):
        if arch not in _REGISTRY:
            continue
        for kind in ("ae", "transcoder", "skip"):
            sae = make(arch, kind)
            try:
                sae.save(tmp_path / f"{arch}-{kind}", format="saelens")
            except InputError:
                continue
            with torch.no_grad():
                save_file({"x": X, "feature_acts": sae.encode(X), "sae_out": sae(X)},
                          str(tmp_path / f"{arch}-{kind}" / "io.safetensors"))
            n += 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(SAELENS_PY), str(ROOT / "bench" / "saelens_fixtures.py"), "--check", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"checked": n, "failures": []}, r.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ hub ids
def test_hub_ids_resolve_to_a_subfolder_download(monkeypatch, tmp_path):
    import shutil

    import huggingface_hub

    root = tmp_path / "snap"
    shutil.copytree(FIX / "sparsify" / "sae", root)
    calls = []

    def fake(repo, allow_patterns=None, **kw):
        calls.append((repo, allow_patterns))
        return str(root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    a = ms.load("EleutherAI/sae-tiny", sae_id="layers.1")
    b = ms.load("EleutherAI/sae-tiny/layers.1")
    assert calls == [("EleutherAI/sae-tiny", ["layers.1/*"])] * 2
    torch.testing.assert_close(a(X), b(X))
    with pytest.raises(ModelLoadError, match="has no folder 'layers.7'"):
        ms.load("EleutherAI/sae-tiny", sae_id="layers.7")


def test_hub_offline_failure_is_a_sentence(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError, match=r"cannot fetch the SAE 'org/repo/layers.3' .*download the folder"):
        ms.load("org/repo", sae_id="layers.3")
    with pytest.raises(ModelLoadError, match="does not exist"):
        ms.load("./no/such/folder")


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_folders_give_sentences(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        ms.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no cfg.json"):
        ms.load(tmp_path / "empty")
    make("topk").save(tmp_path / "s")
    (tmp_path / "s" / "sae_weights.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        ms.load(tmp_path / "s")
    (tmp_path / "p").mkdir()
    torch.save({"W_enc": torch.zeros(2)}, tmp_path / "p" / "sae.pt")
    with pytest.raises(ModelLoadError, match="pickle file; .*safetensors"):
        ms.load(tmp_path / "p")
    with pytest.raises(ModelLoadError, match="pickle file"):
        ms.load(tmp_path / "p" / "sae.pt")
    (tmp_path / "p" / "cfg.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="pickle file"):
        ms.load(tmp_path / "p")


def test_mismatched_or_unknown_contents_give_sentences(tmp_path):
    import shutil

    make("topk").save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    (tmp_path / "s" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 32}))
    with pytest.raises(ModelLoadError, match=r"weight 'W_\w+' has shape .* but cfg.json \(d_in=8, d_sae=32.*needs"):
        ms.load(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    save_file({**{k: v for k, v in w.items() if k != "b_enc"}, "W_gate": w["b_enc"]},
              str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(ModelLoadError, match=r"do not fit a 'topk' SAE \(missing b_enc; unexpected W_gate\)"):
        ms.load(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="not the object of an SAE config"):
        ms.load(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        ms.load(tmp_path / "s")
    shutil.copytree(FIX / "saelens" / "standard", tmp_path / "u")
    d = json.loads((tmp_path / "u" / "cfg.json").read_text())
    (tmp_path / "u" / "cfg.json").write_text(json.dumps({**d, "architecture": "temporal"}))
    with pytest.raises(ModelLoadError, match="SAELens architecture 'temporal' has no mechscope equivalent"):
        ms.load(tmp_path / "u")
    (tmp_path / "u" / "cfg.json").write_text(json.dumps({**d, "normalize_activations": "layer_norm"}))
    with pytest.raises(ModelLoadError, match="normalize_activations='layer_norm'"):
        ms.load(tmp_path / "u")
    (tmp_path / "u" / "cfg.json").write_text(json.dumps(d))
    (tmp_path / "u" / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        ms.load(tmp_path / "u")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "cfg.json").write_text(json.dumps({"hello": 1}))
    save_file({"a": torch.zeros(1)}, str(tmp_path / "w" / "sae_weights.safetensors"))
    with pytest.raises(ModelLoadError, match="cannot tell which format"):
        ms.load(tmp_path / "w")
    shutil.copytree(FIX / "sparsify" / "sae" / "layers.1", tmp_path / "g")
    d = json.loads((tmp_path / "g" / "cfg.json").read_text())
    (tmp_path / "g" / "cfg.json").write_text(json.dumps({**d, "activation": "groupmax"}))
    with pytest.raises(ModelLoadError, match="sparsify activation 'groupmax'"):
        ms.load(tmp_path / "g")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_info_and_convert(tmp_path):
    from typer.testing import CliRunner

    from mechscope.cli import app

    r = CliRunner().invoke(app, ["sae", "info", str(FIX / "sparsify" / "sae"), "--sae-id", "layers.1",
                                 "--json", str(tmp_path / "i.json")])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "i.json").read_text())
    assert (info["format"], info["architecture"], info["d_sae"], info["hook_name"]) == \
        ("sparsify", "topk", 16, "blocks.1.hook_resid_post")
    r = CliRunner().invoke(app, ["sae", "convert", str(FIX / "sparsify" / "sae" / "layers.1"), str(tmp_path / "o"),
                                 "--to", "saelens", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    assert ms.detect_format(tmp_path / "o") == "saelens"
    io = load_file(str(FIX / "sparsify" / "sae" / "layers.1" / "io.safetensors"))
    torch.testing.assert_close(ms.load(tmp_path / "o")(io["x"]), io["sae_out"], rtol=1e-5, atol=1e-5)
    r = CliRunner().invoke(app, ["sae", "info", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["sae", "convert", str(FIX / "saelens" / "transcoder"), str(tmp_path / "x"),
                                 "--to", "sparsify"])
    assert r.exit_code == 2 and "sparsify has only TopK" in r.output


def test_saelens_unfolded_normalisation_warns_and_sparsity_file_is_tolerated(tmp_path):
    import shutil

    shutil.copytree(FIX / "saelens" / "topk", tmp_path / "t")
    save_file({"sparsity": torch.zeros(16)}, str(tmp_path / "t" / "sparsity.safetensors"))
    d = json.loads((tmp_path / "t" / "cfg.json").read_text())
    (tmp_path / "t" / "cfg.json").write_text(json.dumps({**d, "normalize_activations": "expected_average_only_in"}))
    with pytest.warns(UserWarning, match="does not carry the scale"):
        sae = ms.load(tmp_path / "t")
    assert sae.cfg.normalize_activations == "expected_average_only_in"
    make("topk").save(tmp_path / "t")  # a SAELens folder with its sparsity file counts as an SAE folder
    assert ms.detect_format(tmp_path / "t") == "mechscope"


def test_saelens_release_names_resolve_through_its_table(monkeypatch, tmp_path):
    import shutil
    import sys
    import types

    import huggingface_hub

    root = tmp_path / "snap"
    shutil.copytree(FIX / "saelens", root)
    table = types.ModuleType("sae_lens.loading.pretrained_saes_directory")

    def get_repo_id_and_folder_name(release, sae_id):
        if release != "tiny-res":
            return release, sae_id
        if sae_id != "blocks.0.hook_resid_post":
            raise ValueError(f"SAE ID '{sae_id}' not found in release '{release}'")
        return "org/tiny-saes", "topk"

    table.get_repo_id_and_folder_name = get_repo_id_and_folder_name
    for name in ("sae_lens", "sae_lens.loading"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, table.__name__, table)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns=None, **k: calls.append((repo, allow_patterns)) or str(root))
    sae = SAE.from_pretrained("tiny-res", "blocks.0.hook_resid_post")
    assert calls == [("org/tiny-saes", ["topk/*"])] and sae.cfg.architecture == "topk"
    with pytest.raises(InputError, match="SAELens release 'tiny-res': SAE ID 'nope' not found"):
        ms.load("tiny-res", sae_id="nope")


def test_load_many_reads_a_run_folder_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        make("topk", seed=i).save(tmp_path / "run" / f"layers.{i}", format="sparsify")
    (tmp_path / "run" / "notes").mkdir()
    saes = ms.load_many(tmp_path / "run")
    assert list(saes) == ["layers.1", "layers.2", "layers.10"]
    assert saes["layers.10"].cfg.hook_name == "blocks.10.hook_resid_post"
    torch.testing.assert_close(saes["layers.2"](X), make("topk", seed=2)(X), rtol=1e-5, atol=1e-5)
    assert list(ms.load_many(tmp_path / "run", layers=["layers.2"])) == ["layers.2"]
    with pytest.raises(ModelLoadError, match="holds no SAE subfolders"):
        ms.load_many(tmp_path / "run" / "notes")
