"""Text features of memory chunks (stage 3), computed from the memory only, never the target.

An episode's memory is chunks 0..n-1; chunk n-1 is the *recent* chunk, always kept; the
candidates a rule scores are chunks 0..n-2. Words are lower-cased runs of letters; *content
words* are words of 3+ letters outside a small stop list; *names* are capitalised words that are
not the first word of their sentence and not stop words ("Lily", "Beep"), plus any word seen
capitalised mid-sentence elsewhere in the memory.

| feature | meaning |
|---|---|
| recency | (c + 1) / (n - 1): 1 for the chunk just before the recent one |
| back | 1 / (n - 1 - c): 1 for the chunk before the recent one, 1/2 the one before, ... |
| first | 1 for chunk 0 (the story's opening: who and where) |
| length | words / 10 |
| overlap_recent | share of the recent chunk's content words that c contains |
| overlap_memory | share of c's content words found in other memory chunks |
| names_recent | share of the recent chunk's names that c mentions |
| name_intro | 1 if c is the first chunk to mention a name mentioned again later in the memory |
| names | distinct names in c / 2 |
| quote | 1 if c holds dialogue (a quotation mark) |
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

TEXT_FEATURES = ("recency", "back", "first", "length", "overlap_recent", "overlap_memory",
                 "names_recent", "name_intro", "names", "quote")

STOP = frozenset("""a an the and or but so then than that this these those there here he she it they
we you i me my your his her its our their them him us was were is are be been being am do did does
done have has had not no yes to of in on at by for with from up down out over into onto off as if
when while after before because very too also just all any some one two what who whom which why how
said says say asked mom dad once upon time day""".split())
_WORD = re.compile(r"[A-Za-z]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def content(text: str) -> set[str]:
    return {w.lower() for w in words(text) if len(w) >= 3 and w.lower() not in STOP}


def _names_mid_sentence(text: str) -> set[str]:
    ws = words(text)
    return {w.lower() for w in ws[1:] if w[0].isupper() and w.lower() not in STOP}


def text_features(chunks: Sequence[str]) -> np.ndarray:
    """(n - 1, len(TEXT_FEATURES)) float64 features of the candidates of a memory of n chunks."""
    n = len(chunks)
    if n < 2:
        return np.zeros((0, len(TEXT_FEATURES)))
    cont = [content(c) for c in chunks]
    name_vocab = set().union(*(_names_mid_sentence(c) for c in chunks))
    names = [{w.lower() for w in words(c)} & name_vocab for c in chunks]
    recent = n - 1
    first_mention: dict[str, int] = {}
    count: dict[str, int] = {}
    for i, ns in enumerate(names):
        for w in ns:
            first_mention.setdefault(w, i)
            count[w] = count.get(w, 0) + 1
    rows = []
    for c in range(n - 1):
        others = set().union(*(cont[j] for j in range(n) if j != c)) if n > 1 else set()
        rows.append([
            (c + 1) / (n - 1),
            1.0 / (n - 1 - c),
            1.0 if c == 0 else 0.0,
            len(words(chunks[c])) / 10.0,
            len(cont[c] & cont[recent]) / len(cont[recent]) if cont[recent] else 0.0,
            len(cont[c] & others) / len(cont[c]) if cont[c] else 0.0,
            len(names[c] & names[recent]) / len(names[recent]) if names[recent] else 0.0,
            1.0 if any(first_mention[w] == c and count[w] > 1 for w in names[c]) else 0.0,
            len(names[c]) / 2.0,
            1.0 if ('"' in chunks[c] or "\u201c" in chunks[c]) else 0.0,
        ])
    return np.asarray(rows, dtype=np.float64)


def target_overlap(kept: Sequence[str], target: str) -> float:
    """Share of the target's content words found in the kept memory (nan if it has none)."""
    t = content(target)
    if not t:
        return float("nan")
    have = set().union(*(content(k) for k in kept)) if kept else set()
    return len(t & have) / len(t)
