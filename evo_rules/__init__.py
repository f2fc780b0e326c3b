"""evo-rules: genetic programming over symbolic scoring rules."""

from .fitting import FitResult, fit
from .parse import ParseError
from .rule import Rule, parse, rule_key
from .terms import Term

__all__ = ["FitResult", "ParseError", "Rule", "Term", "fit", "parse", "rule_key"]
__version__ = "0.1.0"
