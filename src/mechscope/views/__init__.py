"""Offline interactive views: attention patterns, token colours, the logit-lens table, heatmaps (one grid or
panels side by side), the circuit graph and line charts.

Every function returns a :class:`View`: ``view.html`` (a self-contained fragment), ``_repr_html_`` (Jupyter),
``view.save("out.html")`` (one standalone file that works with no network), ``view_a + view_b`` and
``report([...], title)`` (several on one page). The script and stylesheet ship in ``static/`` and are inlined.
"""

from .charts import line_chart
from .figures import attention_patterns, lens_table, token_colors
from .graph import circuit_graph
from .heatmaps import heatmap, heatmaps
from .view import View, report

__all__ = ["View", "attention_patterns", "circuit_graph", "heatmap", "heatmaps", "lens_table", "line_chart",
           "report", "token_colors"]
