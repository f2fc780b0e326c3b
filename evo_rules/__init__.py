"""evo-rules: genetic programming over symbolic scoring rules."""

import os as _os

# One BLAS thread per process: the parallel work is whole evaluations in worker processes, and
# the inner loop's small-by-tall products (k x n times n x k) run 10x slower on 2 contending
# OpenBLAS threads than on one. Set before NumPy loads; an explicit user setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

from .fitted import FittedRule, FittedRun, load
from .fitting import FitResult, fit
from .parse import ParseError
from .rule import Rule, parse, rule_key
from .terms import Term

__all__ = ["FitResult", "FittedRule", "FittedRun", "ParseError", "Rule", "Term", "fit", "load", "parse",
           "rule_key"]
__version__ = "0.1.0"
