"""evo-rules: genetic programming over symbolic scoring rules."""

import os as _os

# One BLAS thread per process: the parallel work is whole evaluations in worker processes, and
# the inner loop's small-by-tall products (k x n times n x k) run 10x slower on 2 contending
# OpenBLAS threads than on one. Set before NumPy loads; an explicit user setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

# Installed, the task and operator packages are evo_rules/fitness and evo_rules/operators (and
# the shipped configs evo_rules/runs: pyproject's package-dir). In a checkout they are the
# repository's top-level folders: the repository root joins this package's search path so that
# `evo_rules.fitness` names the same code both ways.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(__path__[0], "fitness"))
        and _os.path.isfile(_os.path.join(_root, "fitness", "__init__.py"))):
    __path__.append(_root)

from .fitted import FittedRule, FittedRun, load
from .fitting import FitResult, fit
from .parse import ParseError
from .rule import Rule, parse, rule_key
from .terms import Term

__all__ = ["FitResult", "FittedRule", "FittedRun", "ParseError", "Rule", "Term", "fit", "load", "parse",
           "rule_key"]
__version__ = "0.1.0"
