"""The views of causal interventions: patching heatmaps (token columns, panels), PatchResult.view, the circuit graph
and line charts. Their data and errors without a browser, a patching sweep on tiny models of several families drawn
as it was computed, then each view in headless Chromium (rendered, hover text, no console errors). Screenshots of
each go to /tmp/views-shots/ for a person to look at."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import mechscope
from families import make_pair
from mechscope import views
from mechscope.errors import InputError, InputTypeError
from mechscope.patching import PatchResult, run_variants
from mechscope.views.charts import log_ticks, nice_ticks
from test_views import browser, css, hover, page, visible_tip  # noqa: F401  (fixtures and helpers)

IOI = ["<s>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John", " gave", " a",
       " drink", " to"]
SHOTS = Path("/tmp/views-shots")


def embedded(view: views.View) -> list[dict]:
    blobs = re.findall(r'<script type="application/json" class="msv-data">(.*?)</script>', view.html, re.S)
    return [json.loads(b) for b in blobs]


def four_digits(a) -> list:
    return np.vectorize(lambda v: float(f"{v:.4g}"))(np.asarray(a, dtype=np.float64)).tolist()


def tracing() -> views.View:
    """Causal tracing's three panels, [3, layer, pos], with the subject's tokens marked."""
    values = torch.randn(3, 6, len(IOI), generator=torch.Generator().manual_seed(0))
    return views.heatmaps(values, [f"L{i}" for i in range(6)], IOI, titles=["resid", "mlp", "attn"], tokens=True,
                          highlight_cols=[2, 4], title="causal tracing", value_name="restored")


def circuit(n_edges: int = 100) -> tuple[list[dict], list[dict]]:
    """A layered random circuit: input, 6 layers of 3 heads and an MLP, logits; edges only go up."""
    g = np.random.default_rng(0)
    nodes = [{"name": "input", "kind": "input"}]
    for layer in range(6):
        nodes += [{"name": f"a{layer}.h{h}", "layer": layer, "kind": "head"} for h in range(3)]
        nodes.append({"name": f"m{layer}", "layer": layer, "kind": "mlp", "score": float(g.normal())})
    nodes.append({"name": "logits", "kind": "logits"})
    rank = {n["name"]: (-1 if n["kind"] == "input" else 99 if n["kind"] == "logits" else
                        2 * n["layer"] + (n["kind"] == "mlp")) for n in nodes}
    edges, seen = [], set()
    while len(edges) < n_edges:
        s, t = (nodes[i]["name"] for i in g.choice(len(nodes), 2, replace=False))
        port = str(g.choice(["q", "k", "v"])) if t.startswith("a") else None
        if rank[s] < rank[t] and (s, t, port) not in seen:
            seen.add((s, t, port))
            edges.append({"source": s, "target": t, "score": float(g.normal()), "port": port,
                          "eap_ig": float(g.normal())})
    return nodes, edges


def small_graph() -> views.View:
    nodes = [{"name": "emb", "kind": "input"},
             {"name": "a0.h1", "layer": 0, "kind": "head", "score": 0.8, "prev_token": 0.93},
             {"name": "m0", "layer": 0, "kind": "mlp"}, {"name": "a1.h3", "layer": 1, "kind": "head"},
             {"name": "logits", "kind": "logits"}]
    edges = [{"source": "emb", "target": "a0.h1", "score": 0.25, "port": "v"},
             {"source": "a0.h1", "target": "a1.h3", "score": -1.5, "port": "k", "patching": -1.25},
             {"source": "emb", "target": "m0", "score": 0.1},
             {"source": "a0.h1", "target": "m0", "score": 0.5},
             {"source": "a1.h3", "target": "logits", "score": 2.0}]
    return views.circuit_graph(nodes, edges, title="induction", score_name="EAP-IG")


def faithfulness() -> views.View:
    return views.line_chart([1, 2, 5, 10, 20, 50, 100], [[0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0],
                                                          [0.05, 0.1, float("nan"), 0.5, 0.7, 0.85, 0.97]],
                            labels=["EAP", "EAP-IG"], title="faithfulness vs size", x_label="edges",
                            y_label="faithfulness", log_x=True)


# ------------------------------------------------------------------------------------------ data, no browser


def test_new_views_are_self_contained():
    for v in (tracing(), small_graph(), faithfulness()):
        assert not re.search(r"\b(src|href)\s*=", v.html) and "http://" not in v.html and "https://" not in v.html
        assert repr(v).startswith("<View: ")


def test_heatmaps_panels_share_labels_and_keep_their_own_scales():
    d = embedded(tracing())[0]
    assert d["kind"] == "heatmaps" and [p["title"] for p in d["panels"]] == ["resid", "mlp", "attn"]
    assert d["col_labels"][:3] == ["<s>", "When", "·Mary"] and d["tokens"] and d["highlight_cols"] == [2, 4]
    values = torch.randn(3, 6, len(IOI), generator=torch.Generator().manual_seed(0))
    for panel, grid in zip(d["panels"], values):
        assert panel["values"] == four_digits(grid)
        half = float(f"{grid.abs().max():.4g}")
        assert panel["scale"] == {"kind": "diverging", "lo": -half, "hi": half, "center": 0.0}  # each its own
    shared = embedded(views.heatmaps([np.ones((2, 2)), 3 * np.ones((2, 2))], ["a", "b"], ["c", "d"],
                                     shared_scale=True))[0]
    assert [p["scale"]["hi"] for p in shared["panels"]] == [3.0, 3.0] and shared["panels"][0]["title"] == "panel 0"
    one = embedded(views.heatmap(np.eye(2), ["L0", "L1"], ["", "\n"], tokens=True, highlight_rows=-1))[0]
    assert one["col_labels"] == ["∅", "⏎"] and one["highlight_rows"] == [1] and one["kind"] == "heatmap"
    assert one["tokens"] == "cols"
    meng = embedded(views.heatmap(np.eye(2), [" Paris", ""], ["L0", "L1"], tokens="rows"))[0]  # tokens down
    assert meng["row_labels"] == ["·Paris", "∅"] and meng["tokens"] == "rows" and meng["col_labels"] == ["L0", "L1"]


def test_heatmap_bad_input_is_a_sentence():
    g = torch.rand(2, 3)
    cases = [
        (lambda: views.heatmaps([g, torch.rand(3, 2)], None, None), InputError, "same shape"),
        (lambda: views.heatmaps(g, None, None), InputError, "3-D"),
        (lambda: views.heatmaps(torch.rand(2, 2, 3), None, None, titles=["a"]), InputError, "titles has 1"),
        (lambda: views.heatmaps(torch.rand(2, 2, 3), None, None, shared_scale="yes"), InputTypeError, "True or False"),
        (lambda: views.heatmap(g, None, ["a", "b"], tokens=True), InputError, "has 2 tokens but the values have 3"),
        (lambda: views.heatmap(g, None, [1, 2, 3], tokens=True), InputTypeError, "token strings"),
        (lambda: views.heatmap(g, None, None, highlight_cols=[3]), InputError, "index 3, but there are 3 columns"),
        (lambda: views.heatmap(g, None, None, tokens="pos"), InputTypeError, "'cols' or 'rows'"),
        (lambda: views.heatmap(g, ["a"], None, tokens="rows"), InputError, "row_labels has 1 tokens"),
        (lambda: views.heatmap(g, None, None, highlight_rows=["L0"]), InputTypeError, "integer indices"),
        (lambda: views.heatmap(g, None, None, highlight_rows="0"), InputTypeError, "list of indices"),
    ]
    for make, error, words in cases:
        with pytest.raises(error) as info:
            make()
        assert words in str(info.value), (words, str(info.value))


def test_patch_result_view_layouts():
    """Token columns wherever the result has positions; a small first axis as panels on one scale; the metric
    named in the title and the hover."""
    v = torch.randn(5, 2, len(IOI), 3)  # TransformerLens's get_act_patch_attn_head_by_pos_every: [5, layer, pos, head]
    r = PatchResult(v, ("act", "layer", "pos", "head"), {"act": ["z", "q", "k", "v", "pattern"], "pos": IOI},
                    metric="logit diff", title="heads by position")
    d = embedded(r.view())[0]
    assert d["kind"] == "heatmaps" and d["title"] == "heads by position (logit diff)"
    assert d["value_name"] == "logit diff"
    assert [p["title"] for p in d["panels"]] == ["z", "q", "k", "v", "pattern"]
    assert d["row_labels"] == ["L0 H0", "L0 H1", "L0 H2", "L1 H0", "L1 H1", "L1 H2"] and d["tokens"]
    assert d["col_labels"][2] == "·Mary" and d["shared_scale"]
    assert d["panels"][1]["values"] == four_digits(v[1].permute(0, 2, 1).reshape(6, len(IOI)))
    assert len({json.dumps(p["scale"]) for p in d["panels"]}) == 1

    r.baselines = {"clean": 5.3, "corrupted": -0.41234}  # the engine's field: the unpatched runs' metric
    assert embedded(r.view())[0]["title"] == "heads by position (logit diff) · clean 5.3, corrupted -0.4123"
    flat = embedded(PatchResult(torch.randn(6, 3, 4), ("layer", "head", "pos"), metric="prob").view())[0]
    assert flat["kind"] == "heatmap" and len(flat["row_labels"]) == 18 and flat["row_labels"][4] == "L1 H1"
    assert flat["title"] == "patching (prob)"
    heads = embedded(PatchResult(torch.randn(6, 3), ("layer", "head")).view("z patching: metric"))[0]
    assert heads["row_labels"][:2] == ["L0", "L1"] and heads["col_labels"] == ["H0", "H1", "H2"]
    assert heads["title"] == "z patching: metric" and not heads["tokens"]
    marked = embedded(PatchResult(torch.randn(2, 4), ("layer", "pos"), {"pos": list("abcd")}).view(
        highlight_cols=[1, 2]))[0]
    assert marked["highlight_cols"] == [1, 2] and marked["tokens"]
    with pytest.raises(InputError, match="has no heatmap"):
        PatchResult(torch.randn(6, 2, 2, 2), ("layer", "head", "pos", "x")).view()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text", "olmo2"])
def test_patching_sweep_view_shows_what_was_computed(family):
    """TransformerLens's block_every layout ([3, layer, pos]: resid_pre, attn_out, mlp_out, each position patched
    from the clean run into the corrupted one, one run_with_hooks each) on a tiny model, drawn as three panels
    whose cells are the sweep's values; at layer 0 the residual stream of a position whose token the corruption
    left alone is the same in both runs, so patching it gives the corrupted metric exactly."""
    model = mechscope.Model.from_hf(make_pair(family, torch.float32)[0])
    clean, corrupted = torch.tensor([[1, 5, 9, 17, 5, 9]]), torch.tensor([[1, 7, 9, 17, 7, 9]])
    metric = lambda logits: logits[0, -1, 5] - logits[0, -1, 7]  # noqa: E731
    kinds = ["resid_pre", "attn_out", "mlp_out"]
    points = [[f"blocks.{layer}.hook_{k}" for layer in range(model.cfg.n_layers)] for k in kinds]
    _, cache = model.run_with_cache(clean, names_filter=lambda n: any(n in row for row in points))

    def restore(name, pos):
        def hook(act, hook):
            act = act.clone()
            act[:, pos] = cache[name][:, pos]
            return act
        return [(name, hook)]

    variants = [restore(name, pos) for row in points for name in row for pos in range(clean.shape[1])]
    values = torch.stack(run_variants(model, corrupted, variants, metric, method="loop"))
    values = values.reshape(3, model.cfg.n_layers, -1)
    with torch.no_grad():
        corrupted_metric = metric(model(corrupted))
    assert torch.equal(values[0, 0, [0, 2, 3, 5]], corrupted_metric.expand(4))
    tokens = [f"t{int(t)}" for t in corrupted[0]]
    d = embedded(PatchResult(values, ("act", "layer", "pos"), {"act": kinds, "pos": tokens},
                             metric="logit diff").view())[0]
    assert [p["title"] for p in d["panels"]] == kinds
    assert d["row_labels"] == [f"L{i}" for i in range(model.cfg.n_layers)]
    for panel, grid in zip(d["panels"], values):
        assert panel["values"] == four_digits(grid)


def test_circuit_graph_layout():
    nodes, edges = circuit()
    d = embedded(views.circuit_graph(nodes, edges))[0]
    placed = {n["name"]: n for n in d["nodes"]}
    assert placed["input"]["y"] == max(n["y"] for n in d["nodes"])  # the input at the bottom ...
    assert placed["logits"]["y"] == min(n["y"] for n in d["nodes"])  # ... the logits at the top
    for layer in range(6):  # one row per layer: its heads, then its MLP to their right (a little higher, as it
        row = [placed[f"a{layer}.h{h}"] for h in range(3)]  # reads them), all above the layer below
        mlp = placed[f"m{layer}"]
        assert len({n["y"] for n in row}) == 1 and max(n["x"] for n in row) < mlp["x"]
        assert row[0]["y"] - 96 < mlp["y"] < row[0]["y"] - mlp["h"]
        if layer:
            assert mlp["y"] < row[0]["y"] < placed[f"m{layer - 1}"]["y"] < placed[f"a{layer - 1}.h0"]["y"]
    boxes = sorted((n["y"], n["x"] - n["w"] / 2, n["x"] + n["w"] / 2) for n in d["nodes"])
    for (y0, _, r0), (y1, l1, _) in zip(boxes, boxes[1:]):
        assert y0 != y1 or r0 < l1  # no two nodes of a row overlap
    assert all(0 < n["x"] - n["w"] / 2 and n["x"] + n["w"] / 2 < d["width"] for n in d["nodes"])
    assert len(d["edges"]) == 100 and d["max_abs"] == max(abs(e["score"]) for e in d["edges"])
    assert [r["label"] for r in d["rows"]] == ["input"] + [f"layer {i}" for i in range(6)] + ["logits"]
    assert d["edges"][0]["extra"].keys() == {"eap_ig"}


def test_circuit_graph_orders_rows_to_remove_crossings():
    """Two chains given in crossing order (a0.h0 → a1.h1, a0.h1 → a1.h0): the barycentre sweeps uncross them."""
    nodes = [{"name": n, "layer": int(n[1]), "kind": "head"} for n in ("a0.h0", "a0.h1", "a1.h0", "a1.h1")]
    edges = [{"source": "a0.h0", "target": "a1.h1", "score": 1.0}, {"source": "a0.h1", "target": "a1.h0", "score": 1.0}]
    x = {n["name"]: n["x"] for n in embedded(views.circuit_graph(nodes, edges))[0]["nodes"]}
    assert (x["a0.h0"] < x["a0.h1"]) == (x["a1.h1"] < x["a1.h0"])


def test_circuit_graph_bad_input_is_a_sentence():
    a = {"name": "a", "layer": 0, "kind": "head"}
    b = {"name": "b", "layer": 1, "kind": "head"}
    c = {"name": "c", "layer": 1, "kind": "mlp"}
    e = lambda s, t, **k: {"source": s, "target": t, "score": 1.0, **k}  # noqa: E731
    cases = [
        ([a, b], [e("a", "x")], InputError, "target 'x', which is not a node"),
        ([a, dict(a)], [], InputError, "two nodes are named 'a'"),
        ([a, b, c], [e("a", "b"), e("b", "c"), e("c", "b")], InputError, "cycle (b → c → b)"),
        ([a], [e("a", "a")], InputError, "cycle (a → a)"),
        ([a, {"name": "z", "kind": "neuron", "layer": 0}], [], InputError, "kind 'neuron'; use one of"),
        ([a, {"name": "z", "kind": "mlp"}], [], InputError, "needs a 'layer'"),
        ([a, b], [e("a", "b", port="o")], InputError, "port 'o'"),
        ([a, c], [e("a", "c", port="v")], InputError, "enters 'c' (mlp) at port 'v'; only heads"),
        ([a, b], [e("a", "b"), e("a", "b")], InputError, "given twice"),
        ([a, b], [e("a", "b", port="q"), e("a", "b", port="k")], None, None),  # two ports: two edges
        ([a, c], [e("a", "c", port="in")], None, None),  # patching.graph's name for an MLP's one input
        ([a, {"name": "in", "kind": "input"}], [e("a", "in")], InputError, "enters the input"),
        ([a, {"name": "out", "kind": "logits"}], [e("out", "a")], InputError, "leaves the logits"),
        ([a, b], [{"source": "a", "target": "b", "score": float("nan")}], InputError, "must be finite"),
        ([a, b], [{"source": "a", "target": "b"}], InputError, "has no 'score'"),
        ([a, b], [{"source": "a", "target": "b", "score": "big"}], InputTypeError, "must be a number"),
        ([], [], InputError, "nodes is empty"),
        ("a", [], InputTypeError, "list of dicts"),
        ([a, b], [("a", "b")], InputTypeError, "edges[0] must be a dict"),
        ([{**a, "induction": "high"}], [], InputTypeError, "node 'a''s 'induction' must be a number"),
    ]
    for nodes, edges, error, words in cases:
        if error is None:
            views.circuit_graph(nodes, edges)
            continue
        with pytest.raises(error) as info:
            views.circuit_graph(nodes, edges)
        assert words in str(info.value), (words, str(info.value))


def test_line_chart_data_ticks_and_errors():
    d = embedded(faithfulness())[0]
    assert d["x_ticks"] == [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0] and d["y_ticks"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d["series"][1]["y"][2] is None and [s["label"] for s in d["series"]] == ["EAP", "EAP-IG"]
    assert nice_ticks(-0.3, 1.2) == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert nice_ticks(2.0, 2.0)[0] < 2.0 < nice_ticks(2.0, 2.0)[-1]
    assert log_ticks(3, 40) == [5.0, 10.0, 20.0]
    one = embedded(views.line_chart(torch.arange(4), torch.tensor([0.5, 1, 2, 4]), labels="loss"))[0]
    assert one["series"][0]["label"] == "loss" and one["x_range"] == [0.0, 3.0]
    shuffled = embedded(views.line_chart([3, 1, 2], [[30.0, 10.0, 20.0], [3.0, 1.0, 2.0]]))[0]
    assert shuffled["x"] == [1.0, 2.0, 3.0] and shuffled["series"][1]["y"] == [1.0, 2.0, 3.0]
    cases = [
        (lambda: views.line_chart([1, 2], [1.0, 2.0, 3.0]), InputError, "ys has 3 points per series but x has 2"),
        (lambda: views.line_chart([0, 1], [1.0, 2.0], log_x=True), InputError, "log_x needs every x > 0"),
        (lambda: views.line_chart([1, 2], [float("nan")] * 2), InputError, "no finite value"),
        (lambda: views.line_chart([1, float("nan")], [1.0, 2.0]), InputError, "finite number"),
        (lambda: views.line_chart([1, 2], [[1.0, 2.0]], labels=["a", "b"]), InputError, "labels has 2"),
        (lambda: views.line_chart([[1, 2]], [1.0, 2.0]), InputError, "x must be 1-D"),
    ]
    for make, error, words in cases:
        with pytest.raises(error) as info:
            make()
        assert words in str(info.value), (words, str(info.value))


# ------------------------------------------------------------------------------------------ in Chromium


def shot(driver, name: str) -> None:
    """A screenshot of the page for a person to look at (not compared by the tests)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(700, height), 3000))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1280, 1000)


