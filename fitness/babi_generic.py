"""Generic features for bAbI retrieval (`[task.settings] features = "generic"`).

What any sentence-retrieval task has, and nothing built for bAbI: positions, overlap with the
question and with the sentences chosen in earlier hops, latest mentions, and word indicators.
There is no list of objects, verbs or places and no statistic of how long an association lasts:
which words matter (that "took" keeps an object with a person and "dropped" does not) is left
to the search, through products of word indicators with positional and hop features.

Text analysis (English, no bAbI word lists)
-------------------------------------------
tokens: runs of letters/digits/apostrophes. `STOPWORDS` is a general English function-word list
(articles, prepositions, pronouns, auxiliaries, particles). *Content words*: lower-cased tokens
not in it. *Entities*: content tokens that are capitalised or follow an article (the/a/an).
From the train part's statements only (no answers, no supporting ids):

- idf(e) = 1 + ln((1 + N) / (1 + df(e))) over the N train statements, for entities;
- the vocabulary: the `vocab_size` content words found in most train statements (ties: alphabetical),
  leaving out words never written in lower case (names: who a story is about says nothing
  general; the overlap features cover them).

Features
--------
With n candidates c = 0..n-1 in story order, chosen chain C (hops < i), anchor a = the last
element of C; Q = the question's entities; shares are idf-weighted over entities.

| name | meaning |
|---|---|
| recency | (c + 1) / n |
| hop | hop index i |
| after_anchor | 1 if c comes after the anchor (0 at hop 0) |
| q_words | share of the question's content words that c contains (plain words) |
| q_ents | share of Q that c mentions |
| q_new | share of the entities of Q no chosen sentence mentions that c mentions |
| q_latest | share of Q whose latest mention (among all candidates) is c |
| latest_mention | 1 if c is the latest mention of some entity of Q or of the chain |
| link | share of the anchor's entities outside Q that c mentions (0 at hop 0) |
| chain_link | share of the chain's entities outside Q that c mentions (0 at hop 0) |
| link_latest | 1 if c is the latest not-chosen candidate with link > 0 |
| anchor_words | Jaccard similarity of the content words of c and of the anchor (0 at hop 0) |
| w_WORD | 1 if c contains WORD (one per vocabulary word) |
| a_WORD | 1 if the anchor contains WORD (0 at hop 0; the same for every candidate of a group) |

`a_WORD` is the anchor's side of "overlap with the sentences chosen in earlier hops": what the
previous hop said (a person took or dropped something) decides where the next hop looks, so a
rule needs the anchor's words to combine with positions, e.g. `after_anchor * a_took`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from .babi import _share, chain_masks, latest_mentions

GENERIC_VERSION = "babi-generic-1"
DEFAULT_VOCAB = 40
BASE_FEATURES: tuple[str, ...] = (
    "recency", "hop", "after_anchor", "q_words", "q_ents", "q_new", "q_latest", "latest_mention",
    "link", "chain_link", "link_latest", "anchor_words",
)

# general English function words (no content word of any bAbI task is in it)
STOPWORDS = frozenset("""
a an the this that these those some any each every no not all both
i me my we us our you your he him his she her it its they them their one
is are was were be been being am do does did done have has had having will would shall should
can could may might must
to of in on at into onto from with by for about over under between through during up down out off
away there here then than so as if when where what who whom whose which why how before after
again further once and or but nor yet also just only very too
""".split())
ARTICLES = frozenset(("the", "a", "an"))
_TOKEN = re.compile(r"[A-Za-z0-9']+")


@lru_cache(maxsize=65536)
def analyse(text: str) -> tuple[tuple[str, ...], tuple[str, ...], frozenset]:
    """(entities in order, content words in order, content words written in lower case),
    all lower-case and without repeats."""
    ents: list[str] = []
    words: list[str] = []
    lower: set[str] = set()
    prev = ""
    for tok in _TOKEN.findall(text):
        low = tok.lower()
        if low not in STOPWORDS:
            if low not in words:
                words.append(low)
            if (tok[0].isupper() or prev in ARTICLES) and low not in ents:
                ents.append(low)
            if not tok[0].isupper():
                lower.add(low)
        prev = low
    return tuple(ents), tuple(words), frozenset(lower)


@dataclass(frozen=True)
class GenericStats:
    """Train-part statistics: entity document frequencies and the word vocabulary."""

    n_sentences: int
    df: Mapping[str, int]
    vocab: tuple[str, ...]

    def idf(self, e: str) -> float:
        return 1.0 + float(np.log((1.0 + self.n_sentences) / (1.0 + self.df.get(e, 0))))

    @property
    def names(self) -> tuple[str, ...]:
        return BASE_FEATURES + tuple(f"w_{v}" for v in self.vocab) + \
            tuple(f"a_{v}" for v in self.vocab)

    @classmethod
    def estimate(cls, stories: Sequence, vocab_size: int = DEFAULT_VOCAB) -> "GenericStats":
        df: dict[str, int] = {}
        wdf: dict[str, int] = {}
        lower: set[str] = set()
        n = 0
        for story in stories:
            for s in story.statements:
                ents, words, lowered = analyse(s)
                n += 1
                lower |= lowered
                for e in ents:
                    df[e] = df.get(e, 0) + 1
                for w in words:
                    wdf[w] = wdf.get(w, 0) + 1
        ranked = sorted((w for w in wdf if w in lower and _is_name(w)),
                        key=lambda w: (-wdf[w], w))
        return cls(n, df, tuple(ranked[:vocab_size]))


def _is_name(word: str) -> bool:
    """Usable in a feature name (`w_` + word): letters, digits and _."""
    return re.fullmatch(r"[a-z0-9_]+", word) is not None


class GenericView:
    """Per-story arrays: entity and word incidence, vocabulary indicators, question masks."""

    def __init__(self, story, stats: GenericStats):
        parsed = [analyse(s) for s in story.statements]
        qparsed = [analyse(q.text) for q in story.questions]
        evocab: dict[str, int] = {}
        wvocab: dict[str, int] = {}
        for ents, words, _ in parsed + qparsed:
            for e in ents:
                evocab.setdefault(e, len(evocab))
            for w in words:
                wvocab.setdefault(w, len(wvocab))
        n = len(parsed)
        self.E = np.zeros((n, len(evocab)), dtype=bool)
        self.W = np.zeros((n, len(wvocab)), dtype=bool)
        for i, (ents, words, _) in enumerate(parsed):
            self.E[i, [evocab[e] for e in ents]] = True
            self.W[i, [wvocab[w] for w in words]] = True
        self.Ef = self.E.astype(np.float64)
        self.idf = np.array([stats.idf(e) for e in evocab], dtype=np.float64)
        index = {v: j for j, v in enumerate(stats.vocab)}
        self.I = np.zeros((n, len(stats.vocab)), dtype=np.float64)
        for i, (_, words, _) in enumerate(parsed):
            cols = [index[w] for w in words if w in index]
            self.I[i, cols] = 1.0
        self.q_ents = [np.isin(np.arange(len(evocab)), [evocab[e] for e in ents])
                       for ents, _, _ in qparsed]
        self.q_words = [np.isin(np.arange(len(wvocab)), [wvocab[w] for w in words])
                        for _, words, _ in qparsed]
        self._last: dict[int, np.ndarray] = {}

    def last_mention(self, n: int) -> np.ndarray:
        """(entities,) position of the latest statement < n mentioning each entity, -1 if none."""
        if n not in self._last:
            self._last[n] = latest_mentions(self.E, n)
        return self._last[n]


_FI = {f: i for i, f in enumerate(BASE_FEATURES)}


def feature_matrix(view: GenericView, qi: int, n: int, chain: Sequence[int],
                   hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, n_kept) of the not-chosen candidates (rows in `GenericStats.names` order) and
    their positions. Reads only the story's statements, the question's text and the chain."""
    K = view.I.shape[1]
    B = len(BASE_FEATURES)
    F = np.zeros((B + 2 * K, n))
    Ef, idf = view.Ef[:n], view.idf
    qE, qW = view.q_ents[qi], view.q_words[qi]
    chain, pos, chosen, covered = chain_masks(view.E, n, chain)
    last = view.last_mention(n)
    F[_FI["recency"]] = (pos + 1.0) / n
    F[_FI["hop"]] = float(hop)
    nq = int(qW.sum())
    if nq:
        F[_FI["q_words"]] = view.W[:n, qW].sum(axis=1) / nq
    F[_FI["q_ents"]] = _share(Ef, qE, idf)
    F[_FI["q_new"]] = _share(Ef, qE & ~covered, idf)
    qtot = float((idf * qE).sum())
    for e in np.flatnonzero(qE & (last >= 0)):
        F[_FI["q_latest"], last[e]] += idf[e] / qtot
    F[_FI["latest_mention"], last[(qE | covered) & (last >= 0)]] = 1.0
    F[B:B + K] = view.I[:n].T
    if chain:
        a = chain[-1]
        F[_FI["after_anchor"], a + 1:] = 1.0
        F[_FI["link"]] = _share(Ef, view.E[a] & ~qE, idf)
        F[_FI["chain_link"]] = _share(Ef, covered & ~qE, idf)
        linked = (F[_FI["link"]] > 0) & ~chosen
        hits = np.flatnonzero(linked)
        if len(hits):
            F[_FI["link_latest"], hits[-1]] = 1.0
        Wn, wa = view.W[:n], view.W[a]
        inter = (Wn & wa).sum(axis=1)
        union = Wn.sum(axis=1) + wa.sum() - inter
        F[_FI["anchor_words"]] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        F[B + K:] = view.I[a][:, None]
        keep = ~chosen
        return F[:, keep], pos[keep]
    return F, pos


class GenericFeatures:
    """The generic feature set of one task: names, per-story views, feature matrices."""

    version = GENERIC_VERSION

    def __init__(self, train_stories: Sequence, vocab_size: int = DEFAULT_VOCAB):
        self.stats = GenericStats.estimate(train_stories, vocab_size)
        self.names = self.stats.names

    def view(self, story) -> GenericView:
        return GenericView(story, self.stats)

    def matrix(self, view: GenericView, qi: int, n: int, chain: Sequence[int], hop: int):
        return feature_matrix(view, qi, n, chain, hop)
