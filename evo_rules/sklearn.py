"""scikit-learn-style estimators that run the real rule search on in-memory arrays.

    from evo_rules.sklearn import EvoRulesRegressor
    est = EvoRulesRegressor(population=64, generations=10, random_state=0).fit(X, y)
    est.predict(X_new); est.rule_; est.weights_; est.hall_of_fame_; est.best_.to_infix()

`EvoRulesRanker().fit(X, y, group=ids)` ranks the rows of each query (listwise loss): `group`
gives every row's query id (like XGBoost's `qid`; LightGBM-style group sizes become ids with
`np.repeat(np.arange(len(sizes)), sizes)`), y each row's relevance (>= 0).

`fit` shuffles the rows once (by the seed; a ranker's whole queries), fits every candidate's
weights on the training share and ranks candidates on the held-out `valid_fraction`; `max_seconds`
is the engine's [run] budget. The model (`best_`) is the smallest rule of the hall of fame and
Pareto front whose held-out metric is within one standard error of the best one's (Breiman's
one-standard-error rule, as a run's winner); `hall_of_fame_` lists the rules by held-out metric. The search runs in a temporary folder that is removed
afterwards (nothing is written to the working folder). With scikit-learn installed (the `sklearn`
extra) the classes are real `BaseEstimator`s (clone, pipelines, grid search, input checks);
without it they keep the same API with plain NumPy input checks.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import re
import shutil
import tempfile
from functools import partial

import numpy as np

from .fitted import FittedRule

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted

    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6
        def validate_data(est, *args, **kwargs):
            return est._validate_data(*args, **kwargs)
    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

    class BaseEstimator:
        """get_params/set_params from the constructor's signature, as scikit-learn does."""

        @classmethod
        def _param_names(cls):
            return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")

        def get_params(self, deep=True):
            return {p: getattr(self, p) for p in self._param_names()}

        def set_params(self, **params):
            for k, v in params.items():
                if k not in self._param_names():
                    raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}")
                setattr(self, k, v)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class RegressorMixin:
        def score(self, X, y):
            from evo_rules.fitness.regression import r2

            return r2(np.asarray(y, dtype=np.float64), self.predict(X))

    class ClassifierMixin:
        def score(self, X, y):
            return float(np.mean(self.predict(X) == np.asarray(y)))

    def check_random_state(seed):
        return np.random.RandomState(seed)

    def check_is_fitted(est, attributes=None):
        if not hasattr(est, "best_"):
            raise ValueError(f"this {type(est).__name__} is not fitted yet: call fit first")

    def validate_data(est, X, y=None, reset=True, **_):
        """Plain checks: 2-D finite float arrays; the feature count fixed at fit."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array X, got {X.ndim}-D")
        if not np.all(np.isfinite(X)):
            raise ValueError("X holds NaN or infinity")
        if reset:
            est.n_features_in_ = X.shape[1]
        elif X.shape[1] != est.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                             f"{est.n_features_in_} features as input")
        if y is None:
            return X
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows, y has {y.shape[0]}")
        return X, y

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _seconds(value) -> float:
    """max_seconds as the engine's [run] budget takes it: a finite number > 0. The search stops
    after the generation in which it is spent (the result then depends on the machine's speed,
    unlike a generation budget)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value <= 0):
        raise ValueError(f"max_seconds must be a finite number > 0 or None, got {value!r}")
    return float(value)


class _EvoRulesBase(BaseEstimator):
    _loss = "squared"

    def __init__(self, population=64, generations=10, max_seconds=None, max_size=20,
                 valid_fraction=0.25, hall_of_fame=10, max_iter=20, seed_linear=True,
                 backend="serial", n_jobs=None, random_state=None, operators=None):
        self.population = population
        self.generations = generations
        self.max_seconds = max_seconds
        self.max_size = max_size
        self.valid_fraction = valid_fraction
        self.hall_of_fame = hall_of_fame
        self.max_iter = max_iter
        self.seed_linear = seed_linear
        self.backend = backend
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.operators = operators

    def _search(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> None:
        """Run the search; set rule_, weights_, best_, hall_of_fame_, feature_names_."""
        from evo_rules.fitness.arrays import ArrayTask

        from . import app
        from .config import from_dict
        from .evaluate import _TASKS
        from .gate import parsimony_order
        from .search import Search, TaskHandle

        names = getattr(self, "feature_names_in_", None)
        if names is not None and all(_NAME.match(str(n)) for n in names) and len(set(names)) == len(names):
            features = tuple(str(n) for n in names)  # the rule reads the DataFrame's own names
        else:
            features = tuple(f"x{j}" for j in range(X.shape[1]))
        rs = self.random_state
        seed = int(rs) if isinstance(rs, (int, np.integer)) else int(check_random_state(rs).randint(2**31 - 1))
        factory = partial(ArrayTask, X, y, features, self._loss, seed, self.valid_fraction, groups)
        task = factory()  # checks the data before any folder is made
        token = json.dumps({"name": task.name, "fingerprint": task.fingerprint})
        budget = {} if self.max_seconds is None else {"max_seconds": _seconds(self.max_seconds)}
        config = from_dict({
            "run": {"seed": seed, "population": self.population, "generations": self.generations,
                    "checkpoint_every": max(1, self.generations), **budget},  # nothing resumes it
            "task": {"name": task.name},
            "search": {"seed_reference": False, "seed_linear": bool(self.seed_linear),
                       "hall_of_fame": self.hall_of_fame},
            "grammar": self._grammar(),
            "fit": {"max_iter": self.max_iter},
            "evaluation": {"backend": self.backend, "workers": self.n_jobs or 0},
            "rerun": {"seeds": 0},
        }, source=type(self).__name__)
        folder = tempfile.mkdtemp(prefix="evo-rules-fit-")
        try:
            search = Search(config, TaskHandle(factory, token), app.variation(config, features),
                            folder, seeds=app.seed_texts(config, task), progress=False)
            try:
                search.run()  # a spent max_seconds ends it after a completed generation
            finally:
                search.close()
            if search.interrupted and search.stop_reason != "max_seconds":
                raise KeyboardInterrupt
            hof = sorted((i for i in search.manager.hof if i.valid),
                         key=lambda i: (-i.metric, i.size, i.id))
            pool = sorted({i.key: i for i in [*search.manager.front, *hof] if i.valid}.values(),
                          key=lambda i: (-i.metric, i.size, i.id))
            order, _ = parsimony_order([(i.text, i.weights, i.size, i.metric) for i in pool], task)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            _TASKS.pop(token, None)  # the serial backend's per-process task: do not keep the data
        if not hof:
            raise ValueError("the search found no rule that is finite on the training rows")
        self.hall_of_fame_ = [FittedRule.from_text(i.text, i.weights, i.metrics) for i in hof]
        chosen = pool[order[0]]  # the smallest rule within one standard error of the best
        self.best_ = FittedRule.from_text(chosen.text, chosen.weights, chosen.metrics)
        self.rule_ = self.best_.rule
        self.weights_ = np.asarray(self.best_.weights, dtype=np.float64)
        self.feature_names_ = features
        self.seed_ = seed
        self.n_iter_ = search.generation + 1  # generations evaluated, the first one included

    def _grammar(self) -> dict:
        """[grammar]: the rule size, and the operators when given (None: the five of EML rules;
        e.g. ("add", "mul", "sin", "cos", "div") for symbolic regression)."""
        from evo_rules.operators.grammar import TEMPLATE_OPERATORS

        grammar = {"max_size": self.max_size}
        if self.operators is not None:
            ops = [self.operators] if isinstance(self.operators, str) else [str(o) for o in self.operators]
            grammar["operators"] = ops
            if not set(TEMPLATE_OPERATORS) <= set(ops):
                grammar["template_share"] = 0.0  # the seed's template needs add, mul, exp, eml
        return grammar

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self, "best_")
        X = validate_data(self, X, reset=False)
        return self.best_.predict(np.asarray(X, dtype=np.float64), columns=self.feature_names_)


