"""The views: their HTML and data without a browser, then each view opened in a real headless Chromium (rendered,
responding to a hover, no console errors). The browser tests skip with the reason when Chromium, chromedriver or
selenium is missing (`make test` installs Chromium on Debian when run as root)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mechscope
from families import make_pair
from mechscope import views
from mechscope.errors import InputError, InputTypeError
from mechscope.views.data import color_scale, display_token, pack_pattern, unpack_pattern

IOI = ["<s>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John", " gave", " a",
       " drink", " to"]
NASTY = ["<s>", "<script>alert(1)</script>", " a&b", "\n", "\t", "", "</script><b>x"]


def causal_pattern(*lead: int, n: int, seed: int = 0) -> torch.Tensor:
    """Softmax attention of random scores under a causal mask: (*lead, n, n)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*lead, n, n, generator=g) * 2
    return scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf")).softmax(-1)


def embedded(view: views.View) -> list[dict]:
    """The data each figure of the view embeds, parsed back from its HTML."""
    blobs = re.findall(r'<script type="application/json" class="msv-data">(.*?)</script>', view.html, re.S)
    return [json.loads(b) for b in blobs]


def all_views() -> dict[str, views.View]:
    lens_extra = {"top_k_tokens": [[[f" c{k}" for k in range(3)] for _ in IOI] for _ in range(4)],
                  "top_k_probs": torch.rand(4, len(IOI), 3).sort(-1, descending=True).values, "kl": torch.rand(4, len(IOI))}
    values = torch.randn(6, 9)
    values[2] = float("nan")  # a hybrid's non-attention layer
    return {
        "attention": views.attention_patterns(IOI, causal_pattern(3, 4, n=len(IOI)), title="attention"),
        "token_colors": views.token_colors(NASTY, torch.randn(2, len(NASTY)), labels=["ig", "saliency"]),
        "lens_table": views.lens_table(IOI, [[f" top{l}" for _ in IOI] for l in range(4)], torch.rand(4, len(IOI)),
                                       extra=lens_extra),
        "heatmap": views.heatmap(values, [f"L{i}" for i in range(6)], [f"H{j}" for j in range(9)]),
    }


# ------------------------------------------------------------------------------------------ HTML and data


def test_fragment_is_self_contained_and_offline():
    for name, v in all_views().items():
        html = v.html
        assert "<style>" in html and "window.mechscopeViews" in html, name
        assert not re.search(r"\b(src|href)\s*=", html), f"{name} loads something from outside the fragment"
        assert "http://" not in html and "https://" not in html, name
        assert v._repr_html_().count('class="msv-root" id=') == 1


def test_tokens_are_escaped_and_whitespace_visible():
    v = views.token_colors(NASTY, np.arange(len(NASTY), dtype=float))
    html = v.html
    assert "<script>alert" not in html and "</script><b>" not in html and "<b>x" not in html
    assert embedded(v)[0]["tokens"] == ["<s>", "<script>alert(1)</script>", "·a&b", "⏎", "⇥", "∅", "</script><b>x"]
    assert embedded(v)[0]["breaks"] == [3]
    assert display_token(" the\r\x00\u200b") == "·the␍\\x00\\u200b"
    assert views.heatmap([[1.0]], ["layer 0"], [" John"]).figures[0].data["col_labels"] == ["·John"]
    assert views.heatmap([[1.0]], ["layer 0"], [" John"]).figures[0].data["row_labels"] == ["layer 0"]


def test_numbers_keep_four_digits_and_non_finite_is_blank():
    d = embedded(views.token_colors(["a", "b", "c", "d"], [0.123456789, float("nan"), float("inf"), -1234567.0]))[0]
    assert d["rows"][0]["values"] == [0.1235, None, None, -1235000.0]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):  # tensors of any float dtype, arrays and lists
        d = embedded(views.token_colors(["a", "b"], torch.tensor([0.5, -0.25], dtype=dtype)))[0]
        assert d["rows"][0]["values"] == [0.5, -0.25]
    assert embedded(views.heatmap(np.eye(2), ["a", "b"], ["c", "d"]))[0]["values"] == [[1.0, 0.0], [0.0, 1.0]]


