"""Reports from one or more results stores: report.json / .md / .html and PNG figures, with 95% intervals and
ratios to a baseline row."""

from longreach.report.render import render_report

__all__ = ["render_report"]