class EvoRulesRegressor(RegressorMixin, _EvoRulesBase):
    """Symbolic regression (squared loss; rules ranked by validation R^2)."""

    _loss = "squared"

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        self._search(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return self

    def predict(self, X) -> np.ndarray:
        return self._scores(X)

class EvoRulesClassifier(ClassifierMixin, _EvoRulesBase):
    """Binary classification (logistic loss: the rule's score is the log-odds of classes_[1])."""

    _loss = "logistic"

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        if HAVE_SKLEARN:  # a continuous target is an error ("Unknown label type"), not 200 classes
            from sklearn.utils.multiclass import check_classification_targets

            check_classification_targets(y)
        classes, y01 = np.unique(y, return_inverse=True)
        if len(classes) != 2:
            raise ValueError(f"Only binary classification is supported by EvoRulesClassifier: y has "
                             f"{len(classes)} class{'es' * (len(classes) != 1)}")
        self.classes_ = classes
        self._search(np.asarray(X, dtype=np.float64), y01.astype(np.float64))
        return self

    def decision_function(self, X) -> np.ndarray:
        return self._scores(X)

    def predict_proba(self, X) -> np.ndarray:
        s = self.decision_function(X)
        p1 = np.exp(-np.logaddexp(0.0, -s))  # sigmoid, stable at both ends
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X) -> np.ndarray:
        positive = self.decision_function(X) > 0  # first: an unfitted estimator says so
        return self.classes_[positive.astype(np.intp)]

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


def _query_ids(group, n: int) -> np.ndarray:
    if group is None:
        raise ValueError("EvoRulesRanker needs group=: one query id per row of X")
    ids = np.asarray(group).reshape(-1)
    if ids.shape[0] != n:
        raise ValueError(f"group has {ids.shape[0]} entries for {n} rows: it gives one query id per "
                         "row (group sizes become ids by np.repeat(np.arange(len(sizes)), sizes))")
    return ids


class EvoRulesRanker(_EvoRulesBase):
    """Learning to rank (listwise loss: softmax cross-entropy over each query's rows against
    their relevance). `fit(X, y, group=ids)`: one query id per row (any sortable ids; a query's
    rows need not be adjacent), y the relevance >= 0 (a query with none > 0 is ignored). Whole
    queries are shuffled into train and valid; rules are ranked by validation mean reciprocal
    rank. `predict` gives scores (higher ranks first); `score(X, y, group)` is the mean
    reciprocal rank of each query's best-scored most relevant row (ties count as misses)."""

    _loss = "listwise"

    def fit(self, X, y, group=None):
        X, y = validate_data(self, X, y, y_numeric=True)
        ids = _query_ids(group, X.shape[0])
        self._search(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64), ids)
        return self

    def predict(self, X) -> np.ndarray:
        return self._scores(X)

    def score(self, X, y, group=None) -> float:
        from evo_rules.fitness.arrays import reciprocal_ranks

        s = self.predict(X)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        ids = _query_ids(group, s.shape[0])
        if y.shape[0] != s.shape[0]:
            raise ValueError(f"X has {s.shape[0]} rows, y has {y.shape[0]}")
        _, inverse = np.unique(ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # each query's rows together
        rr = reciprocal_ranks(s[order], y[order], inverse[order])
        if rr.size == 0:
            raise ValueError("no query has a relevant row (y > 0): nothing to rank")
        return float(rr.mean())
