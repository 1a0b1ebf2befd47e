"""Study → plain data (``collect``) → plotly figures → one offline HTML file, or the trial table as
CSV / parquet."""

from autocompress.report.collect import ReportInfo, TrialRow, collect
from autocompress.report.html import render_html, write_report
from autocompress.report.tables import FORMATS, trials_frame, write_table

__all__ = ["FORMATS", "ReportInfo", "TrialRow", "collect", "render_html", "trials_frame", "write_report", "write_table"]
