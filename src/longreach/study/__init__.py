"""Studies: sweeps as data (YAML of stages, prune rules, peer backends), run with ``longreach study run`` and merged
into one report with ``longreach study report``."""

from longreach.study.run import StageOutcome, report_study, run_study
from longreach.study.spec import Prune, Stage, Study, load_study, recorded_study

__all__ = ["Prune", "Stage", "StageOutcome", "Study", "load_study", "recorded_study", "report_study", "run_study"]
