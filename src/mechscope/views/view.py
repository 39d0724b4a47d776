"""``View``: one or more rendered figures as a self-contained HTML fragment, for Jupyter and for files.

A view's HTML carries everything it needs inline (the stylesheet and script of ``static/``, its data as JSON), so
it renders in a notebook output cell, in a saved file opened from disk, and offline: no CDN, no network. Each
figure's element id is fresh every time HTML is produced, so the same view shown twice, or many views on one
page, never collide. The shared script defines ``window.mechscopeViews`` once per page; each figure's own inline
script calls ``mechscopeViews.render`` on its element (found by id, not ``document.currentScript``).
"""

from __future__ import annotations

import html
import os
import tempfile
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import InputError, InputTypeError, type_name
from .data import to_json

_NOJS = ("This mechscope view needs JavaScript: in Jupyter, trust the notebook (File ▸ Trust Notebook); "
         "or open the saved HTML file in a browser.")


@cache
def _asset(name: str) -> str:
    return (resources.files("mechscope.views") / "static" / name).read_text(encoding="utf-8")


def _assets() -> str:
    """The stylesheet and the renderer, inline."""
    return f"<style>{_asset('views.css')}</style>\n<script>{_asset('views.js')}</script>\n"


@dataclass(frozen=True)
class Figure:
    """One figure: ``kind`` picks the renderer in ``views.js``; ``data`` is what it draws (JSON-ready)."""

    kind: str
    data: dict
    summary: str

    def body(self, uid: str) -> str:
        """The figure's element, its data and the call that renders it (the assets must be on the page)."""
        eid = f"msv-{uid}"
        return (
            f'<div class="msv-root" id="{eid}" data-kind="{self.kind}">'
            f'<script type="application/json" class="msv-data">{to_json(self.data)}</script>'
            f'<div class="msv-nojs">{html.escape(_NOJS)}</div></div>\n'
            # retries briefly: some notebook front ends insert the output's elements after running its scripts
            f'<script>(function(){{var n=0;function go(){{var e=document.getElementById("{eid}");'
            f'if(e&&window.mechscopeViews){{window.mechscopeViews.render(e);}}'
            f'else if(n++<200){{setTimeout(go,25);}}}}go();}})();</script>\n'
        )


class View:
    """Interactive figures as HTML. ``view.html`` is a self-contained fragment; ``_repr_html_`` shows it in
    Jupyter; ``view.save(path)`` writes one standalone HTML file. ``view_a + view_b`` (or
    ``views.report([...], title)``) puts several on one page."""

    def __init__(self, figures: list[Figure], title: str | None = None):
        self.figures = list(figures)
        self.title = title
        self._uid = uuid.uuid4().hex[:12]

    def _fragment(self, uid: str) -> str:
        heading = f'<h1 class="msv-report-title">{html.escape(self.title)}</h1>\n' if self.title else ""
        bodies = "".join(f.body(f"{uid}-{i}") for i, f in enumerate(self.figures))
        return f'<div class="msv-view">\n{_assets()}{heading}{bodies}</div>\n'

    @property
    def html(self) -> str:
        """The view as an HTML fragment with its own CSS, script and data (ids fixed for this object)."""
        return self._fragment(self._uid)

    def _repr_html_(self) -> str:
        return self._fragment(uuid.uuid4().hex[:12])  # fresh ids: the same view may be displayed twice

    def page(self) -> str:
        """A complete HTML document holding the view."""
        title = self.title or (self.figures[0].data.get("title") if self.figures else None) or "mechscope view"
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n"
            f'<body class="msv-page">\n{self.html}</body>\n</html>\n'
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the view as one standalone HTML file (atomically: a reader never sees half a file).
        Returns the path written."""
        if not isinstance(path, (str, os.PathLike)):
            raise InputTypeError(f"save() takes a file path; got {type_name(path)}.")
        path = Path(path).expanduser()
        if path.is_dir():
            raise InputError(f"cannot save the view to {str(path)!r}: it is a folder; give a file name such as "
                             f"{str(path / 'view.html')!r}.")
        if not path.parent.is_dir():
            raise InputError(f"cannot save the view to {str(path)!r}: the folder {str(path.parent)!r} does not "
                             "exist; create it first or choose another path.")
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.page())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise InputError(f"cannot save the view to {str(path)!r}: {e.strerror or e}; choose a writable "
                             "path.") from e
        return path

    def __add__(self, other: View) -> View:
        if not isinstance(other, View):
            return NotImplemented
        return View(self.figures + other.figures, self.title or other.title)

    def __radd__(self, other) -> View:
        if isinstance(other, int) and other == 0:  # sum([view_a, view_b])
            return self
        return NotImplemented

    def __repr__(self) -> str:
        inner = "; ".join(f.summary for f in self.figures)
        title = f" {self.title!r}" if self.title else ""
        return f"<View{title}: {inner}>"


def report(views, title: str = "mechscope report") -> View:
    """Several views on one page, in order, under ``title``; save it with ``.save(path)``."""
    if isinstance(views, View):
        views = [views]
    views = list(views)
    for i, v in enumerate(views):
        if not isinstance(v, View):
            raise InputTypeError(f"report() takes a list of View objects; item {i} is {type_name(v)}.")
    return View([f for v in views for f in v.figures], title)
