"""Tables and plots from the results.json files of a sweep (``devec-report``)."""

from devec.report.cli import build_report, main
from devec.report.collect import RunRecord, collect_runs, find_sweep, long_rows, swept_keys
from devec.report.tables import aggregate, latex_table, pivot, write_table

__all__ = ["RunRecord", "aggregate", "build_report", "collect_runs", "find_sweep", "latex_table", "long_rows",
           "main", "pivot", "swept_keys", "write_table"]
