"""Study → plain data (``collect``) → plotly figures → one offline HTML file."""

from autocompress.report.collect import ReportInfo, TrialRow, collect
from autocompress.report.html import render_html, write_report

__all__ = ["ReportInfo", "TrialRow", "collect", "render_html", "write_report"]
