"""Run outputs: run directories, metrics files, plots and console output."""

from fedloom.report.console import ProgressBar, summary_table
from fedloom.report.metrics import MetricsFiles, read_metrics
from fedloom.report.plots import plot_run
from fedloom.report.rundir import check_runs_dir, create_run_dir, save_model

__all__ = [
    "MetricsFiles",
    "ProgressBar",
    "check_runs_dir",
    "create_run_dir",
    "plot_run",
    "read_metrics",
    "save_model",
    "summary_table",
]