@pytest.mark.browser
def test_heatmap_panels_render_and_respond(page):
    d = page(tracing())
    tables = css(d, "table.msv-heatmap")
    assert len(tables) == 3 and [t.text for t in css(d, ".msv-panel-title")] == ["resid", "mlp", "attn"]
    assert len(css(d, ".msv-legend")) == 3  # one scale each
    heads = css(d, "th.msv-colhead")
    assert heads[2].text == "2\n·Mary" and "msv-marked" in heads[2].get_attribute("class")
    assert len(css(d, "th.msv-colhead.msv-marked")) == 3 * 2
    cells = css(d, "td.msv-cell")
    assert len(cells) == 3 * 6 * len(IOI) and all(c.size["width"] > 0 for c in cells[:5])
    hover(d, cells[6 * len(IOI) + 3 * len(IOI) + 2])  # the mlp panel, L3 × position 2
    text = visible_tip(d)
    assert text.startswith("mlp: L3 × 2 “·Mary”") and "restored" in text and "resid" in text and "attn" in text
    focused = css(d, "td.msv-focus")
    assert len(focused) == 3  # the same cell outlined in every panel
    shot(d, "heatmaps_causal_tracing")


@pytest.mark.browser
def test_tokens_down_the_rows(page):
    """Meng et al.'s orientation: tokens down, layers across, the subject's rows marked."""
    values = torch.rand(3, len(IOI), 12, generator=torch.Generator().manual_seed(1))
    d = page(views.heatmaps(values, IOI, [str(i) for i in range(12)], titles=["resid", "mlp", "attn"],
                            tokens="rows", highlight_rows=[2, 4], title="causal trace"))
    heads = css(d, "th.msv-rowhead")
    assert heads[2].text == "2 ·Mary" and "msv-marked" in heads[2].get_attribute("class")
    hover(d, css(d, "td.msv-cell")[4 * 12 + 7])
    assert visible_tip(d).startswith("resid: 4 “·John” × 7")
    shot(d, "heatmaps_tokens_down")


