"""``mechscope patch``: activation patching (or attribution patching) of one clean/corrupted pair."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import HTML_HELP, JSON_HELP, MODEL_ARG, app, console, fail, load as _load, write_html, write_json

GRANULARITIES = {  # name -> (point, by_pos)
    "heads": ("z", False), "heads-by-pos": ("z", True), "resid": ("resid_pre", True), "resid_mid": ("resid_mid", True),
    "resid_post": ("resid_post", True), "attn": ("attn_out", True), "mlp": ("mlp_out", True),
    "neurons": ("post", False), "q": ("q", False), "k": ("k", False), "v": ("v", False), "pattern": ("pattern", False),
}


@app.command()
def patch(model: str = MODEL_ARG,
          clean: str = typer.Option(..., help="The clean prompt (the behaviour is there)."),
          corrupt: str = typer.Option(..., help="The corrupted prompt, same number of tokens (the behaviour is not)."),
          answer: str = typer.Option(..., help="The right next token on the clean prompt (mind the space: ' Mary')."),
          wrong: str = typer.Option(..., help="The competing token (' John'); the metric is logit(answer) - logit(wrong)."),
          granularity: str = typer.Option("heads", help=f"What to patch: {', '.join(GRANULARITIES)}."),
          point: str = typer.Option(None, help="A point name instead of --granularity: resid_pre, resid_mid, "
                                               "resid_post, attn_out, mlp_out, z, q, k, v, pattern, post."),
          by_pos: bool = typer.Option(None, "--by-pos/--all-pos", help="One patch per position, or all at once."),
          method: str = typer.Option("exact", help="exact (activation patching) or attribution (its gradient "
                                                   "estimate: two forwards and one backward)."),
          direction: str = typer.Option("denoise", help="denoise (clean activations into the corrupted run) or "
                                                        "noise (corrupted into clean: what is necessary), as in "
                                                        "path-patch."),
          noising: bool = typer.Option(False, "--noising", help="Same as --direction noise."),
          top: int = typer.Option(10, help="How many components to list."),
          max_batch: int = typer.Option(None, help="At most this many rows (patches × prompts) per forward."),
          memory: str = typer.Option(None, help="Memory budget per forward, e.g. 2GB (default: a share of what is free)."),
          json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every value, its labels and the baselines."),
          html_path: str = typer.Option(None, "--html", help=HTML_HELP + " A heatmap with token labels.")):
    """Activation patching: copy one component's activation from one run into the other and measure the logit
    difference, for every component at the chosen granularity; values are normalised (0 = corrupted, 1 = clean)."""
    import torch

    from ..errors import InputError, MechscopeError
    from ..patching import metrics

    if point is None:
        granularity = {"mlps": "mlp"}.get(granularity, granularity)   # knockout and path-patch say 'mlps'
        if granularity not in GRANULARITIES:
            raise fail(InputError(f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}, or "
                                  "--point."))
        point, default_by_pos = GRANULARITIES[granularity]
        by_pos = default_by_pos if by_pos is None else by_pos
    if method not in ("exact", "attribution"):
        raise fail(InputError(f"--method must be 'exact' or 'attribution', got {method!r}."))
    if direction not in ("denoise", "noise"):
        raise fail(InputError(f"--direction must be 'denoise' or 'noise', got {direction!r}."))
    if noising:
        direction = "noise"
    m = _load(model)
    try:
        a, w = m.to_single_token(answer), m.to_single_token(wrong)

        def metric(logits):
            return metrics.logit_diff(logits, a, w)

        if method == "attribution":
            try:
                from ..patching.attribution import attribution_patch
            except ImportError:
                raise InputError("attribution patching is not part of this install (mechscope.patching.attribution "
                                 "is missing); use --method exact.") from None
            res = attribution_patch(m, clean, corrupt, metric, point=point, by_pos=by_pos, direction=direction)
            if not res.baselines:
                with torch.no_grad():
                    res.baselines = {"clean": float(metric(m(clean))), "corrupted": float(metric(m(corrupt)))}
        else:
            res = _exact(m, clean, corrupt, metric, point, by_pos, direction, max_batch, memory)
        base_clean, base_corrupt = res.baselines["clean"], res.baselines["corrupted"]
        normalised = (res.values - base_corrupt) / (base_clean - base_corrupt) if base_clean != base_corrupt else None
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"{model}: logit({answer!r}) - logit({wrong!r}) = {base_clean:.3f} on the clean prompt, "
                  f"{base_corrupt:.3f} on the corrupted one.")
    what = "clean into corrupted" if direction == "denoise" else "corrupted into clean"
    t = Table(title=f"{method} patching of {point} ({what}): top {top} by |change|")
    for col in ("#", "component", "logit diff", "normalised"):
        t.add_column(col, justify="right" if col != "component" else "left")
    flat = res.values.flatten()
    order = (flat - (base_corrupt if direction == "denoise" else base_clean)).abs().argsort(descending=True)[:top]
    for rank, j in enumerate(order.tolist()):
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(j), res.values.shape))
        norm = "" if normalised is None else f"{float(normalised.flatten()[j]):.3f}"
        t.add_row(str(rank + 1), res.label(index), f"{float(flat[j]):.3f}", norm)
    console.print(t)
    data = {"model": model, "clean": clean, "corrupt": corrupt, "answer": answer, "wrong": wrong, "point": point,
            "by_pos": by_pos, "method": method, "direction": direction, **res.to_dict(),
            "normalised": None if normalised is None else normalised.tolist()}
    write_json(json_path, data)
    write_html(html_path, lambda: res.view(title=f"{model}: {method} patching of {point} ({what})"))


def _exact(m, clean, corrupt, metric, point, by_pos, direction, max_batch, memory):
    from ..patching import activation_patch

    return activation_patch(m, clean, corrupt, metric, point=point, by_pos=by_pos, direction=direction,
                            max_batch=max_batch, memory=memory, logits_at=-1)
