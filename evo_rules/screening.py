"""Which pairwise products of features would most improve a fitted rule (`[search] screen_products`).

A score test (Rao): fit a base rule (by default the task's linear rule) on the train batch, then
for every product z = f_i * f_j ask how the training loss would change if the term beta * z were
added, at beta = 0. The loss's derivative there is

    g_ij = sum over rows of dL/ds * f_i * f_j

(for the listwise loss dL/ds = (softmax of the scores within the group - normalised label) / G),
one matrix product of the residual-weighted feature columns with the feature columns for all
pairs at once (the variance below: one more, plus one k x k product per group for the
listwise group term; 0.3 s for bAbI task 3's 89,000 rows, 1,800 groups and 56 features). A raw gradient favours frequent products, so each is divided by its standard
deviation under the fitted model (the Fisher information of beta):

    listwise: Var = sum over groups of Var_p(z within the group) / G^2
    logistic: Var = sum of p (1 - p) z^2 / n^2
    squared:  Var = sigma^2 sum of z^2 / n^2 (sigma^2 the mean squared residual)

The statistic z_ij = g_ij / sqrt(Var) is about N(0, 1) for a product that adds nothing, whatever
its frequency, so a rare word's product and a common one's compare fairly; a product with no
variance where the loss can see it (constant within every group, or all zero) scores 0. The
nuisance weights are not projected out (the plain, not the efficient, score statistic): that
overstates the variance of a product that a base feature nearly repeats, so such a product
ranks lower, which is what a screen for new interactions wants. Squares of 0/1 features (the
feature itself) are left out. Nothing here knows any task: it reads feature columns, labels
and groups only. Deterministic: ties keep the features' order.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .evaluate import fit_on_train, task_has
from .losses import Listwise, Logistic, Squared, make_loss
from .rule import parse


def linear_text(features: Sequence[str]) -> str:
    """A weighted sum of the features (the base when a task has no `linear_rule_text`)."""
    terms = " ".join(f"(mul w x.{f})" for f in features)
    return f"(add {terms})" if len(features) > 1 else terms


def base_text(task) -> str:
    return task.linear_rule_text() if task_has(task, "linear_rule_text") else linear_text(task.features)


def product_text(base: str, a: str, b: str) -> str:
    """The base rule plus one weighted product (the canonical form flattens the sum)."""
    return f"(add {base} (mul w x.{a} x.{b}))"


def screen_products(task, fit_settings: Mapping, top: int, base: str | None = None,
                    features: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
    """The `top` products (feature, feature, signed statistic) by |statistic|, strongest
    first. `base`: the rule fitted first (default: the task's linear rule); `features`: whose
    pairs are screened (default: the task's). A product whose train column repeats one already
    chosen (say latest_mention * a_got = link_latest * a_got) is the same seed twice: skipped."""
    names, X, grad, stat = _scores(task, fit_settings, base, features)
    iu, ju = np.triu_indices(len(names))
    s = stat[iu, ju]
    out, columns = [], []
    for k in np.argsort(-np.abs(s), kind="stable"):
        if len(out) >= top or s[k] == 0.0 or not np.isfinite(s[k]):
            break
        column = X[names[iu[k]]] * X[names[ju[k]]]
        if any(np.array_equal(column, c) for c in columns):
            continue
        columns.append(column)
        out.append((names[iu[k]], names[ju[k]], float(s[k])))
    return out


def product_scores(task, fit_settings: Mapping, base: str | None = None,
                   features: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(feature names, gradient matrix, statistic matrix): entry [i, j] is for f_i * f_j, the
    gradient dL/dbeta at beta = 0 of the fit loss with beta * f_i * f_j added to the fitted base
    rule, and the gradient over its standard deviation; 0 for left-out pairs."""
    names, _, grad, stat = _scores(task, fit_settings, base, features)
    return names, grad, stat


def _scores(task, fit_settings, base, features):
    names = list(task.features if features is None else features)
    b = task.batch("train")
    rule = parse(base or base_text(task))
    res = fit_on_train(rule, task, fit_settings)
    if not res.valid:
        raise ValueError(f"screen_products: the base rule cannot be fitted on the train batch ({res.message})")
    s = np.asarray(rule.evaluate(b.X, np.asarray(res.weights)), dtype=np.float64)
    X = {f: np.asarray(b.X[f], dtype=np.float64) for f in names}
    loss = make_loss(task.loss, b.y, b.groups)
    return names, X, *score_statistics(loss, s, np.column_stack([X[f] for f in names]))


def score_statistics(loss, s: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, statistic), each (k, k), for the products of F's columns at scores s."""
    grad = (F * loss.grad(s)[:, None]).T @ F
    F2 = F * F
    d, p = _row_weights(loss, s)
    bound = (F2 * d[:, None]).T @ F2  # sum d z^2: the variance, less the listwise group term
    var = bound - _group_term(p, F, loss.bounds) if p is not None else bound
    live = var > 1e-9 * bound  # else no variance the loss can see (cancellation noise)
    stat = np.where(live, grad / np.sqrt(np.where(live, var, 1.0)), 0.0)
    binary = np.all((F == 0.0) | (F == 1.0), axis=0)
    stat[np.diag_indices_from(stat)] = np.where(binary, 0.0, np.diag(stat))
    return grad, stat


def _row_weights(loss, s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(d, p): Var(dL/dbeta of beta * z) = sum d z^2 - sum over groups (sum p z)^2, with p
    None for losses without groups. Each read off the loss's own gradient."""
    r = loss.grad(s)
    if isinstance(loss, Squared):  # r = (s - y) / n
        return np.full(s.shape, float(r @ r) / loss.n), None  # sigma^2 / n^2: r @ r = sigma^2 / n
    if isinstance(loss, Logistic):  # r = (p - y) / n
        prob = r * loss.n + loss.y
        return prob * (1.0 - prob) / loss.n ** 2, None
    if isinstance(loss, Listwise):  # r = (p - q) / G on groups with a label, 0 elsewhere
        prob = r * loss.G + loss.q
        return prob / loss.G ** 2, prob / loss.G
    raise TypeError(f"screen_products: no score test for the loss {type(loss).__name__}")


def _group_term(p: np.ndarray, F: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """sum over groups of (sum over the group's rows of p f_i f_j)^2, for all i, j: one small
    matrix product per group (groups with no labelled row have p = 0 and are skipped)."""
    out = np.zeros((F.shape[1], F.shape[1]))
    for a, z in zip(bounds[:-1], bounds[1:]):
        w = p[a:z]
        if w.any():
            m = (F[a:z] * w[:, None]).T @ F[a:z]
            out += m * m
    return out


def screened_seeds(task, fit_settings: Mapping, n: int, start: str | None = None,
                   features: Sequence[str] | None = None) -> list[str]:
    """Seed rules: the start (default: the task's linear rule) plus each of the `n` strongest
    products, then the start plus all of them. The products are screened against the task's
    linear rule whatever the start: against a smaller start a product mostly stands in for a
    linear term the start lacks (measured on bAbI: w_football times anything)."""
    start = start or base_text(task)
    pairs = screen_products(task, fit_settings, n, features=features)
    texts = [product_text(start, a, b) for a, b, _ in pairs]
    if len(pairs) > 1:
        every = start
        for a, b, _ in pairs:
            every = product_text(every, a, b)
        texts.append(every)
    return texts
