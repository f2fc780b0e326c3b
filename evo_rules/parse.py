"""s-expression reader: text -> raw `Term` (not yet canonical)."""

from __future__ import annotations

import math
import re

from .terms import ARITY, NARY, Term, feature, num, weight

ALIASES = {"+": "add", "*": "mul"}
_TOKEN = re.compile(r"\s*(?:(\()|(\))|([^\s()]+))")
_WEIGHT = re.compile(r"w([A-Za-z0-9_]*)\Z")
_FEATURE = re.compile(r"x\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")


class ParseError(ValueError):
    """Malformed rule text. `pos` is the 0-based character offset of the problem."""

    def __init__(self, message: str, text: str, pos: int):
        self.text = text
        self.pos = pos
        self.reason = message
        super().__init__(f"{message} at position {pos}: {excerpt(text, pos)}")


def excerpt(text: str, pos: int, width: int = 24) -> str:
    start = max(0, pos - width)
    end = min(len(text), pos + width)
    left = ("..." if start > 0 else "") + text[start:pos]
    right = text[pos:end] + ("..." if end < len(text) else "")
    return f"{left!s}<<HERE>>{right!s}".replace("\n", " ")


def _tokens(text: str):
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace is left
            break
        if m.group(0).strip() == "":
            break
        start = m.start(m.lastindex)
        yield start, m.group(m.lastindex)
        pos = m.end()


def parse_term(text: str) -> Term:
    if not isinstance(text, str):
        raise TypeError(f"rule text must be a str, not {type(text).__name__}")
    toks = list(_tokens(text))
    if not toks:
        raise ParseError("empty rule text", text, 0)
    term, i = _read(toks, 0, text)
    if i != len(toks):
        raise ParseError(f"unexpected {toks[i][1]!r} after a complete rule", text, toks[i][0])
    return term


def _read(toks, i, text):
    pos, tok = toks[i]
    if tok == ")":
        raise ParseError("unexpected ')'", text, pos)
    if tok != "(":
        return _atom(tok, pos, text), i + 1
    if i + 1 >= len(toks):
        raise ParseError("'(' is never closed", text, pos)
    opos, op = toks[i + 1]
    if op in ("(", ")"):
        raise ParseError("expected an operator after '('", text, opos)
    op = ALIASES.get(op, op)
    if op not in NARY and op not in ARITY:
        raise ParseError(f"unknown operator {op!r} (known: add, mul, exp, log, eml, +, *)", text, opos)
    args = []
    j = i + 2
    while True:
        if j >= len(toks):
            raise ParseError("'(' is never closed", text, pos)
        if toks[j][1] == ")":
            break
        a, j = _read(toks, j, text)
        args.append(a)
    if op in ARITY and len(args) != ARITY[op]:
        raise ParseError(f"{op} takes {ARITY[op]} argument(s), got {len(args)}", text, opos)
    if op in NARY and len(args) < 1:
        raise ParseError(f"{op} needs at least one argument", text, opos)
    return Term(op, tuple(args)), j + 1


def _atom(tok: str, pos: int, text: str) -> Term:
    if _NUMBER.match(tok):
        v = float(tok)
        if not math.isfinite(v):
            raise ParseError(f"number {tok!r} is not finite", text, pos)
        return num(v)
    m = _WEIGHT.match(tok)
    if m:
        return weight(m.group(1))
    m = _FEATURE.match(tok)
    if m:
        return feature(m.group(1))
    if tok in ALIASES or tok in NARY or tok in ARITY:
        raise ParseError(f"operator {tok!r} must follow '('", text, pos)
    raise ParseError(
        f"unknown symbol {tok!r} (expected a number, a weight w/wN, or a feature x.NAME)", text, pos
    )
