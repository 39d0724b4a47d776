"""The main job, ``mechscope demo``: a compact report of what is inside a model.

:func:`report` looks inside any model (the embedded default model by default); :func:`real_model_report`
adds what a real pretrained model (SmolLM2-135M, when its package is installed) does on a factual prompt, an
indirect-object prompt and repeated random tokens: its predictions, induction heads, what each layer predicts
(logit lens), which tokens the answer depends on (integrated gradients) and which heads write it (direct logit
attribution). Each report also returns interactive views (``"views"``) that ``mechscope demo`` saves as one HTML
page.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from . import views
from .patching.result import PatchResult
from .attribution import Attribution, attribute
from .default_model import METADATA_FILE, make_repeated_tokens
from .detectors import head_scores
from .dla import direct_logit_attribution
from .lens import logit_lens
from .model import Model

PROMPTS = ("the cat sat on the", "i saw one two three", "she gave the dog a red ball . the dog")
REAL_PROMPTS = ("The capital of France is", "When Mary and John went to the store, John gave a drink to")
"""A factual-recall prompt and an indirect-object-identification (IOI) prompt (Wang et al. 2022)."""


def _per_position_loss(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """(pos - 1,) mean next-token loss at each position over the batch."""
    logits = model(tokens).float()
    logp = logits[:, :-1].log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0].mean(0)


def _heads_table(title: str, scores: torch.Tensor, top: int = 3) -> Table:
    t = Table(title=title)
    t.add_column("layer")
    for h in range(scores.shape[1]):
        t.add_column(f"h{h}", justify="right")
    best = set(scores.flatten().topk(top).indices.tolist())
    for layer, row in enumerate(scores.tolist()):
        cells = []
        for h, s in enumerate(row):
            cell = f"{s:.2f}"
            cells.append(f"[bold green]{cell}[/bold green]" if layer * scores.shape[1] + h in best and s > 0.3 else cell)
        t.add_row(str(layer), *cells)
    return t


def _top(model: Model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt``, with their probabilities."""
    probs = model(prompt)[0, -1].float().softmax(-1)
    top = probs.topk(k)
    return [(model.to_string([i]), p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def _repeat_losses(model: Model, tokens: torch.Tensor, seg_len: int) -> tuple[float, float]:
    """Mean loss on the first and second copy of ``BOS + segment + segment`` tokens (batch, 1 + 2 * seg_len)."""
    loss = _per_position_loss(model, tokens)
    return loss[:seg_len].mean().item(), loss[seg_len:].mean().item()


@torch.no_grad()  # not inference_mode: integrated gradients turns gradients back on
def report(model: Model, console: Console, *, name: str = "default", seg_len: int = 20) -> dict:
    """Print the report; return its numbers (for tests and scripts)."""
    cfg = model.cfg
    console.rule(f"[bold]mechscope demo: {name}")
    console.print(f"{cfg.family}, {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
                  f"d_vocab {cfg.d_vocab}, {len(model.hook_dict)} hook points")
    meta = Path(getattr(model.hf_model, "name_or_path", "")) / METADATA_FILE
    if meta.is_file():
        rep = json.loads(meta.read_text()).get("report", {})
        if rep:
            console.print(f"trained by mechscope in {rep.get('seconds', 0):.0f} s, {rep.get('steps')} steps, "
                          f"final loss {rep.get('final_loss', 0):.2f}")

    preds = Table(title="next-token predictions")
    preds.add_column("prompt")
    preds.add_column("top 5 (probability)")
    for prompt in PROMPTS:
        preds.add_row(prompt, "  ".join(f"{t.strip()!r} {p:.2f}" for t, p in _top(model, prompt)))
    console.print(preds)

    tokens = make_repeated_tokens(model.tokenizer, 16, seg_len, seed=0).to(cfg.device)
    first, second = _repeat_losses(model, tokens, seg_len)
    console.print(f"[bold]in-context learning[/bold]: random {seg_len}-token segments shown twice — loss on the "
                  f"first copy {first:.2f} nats, on the second {second:.2f} nats "
                  f"(ln d_vocab = {torch.log(torch.tensor(float(cfg.d_vocab))):.2f}).")

    prev = head_scores(model, tokens, "previous_token")
    ind = head_scores(model, tokens, "induction")
    console.print(_heads_table("previous-token heads: attention to the previous token", prev))
    console.print(_heads_table("induction heads: attention to the token after the previous occurrence", ind))
    (pl, ph), (il, ih) = [divmod(int(s.flatten().argmax()), cfg.n_heads) for s in (prev, ind)]
    console.print(f"strongest previous-token head: L{pl}H{ph} ({prev[pl, ph]:.2f}); "
                  f"strongest induction head: L{il}H{ih} ({ind[il, ih]:.2f}).")
    lens = lens_findings(model, console, PROMPTS[0])
    attr = attribution_findings(model, console, PROMPTS[2], None,
                                title=f"which tokens the top prediction after {PROMPTS[2]!r} depends on")
    patched = patching_findings(model, console)
    console.print("[dim]next: `mechscope info default` lists every hook point; in Python, "
                  "model.run_with_cache(...) returns them all.[/dim]")
    short = make_repeated_tokens(model.tokenizer, 1, 12, seed=1).to(cfg.device)  # short enough to read in a view
    _, cache = model.run_with_cache(short, names_filter=lambda n: n.endswith("hook_pattern"))
    rows, cols = [f"L{layer}" for layer in range(cfg.n_layers)], [f"H{h}" for h in range(cfg.n_heads)]
    shown = [
        views.attention_patterns(model.to_str_tokens(short[0]), torch.stack([cache["pattern", layer][0] for layer in
                                 cfg.attn_layers]), layer_labels=[str(layer) for layer in cfg.attn_layers],
                                 layer=cfg.attn_layers.index(il), head=ih, title=f"{name}: attention on a random segment shown twice (hover a token)"),
        views.heatmap(ind, rows, cols, title=f"{name}: induction scores"),
        lens["result"].view(title=f"{name}: logit lens on {PROMPTS[0]!r}"),
        attr.view(title=f"{name}: integrated gradients for the top prediction after {PROMPTS[2]!r}"),
        patched.view(title=f"{name}: which heads carry induction (activation patching, 0 = corrupted, 1 = clean)"),
    ]
    return {"loss_first": first, "loss_second": second, "prev_token": prev, "induction": ind,
            "best_prev": (pl, ph), "best_induction": (il, ih), "lens": lens["result"], "attribution": attr,
            "patching": patched, "views": shown}


def patching_findings(model: Model, console: Console):
    """Activation patching of every head's output on the induction task (repeated random segments vs the same second
    half after other tokens), normalised: 1 = the head alone restores the clean metric. Returns the ``PatchResult``."""
    from .patching import activation_patch, induction_task

    task = induction_task(model, n_seqs=8, seg_len=20)
    raw = activation_patch(model, task.clean, task.corrupted, task.metric, point="z")
    clean, corrupted = raw.baselines["clean"], raw.baselines["corrupted"]
    result = PatchResult((raw.values - corrupted) / (clean - corrupted), raw.dims, raw.labels,
                         metric="normalised induction metric", baselines=raw.baselines)
    top = ", ".join(f"{label} {value:+.2f}" for label, value in result.top(3))
    console.print(f"[bold]activation patching[/bold] (clean head outputs into the corrupted run, induction task; metric "
                  f"clean {clean:.2f}, corrupted {corrupted:.2f}): heads that restore it most: {top}.")
    return result


@torch.no_grad()  # not inference_mode: integrated gradients turns gradients back on
def real_model_report(model: Model, console: Console, *, name: str = "smollm2-135m", seg_len: int = 20,
                      n_seqs: int = 4, top_heads: int = 5) -> dict:
    """What a real pretrained model does: top predictions on :data:`REAL_PROMPTS`, and induction on ``n_seqs``
    repeated random segments of ``seg_len`` tokens (loss per copy, strongest induction heads). Returns the
    numbers: ``predictions`` {prompt: [(token, prob)]}, ``loss_first``, ``loss_second``, ``induction``
    (n_layers, n_heads) and ``top_induction`` [(layer, head, score)]."""
    cfg = model.cfg
    console.rule(f"[bold]a real model: {name}")
    console.print(f"{cfg.family}, {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads "
                  f"({cfg.n_kv_heads} kv), d_vocab {cfg.d_vocab}")
    if model.source is not None:
        console.print(model.source.describe(), soft_wrap=True)
    preds = Table(title="next-token predictions")
    preds.add_column("prompt")
    preds.add_column("top 5 (probability)")
    predictions = {}
    for prompt in REAL_PROMPTS:
        predictions[prompt] = _top(model, prompt)
        preds.add_row(prompt, "  ".join(f"{t!r} {p:.2f}" for t, p in predictions[prompt]))
    console.print(preds)

    tokens = make_repeated_tokens(model.tokenizer, n_seqs, seg_len, seed=0).to(cfg.device)
    first, second = _repeat_losses(model, tokens, seg_len)
    ind = head_scores(model, tokens, "induction")
    top = ind.flatten().topk(top_heads)
    heads = [(*divmod(int(i), cfg.n_heads), s) for s, i in zip(top.values.tolist(), top.indices.tolist())]
    console.print(f"[bold]in-context learning[/bold]: random {seg_len}-token segments shown twice — loss on the "
                  f"first copy {first:.2f} nats, on the second {second:.2f} nats "
                  f"(ln d_vocab = {torch.log(torch.tensor(float(cfg.d_vocab))):.2f}).")
    console.print("strongest induction heads: " + ", ".join(f"L{layer}H{head} ({s:.2f})" for layer, head, s in heads)
                  + f" of {cfg.n_layers * cfg.n_heads}.")

    fact, ioi = REAL_PROMPTS
    answer = predictions[fact][0][0]
    lens = lens_findings(model, console, fact, answer, every=3)
    attr = attribution_findings(model, console, ioi, (" Mary", " John"),
                                title="which tokens the logit difference ' Mary' − ' John' depends on")
    dla = direct_logit_attribution(model, ioi, target=" Mary", minus=" John", by="head")
    console.print(f"[bold]direct logit attribution[/bold]: of the logit difference {float(dla.logit):.2f}, the heads "
                  "writing most directly into it: " + ", ".join(f"{c.label} ({c.value:+.2f})" for c in dla.top(5)))

    short = make_repeated_tokens(model.tokenizer, 1, 12, seed=1).to(cfg.device)
    layer = heads[0][0]
    _, cache = model.run_with_cache(short, names_filter=f"blocks.{layer}.attn.hook_pattern")
    rows, cols = [f"L{l}" for l in range(cfg.n_layers)], [f"H{h}" for h in range(cfg.n_heads)]
    shown = [
        views.attention_patterns(model.to_str_tokens(short[0]), cache["pattern", layer][0], head=heads[0][1],
                                 title=f"{name}: layer {layer} (strongest induction head H{heads[0][1]}) on a random "
                                 "segment shown twice (hover a token)"),
        views.heatmap(ind, rows, cols, title=f"{name}: induction scores"),
        lens["result"].view(title=f"{name}: logit lens on {fact!r}"),
        attr.view(title=f"{name}: integrated gradients of ' Mary' − ' John'"),
        dla.view(title=f"{name}: direct logit attribution of ' Mary' − ' John' by head"),
    ]
    return {"predictions": predictions, "loss_first": first, "loss_second": second, "induction": ind,
            "top_induction": heads, "lens": lens["result"], "answer_top_from": lens["target_top_from"],
            "attribution": attr, "dla": dla, "views": shown}


# ------------------------------------------------------------------------------------------- lens and attribution
def lens_findings(model: Model, console: Console, prompt: str, target: str | None = None, *, every: int = 1) -> dict:
    """The logit lens at the last position of ``prompt``: each layer's top token, KL to the model's distribution,
    and (with ``target``) the target's probability and rank; ``every`` thins the printed rows. Returns the
    :class:`~mechscope.lens.LensResult` as ``result`` and the first layer label where ``target`` ranks first."""
    res = logit_lens(model, prompt, k=1, targets=target)
    t = Table(title=f"logit lens: what each layer predicts after {prompt!r} (model's own final norm and head)")
    for col in ("layer", "top token", "prob", "KL to final (nats)") + ((f"p({target!r})", "rank") if target else ()):
        t.add_column(col, justify="left" if col in ("layer", "top token") else "right")
    rows = list(range(0, res.n_layers - 1, every)) + [res.n_layers - 1]
    for i in dict.fromkeys(rows):
        cells = [res.layer_labels[i], repr(res.top_strings[i][0][-1][0]), f"{res.top_probs[i, 0, -1, 0]:.2f}",
                 f"{res.kl[i, 0, -1]:.2f}"]
        if target:
            cells += [f"{res.target_probs[i, 0, -1, 0]:.3f}", str(int(res.target_ranks[i, 0, -1, 0]))]
        t.add_row(*cells)
    console.print(t)
    first = None
    if target:
        top1 = (res.target_ranks[:, 0, -1, 0] == 1).tolist()
        # the first layer from which the target stays the lens's top token to the end
        for i in range(len(top1)):
            if all(top1[i:]):
                first = res.layer_labels[i]
                break
        if first is not None:
            console.print(f"{target!r} is the logit lens's top prediction from layer {first} on "
                          f"(exact final row: {res.exact_final}).")
    return {"result": res, "target_top_from": first}


def attribution_findings(model: Model, console: Console, prompt: str, target, *, title: str) -> Attribution:
    """Integrated gradients (mechscope's defaults) of ``target`` over the tokens of ``prompt``, printed as one row
    of scores with the completeness delta."""
    attr = attribute(model, prompt, target, method="ig")
    scores = attr.scores.tolist()
    top = max((abs(s) for s in scores), default=0.0) or 1.0
    shown = "  ".join(f"[{'green' if s > 0 else 'red'}]{tok!r}[/] {s:+.2f}" if abs(s) >= 0.25 * top else f"{tok!r} {s:+.2f}"
                      for tok, s in zip(attr.tokens, scores))
    console.print(f"[bold]{title}[/bold] (integrated gradients, {attr.params.get('n_steps')} steps; completeness "
                  f"delta {100 * attr.delta:.2f}%):\n  {shown}", soft_wrap=True)
    return attr


def numbers(result: dict) -> dict:
    """The JSON-ready numbers of a :func:`report` or :func:`real_model_report` result (no views, no tensors)."""
    out = {}
    for key, value in result.items():
        if key == "views":
            continue
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif isinstance(value, torch.Tensor):
            value = value.tolist()
        out[key] = value
    return out
