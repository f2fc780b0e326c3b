"""Kernel variants (libmvec AVX-512, libmvec AVX2, scalar libm): how one is picked, the kind
string the fitness cache keys on, the vector math against libm, and the variants' agreement."""

import ctypes
import ctypes.util
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import kernels as K
from evo_rules import parse
from evo_rules.terms import to_text
from strategies import FEATURES, terms

VECTOR = [v for v in K.AVAILABLE if v != "scalar"]
ULP_BOUND = 4  # glibc documents libmvec within 4 ulp of the correctly rounded result
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
LIBM = {}
for _fn in ("exp", "log", "log1p"):
    LIBM[_fn] = getattr(_libm, _fn)
    LIBM[_fn].restype = ctypes.c_double
    LIBM[_fn].argtypes = [ctypes.c_double]
FUNCS = ("exp", "log", "log1p")

INF, NAN = math.inf, math.nan
EDGES = [0.0, -0.0, 1.0, -1.0, -2.5, 0.5, -0.5, -0.9999999999, 1e-10, -1e-10, 5e-324,
         2.2250738585072014e-308, 1e-300, 1e300, -1e300, 1.7976931348623157e308, 709.78, 709.79,
         710.0, -708.4, -740.0, -745.1, -746.0, INF, -INF, NAN]


def ordered(x: float) -> int:
    """Integer whose order and differences are those of the doubles (ulp steps; -0 == +0)."""
    i = struct.unpack("<q", struct.pack("<d", x))[0]
    return i if i >= 0 else -(i & 0x7FFF_FFFF_FFFF_FFFF)


