"""s-expression reader: text -> raw `Term` (not yet canonical).

The reader is iterative and bounded: any text either parses or raises `ParseError` (one line,
with a position). Rules deeper than `MAX_DEPTH` levels, larger than `MAX_SIZE` nodes or longer
than `MAX_TEXT` characters are refused here, so every recursive pass after parsing runs far
inside Python's recursion limit and in bounded time.
"""

from __future__ import annotations

import math
import re

from .terms import (ARITY, MAX_DEPTH, MAX_SIZE, MAX_TEXT, NARY, OPERATORS, Term, feature, num,
                    to_text, weight)

ALIASES = {"+": "add", "*": "mul"}
_TOKEN = re.compile(r"[()]|[^\s()]+")
_WEIGHT = re.compile(r"w([A-Za-z0-9_]*)\Z")
_FEATURE = re.compile(r"x\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")


class ParseError(ValueError):
    """Malformed rule text. `pos` is the 0-based character offset of the problem."""

    def __init__(self, message: str, text: str, pos: int):
        self.text = text
        self.pos = pos
        self.reason = message
        super().__init__(f"{message} at position {pos}: {excerpt(text, pos)}")


def _printable(s: str) -> str:
    """One line whatever the input: control and line-separator characters escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)


def show(s: str, width: int = 40) -> str:
    """A token or subterm for a message: quoted, escaped, shortened."""
    return repr(s if len(s) <= width else s[: width - 3] + "...")


def excerpt(text: str, pos: int, width: int = 24) -> str:
    start = max(0, pos - width)
    end = min(len(text), pos + width)
    left = ("..." if start > 0 else "") + text[start:pos]
    right = text[pos:end] + ("..." if end < len(text) else "")
    return _printable(f"{left!s}<<HERE>>{right!s}")


def _tokens(text: str) -> list[tuple[int, str]]:
    """(offset, token) of every '(' , ')' and run of other non-space characters."""
    return [(m.start(), m.group()) for m in _TOKEN.finditer(text)]


def parse_term(text: str) -> Term:
    """Raw term of `text`; `ParseError` for anything that is not a rule within the limits."""
    return read(text)[0]


def read(text: str) -> tuple[Term, dict[int, tuple[int, int]]]:
    """Raw term and the text span (start, end) of each of its inner nodes (by object id, valid
    while the term is alive)."""
    if not isinstance(text, str):
        raise TypeError(f"rule text must be a str, not {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ParseError(f"rule text is {len(text):,} characters, over the limit of {MAX_TEXT:,} "
                         f"(MAX_TEXT)", text, MAX_TEXT)
    toks = _tokens(text)
    if not toks:
        raise ParseError("empty rule text", text, 0)
    positions: dict[int, tuple[int, int]] = {}
    # one frame per open '(': [position of '(', operator, position of operator, children]
    stack: list[tuple[int, str, int, list[Term]]] = []
    nodes = 0
    i = 0
    result = None
    while True:
        pos, tok = toks[i]
        if result is not None:
            raise ParseError(f"unexpected {show(tok)} after a complete rule", text, pos)
        done = None
        if tok == "(":
            if len(stack) + 1 >= MAX_DEPTH:
                raise ParseError(f"rule nested deeper than the limit of {MAX_DEPTH} levels "
                                 f"(MAX_DEPTH)", text, pos)
            if i + 1 >= len(toks):
                raise ParseError("'(' is never closed", text, pos)
            opos, op = toks[i + 1]
            if op in ("(", ")"):
                raise ParseError("expected an operator after '('", text, opos)
            op = ALIASES.get(op, op)
            if op not in NARY and op not in ARITY:
                raise ParseError(f"unknown operator {show(op)} (known: {', '.join(OPERATORS)}, "
                                 f"+, *)", text, opos)
            stack.append((pos, op, opos, []))
            i += 2
        elif tok == ")":
            if not stack:
                raise ParseError("unexpected ')'", text, pos)
            start, op, opos, args = stack.pop()
            if op in ARITY and len(args) != ARITY[op]:
                raise ParseError(f"{op} takes {ARITY[op]} argument(s), got {len(args)}", text, opos)
            if op in NARY and len(args) < 1:
                raise ParseError(f"{op} needs at least one argument", text, opos)
            done = Term(op, tuple(args))
            positions[id(done)] = (start, pos + 1)
            i += 1
        else:
            done = _atom(tok, pos, text)
            i += 1
        if done is not None:
            nodes += 1
            if nodes > MAX_SIZE:
                raise ParseError(f"rule larger than the limit of {MAX_SIZE} nodes (MAX_SIZE)",
                                 text, pos)
            if stack:
                stack[-1][3].append(done)
            else:
                result = done
        if i >= len(toks):
            if stack:
                raise ParseError("'(' is never closed", text, stack[-1][0])
            return result, positions


def _atom(tok: str, pos: int, text: str) -> Term:
    first = tok[0]  # a weight starts with w, a feature with x, a number with neither
    if first == "x":
        m = _FEATURE.match(tok)
        if m:
            return feature(m.group(1))
    elif first == "w":
        m = _WEIGHT.match(tok)
        if m:
            return weight(m.group(1))
    elif _NUMBER.match(tok):
        v = float(tok)
        if not math.isfinite(v):
            raise ParseError(f"number {show(tok)} is not finite", text, pos)
        return num(v)
    if tok in ALIASES or tok in NARY or tok in ARITY:
        raise ParseError(f"operator {show(tok)} must follow '('", text, pos)
    raise ParseError(
        f"unknown symbol {show(tok)} (expected a number, a weight w/wN, or a feature x.NAME)",
        text, pos,
    )


# ---------------------------------------------------------------- constants that overflow


def check_sums(t: Term, text: str, positions: dict[int, tuple[int, int]], fold) -> None:
    """Refuse a sum or product of typed numbers that overflows, e.g. (add 1e308 1e308): the
    canonical form could not fold it. `fold(op, values)` is the canonical form's folding."""
    for n in _inner_nodes(t):
        if n.op not in NARY:
            continue
        values = []
        stack = list(n.args)
        while stack:  # numbers of nested same-operator nodes fold together, as in simplify
            a = stack.pop()
            if a.op == n.op:
                stack.extend(a.args)
            elif a.op == "num":
                values.append(a.value)
        if len(values) > 1 and not math.isfinite(fold(n.op, values)):
            start, end = positions[id(n)]
            raise ParseError(f"constant overflows: the numbers of {show(text[start:end])} "
                             f"{'add' if n.op == 'add' else 'multiply'} to more than the float "
                             f"range", text, start)


def check_folded(canonical: Term, text: str) -> None:
    """The same for sums that only appear once the rule is simplified, e.g. two large exp
    constants added: the canonical form leaves such numbers unfolded (2 or more numbers under
    one add/mul), which would make its own text unparseable."""
    for n in _inner_nodes(canonical):
        if n.op in NARY and sum(a.op == "num" for a in n.args) > 1:
            raise ParseError(f"constant overflows: the simplified rule holds {show(to_text(n))}, "
                             f"numbers whose {'sum' if n.op == 'add' else 'product'} is beyond "
                             f"the float range", text, 0)


def _inner_nodes(t: Term):
    stack = [t]
    while stack:
        n = stack.pop()
        if n.args:
            yield n
            stack.extend(n.args)