def test_color_scales():
    seq = color_scale(np.array([0.0, 2.0, 1.0]))
    assert (seq.kind, seq.lo, seq.hi) == ("sequential", 0.0, 2.0)
    div = color_scale(np.array([-1.0, 3.0]))
    assert (div.kind, div.lo, div.hi, div.center) == ("diverging", -3.0, 3.0, 0.0)
    centred = color_scale(np.array([0.5, 0.7]), center=0.5)
    assert (centred.kind, centred.lo, centred.hi) == ("diverging", 0.3, 0.7)
    assert color_scale(np.array([np.nan])).kind == "sequential"  # all blank: any scale will do
    rows = embedded(views.token_colors(["a", "b"], [[1.0, 2.0], [-10.0, 10.0]], labels=["x", "y"]))[0]["rows"]
    assert [r["scale"]["hi"] for r in rows] == [2.0, 10.0]  # one scale per row by default ...
    rows = embedded(views.token_colors(["a", "b"], [[1.0, 2.0], [-10.0, 10.0]], shared_scale=True))[0]["rows"]
    assert [r["scale"]["hi"] for r in rows] == [10.0, 10.0]  # ... or shared


def test_attention_packing_round_trips_within_its_precision():
    p = causal_pattern(2, 3, n=11).double()
    p[1, 2] = float("nan")  # a layer/head without attention is drawn blank
    packed = pack_pattern(p.numpy())
    assert packed.causal and packed.decimals == 4
    back = unpack_pattern(packed, 2, 3, 11)
    lower = torch.tril(torch.ones(11, 11, dtype=torch.bool)).numpy()
    assert np.isnan(back[1, 2]).all() and np.isnan(back[..., ~lower]).all()
    np.testing.assert_allclose(back[:, :2][..., lower], p[:, :2].numpy()[..., lower], atol=0.5 / 65534)
    np.testing.assert_allclose(back[0, 2][lower], p[0, 2].numpy()[lower], atol=0.5 / 65534)
    full = torch.rand(1, 2, 5, 5).numpy()  # a bidirectional pattern keeps its upper triangle
    packed = pack_pattern(full)
    assert not packed.causal
    np.testing.assert_allclose(unpack_pattern(packed, 1, 2, 5), full, atol=0.5 / 65534)


def test_attention_view_layout():
    d = embedded(views.attention_patterns(IOI, causal_pattern(4, n=len(IOI)), head_labels=list("abcd")))[0]
    assert d["layer_labels"] is None and d["head_labels"] == list("abcd") and d["causal"]
    d = embedded(views.attention_patterns(IOI, causal_pattern(2, 4, n=len(IOI)).numpy(), layer_labels=["x", "y"]))[0]
    assert d["layer_labels"] == ["x", "y"] and d["head_labels"] == ["H0", "H1", "H2", "H3"]
    assert d["scale"] == {"kind": "sequential", "lo": 0.0, "hi": 1.0, "center": 0.0}


