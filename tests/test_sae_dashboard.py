"""SAE dashboards (mechscope.sae.dashboard): files written, pages drawn in headless Chromium with no console
errors, the index sorts and filters; and the `mechscope sae dashboard` command."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from typer.testing import CliRunner

import mechscope
from families import make_pair
from mechscope.errors import InputError
from mechscope.sae import SAE, SAEConfig, dashboard, latent_stats
from mechscope.sae.dashboard import latent_page_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def stats():
    model = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=24, architecture="topk", k=4, hook_name=HOOK), seed=0)
    toks = torch.randint(3, 128, (16, 12), generator=torch.Generator().manual_seed(0))
    toks[:, 0] = 1
    st = latent_stats(sae, model, toks, k=4, context=(3, 2), n_quantiles=3, samples_per_quantile=2)
    # token texts that would break a page that did not escape them
    st.vocab = [f"t{i}" for i in range(128)]
    st.vocab[int(st.top_tokens[0, 0, 3])] = "</script><b>x</b>&amp;\n"
    return st


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _open(driver, path):
    driver.get_log("browser")
    driver.get(path.as_uri())
    end = time.monotonic() + 5
    while not driver.execute_script("var r=document.getElementById('msd-root');"
                                    "return r && r.getAttribute('data-msd-rendered')==='1';"):
        assert time.monotonic() < end, "the page never finished drawing"
        time.sleep(0.02)
    return driver


def _no_errors(driver):
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def _css(driver, sel):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, sel)


def test_files_and_page_data(stats, tmp_path):
    index = dashboard(stats, tmp_path / "d", latents=[0, 3, 5])
    assert index == tmp_path / "d" / "index.html"
    assert sorted(p.name for p in (tmp_path / "d" / "latents").iterdir()) == ["0.html", "3.html", "5.html"]
    page = (tmp_path / "d" / "latents" / "0.html").read_text()
    assert "</script><b>" not in page  # token text is data, escaped inside the JSON
    d = latent_page_data(stats, 3, prev=0, next=5)
    assert d["latent"] == 3 and d["prev_href"] == "0.html" and d["next_href"] == "5.html"
    assert len(d["top"]) == int((stats.top_pos[3] >= 0).sum()) and len(d["quantiles"]) == 3
    assert sum(d["hist"]["counts"]) == int(stats.frequency[3])
    assert sum(q["n"] for q in d["quantiles"]) == int(stats.frequency[3])
    assert not list((tmp_path / "d").rglob("*.tmp"))
    with pytest.raises(InputError, match="was not analysed"):
        dashboard(stats.__class__.load(stats.save(tmp_path / "s")), tmp_path / "e", latents=[999])


def test_latent_page_in_a_browser(stats, browser, tmp_path):
    dashboard(stats, tmp_path)
    d = _open(browser, tmp_path / "latents" / "0.html")
    assert "Latent 0" in d.find_element("tag name", "h1").text
    rows = _css(d, ".msd-top .msd-ex")
    assert len(rows) == int((stats.top_pos[0] >= 0).sum()) > 0
    first = rows[0].find_elements("css selector", ".msd-tok")
    assert "</script><b>x</b>" in rows[0].text  # shown as text, not markup
    centre = rows[0].find_elements("css selector", ".msd-centre")
    assert len(centre) == 1 and float(centre[0].get_attribute("data-act")) == pytest.approx(float(stats.top_acts[0, 0]),
                                                                                            rel=1e-3)
    assert any("rgba(240, 140, 40" in t.get_attribute("style") for t in first)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).move_to_element(centre[0]).perform()
    tip = _css(d, ".msd-tip")[0]
    assert tip.is_displayed() and "act" in tip.text
    assert len(_css(d, ".msd-hist rect.bar")) >= 1
    assert len(_css(d, ".msd-logits")) == 2 and len(_css(d, ".msd-group")) == 3
    _no_errors(d)
    _css(d, ".msd-nav a")[-1].click()  # next latent
    assert "Latent 1" in d.find_element("tag name", "h1").text
    _no_errors(d)


def test_index_sorts_and_filters_in_a_browser(stats, browser, tmp_path):
    dashboard(stats, tmp_path, title="tiny SAE")
    d = _open(browser, tmp_path / "index.html")
    assert d.find_element("tag name", "h1").text == "tiny SAE"

    def column(i):
        return [r.find_elements("tag name", "td")[i].text for r in _css(d, "table.msd-index tbody tr")]

    assert len(column(0)) == len(stats)
    dens = [0.0 if s == "dead" else float(s.rstrip("%")) for s in column(1)]
    assert dens == sorted(dens, reverse=True)  # densest first by default
    _css(d, "th[data-col='2']")[0].click()
    maxes = [float(s) for s in column(2)]
    assert maxes == sorted(maxes, reverse=True)
    _css(d, "th[data-col='0']")[0].click()
    assert [int(s) for s in column(0)] == sorted(int(i) for i in stats.latents)
    _css(d, ".msd-filter")[0].send_keys("7")
    assert column(0) == ["7"] or all("7" in "".join(r.text) for r in _css(d, "table.msd-index tbody tr"))
    _no_errors(d)
    _css(d, "table.msd-index tbody a")[0].click()
    assert "Latent" in d.find_element("tag name", "h1").text
    _no_errors(d)


def test_cli_dashboard(tmp_path):
    from mechscope.cli import app
    from safetensors.torch import save_file

    hf = make_pair("llama", torch.float32)[0]
    model_dir = tmp_path / "model"
    hf.save_pretrained(model_dir)
    sae = SAE(SAEConfig(d_in=64, d_sae=16, architecture="topk", k=4, hook_name=HOOK), seed=0)
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    (sae_dir / "cfg.json").write_text(json.dumps(sae.cfg.to_dict()))
    save_file({n: p.detach().contiguous() for n, p in sae.state_dict().items()}, sae_dir / "sae_weights.safetensors")
    toks = torch.randint(3, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    import numpy as np

    np.save(tmp_path / "toks.npy", toks.numpy())
    r = CliRunner().invoke(app, ["sae", "dashboard", str(sae_dir), str(model_dir), "--data", str(tmp_path / "toks.npy"),
                                 "--latents", "0-3,7", "--out", str(tmp_path / "out"), "--json",
                                 str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out" / "latents").iterdir()) == [f"{i}.html" for i in (0, 1, 2, 3, 7)]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [x["latent"] for x in rep["latents"]] == [0, 1, 2, 3, 7] and rep["n_tokens"] == 8 * 16 - 0
    r = CliRunner().invoke(app, ["sae", "dashboard", str(sae_dir), str(model_dir), "--data", str(tmp_path / "toks.npy"),
                                 "--top-density", "3", "--out", str(tmp_path / "out2")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out2" / "latents").iterdir())) == 3
    r = CliRunner().invoke(app, ["sae", "dashboard", str(sae_dir), str(model_dir), "--data", str(tmp_path / "toks.npy"),
                                 "--latents", "0-99", "--out", str(tmp_path / "out3")])
    assert r.exit_code == 2 and "latent" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["sae", "dashboard", str(tmp_path / "empty"), str(model_dir), "--data",
                                 str(tmp_path / "toks.npy"), "--out", str(tmp_path / "out4")])
    assert r.exit_code == 2 and "cfg.json" in r.output, r.output
