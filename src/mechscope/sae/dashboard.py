"""Offline HTML feature dashboards from :class:`~mechscope.sae.analysis.LatentStats`: one page per latent and an
index page that links them.

Layout of ``out_dir``::

    index.html          sortable, filterable table: latent, density, max/mean activation, top tokens, top logits
    latents/<i>.html    latent i: density and activation histogram, logit weights (top and bottom tokens),
                        top-activating examples and samples from activation intervals, tokens coloured by
                        the latent's activation (hover for the value, row and position)

Each page is a standalone file that works with no network (its stylesheet, script and data are inline, as in
:mod:`mechscope.views`) and carries only its own data — the token strings it shows, not the vocabulary — so the
output grows linearly with the latents: about 10 KB per latent with 20 top examples and 5 × 5 interval samples
(2048 latents ≈ 20 MB), and any one page opens instantly. Pages are drawn by a small script from their embedded
JSON; every file is written atomically, the index last, so a crash leaves the previous index consistent.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from ..errors import InputError, InputTypeError, type_name
from .analysis import HIST_EDGES, LatentStats, _latent_ids

_PER_DECADE = 20


@cache
def _asset(name: str) -> str:
    return (resources.files("mechscope.sae") / "static" / name).read_text(encoding="utf-8")


def _page(title: str, data: dict) -> str:
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_asset('dashboard.css')}</style>\n</head>\n"
        f'<body class="msd">\n<div id="msd-root"><noscript>This dashboard needs JavaScript.</noscript></div>\n'
        f'<script type="application/json" id="msd-data">{payload}</script>\n'
        f"<script>{_asset('dashboard.js')}</script>\n</body>\n</html>\n"
    )


def _f(x) -> float | int:
    """4 significant digits (what a page shows and hovers), 0 as ``0``: keeps pages small."""
    x = float(x)
    return 0 if x == 0 else float(f"{x:.4g}")


def _interval_counts(stats: LatentStats) -> torch.Tensor:
    """``(n, n_quantiles)`` firing tokens per interval, by the rule the samples were drawn with (bin centres)."""
    n, nq = stats.q_acts.shape[:2]
    if nq == 0:
        return torch.zeros(n, 0, dtype=torch.long)
    centre = (HIST_EDGES[:-1] * HIST_EDGES[1:]).sqrt()  # (bins,)
    j = (centre[None] / stats.max_act[:, None].clamp_min(1e-30) * nq).floor().long().clamp(0, nq - 1)
    out = torch.zeros(n, nq, dtype=torch.long)
    return out.scatter_add_(1, j, stats.hist_counts)


def _examples(stats: LatentStats, acts, rows, pos, tokens, ctx, strs: set[int]) -> list[dict]:
    out = []
    for v, r, p, t, a in zip(acts.tolist(), rows.tolist(), pos.tolist(), tokens.tolist(), ctx.tolist()):
        if p < 0:
            continue
        strs.update(x for x in t if x >= 0)
        out.append({"v": _f(v), "row": r, "pos": p, "t": t, "a": [_f(x) for x in a]})
    return out


def latent_page_data(stats: LatentStats, latent: int, *, prev: int | None = None, next: int | None = None) -> dict:
    """What one latent's page shows, as JSON-ready data (the page's script draws it)."""
    j = stats.index(latent)
    strs: set[int] = set()
    top = _examples(stats, stats.top_acts[j], stats.top_rows[j], stats.top_pos[j], stats.top_tokens[j],
                    stats.top_ctx_acts[j], strs)
    counts = _interval_counts(stats)[j].tolist()
    quantiles = []
    for q in range(stats.q_acts.shape[1]):
        quantiles.append({"lo": _f(stats.q_edges[j, q]), "hi": _f(stats.q_edges[j, q + 1]), "n": counts[q],
                          "ex": _examples(stats, stats.q_acts[j, q], stats.q_rows[j, q], stats.q_pos[j, q],
                                          stats.q_tokens[j, q], stats.q_ctx_acts[j, q], strs)})
    h = stats.hist_counts[j]
    nz = h.nonzero().flatten()
    hist = {"lo": -4.0, "per_decade": _PER_DECADE, "counts": []}
    if len(nz):
        a, b = int(nz[0]), int(nz[-1]) + 1
        hist = {"lo": -4.0 + a / _PER_DECADE, "per_decade": _PER_DECADE, "counts": h[a:b].tolist()}
    logits = {}
    for side in ("top", "bottom"):
        ids = getattr(stats, f"logit_{side}_ids")[j].tolist()
        vals = getattr(stats, f"logit_{side}_values")[j].tolist()
        logits[side] = [[stats.token_str(t), _f(v)] for t, v in zip(ids, vals)]
    return {"kind": "latent", "latent": int(latent), "hook": stats.hook_name, "n_tokens": stats.n_tokens,
            "density": float(stats.density[j]), "freq": int(stats.frequency[j]), "max": _f(stats.max_act[j]),
            "mean": _f(stats.mean_act[j]), "left": stats.context[0], "hist": hist, "logits": logits, "top": top,
            "quantiles": quantiles, "strs": {str(t): stats.token_str(t) for t in sorted(strs)},
            "index": "../index.html", "prev": prev, "next": next,
            "prev_href": f"{prev}.html" if prev is not None else None,
            "next_href": f"{next}.html" if next is not None else None}


def latent_page(stats: LatentStats, latent: int, **kw) -> str:
    """One latent's page as a standalone HTML document."""
    return _page(f"latent {latent} · {stats.hook_name}", latent_page_data(stats, latent, **kw))