def test_attention_html_size_for_a_real_model_shape():
    """30 layers x 9 heads x 64 tokens (SmolLM2-135M): about 1.5 MB, kept well under a few MB."""
    size = len(views.attention_patterns([f"t{i}" for i in range(64)], causal_pattern(30, 9, n=64)).html.encode())
    assert size < 2.5 * 2**20, size


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text", "olmo2"])
def test_attention_view_of_a_model_cache(family):
    """The view embeds what the model computed: its cached patterns, every layer, to the packing's precision."""
    model = mechscope.Model.from_hf(make_pair(family, torch.float32)[0])
    tokens = torch.tensor([[1, 5, 9, 17, 5, 9, 17, 33]])
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])
    view = views.attention_patterns([f"t{int(t)}" for t in tokens[0]], pattern)
    d = embedded(view)[0]
    assert d["causal"] and len(d["layer_labels"]) == model.cfg.n_layers and d["n_heads"] == model.cfg.n_heads
    packed = mechscope.views.data.PackedPattern(d["packed"], d["causal"], d["lo"], d["hi"], d["decimals"])
    back = unpack_pattern(packed, model.cfg.n_layers, model.cfg.n_heads, 8)
    lower = torch.tril(torch.ones(8, 8, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(back[..., lower], pattern.numpy()[..., lower], atol=0.5 / 65534)


def test_bad_input_is_a_sentence():
    pat = causal_pattern(2, n=4)
    cases = [
        (lambda: views.attention_patterns(["a", "b", "c"], pat), InputError, "tokens has 3 entries but pattern has 4"),
        (lambda: views.attention_patterns("abcd", pat), InputTypeError, "list of strings"),
        (lambda: views.attention_patterns(torch.arange(4), pat), InputTypeError, "model.to_str_tokens"),
        (lambda: views.attention_patterns(list("abcd"), torch.rand(2, 4, 3)), InputError, "square"),
        (lambda: views.attention_patterns(list("abcd"), torch.rand(4, 4)), InputError, "3-D or 4-D"),
        (lambda: views.attention_patterns(list("abcd"), pat, head_labels=["x"]), InputError, "head_labels has 1"),
        (lambda: views.attention_patterns(list("abcd"), pat, layer_labels=["x"]), InputError, "4-D pattern"),
        (lambda: views.token_colors(list("abc"), [1.0, 2.0]), InputError, "tokens has 3 entries but values has 2"),
        (lambda: views.token_colors(list("ab"), [["x", "y"]]), InputTypeError, "numbers"),
        (lambda: views.token_colors(list("ab"), [[1.0, 2.0], [3.0]]), InputTypeError, "rectangular"),
        (lambda: views.token_colors(list("ab"), torch.rand(2, 2), labels=["only one"]), InputError, "labels has 1"),
        (lambda: views.token_colors([], []), InputError, "empty"),
        (lambda: views.lens_table(list("ab"), [["x", "y"]], torch.rand(1, 3)), InputError, "tokens has 2 entries"),
        (lambda: views.lens_table(list("ab"), [["x"]], torch.rand(1, 2)), InputError, "top_tokens[0] has 1 entries"),
        (lambda: views.lens_table(list("ab"), [[1, 2]], torch.rand(1, 2)), InputTypeError, "token string"),
        (lambda: views.lens_table(list("ab"), [["x", "y"]], torch.rand(1, 2), extra={"kl": torch.rand(2, 2)}),
         InputError, "extra['kl'] must be [layer, pos] = [1, 2]"),
        (lambda: views.lens_table(list("ab"), [["x", "y"]], torch.rand(1, 2), extra={"top_k_probs": torch.rand(1, 2, 3)}),
         InputError, "both 'top_k_tokens' and 'top_k_probs'"),
        (lambda: views.lens_table(list("ab"), [["x", "y"]], torch.rand(1, 2), extra=[1]), InputTypeError, "dict"),
        (lambda: views.heatmap(torch.rand(2, 3), ["a", "b"], ["c"]), InputError, "col_labels has 1 entries"),
        (lambda: views.heatmap(torch.rand(2, 3), "ab", list("cde")), InputTypeError, "row_labels must be a list"),
        (lambda: views.report([views.heatmap([[1.0]], ["a"], ["b"]), "x"]), InputTypeError, "item 1"),
    ]
    for make, error, words in cases:
        with pytest.raises(error) as info:
            make()
        assert words in str(info.value), (words, str(info.value))


def test_unique_ids_add_and_report():
    a, b = all_views()["heatmap"], all_views()["token_colors"]
    ids = lambda html: re.findall(r'class="msv-root" id="([^"]+)"', html)  # noqa: E731
    assert ids(a.html) == ids(a.html)  # stable for one object
    assert set(ids(a._repr_html_())).isdisjoint(ids(a._repr_html_()))  # fresh each time it is displayed
    both = a + b
    assert [f.kind for f in both.figures] == ["heatmap", "token_colors"] and len(set(ids(both.html))) == 2
    assert [f.kind for f in sum([a, b, a]).figures] == ["heatmap", "token_colors", "heatmap"]
    page = views.report([a, b, a], "My <report>")
    assert page.html.count("window.mechscopeViews = ") == 1  # the renderer is inlined once per fragment
    assert "My &lt;report&gt;" in page.html and len(set(ids(page.html))) == 3
    assert "View 'My <report>'" in repr(page) and "heatmap 6 × 9" in repr(page)


def test_save_writes_one_file_atomically(tmp_path):
    v = all_views()["attention"]
    out = v.save(tmp_path / "attn.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>attention</title>" in text and v.html in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn.html"]  # no temporary file left behind
    with pytest.raises(InputError, match="does not exist; create it first"):
        v.save(tmp_path / "missing" / "x.html")
    with pytest.raises(InputError, match="it is a folder"):
        v.save(tmp_path)
    with pytest.raises(InputTypeError, match="file path"):
        v.save(3)


# ------------------------------------------------------------------------------------------ in Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, driven through the system chromedriver (never selenium-manager)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (as root on Debian: `make test`, or "
                    "apt-get install chromium chromium-driver)")
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


@pytest.fixture
def page(browser, tmp_path):
    """Open a view saved to a file; after the test, the console must hold no errors."""
    def open_view(view: views.View):
        path = view.save(tmp_path / "view.html")
        browser.get(path.as_uri())
        wait_for(browser, "return document.querySelectorAll('.msv-root:not([data-msv-rendered])').length === 0")
        return browser

    browser.get_log("browser")  # drop what earlier tests logged
    yield open_view
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def wait_for(driver, script: str, timeout: float = 5.0):
    end = time.monotonic() + timeout
    while not driver.execute_script(script):
        assert time.monotonic() < end, f"timed out waiting for: {script}"
        time.sleep(0.02)


def hover(driver, element):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def visible_tip(driver) -> str:
    tip = css(driver, ".msv-tip")[0]
    assert tip.is_displayed()
    return tip.text



@pytest.mark.browser
def test_attention_renders_and_responds(page):
    d = page(views.attention_patterns(IOI, causal_pattern(3, 4, n=len(IOI)), title="attention"))
    heads = css(d, ".msv-head")
    assert len(heads) == 4 and all(h.size["width"] > 0 for h in heads)
    big = css(d, "canvas.msv-pattern")[0]
    assert big.size["width"] > 200 and big.size["height"] > 200
    tokens = css(d, ".msv-attn-tokens .msv-tok")
    assert [t.text for t in tokens][:3] == ["<s>", "When", "·Mary"]
    assert all(t.value_of_css_property("background-color") == "rgba(0, 0, 0, 0)" for t in tokens)
    hover(d, tokens[10])  # " John": earlier tokens coloured by its row, later ones by its column
    assert "attends to itself" in visible_tip(d)
    coloured = [t.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)" for t in tokens]
    assert all(coloured), coloured
    row, col = tokens[4].value_of_css_property("background-color"), tokens[12].value_of_css_property("background-color")
    assert row != col  # blue for what it attends to, orange for what attends to it
    title = css(d, ".msv-head-title")[0]
    assert title.text == "L0 H0"
    hover(d, heads[2])
    assert title.text.startswith("L0 H2")
    heads[2].click()
    assert "msv-pinned" in heads[2].get_attribute("class")
    from selenium.webdriver.support.ui import Select

    Select(css(d, "select.msv-layer")[0]).select_by_value("2")
    assert title.text == "L2 H2"
    hover(d, big)  # the centre of the pattern: a cell's weight
    assert "attention" in visible_tip(d)


@pytest.mark.browser
def test_token_colors_render_and_respond(page):
    d = page(views.token_colors(NASTY, [[1.0, -2.0, 0.5, 0.0, 3.0, float("nan"), -1.0],
                                        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]], labels=["ig", "saliency"]))
    spans = css(d, ".msv-tok")
    assert len(spans) == 2 * len(NASTY) and all(s.size["width"] > 0 for s in spans)
    assert spans[1].text == "<script>alert(1)</script>" and spans[6].text == "</script><b>x"
    assert d.execute_script("return document.querySelectorAll('.msv-root b').length") == 0  # nothing injected
    assert len(css(d, ".msv-trows br")) == 2  # the newline token wraps the text, in each row
    assert spans[5].value_of_css_property("background-color") == "rgba(0, 0, 0, 0)"  # NaN: blank
    assert spans[0].value_of_css_property("background-color") != spans[1].value_of_css_property("background-color")
    hover(d, spans[1])
    text = visible_tip(d)
    assert "ig" in text and "-2" in text and "saliency" in text and "0.2" in text
    assert "msv-focus" in spans[len(NASTY) + 1].get_attribute("class")  # the same position in the other row


@pytest.mark.browser
def test_lens_table_renders_and_responds(page):
    d = page(all_views()["lens_table"])
    cells = css(d, "td.msv-cell")
    assert len(cells) == 4 * len(IOI) and cells[0].size["height"] > 0 and cells[0].text == "·top0"
    hover(d, cells[len(IOI) + 2])
    text = visible_tip(d)
    assert "layer 1 · position 2" in text and "·c0" in text and "kl" in text
    assert "msv-hot" in css(d, "th.msv-colhead")[2].get_attribute("class")


@pytest.mark.browser
def test_heatmap_renders_and_responds(page):
    d = page(all_views()["heatmap"])
    cells = css(d, "td.msv-cell")
    assert len(cells) == 6 * 9 and cells[0].size["width"] > 0
    assert cells[2 * 9].value_of_css_property("background-color") == "rgba(0, 0, 0, 0)"  # the NaN row is blank
    hover(d, cells[2 * 9 + 4])
    assert "blank" in visible_tip(d)
    hover(d, cells[9 + 4])
    text = visible_tip(d)
    assert "L1" in text and "H4" in text and "value" in text


@pytest.mark.browser
def test_report_and_notebook_style_insertion(page, browser):
    """A saved report renders all its views; fragments inserted the way notebook front ends do (innerHTML, then
    the scripts re-created so they run), the same view twice, render independently."""
    parts = all_views()
    d = page(views.report(list(parts.values()), "all views"))
    assert len(css(d, ".msv-root[data-msv-rendered]")) == 4
    fragments = [parts["heatmap"]._repr_html_(), parts["heatmap"]._repr_html_(), parts["attention"]._repr_html_()]
    d.execute_script("""
        document.body.innerHTML = "";
        for (const html of arguments[0]) {
          const cell = document.createElement("div");
          cell.innerHTML = html;
          document.body.appendChild(cell);
          for (const old of cell.querySelectorAll("script:not([type])")) {
            const s = document.createElement("script");
            s.textContent = old.textContent;
            old.replaceWith(s);
          }
        }""", fragments)
    wait_for(d, "return document.querySelectorAll('.msv-root[data-msv-rendered]').length === 3")
    assert len(css(d, "table.msv-heatmap")) == 2 and len(css(d, "canvas.msv-pattern")) == 1


@pytest.mark.real_models
@pytest.mark.browser
def test_real_model_attention_view(page):
    """Every layer and head of SmolLM2-135M on 64 tokens of wikitext: a few MB, renders, switches layers."""
    from mechscope.zoo import MODELS

    if not MODELS["smollm2-135m"].installed():
        pytest.skip(f"smollm2-135m needs its package: {MODELS['smollm2-135m'].pip}")
    model = mechscope.load("smollm2-135m")
    text = (Path(__file__).resolve().parents[2] / "shared/data/wikitext-2-raw-test/wiki.test.raw")
    prompt = text.read_text(encoding="utf-8")[:2000] if text.is_file() else " ".join(["the cat sat on the mat"] * 30)
    tokens = model.to_tokens(prompt)[:, :64]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])  # (30, 9, 64, 64)
    view = views.attention_patterns(model.to_str_tokens(tokens[0]), pattern)
    assert len(view.html.encode()) < 2.5 * 2**20
    d = page(view)
    from selenium.webdriver.support.ui import Select

    Select(css(d, "select.msv-layer")[0]).select_by_value("29")
    hover(d, css(d, ".msv-attn-tokens .msv-tok")[40])
    assert "L29 H0" in visible_tip(d)



@pytest.mark.browser
def test_attention_view_opens_on_the_chosen_head(page):
    d = page(views.attention_patterns(IOI, causal_pattern(3, 4, n=len(IOI)), layer=1, head=3))
    assert css(d, ".msv-head-title")[0].text == "L1 H3"
    assert css(d, "select.msv-layer")[0].get_attribute("value") == "1"
    with pytest.raises(InputError, match="head"):
        views.attention_patterns(IOI, causal_pattern(3, 4, n=len(IOI)), head=4)


@pytest.mark.browser
def test_demo_report_renders(page):
    """The page `mechscope demo` writes: every view renders, hovering works, no console errors."""
    import io

    from rich.console import Console

    from mechscope.demo import report

    r = report(mechscope.load("default"), Console(file=io.StringIO()))
    d = page(views.report(r["views"], "mechscope demo"))
    assert len(css(d, ".msv-root[data-msv-rendered]")) == len(r["views"]) == 5
    hover(d, css(d, ".msv-attn-tokens .msv-tok")[5])
    assert visible_tip(d)
