"""``mechscope sae dashboard``: latent statistics over a corpus and the offline HTML dashboards."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError, MechscopeError
from .common import JSON_HELP, MODEL_HELP, console, fail, load as _load, write_json
from .sae import load_sae, sae_app


def parse_latents(spec: str) -> list[int]:
    """``"0-99"``, ``"3,7,12"`` or ``"0-9,40-49"`` → the latent indices, in order, each once."""
    out: list[int] = []
    try:
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InputError(f"--latents {spec!r} is not a list of indices and ranges such as '0-99' or "
                         "'3,7,12-15'.") from None
    if not out:
        raise InputError("--latents is empty; give indices or ranges such as '0-99'.")
    return list(dict.fromkeys(out))


def _data(path: str):
    """A corpus file path as is, or a ``.npy`` token array ``(n_rows, seq)`` as a tensor."""
    p = Path(path).expanduser()
    if p.suffix == ".npy":
        import numpy as np
        import torch

        if not p.is_file():
            raise InputError(f"--data {path!r} does not exist.")
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 2 or arr.dtype.kind not in "iu":
            raise InputError(f"--data {path!r} holds a {arr.dtype} array of shape {arr.shape}; a token array is "
                             "2-d integer (n_rows, seq).")
        return torch.from_numpy(arr.astype("int64"))
    return path


@sae_app.command("dashboard")
def sae_dashboard(sae_dir: str = typer.Argument(..., help="SAE folder (cfg.json + safetensors weights)."),
                  model: str = typer.Argument(..., help=MODEL_HELP),
                  data: str = typer.Option(..., help="Corpus: a .txt or .jsonl ({\"text\": ...}) file, or a .npy "
                                                     "token array (n_rows, seq)."),
                  out: str = typer.Option(..., help="Folder for index.html, latents/<i>.html and stats/."),
                  tokens: int = typer.Option(1_000_000, "--tokens", help="Tokens read from a text corpus."),
                  latents: str = typer.Option(None, help="Latents to analyse, e.g. '0-99' or '3,7,12-15' "
                                                         "(default: all)."),
                  top_density: int = typer.Option(None, help="Pages only for the N densest latents (all are "
                                                             "analysed)."),
                  k: int = typer.Option(20, help="Top-activating examples per latent."),
                  left: int = typer.Option(8, help="Context tokens before each example."),
                  right: int = typer.Option(4, help="Context tokens after each example."),
                  n_quantiles: int = typer.Option(5, help="Activation intervals sampled per latent."),
                  samples: int = typer.Option(5, help="Examples sampled per interval."),
                  seq_len: int = typer.Option(128, help="Tokens per row for a text corpus."),
                  batch_size: int = typer.Option(32, help="Rows per forward pass."),
                  keep_bos: bool = typer.Option(False, "--keep-bos", help="Count BOS tokens too (default: excluded)."),
                  seed: int = typer.Option(0, help="Seed of the interval sampling."),
                  json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Per latent: density, max and "
                                                                     "mean activation, top tokens and logits.")):
    """Top-activating examples, interval samples, densities and logit weights of an SAE's latents over a corpus,
    as an offline HTML dashboard per latent plus a sortable index."""
    from ..sae import dashboard, latent_stats

    try:
        sae = load_sae(sae_dir)
        lat = parse_latents(latents) if latents else None
        if lat is not None and max(lat) >= sae.cfg.d_sae:
            raise InputError(f"--latents reaches {max(lat)}, but this SAE has d_sae={sae.cfg.d_sae} latents "
                             f"(0-{sae.cfg.d_sae - 1}).")
        if top_density is not None and top_density < 1:
            raise InputError(f"--top-density must be >= 1, got {top_density}.")
        src = _data(data)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    m = _load(model)
    try:
        stats = latent_stats(sae, m, src, latents=lat, k=k, context=(left, right), n_quantiles=n_quantiles,
                             samples_per_quantile=samples, batch_size=batch_size, n_tokens=tokens, seq_len=seq_len,
                             exclude_bos=not keep_bos, seed=seed, show_progress=True)
        pages = stats.latents.tolist()
        if top_density is not None:
            order = stats.density.argsort(descending=True, stable=True)[:top_density]
            pages = [pages[i] for i in order.tolist()]
        stats.save(Path(out) / "stats")
        index = dashboard(stats, out, latents=pages)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    console.print(f"{len(pages)} latent pages over {stats.n_tokens} tokens; open {index}")
    rows = []
    for i in pages:
        j = stats.index(i)
        rows.append({"latent": i, "density": float(stats.density[j]), "max_act": float(stats.max_act[j]),
                     "mean_act": float(stats.mean_act[j]),
                     "top_tokens": [stats.token_str(t) for t in stats.top_tokens[j, :, left].tolist() if t >= 0],
                     "top_logits": [stats.token_str(t) for t in stats.logit_top_ids[j].tolist()]})
    write_json(json_path, {"sae": sae_dir, "model": model, "data": data, "hook_name": stats.hook_name,
                           "n_tokens": stats.n_tokens, "out": str(index), "latents": rows})