def _top_tokens(stats: LatentStats, j: int, n: int = 3) -> str:
    centre = stats.top_tokens[j, :, stats.context[0]]
    seen = Counter(t for t in centre.tolist() if t >= 0)
    return _join(stats.token_str(t) for t, _ in seen.most_common(n))


def _join(strs) -> str:
    """Token texts for one table cell: escaped (newlines as \\n) and separated by a bar, since tokens hold spaces."""
    return " | ".join(repr(s)[1:-1] or "·" for s in strs)


def index_page(stats: LatentStats, latents: list[int] | None = None, title: str | None = None) -> str:
    """The index page: one row per latent, linking ``latents/<i>.html``."""
    lat = stats.latents.tolist() if latents is None else list(latents)
    rows = []
    for i in lat:
        j = stats.index(i)
        logit = _join(stats.token_str(t) for t in stats.logit_top_ids[j, :3].tolist())
        rows.append([int(i), float(stats.density[j]), _f(stats.max_act[j]), _f(stats.mean_act[j]),
                     _top_tokens(stats, j), logit, f"latents/{int(i)}.html"])
    title = title or f"SAE latents of {stats.hook_name}"
    return _page(title, {"kind": "index", "title": title, "hook": stats.hook_name, "n_tokens": stats.n_tokens,
                         "rows": rows})


def dashboard(stats: LatentStats, out_dir: str | os.PathLike, *, latents: list[int] | None = None,
              title: str | None = None) -> Path:
    """Write the dashboards of ``latents`` (default: every latent in ``stats``) into ``out_dir``: ``index.html``
    and ``latents/<i>.html``. Every file is written atomically; the index last. Returns the index's path."""
    from ..lens.tuned import atomic_write

    if not isinstance(stats, LatentStats):
        raise InputTypeError(f"dashboard takes the LatentStats of latent_stats(...), got {type_name(stats)}.")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InputTypeError(f"out_dir must be a folder path, got {type_name(out_dir)}.")
    lat = stats.latents.tolist() if latents is None else _latent_ids(latents, 1 << 62).tolist()
    for i in lat:
        stats.index(i)  # refuses latents that were not analysed, with a sentence
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write dashboards to {str(out)!r}: it is a file; give a folder.")
    try:
        (out / "latents").mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(lat):
            text = latent_page(stats, i, prev=lat[n - 1] if n else None, next=lat[n + 1] if n + 1 < len(lat) else None)
            atomic_write(out / "latents" / f"{i}.html", lambda f, text=text: Path(f).write_text(text, encoding="utf-8"))
        text = index_page(stats, lat, title)
        atomic_write(out / "index.html", lambda f: Path(f).write_text(text, encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot write dashboards to {str(out)!r}: {e.strerror or e}; choose a writable "
                         "folder.") from e
    return out / "index.html"