@pytest.mark.browser
def test_patch_result_view_renders(page):
    r = PatchResult(torch.randn(6, 4, len(IOI)), ("layer", "head", "pos"), {"pos": IOI},
                    metric="normalised logit diff", title="z by position")
    d = page(r.view(highlight_cols=[2, 4, 10]))
    assert css(d, ".msv-title")[0].text == "z by position (normalised logit diff)"
    assert len(css(d, "tbody tr")) == 24 and css(d, "th.msv-rowhead")[5].text == "L1 H1"
    hover(d, css(d, "td.msv-cell")[5 * len(IOI) + 4])
    text = visible_tip(d)
    assert "L1 H1 × 4 “·John”" in text and "normalised logit diff" in text
    shot(d, "patch_result_flattened")
    r5 = PatchResult(torch.randn(5, 6, 4), ("act", "layer", "head"), {"act": ["z", "q", "k", "v", "pattern"]},
                     metric="logit diff", title="get_act_patch_attn_head_all_pos_every")
    d = page(r5.view())
    assert len(css(d, "table.msv-heatmap")) == 5 and len(css(d, ".msv-legend")) == 1  # one shared scale
    shot(d, "patch_result_panels")


@pytest.mark.browser
def test_circuit_graph_renders_and_responds(page):
    d = page(small_graph())
    assert len(css(d, "g.msv-node")) == 5 and len(css(d, "g.msv-edge")) == 5
    assert sorted(t.text for t in css(d, "text.msv-port")) == ["k", "v"]
    edge = css(d, 'g.msv-edge[data-edge="1"] path.msv-edge-hit')[0]
    # the pointer on the curve itself (the middle of its bounding box may lie off a curve)
    dx, dy = d.execute_script("""
        const p = arguments[0], pt = p.getPointAtLength(p.getTotalLength() / 2);
        const m = p.getScreenCTM(), b = p.getBoundingClientRect();
        return [pt.x * m.a + m.e - (b.left + b.width / 2), pt.y * m.d + m.f - (b.top + b.height / 2)];""", edge)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).move_to_element_with_offset(edge, int(dx), int(dy)).perform()
    text = visible_tip(d)
    assert text.splitlines()[0] == "a0.h1 → a1.h3 (k)" and "EAP-IG" in text and "-1.5" in text
    assert "patching" in text and "-1.25" in text
    ActionChains(d).click().perform()
    assert "msv-pinned" in css(d, 'g.msv-edge[data-edge="1"]')[0].get_attribute("class")
    assert "msv-dim" in css(d, "svg.msv-graph")[0].get_attribute("class")
    hover(d, css(d, 'g.msv-node[data-node="a0.h1"] rect')[0])
    text = visible_tip(d)
    assert text.splitlines()[0] == "a0.h1" and "head" in text and "0.8" in text and "1 / 2" in text
    assert "prev_token\n0.93" in text
    shot(d, "circuit_graph_small")
    big = page(views.circuit_graph(*circuit(), title="100 edges"))
    assert len(css(big, "g.msv-edge")) == 100
    shot(big, "circuit_graph_100_edges")