def block_math(variant: str, fn: str, values) -> np.ndarray:
    """fn over values through the variant's block function (rows padded to its lanes)."""
    lanes = 8  # a multiple of every variant's lanes
    n = max(lanes, -(-len(values) // lanes) * lanes)
    buf = np.ones((2, n))
    buf[0, :len(values)] = values
    K.BLOCK_MATH[variant][FUNCS.index(fn)](buf, 1, 0, n)
    return buf[1, :len(values)]


def assert_libm_accuracy(variant, fn, values):
    got = block_math(variant, fn, values)
    for x, g in zip(values, got):
        want = LIBM[fn](x)
        where = f"{variant} {fn}({x!r}) = {g!r}, libm {want!r}"
        if math.isnan(want):
            assert math.isnan(g), where
        elif math.isinf(want) or want == 0.0:
            assert g == want, where  # IEEE special cases exactly: overflow, underflow, poles
        else:
            assert abs(ordered(g) - ordered(want)) <= ULP_BOUND, where


# ---------------------------------------------------------------- vector math against libm

@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("variant", VECTOR)
def test_vector_math_edge_values_match_libm(variant, fn):
    assert_libm_accuracy(variant, fn, EDGES)


ARGS = {  # mostly where the function is finite and not trivially 0 or inf, plus any double
    "exp": st.one_of(st.floats(-750.0, 712.0), st.floats()),
    "log": st.one_of(st.floats(0.0, 1e308), st.floats(1e-310, 10.0), st.floats()),
    "log1p": st.one_of(st.floats(-1.0, 1e6), st.floats(-1e-8, 1e-8), st.floats()),
}


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("variant", VECTOR)
@settings(max_examples=200)
@given(data=st.data())
def test_vector_math_matches_libm_within_the_documented_ulp(variant, fn, data):
    assert_libm_accuracy(variant, fn, data.draw(st.lists(ARGS[fn], min_size=1, max_size=40)))


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("variant", VECTOR)
def test_vector_math_on_many_random_arguments(variant, fn):
    rng = np.random.default_rng(7)
    lo, hi = {"exp": (-745.0, 709.0), "log": (-700.0, 700.0), "log1p": (-40.0, 20.0)}[fn]
    x = rng.uniform(lo, hi, 40_000)
    if fn != "exp":  # log-uniform magnitudes; log1p also just above -1
        x = np.exp(x) if fn == "log" else np.r_[np.expm1(-np.exp(x[:20_000])), np.exp(x[20_000:])]
    got = block_math(variant, fn, x)
    want = np.array([LIBM[fn](v) for v in x])
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    fin = np.isfinite(want)
    worst = max(abs(ordered(g) - ordered(w)) for g, w in zip(got[fin], want[fin]))
    assert worst <= ULP_BOUND


# ---------------------------------------------------------------- selection and kind strings

def test_every_variant_has_its_own_kind_string():
    kinds = [K.VARIANTS[v].kind for v in K.WIDEST_FIRST]
    assert len(set(kinds)) == len(kinds)
    assert K.KERNEL_KIND == K.VARIANTS[K.VARIANT].kind
    assert K.VECTOR_MATH == (K.VARIANT != "scalar")
    assert K.LANES == K.VARIANTS[K.VARIANT].lanes
    assert K.run_program is K.kernel(K.VARIANT)


def test_the_environment_caps_the_variant():
    assert [K.requested_cap(v) for v in (None, "", "auto", "1", "AVX512", " avx2 ", "0", "off")] == \
        ["avx512", "avx512", "avx512", "avx512", "avx512", "avx2", "scalar", "scalar"]
    with pytest.raises(ValueError, match="EVO_RULES_VECTOR_MATH='sse'"):
        K.requested_cap("sse")


def test_the_widest_available_variant_under_the_cap_is_picked():
    everything = ("avx512", "avx2", "scalar")
    assert K.select("avx512", everything) == "avx512"
    assert K.select("avx2", everything) == "avx2"
    assert K.select("scalar", everything) == "scalar"
    assert K.select("avx512", ("avx2", "scalar")) == "avx2"  # an AVX2-only machine
    assert K.select("avx512", ("scalar",)) == "scalar"
    if os.environ.get(K.ENV) is None:
        assert K.VARIANT == K.AVAILABLE[0]


def test_unknown_or_missing_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kernel variant 'neon'"):
        K.kernel("neon")
    missing = [v for v in K.WIDEST_FIRST if v not in K.AVAILABLE]
    for v in missing:
        with pytest.raises(ValueError, match=f"'{v}' is not available here"):
            K.kernel(v)


@pytest.mark.parametrize("cap", ["0", "avx2", "auto"])
def test_forcing_a_variant_through_the_environment(cap):
    env = dict(os.environ, **{K.ENV: cap})
    code = "import evo_rules.kernels as K; print(K.VARIANT, K.KERNEL_KIND); print(K.VECTOR_MATH_INFO)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    want = K.select(K.requested_cap(cap), K.AVAILABLE)
    assert out[0] == f"{want} {K.VARIANTS[want].kind}"
    if want != K.AVAILABLE[0]:
        assert "caps it" in out[1]


# ---------------------------------------------------------------- the variants agree on rules

def _run(variant, rule, F, w, jacobian):
    p = rule.program if jacobian else rule.forward_program
    out = np.empty((len(p.outputs), F.shape[1]))
    ok = K.kernel(variant)(p.code, p.arg_a, p.arg_b, p.consts, F, w, p.outputs, out)
    return out, ok


PAIRS = [(a, b) for i, a in enumerate(K.AVAILABLE) for b in K.AVAILABLE[i + 1:]]


@pytest.mark.parametrize("wide,narrow", PAIRS)
@settings(max_examples=100)
@given(t=terms(), seed=st.integers(0, 10_000))
def test_variants_agree_on_random_rules(wide, narrow, t, seed):
    r = parse(to_text(t))
    rng = np.random.default_rng(seed)
    specials = np.array([0.0, -0.0, -1.0, 1e-300, 710.0, -750.0, 1e300, np.inf, -np.inf, np.nan])
    X = {f: np.r_[rng.uniform(-3, 3, 40), specials] for f in FEATURES}
    w = rng.uniform(-2, 2, len(r.params))
    F = r.feature_matrix(X)
    v, ok_v = _run(wide, r, F, w, True)
    s, ok_s = _run(narrow, r, F, w, True)
    assert ok_v == ok_s
    assert np.array_equal(np.isnan(v), np.isnan(s))
    assert np.array_equal(np.isinf(v), np.isinf(s))
    fin = np.isfinite(v)
    # each variant's exp and log are within a few ulp of libm, but exp multiplies the relative error
    # of its argument by the argument (up to 709): exp(exp(c) - c) differed by 2.7e-12 relative
    # (3 ulp of an inner value near 583), so the tolerance allows a nested exp's amplification
    assert np.allclose(v[fin], s[fin], rtol=1e-9, atol=1e-12 * (1 + np.abs(s[fin]).max(initial=0)))


@pytest.mark.parametrize("variant", K.AVAILABLE)
@settings(max_examples=40)
@given(t=terms(), seed=st.integers(0, 10_000), n=st.integers(1, 600), cut=st.integers(0, 599))
def test_a_rows_value_does_not_depend_on_the_rows_around_it(variant, t, seed, n, cut):
    r = parse(to_text(t))
    cut = min(cut, n - 1)
    rng = np.random.default_rng(seed)
    X = {f: rng.uniform(0.1, 2.0, n) for f in FEATURES}
    w = rng.uniform(-1, 1, len(r.params))
    F = r.feature_matrix(X)
    whole, _ = _run(variant, r, F, w, True)
    tail, _ = _run(variant, r, np.ascontiguousarray(F[:, cut:]), w, True)
    assert np.array_equal(whole[:, cut:], tail, equal_nan=True)  # bit for bit, block and lane moved
