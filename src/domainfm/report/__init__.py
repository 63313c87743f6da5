"""`domainfm report RUN_DIR -o report.html`: one self-contained HTML page over a run folder.

The report reads the FILES the stages leave (stats.json, JSON, CSV, Parquet, PNG); it imports neither
domain package, so it renders runs of either domain (or both) and never re-runs anything.
"""

from domainfm.report.build import build_report
from domainfm.report.runinfo import write_run_record

__all__ = ["build_report", "write_run_record"]
