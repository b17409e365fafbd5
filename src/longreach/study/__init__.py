"""Studies: sweeps as data (YAML of stages, prune rules, peer backends), run with ``longreach study run`` and merged
into one report with ``longreach study report``; ``longreach study restore`` rebuilds a study folder from its
committed report."""

from longreach.study.restore import restore_study
from longreach.study.run import StageOutcome, report_study, run_study
from longreach.study.spec import Prune, Stage, Study, load_study, recorded_study

__all__ = [
    "Prune",
    "Stage",
    "StageOutcome",
    "Study",
    "load_study",
    "recorded_study",
    "report_study",
    "restore_study",
    "run_study",
]
