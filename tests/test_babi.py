"""bAbI tasks 1, 2 and 3: loader, label-free features, batch invariants, fitted rules."""

from pathlib import Path

import numpy as np
import pytest

from evo_rules.fitness import babi
from evo_rules.fitness.babi import (FEATURES, BabiFormatError, BabiTask, linear_rule_text, load_babi,
                          load_babi_file, parse_babi, question_features, reference_rules)

FILES = babi.FILES


@pytest.fixture(scope="module")
def task2():
    return BabiTask(2)


@pytest.fixture(scope="module")
def task3():
    return BabiTask(3)


# ------------------------------------------------------------------------------ loader


@pytest.mark.parametrize("task", [1, 2, 3])
@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_files_load_with_expected_counts(task, split):
    stories = load_babi(task, split)
    qs = [q for st in stories for q in st.questions]
    assert len(stories) == 200
    assert len(qs) == 1000
    assert all(len(q.supports) == task for q in qs)
    for st in stories:
        assert st.statement_ids[0] == 1 or st.questions[0].line_id == 1
        for q in st.questions:
            assert 0 < q.n_before <= len(st.statements)
            # support ids name earlier statements; positions agree with ids
            for sid, pos in zip(q.supports, q.support_pos):
                assert st.statement_ids[pos] == sid and pos < q.n_before


def test_shipped_files_are_the_unmodified_licensed_copies():
    import hashlib

    here = Path(babi.__file__).parent / "data"
    licence = (here / "LICENSE-babi.md").read_text()
    assert "CC BY 3.0" in licence and "Facebook" in licence
    for task, names in FILES.items():
        for split, name in zip(("train", "test"), names):
            digest = hashlib.sha256((here / name).read_bytes()).hexdigest()
            assert f"{digest}  {name}" in licence
            a, b = load_babi_file(here / name), load_babi(task, split)
            assert [(s.statements, s.questions) for s in a] == \
                [(s.statements, s.questions) for s in b]


def test_parse_small_story():
    text = ("1 Mary got the milk there.\n2 John moved to the bedroom.\n"
            "3 Where is the milk? \tbedroom\t1\n1 Sandra went to the office.\n"
            "2 Where is Sandra? \toffice\t1\n")
    stories = parse_babi(text)
    assert [len(s.statements) for s in stories] == [2, 1]
    q = stories[0].questions[0]
    assert (q.text, q.answer, q.supports, q.support_pos, q.n_before, q.lineno) == (
        "Where is the milk?", "bedroom", (1,), (0,), 2, 3)


