"""robofleet.jobs: sweep specs (a grid of runs), running them embedded, and Ray Jobs submission."""
from robofleet.jobs.sweep import GridPoint, SweepSpec, is_sweep_document, load_sweep, sweep_from_dict
from robofleet.jobs.sweep_runner import SweepError, run_sweep

__all__ = ["GridPoint", "SweepSpec", "SweepError", "is_sweep_document", "load_sweep", "run_sweep", "sweep_from_dict"]
