"""Offline interactive views: attention patterns, token colours, the logit-lens table and heatmaps.

Every function returns a :class:`View`: ``view.html`` (a self-contained fragment), ``_repr_html_`` (Jupyter),
``view.save("out.html")`` (one standalone file that works with no network), ``view_a + view_b`` and
``report([...], title)`` (several on one page). The script and stylesheet ship in ``static/`` and are inlined.
"""

from .figures import attention_patterns, heatmap, lens_table, token_colors
from .view import View, report

__all__ = ["View", "attention_patterns", "heatmap", "lens_table", "report", "token_colors"]
