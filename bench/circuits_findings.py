"""Circuit-discovery findings (issue #7): the induction circuits of the embedded default model (mechscope's own tiny
GPT-2) and of TinyStories-656K by EAP, EAP-IG and exact edge patching, checked against the head detectors; IOI on
SmolLM2-135M by EAP and EAP-IG with faithfulness-vs-size curves and the heads in the circuit, compared with DLA's top
heads.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python bench/circuits_findings.py [--skip-smollm]

Writes bench/CIRCUITS.md and bench/circuits_findings.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

import mechscope
from mechscope.patching.tasks import induction_task, ioi_task
from mechscope.detectors import find_heads
from mechscope.patching import Graph, eap, faithfulness, faithfulness_curve

OUT = Path(__file__).parent
IMAGES = OUT.parent / "docs" / "images"
lines: list[str] = []
data: dict = {}


def picture(view, name: str) -> None:
    """Save a view as HTML under /tmp and a PNG under docs/images (needs views.circuit_graph / line_chart and
    Chromium; skipped with a line otherwise)."""
    try:
        from screenshot import screenshot

        html = Path("/tmp") / f"{name}.html"
        view().save(html)
        IMAGES.mkdir(parents=True, exist_ok=True)
        screenshot(html, IMAGES / f"{name}.png", width=1100, height=760)
        print(f"picture docs/images/{name}.png", flush=True)
    except Exception as e:  # a picture is a bonus: the numbers stand without it
        print(f"no picture {name}: {type(e).__name__}: {e}", flush=True)


def say(s: str = "") -> None:
    print(s, flush=True)
    lines.append(s)


def corr(a, b, valid) -> float:
    return float(torch.corrcoef(torch.stack([a[valid].double(), b[valid].double()]))[0, 1])


def rank_of(scores, edge: str) -> int:
    ordered = [e for e, _ in scores.top(scores.graph.n_edges)]
    return ordered.index(edge) + 1


TINYSTORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "TinyStories-656K"


def induction(name: str, title: str, tag: str) -> None:
    say(f"## Induction circuit of {title}\n")
    m = mechscope.load(name)
    heads = find_heads(m, detectors=("previous_token", "induction"))
    prev = heads.top("previous_token", 3)
    ind = heads.top("induction", 3)
    say(f"head detectors: previous-token {', '.join(f'L{l}H{h} {s:.2f}' for l, h, s in prev)}; "
        f"induction {', '.join(f'L{l}H{h} {s:.2f}' for l, h, s in ind)}\n")
    t = induction_task(m, n_seqs=8, seg_len=20)
    say(f"task: {t.description}\n")
    g = Graph(m)
    with torch.no_grad():
        m_clean, m_corr = float(t.metric(m(t.clean))), float(t.metric(m(t.corrupted)))
    if m_clean - m_corr < 1 or prev[0][0] >= ind[0][0]:
        say(f"metric clean {m_clean:.3f}, corrupted {m_corr:.3f}: this model does not do induction on repeated random "
            "tokens (nor do the detectors find a previous-token head before an induction head), so there is no "
            "induction circuit to recover here.\n")
        data[tag] = {"clean": m_clean, "corrupted": m_corr, "prev_token_heads": prev, "induction_heads": ind}
        return
    res = {}
    for method in ("eap", "eap-ig", "exact"):
        t0 = time.perf_counter()
        res[method] = eap(m, t.clean, t.corrupted, t.metric, method=method, ig_steps=5, graph=g)
        res[method].meta["seconds"] = time.perf_counter() - t0
    s = res["eap"]
    say(f"metric clean {s.clean:.3f}, corrupted {s.corrupted:.3f}; {g}\n")
    pl, ph = prev[0][:2]
    il, ih = ind[0][:2]
    k_recv = g.receivers[g.receivers_of(f"a{il}.h{ih}")[1]].name    # a{l}.h{h}<k>, or a{l}.kv{g}<k> under GQA
    k_edge = f"a{pl}.h{ph}->{k_recv}"
    say("| method | time (s) | Pearson r with exact | rank of " + k_edge + " | its score | top 5 edges |")
    say("|---|---|---|---|---|---|")
    for method, r in res.items():
        say(f"| {method} | {r.meta['seconds']:.1f} | {corr(r.scores, res['exact'].scores, g.valid):.3f} | "
            f"{rank_of(r, k_edge)} / {g.n_edges} | {r[k_edge]:+.3f} | "
            + ", ".join(f"{e} {v:+.2f}" for e, v in r.top(5)) + " |")
    top_k = [e for e, _ in res["exact"].top(g.n_edges) if e.startswith(f"a{pl}.h{ph}->a1.") and e.endswith("<k>")]
    ind_k = top_k[0].split("->")[1] if top_k else "a1.h0<k>"
    for method, r in res.items():
        say(f"{method}: a{pl}.h{ph}->{ind_k} rank {rank_of(r, f'a{pl}.h{ph}->{ind_k}')}, score "
            f"{r[f'a{pl}.h{ph}->{ind_k}']:+.3f}; a{pl}.h{ph}->m0<in> {r[f'a{pl}.h{ph}->m0<in>']:+.3f}; "
            f"m0->{ind_k} {r[f'm0->{ind_k}']:+.3f}; m0->{ind_k[:-3]}<v> {r[f'm0->{ind_k[:-3]}<v>']:+.3f}")
    say("")
    # where the previous-token head's output goes, and what feeds the induction head's key
    for method in ("eap", "exact"):
        r = res[method]
        into_k = sorted(((g.senders[si].name, float(r.scores[si, g.receiver_index(k_recv)]))
                         for si in range(g.n_senders) if g.valid[si, g.receiver_index(k_recv)]),
                        key=lambda x: -abs(x[1]))[:4]
        say(f"{method}: strongest edges into {k_recv}: " + ", ".join(f"{n} {v:+.3f}" for n, v in into_k))
    say("")
    sizes = [5, 10, 15, 20, 30, 50, 80, 110]
    say("faithfulness vs size (edges kept after pruning to input → logits paths):\n")
    say("| method | " + " | ".join(str(x) for x in sizes) + " |")
    say("|---|" + "---|" * len(sizes))
    curves = {}
    for method, r in res.items():
        c = faithfulness_curve(m, r, t.clean, t.corrupted, t.metric, sizes=sizes)
        curves[method] = c
        say(f"| {method} | " + " | ".join(f"{v:.3f} ({n})" for v, n in zip(c.values, c.n_edges)) + " |")
    say("")
    picture(lambda: curves["eap"].view(f"{tag} model, induction: faithfulness vs circuit size", curves["eap-ig"],
                                       curves["exact"]), f"circuit_{tag}_curve")
    curves = {k: c.to_dict() for k, c in curves.items()}
    for method in ("eap", "exact"):
        circ = res[method].extract(n_edges=20)
        f = faithfulness(m, circ, t.clean, t.corrupted, t.metric)
        say(f"{method} top-20 circuit: {circ.n_edges} edges, nodes {', '.join(circ.nodes)}; faithfulness {f:.3f}; "
            f"contains {k_edge}: {bool(circ.edges[g.sender_index(f'a{pl}.h{ph}'), g.receiver_index(k_recv)])}")
        if method == "exact":
            picture(lambda: circ.view(f"{tag} model, induction: exact top-20 circuit, faithfulness {f:.3f}"),
                    f"circuit_{tag}")
    say("")
    data[tag] = {"prev_token_heads": prev, "induction_heads": ind, "k_edge": k_edge,
                       "curves": curves,
                       **{m_: {"top": r.top(20), "seconds": r.meta["seconds"]} for m_, r in res.items()}}


def smollm() -> None:
    say("## IOI on SmolLM2-135M (30 layers × 9 heads, 3 kv heads)\n")
    m = mechscope.load("smollm2-135m")
    t = ioi_task(m, n=16)
    say(f"task: {t.description}\n")
    t0 = time.perf_counter()
    g = Graph(m)
    say(f"{g} (built and checked in {time.perf_counter() - t0:.1f} s)\n")
    res = {}
    for method in ("eap", "eap-ig"):
        t0 = time.perf_counter()
        res[method] = eap(m, t.clean, t.corrupted, t.metric, method=method, ig_steps=5, ig_batch=5, graph=g)
        res[method].meta["seconds"] = time.perf_counter() - t0
        say(f"{method}: {res[method].meta['seconds']:.1f} s; clean logit diff {res[method].clean:.3f}, corrupted "
            f"{res[method].corrupted:.3f}; top edges: " + ", ".join(f"{e} {v:+.3f}" for e, v in res[method].top(8)))
    say(f"\nPearson r of EAP and EAP-IG edge scores: {corr(res['eap'].scores, res['eap-ig'].scores, g.valid):.3f}")
    top_e = {e for e, _ in res["eap"].top(200)}
    top_i = {e for e, _ in res["eap-ig"].top(200)}
    say(f"overlap of their top-200 edges: {len(top_e & top_i)}\n")
    union = g.edge_mask(sorted({e for e, _ in res["eap"].top(25)} | {e for e, _ in res["eap-ig"].top(25)}))
    t0 = time.perf_counter()
    ex = eap(m, t.clean, t.corrupted, t.metric, method="exact", graph=g, edges=union)
    say(f"exact single-edge ablation of the {int(union.sum())} edges in either top-25 "
        f"({time.perf_counter() - t0:.0f} s): "
        + "; ".join(f"{k} Pearson r {corr(r.scores, ex.scores, union):.3f}, same sign "
                    f"{int(((r.scores[union] > 0) == (ex.scores[union] > 0)).sum())}/{int(union.sum())}"
                    for k, r in res.items()))
    say("edge: EAP / EAP-IG / exact: " + ", ".join(
        f"{e} {res['eap'][e]:+.2f}/{res['eap-ig'][e]:+.2f}/{ex[e]:+.2f}" for e, _ in res["eap-ig"].top(8)) + "\n")
    sizes = [20, 50, 100, 200, 500, 1000, 2000, 5000]
    say("faithfulness vs size (edges kept after pruning):\n")
    say("| method | " + " | ".join(str(x) for x in sizes) + " |")
    say("|---|" + "---|" * len(sizes))
    curves = {}
    for method, r in res.items():
        t0 = time.perf_counter()
        c = faithfulness_curve(m, r, t.clean, t.corrupted, t.metric, sizes=sizes)
        curves[method] = c
        say(f"| {method} | " + " | ".join(f"{v:.3f} ({n})" for v, n in zip(c.values, c.n_edges)) + " |")
        print(f"curve {method}: {time.perf_counter() - t0:.1f} s", flush=True)
    say("")
    picture(lambda: curves["eap"].view("SmolLM2-135M, IOI: faithfulness vs circuit size", curves["eap-ig"]),
            "circuit_smollm2_curve")
    curves = {k: c.to_dict() for k, c in curves.items()}
    for method, r in res.items():
        circ = r.extract(n_edges=500)
        heads = [n for n in circ.nodes if n.startswith("a")]
        to_logits = sorted(((g.senders[si].name, float(r.scores[si, -1])) for si in range(g.n_senders)),
                           key=lambda x: -abs(x[1]))[:6]
        say(f"{method} top-500 circuit: {circ.n_edges} edges, {len(circ.nodes)} nodes, {len(heads)} heads; "
            f"L23H3 in it: {'a23.h3' in circ.nodes}, L29H1 in it: {'a29.h1' in circ.nodes}; "
            f"strongest edges into the logits: " + ", ".join(f"{n} {v:+.3f}" for n, v in to_logits))
        node = sorted(((n, v) for n, v in r.node_scores().items() if n.startswith("a")), key=lambda x: -abs(x[1]))[:10]
        say("  heads by summed outgoing score: " + ", ".join(f"{n} {v:+.3f}" for n, v in node))
    small = res["eap-ig"].extract(n_edges=60)
    fs = faithfulness(m, small, t.clean, t.corrupted, t.metric)
    say(f"eap-ig top-60 circuit: {small.n_edges} edges, faithfulness {fs:.3f}, heads "
        + ", ".join(n for n in small.nodes if n.startswith("a")))
    picture(lambda: small.view(f"SmolLM2-135M, IOI: EAP-IG top-60 circuit, faithfulness {fs:.3f}"),
            "circuit_smollm2")
    data["smollm2"] = {"curves": curves, **{m_: {"top": r.top(30), "seconds": r.meta["seconds"]}
                                             for m_, r in res.items()}}


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    t_all = time.perf_counter()
    say("# Circuit discovery findings (bench/circuits_findings.py)\n")
    induction("default", "the embedded default model (mechscope's tiny GPT-2: 2 layers × 4 heads, d_model 128)",
              "default")
    if TINYSTORIES.exists():
        induction(str(TINYSTORIES), "TinyStories-656K (Llama: 2 layers × 8 heads, 4 kv heads, d_model 128)",
                  "tinystories")
    if "--skip-smollm" not in sys.argv:
        smollm()
    say(f"\ntotal {time.perf_counter() - t_all:.0f} s on CPU ({torch.get_num_threads()} thread(s)).")
    (OUT / "CIRCUITS.md").write_text("\n".join(lines) + "\n")
    (OUT / "circuits_findings.json").write_text(json.dumps(data, indent=1, default=float))
