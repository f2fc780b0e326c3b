"""Hypothesis strategies for random terms, shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st

from evo_rules.terms import Term, feature, num, weight

FEATURES = ("a", "b", "c")


def leaves(named_weights: bool = True):
    w = st.sampled_from(["", "1", "2", "3"]) if named_weights else st.just("")
    return st.one_of(
        st.builds(feature, st.sampled_from(FEATURES)),
        st.builds(weight, w),
        st.builds(num, st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, 3.0])),
    )


def terms(max_leaves: int = 12, named_weights: bool = True):
    def extend(children):
        return st.one_of(
            st.builds(lambda ops, a: Term(ops, tuple(a)), st.sampled_from(["add", "mul"]),
                      st.lists(children, min_size=2, max_size=3)),
            st.builds(lambda a: Term("exp", (a,)), children),
            st.builds(lambda a: Term("log", (a,)), children),
            st.builds(lambda a, b: Term("eml", (a, b)), children, children),
        )

    return st.recursive(leaves(named_weights), extend, max_leaves=max_leaves)