@pytest.mark.parametrize("bad, reason", [
    ("x Mary went to the garden.", "numeric ID"),
    ("3 Where is the milk?\tgarden", "3 tab-separated"),
    ("3 Where is the milk?\tgarden\t1 x", "integers"),
    ("3 Where is the milk?\tgarden\t7", "earlier statement"),
    ("3 Where is the milk?\t\t1", "empty answer"),
    ("3 Where is the milk?\tgarden\t", "no supporting"),
    ("5 Mary went to the garden.", "out of sequence"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, reason):
    p = tmp_path / "broken.txt"
    p.write_text(f"1 Mary got the milk there.\n2 Mary went to the garden.\n{bad}\n"
                 "4 John went to the office.\n")
    with pytest.raises(BabiFormatError) as ei:
        load_babi_file(p)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.lineno == 3 and e.source == str(p) and e.line == bad
    msg = str(e)
    assert f"{p}:3:" in msg and reason in msg and repr(bad) in msg


def test_wrong_number_of_supports_is_a_format_error(tmp_path):
    for name in FILES[2]:
        (tmp_path / name).write_text("1 Mary got the milk there.\n2 Mary went to the garden.\n"
                                     "3 Where is the milk? \tgarden\t2\n")
    with pytest.raises(BabiFormatError, match=r"qa2_two-supporting-facts_train\.txt:3: .*cite"):
        BabiTask(2, data_dir=tmp_path)


# ------------------------------------------------------------------------------ features


def _rewrite_labels(src: Path, dst: Path, mode: str) -> None:
    """Copy a bAbI file, changing only answers and supporting-fact ids."""
    out = []
    for line in src.read_text().splitlines():
        if "\t" in line:
            q, answer, ids = line.split("\t")
            ids = ids.split()
            if mode == "reverse":
                ids = ids[::-1]
            else:  # other valid ids: the first statements of the story
                ids = [str(i) for i in range(1, len(ids) + 1)]
            line = "\t".join([q, "nowhere", " ".join(ids)])
        out.append(line)
    dst.write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("mode", ["reverse", "replace"])
def test_features_do_not_read_labels(tmp_path, task2, mode):
    data = Path(babi.__file__).parent / "data"
    for name in FILES[2]:
        _rewrite_labels(data / name, tmp_path / name, mode)
    other = BabiTask(2, data_dir=tmp_path)
    assert other.fingerprint != task2.fingerprint
    assert other.stats == task2.stats
    # the same chain gives the same features whatever the labels say
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for (si, qi, q), (_, _, q2) in list(zip(task2.questions(part), other.questions(part)))[:200]:
            assert q.support_pos != q2.support_pos or q.answer != q2.answer
            chain = list(rng.choice(q.n_before, size=min(2, q.n_before), replace=False))
            for hop in range(len(chain) + 1):
                a, pa = question_features(task2._views[part][si], qi, q.n_before, chain[:hop], hop)
                b, pb = question_features(other._views[part][si], qi, q.n_before, chain[:hop], hop)
                assert np.array_equal(pa, pb)
                for f in FEATURES:
                    assert np.array_equal(a[f], b[f]), f
    # hop-0 rows of the batch and greedy inference are label-free too
    b1, b2 = task2.batch("valid"), other.batch("valid")
    h0 = b1.X["hop"] == 0
    assert np.array_equal(h0, b2.X["hop"] == 0)
    for f in FEATURES:
        assert np.array_equal(b1.X[f][h0], b2.X[f][h0])
    w = np.linspace(-1, 1, len(FEATURES))

    def scorer(X):
        return sum(wi * X[f] for wi, f in zip(w, FEATURES))

    assert task2.infer("test", scorer) == other.infer("test", scorer)


def test_feature_values_are_finite_float64(task3):
    for part in ("train", "valid", "test"):
        b = task3.batch(part)
        assert set(b.X) == set(FEATURES) == set(task3.features)
        for f, v in b.X.items():
            assert v.dtype == np.float64 and v.shape == (b.n_rows,), f
            assert np.all(np.isfinite(v)), f
        for f in ("q_overlap", "q_new", "hop_link", "chain_link", "frame_sim", "recency",
                  "anchor_persist"):
            assert b.X[f].min() >= 0.0 and b.X[f].max() <= 1.0, f


# ------------------------------------------------------------------------------ batch


@pytest.mark.parametrize("which", [2, 3])
def test_batch_grouping_invariants(task2, task3, which):
    task = task2 if which == 2 else task3
    for part in ("train", "valid", "test"):
        b = task.batch(part)
        qs = task.questions(part)
        G = len(qs) * task.k
        g = b.groups
        assert g.dtype == np.int64 and g[0] == 0 and g[-1] == G - 1
        assert np.all(np.diff(g) >= 0) and np.all(np.diff(g) <= 1)
        sizes = np.bincount(g, minlength=G)
        expected = [q.n_before - h for _, _, q in qs for h in range(task.k)]
        assert np.array_equal(sizes, expected)
        assert np.array_equal(np.bincount(g, weights=b.y, minlength=G), np.ones(G))
        assert set(np.unique(b.y)) == {0.0, 1.0}
        assert np.array_equal(b.X["hop"], (g % task.k).astype(float))
        assert b is task.batch(part)  # cached
    # splits: last 20% of the train file's stories are the validation part
    assert [len(task.stories[p]) for p in ("train", "valid", "test")] == [160, 40, 200]
    assert task.stories["valid"][-1] == load_babi(which, "train")[-1]


def test_fingerprint_is_stable_and_covers_settings(task2):
    assert BabiTask(2).fingerprint == task2.fingerprint
    assert BabiTask(2, valid_fraction=0.25).fingerprint != task2.fingerprint
    assert BabiTask(3).fingerprint != task2.fingerprint
    assert len(task2.fingerprint) == 32
    with pytest.raises(ValueError):
        BabiTask(4)
    with pytest.raises(ValueError):
        BabiTask(2, chain_order="random")
    with pytest.raises(ValueError):
        task2.batch("dev")


def test_registry_builds_babi_tasks():
    from evo_rules.fitness.registry import get_task, task_names

    assert {"babi-1", "babi-2", "babi-3"} <= set(task_names())
    t = get_task("babi-3", valid_fraction=0.1)
    assert t.name == "babi-3" and t.metric_name == "support_recall" and t.loss == "listwise"
    assert len(t.stories["valid"]) == 20


# ------------------------------------------------------------------------------ scoring


def test_score_handles_bad_scores_and_checks_length(task2):
    n = task2.batch("valid").n_rows
    r = task2.score("valid", lambda X: np.full(len(X["hop"]), np.nan))
    assert set(r) >= {"support_recall", "exact", "hop1", "hop2"}
    assert 0.0 <= r["exact"] <= r["support_recall"] <= 1.0
    with pytest.raises(ValueError, match="scores for"):
        task2.score("valid", lambda X: np.zeros(n + 1))


def test_greedy_never_picks_a_sentence_twice(task3):
    chains = task3.infer("valid", lambda X: X["recency"])
    for (_, _, q), ch in zip(task3.questions("valid"), chains):
        assert len(set(ch)) == 3 and max(ch) < q.n_before
        # recency-only: the three latest statements
        assert sorted(ch) == list(range(q.n_before - 3, q.n_before))


def test_segment_argmax_ties_and_nan():
    s = np.array([1.0, 3.0, 3.0, np.nan, np.nan, -np.inf, 2.0])
    starts = np.array([0, 3, 5])
    assert list(babi._segment_argmax(s, starts, len(s))) == [1, 3, 6]


def test_linear_rule_uses_every_feature():
    from evo_rules import parse

    assert set(parse(linear_rule_text()).features) == set(FEATURES)
    for text in reference_rules().values():
        assert set(parse(text).features) <= set(FEATURES)
    assert "eml" in reference_rules()["eml-gated"]


@pytest.mark.parametrize("which, recall, exact", [(2, 0.95, 0.90), (3, 0.80, 0.50)])
def test_fitted_reference_rule_beats_recency_and_reaches_targets(task2, task3, which, recall,
                                                                 exact):
    task = task2 if which == 2 else task3
    ref = babi.fit_and_score(task, reference_rules()["chain-sum"], "valid")
    trivial = babi.fit_and_score(task, reference_rules()["recency-only"], "valid")
    assert ref["valid"] and ref["size"] <= 25
    assert ref["support_recall"] >= recall and ref["exact"] >= exact
    assert ref["support_recall"] > trivial["support_recall"] + 0.3
    assert ref["exact"] > trivial["exact"] + 0.3


def test_memoised_hop_rows_give_the_scores_of_a_fresh_task(task3):
    rng = np.random.default_rng(5)
    scorers = []
    for _ in range(3):
        w = rng.normal(size=len(task3.features))
        scorers.append(lambda X, w=w: sum(wi * X[f] for wi, f in zip(w, task3.features)))
    first = [task3.score("valid", s) for s in scorers]
    again = [task3.score("valid", s) for s in reversed(scorers)][::-1]  # rows now from the memo
    fresh = BabiTask(3)
    assert first == again == [fresh.score("valid", s) for s in scorers]
    assert task3.infer("valid", scorers[1]) == fresh.infer("valid", scorers[1])