@pytest.mark.browser
def test_line_chart_renders_and_responds(page):
    d = page(faithfulness())
    lines = css(d, "path.msv-line")
    assert len(lines) == 2 and len(css(d, "circle.msv-point")) == 7 + 6
    assert lines[1].get_attribute("d").count("M") == 2  # the NaN leaves a gap
    assert [t.text for t in css(d, "text.msv-tick-x")] == ["1", "2", "5", "10", "20", "50", "100"]
    hover(d, css(d, 'circle.msv-point[data-series="0"][data-index="3"]')[0])
    text = visible_tip(d)
    assert text.splitlines()[0] == "edges = 10" and "EAP" in text and "0.6" in text and "0.5" in text
    assert css(d, 'circle.msv-point[data-series="0"][data-index="3"]')[0].get_attribute("r") == "5"
    shot(d, "line_chart")


@pytest.mark.browser
def test_report_of_patching_views_lays_out(page):
    """A page combining the new views (as the `patch` CLI writes one) with a heatmap of a long prompt: every figure
    renders, none overlaps the next, and a wide figure scrolls inside its own box instead of widening the page."""
    long = [f" tok{i}" for i in range(120)]
    wide = views.heatmap(torch.randn(30, 120), [f"L{i}" for i in range(30)], long, tokens=True,
                         title="layer × position, 120 tokens")
    d = page(views.report([tracing(), wide, small_graph(), faithfulness()], "patching report"))
    roots = css(d, ".msv-root[data-msv-rendered]")
    assert len(roots) == 4
    boxes = [r.rect for r in roots]
    for a, b in zip(boxes, boxes[1:]):
        assert a["y"] + a["height"] <= b["y"]
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    scroll = css(d, ".msv-scroll")[3]
    assert d.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", scroll)
    shot(d, "report")
