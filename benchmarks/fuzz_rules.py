"""Fuzz the rule parser and the symbolic passes: every text must parse or get a ParseError.

    PYTHONPATH=. python benchmarks/fuzz_rules.py                # 100,000 texts (a few minutes)
    PYTHONPATH=. python benchmarks/fuzz_rules.py --n 5000 --seed 3

Texts (seeded, reproducible), in these shares:
  grammar     random rules from the grammar (aliases + and *, named and anonymous weights,
              numbers from tiny to near the float limit), random whitespace
  mutated     a grammar text damaged: truncated, a byte's bit flipped, a character inserted,
              deleted or swapped, a paren added or removed, a slice repeated
  deep        one operator nested 1..3,000 deep, closed or not
  constants   add/mul/exp of huge, tiny and overflowing numbers, with or without a feature
  soup        random tokens of the language, parens and junk
  bytes       random bytes decoded as UTF-8 (with replacement) or Latin-1: control characters,
              line separators, any unicode
  large       a flat or nested rule near the size limit, or text over the length limit
Each text goes through `evo_rules.parse` under a 1 s alarm on the process's CPU time (a hang
still trips it; `--wall` times wall-clock instead, which on a machine shared with other jobs also
counts the time spent waiting for a core; both are measured and the wall-clock count over the
limit is printed either way). A ParseError must be one line with
"at position N". A parsed rule must round-trip (its canonical text parses to the same key) and
its gradients, compiled program and jacobian on 4 random rows must run. Outcomes counted:
parsed, ParseError, other exception (must be 0), over 1 s (must be 0); the slowest input is
shown. Exit status 1 when either must-be-0 count is not 0.
The gradient of an eml chain 100 deep (built as a term: the parser's depth limit is 64) is timed
too (target: under 1 s).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from collections import Counter

import numpy as np

from evo_rules import ParseError, parse
from evo_rules.rule import Rule
from evo_rules.terms import MAX_SIZE, MAX_TEXT, Term, dag_size, feature, weight

OPS = ["add", "mul", "exp", "log", "eml", "+", "*"]
ARITY = {"exp": 1, "log": 1, "eml": 2}
FEATURES = ["a", "b", "c", "color", "f_1"]
SPACES = [" ", " ", " ", "  ", "\n", "\t", " \r\n "]
JUNK = ["(", ")", "((", "))", "foo", "x.", "w-", "1e", "--1", "nan", "inf", "é", "\u2028", "\x00",
        "٣", "1_0", ";", "'", '"', "\\", "𝑥"]


class Timeout(BaseException):  # not an Exception: nothing under test can swallow it
    pass


def _alarm(signum, frame):
    raise Timeout


def number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return rng.choice(["0", "1", "-1", "2", "0.5", "3", "-0.0", ".5", "+2", "1."])
    if kind < 0.8:
        return repr(rng.uniform(-10, 10))
    mant = rng.uniform(1, 9.99)
    return f"{rng.choice(['', '-'])}{mant:.3f}e{rng.randint(-330, 330)}"


def leaf(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return "x." + rng.choice(FEATURES)
    if r < 0.7:
        return "w" + rng.choice(["", "", "1", "2", "7", "_k"])
    return number(rng)


def grammar_text(rng: random.Random, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.25:
        return leaf(rng)
    op = rng.choice(OPS)
    n = ARITY.get(op) or rng.randint(1, 4)
    sp = rng.choice(SPACES)
    return "(" + op + "".join(sp + grammar_text(rng, depth - 1) for _ in range(n)) + ")"


def mutate(rng: random.Random, text: str) -> str:
    if not text:
        return rng.choice(JUNK)
    i = rng.randrange(len(text) + 1)
    kind = rng.randrange(7)
    if kind == 0:
        return text[:i]
    if kind == 1:
        b = bytearray(text.encode())
        b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        return b.decode("utf-8", errors="replace")
    if kind == 2:
        return text[:i] + rng.choice(JUNK + OPS + [leaf(rng)]) + text[i:]
    if kind == 3:
        return text[:i] + text[i + 1:]
    if kind == 4:
        j = rng.randrange(len(text) + 1)
        i, j = min(i, j), max(i, j)
        return text[:i] + text[i:j] * rng.randint(2, 50) + text[j:]
    if kind == 5:
        return text.replace("(", "", 1) if rng.random() < 0.5 else text.replace(")", "", 1)
    chars = list(text)
    j = rng.randrange(len(chars))
    chars[min(i, len(chars) - 1)], chars[j] = chars[j], chars[min(i, len(chars) - 1)]
    return "".join(chars)


NESTS = [("(exp ", ")"), ("(log ", ")"), ("(eml ", " w)"), ("(eml w ", ")"), ("(add x.a ", ")"),
         ("(mul w ", ")"), ("(+ 1 (log (exp ", ")))"), ("(", ")"), ("(* ", " x.b)")]


def deep_text(rng: random.Random) -> str:
    head, tail = rng.choice(NESTS)
    n = rng.choice([rng.randint(1, 80), rng.randint(1, 3000)])
    closed = rng.random() < 0.7
    return head * n + leaf(rng) + (tail * n if closed else tail * rng.randrange(n + 1))


def constants_text(rng: random.Random) -> str:
    big = [repr(rng.choice([1e308, -1e308, 1.7976931348623157e308, 8.98846567431158e307]))
           for _ in range(rng.randint(1, 4))]
    big += [number(rng) for _ in range(rng.randint(0, 2))]
    big += ["1e309", "-1e400", "1e-400"][: rng.randint(0, 1)]
    rng.shuffle(big)
    if rng.random() < 0.5:
        big.append("x.a")
    op = rng.choice(["add", "mul", "+", "*"])
    text = f"({op} {' '.join(big)})"
    if rng.random() < 0.3:
        text = f"(add {text} (exp {rng.choice(['709.7', '710', '1000', '-1000', number(rng)])}))"
    return text


def soup_text(rng: random.Random) -> str:
    toks = OPS + JUNK + ["(", ")"] * 4 + [leaf(rng) for _ in range(5)]
    return "".join(rng.choice(toks) + rng.choice(SPACES + [""]) for _ in range(rng.randint(0, 60)))


def bytes_text(rng: random.Random) -> str:
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
    return raw.decode("utf-8", errors="replace") if rng.random() < 0.5 else raw.decode("latin-1")


def large_text(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:  # flat, around the size limit
        n = rng.randint(MAX_SIZE - 50, MAX_SIZE + 50)
        return "(add" + "".join(" " + leaf(rng) for _ in range(n - 1)) + ")"
    if kind == 1:  # products of weighted exps: every gradient a product of the others
        n = rng.randint(MAX_SIZE // 20, MAX_SIZE // 4 + 20)
        return "(mul" + "".join(f" (exp (mul w{i} x.{rng.choice(FEATURES)}))" for i in range(n)) + ")"
    if kind == 2:  # nested, both wide and deep
        return grammar_text(rng, 9)
    return "(add x.a " + " " * (MAX_TEXT + rng.randint(-20, 20)) + ")"


KINDS = [("grammar", 0.35, lambda rng: grammar_text(rng, rng.randint(1, 6))),
         ("mutated", 0.25, lambda rng: mutate(rng, grammar_text(rng, rng.randint(1, 6)))),
         ("deep", 0.07, deep_text), ("constants", 0.1, constants_text), ("soup", 0.12, soup_text),
         ("bytes", 0.08, bytes_text), ("large", 0.03, large_text)]


def check(text: str, rng: np.random.Generator) -> str:
    """'parsed' or 'ParseError'; raises on anything else."""
    try:
        r = parse(text)
    except ParseError as e:
        msg = str(e)
        if len(msg.splitlines()) != 1 or f"at position {e.pos}" not in msg:
            raise AssertionError(f"bad ParseError message: {msg[:200]!r}") from None
        return "ParseError"
    again = parse(r.text)
    if again.key != r.key:
        raise AssertionError(f"canonical text does not round-trip: {r.text[:100]}")
    assert list(r.gradients) == list(r.params)
    X = {f: rng.uniform(-2.0, 2.0, 4) for f in {"a", *r.features}}
    with np.errstate(all="ignore"):
        s, J = r.jacobian(X, rng.uniform(-1.0, 1.0, len(r.params)))
    assert s.shape == (4,) and J.shape == (4, len(r.params))
    return "parsed"


def eml_chain_seconds(depth: int = 100) -> tuple[float, int, int]:
    t = feature("a")
    for _ in range(depth):
        t = Term("eml", (t, weight()))
    t0 = time.perf_counter()
    r = Rule(t)
    grads = r.gradients
    n = len(r.program)
    return time.perf_counter() - t0, dag_size(Term("add", tuple(grads.values()))), n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="texts to feed (default 100,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=1.0, help="seconds allowed per text")
    ap.add_argument("--wall", action="store_true",
                    help="the alarm counts wall-clock time, not the process's CPU time")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    check("(eml (mul w x.a) (add 1 (exp (mul w x.b))))", nrng)  # compile the kernels first
    timer, sig = (signal.ITIMER_REAL, signal.SIGALRM) if args.wall else (signal.ITIMER_PROF, signal.SIGPROF)
    signal.signal(sig, _alarm)
    counts: Counter = Counter()
    by_kind: Counter = Counter()
    others: list[str] = []
    slow: list[str] = []  # inputs over half the limit, for a look at what is slow
    slowest = (0.0, "", "")
    slowest_wall = 0.0
    wall_over = 0
    names = [k for k, _, _ in KINDS]
    weights = [w for _, w, _ in KINDS]
    makers = {k: f for k, _, f in KINDS}
    t_start = time.perf_counter()
    for i in range(args.n):
        kind = rng.choices(names, weights)[0]
        text = makers[kind](rng)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            try:
                signal.setitimer(timer, args.limit)
                outcome = check(text, nrng)
            finally:  # the alarm may fire here too: it is still caught below
                signal.setitimer(timer, 0)
        except Timeout:
            outcome = "over 1 s"
            others.append(f"[{kind}] over {args.limit} s: {text[:120]!r}")
        except Exception as e:  # noqa: BLE001  (counting every failure is the point)
            outcome = "other exception"
            others.append(f"[{kind}] {type(e).__name__}: {str(e)[:160]} <- {text[:120]!r}")
        wall = time.perf_counter() - t0
        dt = wall if args.wall else time.process_time() - c0
        slowest_wall = max(slowest_wall, wall)
        wall_over += wall > args.limit
        if dt > args.limit / 2:
            slow.append(f"{dt * 1000:.0f} ms [{kind}] {len(text):,} characters: {text[:80]!r}")
        if dt > slowest[0]:
            slowest = (dt, kind, text)
        counts[outcome] += 1
        by_kind[kind, outcome] += 1
        if (i + 1) % 10_000 == 0:
            print(f"  {i + 1:,} texts, {time.perf_counter() - t_start:.0f} s", flush=True)

    print(f"texts fuzzed:      {args.n:,} (seed {args.seed}) in {time.perf_counter() - t_start:.0f} s")
    clock = "wall-clock" if args.wall else "CPU"
    for outcome in ("parsed", "ParseError", "other exception", "over 1 s"):
        print(f"{outcome + ':':18s} {counts[outcome]:,}" + (f" ({clock} time)" if outcome == "over 1 s" else ""))
    for kind in names:
        row = ", ".join(f"{o} {by_kind[kind, o]:,}" for o in ("parsed", "ParseError") if by_kind[kind, o])
        print(f"  {kind:10s} {row}")
    dt, kind, text = slowest
    shown = text if len(text) <= 100 else f"{text[:100]!r}... ({len(text):,} characters)"
    print(f"slowest input:     {dt * 1000:.1f} ms {clock} time ({kind}): {shown}")
    print(f"wall-clock:        slowest {slowest_wall * 1000:.1f} ms, {wall_over:,} over {args.limit:g} s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for line in others[:20]:
        print("  " + line)
    print(f"inputs over {args.limit / 2:g} s: {len(slow)}")
    for line in slow[:10]:
        print("  " + line)
    secs, dag, prog = eml_chain_seconds()
    print(f"eml chain 100 deep: canonical form + gradients + program in {secs:.3f} s "
          f"(gradients: {dag:,} distinct nodes; program: {prog:,} instructions)")
    return 1 if counts["other exception"] or counts["over 1 s"] else 0


if __name__ == "__main__":
    sys.exit(main())
