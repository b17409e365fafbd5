"""Reports from a results store: report.json / .md / .html and PNG figures."""

from longreach.report.render import render_report

__all__ = ["render_report"]
