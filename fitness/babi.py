"""bAbI tasks 1, 2 and 3: multi-hop supporting-fact retrieval scored by a rule.

Data: the bAbI v1.2 English 1k files for task 1 ("single supporting fact", a sanity check),
task 2 ("two supporting facts") and task 3 ("three supporting facts"), shipped unmodified in `fitness/data/` (CC BY 3.0, see LICENSE-babi.md) and
read through `importlib.resources`, so an installed package works without the source tree.

The problem
-----------
A story is a list of statements; a question such as "Where is the football?" cites k earlier
statements as its supporting facts (k = 2 for task 2, 3 for task 3). The candidates of a question
are the statements of its story before it (never questions). Retrieval runs in k hops: at hop i
the rule scores every candidate not chosen yet, from features of (story, question, sentences
chosen in hops < i), and the top-scored one is chosen.

Chain order. bAbI lists each question's supporting ids in the order of the reasoning chain, and
that order is the one used for teacher forcing (`chain_order="file"`, the default): in all 4,000
questions of the shipped files the first id is the latest statement about the question's object
("Mary dropped the football"), the next ones are that person's location statements ("Mary went
to the kitchen", then for task 3 the move before it). This order is resolvable hop by hop: each
hop links to the one before. `"reverse"` (reverse chronological) and `"chronological"` are
available for experiments; they are not resolvable in general (the object fact is not always the
latest supporting fact).

Text analysis (no learning, no labels)
--------------------------------------
tokens: runs of letters/digits/apostrophes. An *entity* is a token that is capitalised or
follows a determiner (the/a/an) and is not a stop word; matching is lower-case ("Mary", "football",
"kitchen"). A sentence's *frame* is its non-entity tokens ("dropped the", "went to the"). The
question's *focus* is its first entity ("football" in "Where was the football before the
garden?").

Statistics estimated on the train part only (train file minus the validation stories), from the
statement and question text (never from answers or supporting ids):

- idf(e) = 1 + ln((1 + N) / (1 + df(e))) over the N train statements.
- askable vocabulary: tokens that are the focus of some train question.
- persistence of a frame: for each train statement with >= 2 entities and each of its entity
  slots, look at the next statement of the story that mentions that slot's entity and ask whether
  it still mentions all the statement's entities; persistence(frame) = max over slots of
  hits / (count + 1) (0 for a frame not seen). On the task-2 train part: "X took the O" 0.99
  (the next sentence about the O is X's again), "X dropped the O" 0.5-0.67, "X went to the L"
  0.12-0.16. It says whether the association a sentence creates tends to last.

Features (one float64 column per feature, all finite)
-----------------------------------------------------
Two sets, `[task.settings] features`: "engineered" (the default, below: it knows bAbI through
`askable`, `anchor_persist`, `focus_latest` and its stop words) and "generic"
(`fitness/babi_generic.py`: positions, overlaps, latest mentions and word indicators from the
train stories, no bAbI lexicon; `vocab_size` words, default 40).
A rule names a feature as `x.NAME`; `Batch.X` and the mapping a scorer receives are keyed by the
bare NAME (what `Rule.evaluate` looks up), in the order of `FEATURES`.
With n candidates c = 0..n-1 in story order, chosen chain C (hops < i) and anchor a = the most
recent hop (last element of C). Entities of the question are Q; "weighted" shares use idf.

| name | meaning |
|---|---|
| q_overlap | idf-weighted share of the question's entities that c mentions |
| q_new | idf-weighted share of the question's entities not yet mentioned by the chain that c mentions (0 when none is left) |
| focus | 1 if c mentions the question's focus entity |
| focus_latest | 1 if c is the latest candidate mentioning the focus (chosen ones included) |
| latest_mention | 1 if c is the latest candidate mentioning some entity of the question or of the chain |
| hop_link | idf-weighted share of the anchor's entities outside the question that c mentions (0 at hop 0) |
| chain_link | idf-weighted share of the chain's entities outside the question that c mentions (0 at hop 0) |
| link_latest | 1 if c is the latest not-chosen candidate with hop_link > 0 |
| frame_sim | Jaccard similarity of c's frame and the anchor's frame (0 at hop 0) |
| askable | 1 if c mentions a token of the askable vocabulary (something questions ask about) |
| recency | (c + 1) / n: 1 for the sentence just before the question |
| after_anchor | 1 if c comes after the anchor in the story (0 at hop 0) |
| anchor_persist | persistence of the anchor's frame, the same for every candidate (0 at hop 0) |
| hop | hop index i = 0, 1, ... (the same for every candidate of a group) |

No feature reads the answer or the supporting-fact ids: the feature function receives only the
story's statements, the question text and the chosen chain. In `batch` the chain is the true
one (teacher forcing); in `score` it is what the scorer chose.

API
---
- `parse_babi(text, source)`, `load_babi_file(path)`, `load_babi(task, split)` -> list[Story];
  `BabiFormatError` names the file and line and shows the line.
- `BabiTask(task=1|2|3, valid_fraction=0.2, chain_order="file", features="engineered",
  vocab_size=None)`: the `fitness.base.Task`
  protocol. Splits: train = train file minus its last `valid_fraction` of stories, valid = those
  stories, test = test file. `batch(part)`: one listwise group per (question, hop), teacher
  forced, chosen sentences removed from the group, y = 1 on the true sentence of the hop.
  `score(part, scorer)`: greedy k-hop inference -> support_recall (primary), exact, hop<i>.
- `linear_rule_text()`, `reference_rules()`, `fit_and_score(task, rule_text, part)`,
  `measure_baselines(task, part)`; `python -m evo_rules.fitness.babi` prints the table.

Measured (test split, weights fitted on train by `evo_rules.fit`, listwise, 20 iterations)
------------------------------------------------------------------------------------------
| rule (size) | babi-2 recall / exact | babi-3 recall / exact |
|---|---|---|
| linear over all 14 features (43) | 0.912 / 0.825 | 0.943 / 0.890 |
| chain-sum (22) | 1.000 / 1.000 | 0.997 / 0.995 |
| eml-gated (26) | 1.000 / 1.000 | 0.998 / 0.996 |
| recency-only (3) | 0.405 / 0.113 | 0.398 / 0.063 |

The linear rule misses what the product `after_anchor * anchor_persist` says (took vs dropped):
the linear rule plus that one product term reaches 1.000 / 1.000 and 0.997 / 0.994.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .base import PARTS, Batch, Scorer, Setting, SettingsError, check_settings, fingerprint_of

FEATURES: tuple[str, ...] = (
    "q_overlap", "q_new", "focus", "focus_latest", "latest_mention", "hop_link", "chain_link",
    "link_latest", "frame_sim", "askable", "recency", "after_anchor", "anchor_persist", "hop",
)
FEATURE_VERSION = "babi-features-1"

FILES = {
    1: ("qa1_single-supporting-fact_train.txt", "qa1_single-supporting-fact_test.txt"),
    2: ("qa2_two-supporting-facts_train.txt", "qa2_two-supporting-facts_test.txt"),
    3: ("qa3_three-supporting-facts_train.txt", "qa3_three-supporting-facts_test.txt"),
}
CHAIN_ORDERS = ("file", "reverse", "chronological")
# "engineered": the 14 FEATURES above; "generic": fitness/babi_generic.py (no bAbI lexicon)
FEATURE_SETS = ("engineered", "generic")
# `[task.settings]` of babi-1/2/3 (the task number comes from the task's name)
SETTINGS = {"valid_fraction": Setting(float, 0.0, 1.0, open=True),
            "chain_order": Setting(str, choices=CHAIN_ORDERS), "data_dir": Setting(str),
            "features": Setting(str, choices=FEATURE_SETS),
            "vocab_size": Setting(int, 1, 500)}  # generic only: words with w_/a_ indicators


# ============================================================================ loading


class BabiFormatError(ValueError):
    """A malformed line of a bAbI file. Attributes: source, lineno (1-based), line, reason."""

    def __init__(self, source: str, lineno: int, line: str, reason: str):
        self.source = str(source)
        self.lineno = lineno
        self.line = line
        self.reason = reason
        shown = line if len(line) <= 80 else line[:80] + "..."  # a binary file's "line" can be long
        super().__init__(f"{self.source}:{lineno}: {reason}: {shown!r}")


@dataclass(frozen=True)
class Question:
    """A question line. `n_before`: statements of the story before it (its candidates).
    `supports`: supporting ids as in the file; `support_pos`: the same as statement positions."""

    line_id: int
    text: str
    answer: str
    supports: tuple[int, ...]
    support_pos: tuple[int, ...]
    n_before: int
    lineno: int


@dataclass(frozen=True)
class Story:
    statements: tuple[str, ...]
    statement_ids: tuple[int, ...]
    questions: tuple[Question, ...]
    source: str
    lineno: int  # line of the file where the story starts


_LINE = re.compile(r"(\d+) (.*)\Z", re.S)


def parse_babi(text: str, source: str = "<string>") -> list[Story]:
    """Parse bAbI text. Blank lines are skipped; anything else malformed raises BabiFormatError."""
    stories: list[Story] = []
    cur: dict | None = None

    def close():
        if cur is not None:
            stories.append(Story(tuple(cur["st"]), tuple(cur["ids"]), tuple(cur["qs"]), source,
                                 cur["lineno"]))

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise BabiFormatError(source, lineno, line, "expected 'ID text' with a numeric ID")
        line_id, body = int(m.group(1)), m.group(2)
        if line_id == 1:
            close()
            cur = {"st": [], "ids": [], "qs": [], "pos": {}, "last": 0, "lineno": lineno}
        elif cur is None or line_id != cur["last"] + 1:
            expected = 1 if cur is None else cur["last"] + 1
            raise BabiFormatError(source, lineno, line,
                                  f"line ID {line_id} out of sequence (expected {expected} or 1)")
        cur["last"] = line_id
        if "\t" in body:
            parts = body.split("\t")
            if len(parts) != 3:
                raise BabiFormatError(source, lineno, line, "a question line needs exactly 3 "
                                      f"tab-separated fields (question, answer, ids), got {len(parts)}")
            q, answer, ids = parts[0].strip(), parts[1].strip(), parts[2].split()
            if not q:
                raise BabiFormatError(source, lineno, line, "empty question")
            if not answer:
                raise BabiFormatError(source, lineno, line, "empty answer")
            if not ids:
                raise BabiFormatError(source, lineno, line, "no supporting-fact IDs")
            if not all(t.isdigit() for t in ids):
                raise BabiFormatError(source, lineno, line, "supporting-fact IDs must be integers")
            sup = tuple(int(t) for t in ids)
            bad = [s for s in sup if s not in cur["pos"]]
            if bad:
                raise BabiFormatError(source, lineno, line, f"supporting-fact ID(s) {bad} do not "
                                      "name an earlier statement of the same story")
            if len(set(sup)) != len(sup):
                raise BabiFormatError(source, lineno, line, "repeated supporting-fact ID")
            cur["qs"].append(Question(line_id, q, answer, sup, tuple(cur["pos"][s] for s in sup),
                                      len(cur["st"]), lineno))
        else:
            if not body.strip():
                raise BabiFormatError(source, lineno, line, "empty statement")
            cur["pos"][line_id] = len(cur["st"])
            cur["st"].append(body.strip())
            cur["ids"].append(line_id)
    close()
    return stories


def load_babi_file(path) -> list[Story]:
    path = Path(path)
    return parse_babi(path.read_bytes().decode("utf-8"), str(path))


def _data_bytes(name: str, data_dir=None) -> tuple[bytes, str]:
    if data_dir is not None:
        p = Path(data_dir) / name
        return p.read_bytes(), str(p)
    res = resources.files("evo_rules.fitness.data").joinpath(name)
    return res.read_bytes(), f"fitness/data/{name}"


def load_babi(task: int, split: str, data_dir=None) -> list[Story]:
    """Stories of the shipped bAbI file for task 1, 2 or 3, split "train" or "test"."""
    if task not in FILES:
        raise ValueError(f"bAbI task {task!r} is not shipped (have: {sorted(FILES)})")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    data, source = _data_bytes(FILES[task][split == "test"], data_dir)
    return parse_babi(_text(data, source), source)


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BabiFormatError(source, line, data.splitlines()[line - 1].decode("utf-8", "replace"),
                              "not UTF-8 text") from None


# ============================================================================ text analysis

STOPWORDS = frozenset("""
a an the to of in on at into onto from with by for is was were are be been being am do does did
where what who whom whose which when why how before after there here then it its he she they them
his her their him we you i me my our your this that these those and or but not no yes back up down
""".split())
DETERMINERS = frozenset(("the", "a", "an"))
_TOKEN = re.compile(r"[A-Za-z0-9']+")


def analyse(text: str) -> tuple[list[str], list[str]]:
    """(entities in order, frame tokens in order), lower-cased."""
    ents: list[str] = []
    frame: list[str] = []
    prev = ""
    for tok in _TOKEN.findall(text):
        low = tok.lower()
        if low not in STOPWORDS and (tok[0].isupper() or prev in DETERMINERS):
            if low not in ents:
                ents.append(low)
        else:
            frame.append(low)
        prev = low
    return ents, frame


@dataclass(frozen=True)
class TextStats:
    """Word statistics from the train part's text (statements and questions, no labels)."""

    n_sentences: int
    df: Mapping[str, int]
    askable: frozenset
    persist: Mapping[tuple, float]

    def idf(self, e: str) -> float:
        return 1.0 + float(np.log((1.0 + self.n_sentences) / (1.0 + self.df.get(e, 0))))

    @classmethod
    def estimate(cls, stories: Sequence[Story]) -> "TextStats":
        df: dict[str, int] = {}
        askable: set[str] = set()
        counts: dict[tuple, list[list[int]]] = {}
        n = 0
        for story in stories:
            parsed = [analyse(s) for s in story.statements]
            ent_sets = [set(e) for e, _ in parsed]
            for es in ent_sets:
                n += 1
                for e in es:
                    df[e] = df.get(e, 0) + 1
            for q in story.questions:
                qe, _ = analyse(q.text)
                if qe:
                    askable.add(qe[0])
            for j, (ents, frame) in enumerate(parsed):
                if len(ents) < 2:
                    continue
                slots = counts.setdefault(tuple(frame), [[0, 0] for _ in ents])
                while len(slots) < len(ents):
                    slots.append([0, 0])
                for m, e in enumerate(ents):
                    for jj in range(j + 1, len(parsed)):
                        if e in ent_sets[jj]:
                            slots[m][0] += 1
                            slots[m][1] += int(ent_sets[j] <= ent_sets[jj])
                            break
        persist = {f: max(h / (c + 1.0) for c, h in slots) for f, slots in counts.items()}
        return cls(n, df, frozenset(askable), persist)


# ============================================================================ features


@lru_cache(maxsize=65536)
def _analysed(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ents, frame = analyse(text)
    return tuple(ents), tuple(frame)


class _StoryView:
    """Per-story arrays: entity incidence, idf, askable, persistence, frame similarity."""

    def __init__(self, story: Story, stats: TextStats):
        parsed = [_analysed(s) for s in story.statements]
        qparsed = [_analysed(q.text)[0] for q in story.questions]
        vocab: dict[str, int] = {}
        fvocab: dict[str, int] = {}
        rows, cols, frows, fcols = [], [], [], []
        for i, (ents, frame) in enumerate(parsed):
            for e in ents:
                rows.append(i)
                cols.append(vocab.setdefault(e, len(vocab)))
            for t in set(frame):
                frows.append(i)
                fcols.append(fvocab.setdefault(t, len(fvocab)))
        for ents in qparsed:
            for e in ents:
                vocab.setdefault(e, len(vocab))
        n, V = len(parsed), len(vocab)
        self.M = np.zeros((n, V), dtype=bool)
        self.M[rows, cols] = True
        self.Mf = self.M.astype(np.float64)
        self.idf = np.array([stats.idf(e) for e in vocab], dtype=np.float64)  # insertion order
        self.askable = np.array([any(e in stats.askable for e in ents) for ents, _ in parsed],
                                dtype=np.float64)
        self.persist = np.array([stats.persist.get(fr, 0.0) if len(ents) >= 2 else 0.0
                                 for ents, fr in parsed], dtype=np.float64)
        Fm = np.zeros((n, max(len(fvocab), 1)), dtype=np.float64)
        Fm[frows, fcols] = 1.0
        inter = Fm @ Fm.T
        sz = Fm.sum(1)
        union = sz[:, None] + sz[None, :] - inter
        self.frame_sim = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        self.q_ents = []
        self.q_focus = []
        for ents in qparsed:
            v = np.zeros(V, dtype=bool)
            v[[vocab[e] for e in ents]] = True
            self.q_ents.append(v)
            self.q_focus.append(vocab[ents[0]] if ents else -1)
        self._last_cache: dict[int, np.ndarray] = {}

    def last_mention(self, n: int) -> np.ndarray:
        """(V,) position of the latest statement < n mentioning each entity, -1 if none."""
        r = self._last_cache.get(n)
        if r is None:
            r = self._last_cache[n] = latest_mentions(self.M, n)
        return r


def latest_mentions(M: np.ndarray, n: int) -> np.ndarray:
    """(columns of M,) the latest row < n that is True in each column, -1 if none."""
    return np.where(M[:n], np.arange(n)[:, None], -1).max(axis=0) if n else np.full(M.shape[1], -1)


_FI = {f: i for i, f in enumerate(FEATURES)}


def chain_masks(M: np.ndarray, n: int, chain: Sequence[int]):
    """(chain as ints, positions 0..n-1, chosen mask (n,), covered mask (columns of M,): the
    entities some chosen sentence mentions)."""
    chain = [int(c) for c in chain]
    chosen = np.zeros(n, dtype=bool)
    chosen[chain] = True
    covered = M[chain].any(axis=0) if chain else np.zeros(M.shape[1], dtype=bool)
    return chain, np.arange(n), chosen, covered


def _share(Mf: np.ndarray, mask: np.ndarray, idf: np.ndarray) -> np.ndarray | float:
    w = idf * mask
    tot = w.sum()
    return (Mf @ w) / tot if tot > 0 else 0.0


def _feature_matrix(view: _StoryView, qi: int, n: int, chain: Sequence[int],
                    hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(FEATURES), n_kept) features of the not-chosen candidates, and their positions."""
    Mf = view.Mf[:n]
    idf = view.idf
    qE = view.q_ents[qi]
    f = view.q_focus[qi]
    chain, pos, chosen, covered = chain_masks(view.M, n, chain)
    last = view.last_mention(n)
    F = np.zeros((len(FEATURES), n))
    F[_FI["q_overlap"]] = _share(Mf, qE, idf)
    F[_FI["q_new"]] = _share(Mf, qE & ~covered, idf)
    if f >= 0:
        F[_FI["focus"]] = Mf[:, f]
        if last[f] >= 0:
            F[_FI["focus_latest"], last[f]] = 1.0
    F[_FI["latest_mention"], last[(qE | covered) & (last >= 0)]] = 1.0
    if chain:
        a = chain[-1]
        F[_FI["hop_link"]] = _share(Mf, view.M[a] & ~qE, idf)
        F[_FI["chain_link"]] = _share(Mf, covered & ~qE, idf)
        linked = np.flatnonzero((F[_FI["hop_link"]] > 0) & ~chosen)
        if len(linked):
            F[_FI["link_latest"], linked[-1]] = 1.0
        F[_FI["frame_sim"]] = view.frame_sim[a, :n]
        F[_FI["after_anchor"], a + 1:] = 1.0
        F[_FI["anchor_persist"]] = view.persist[a]
    F[_FI["askable"]] = view.askable[:n]
    F[_FI["recency"]] = (pos + 1.0) / n
    F[_FI["hop"]] = float(hop)
    if not chain:
        return F, pos
    keep = ~chosen
    return F[:, keep], pos[keep]


def question_features(view: _StoryView, qi: int, n: int, chain: Sequence[int],
                      hop: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of the not-chosen candidates of question `qi` (of `n` candidates) given the
    chosen chain (statement positions). Returns (feature -> column, candidate positions).
    Only the story's statements, the question's text and the chain are read."""
    F, pos = _feature_matrix(view, qi, n, chain, hop)
    return {f: F[i] for i, f in enumerate(FEATURES)}, pos


# ============================================================================ the task


def _segment_argmax(scores: np.ndarray, starts: np.ndarray, n_rows: int) -> np.ndarray:
    """Row index of each segment's maximum: the first one on ties; NaN counts as -inf; a
    segment with no finite-or-+inf score picks its first row."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    gmax = np.maximum.reduceat(s, starts)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n_rows]))
    hit = np.flatnonzero((s == gmax[seg]) & (s > -np.inf))
    first = starts.copy()
    uniq, idx = np.unique(seg[hit], return_index=True)  # hits ascend: idx = first per segment
    first[uniq] = hit[idx]
    return first


class _Engineered:
    """The 14 FEATURES with their train statistics (the same interface as
    `babi_generic.GenericFeatures`: names, view(story), matrix(view, qi, n, chain, hop))."""

    version = FEATURE_VERSION

    def __init__(self, train_stories: Sequence[Story]):
        self.stats = TextStats.estimate(train_stories)
        self.names = FEATURES

    def view(self, story: Story) -> _StoryView:
        return _StoryView(story, self.stats)

    def matrix(self, view: _StoryView, qi: int, n: int, chain: Sequence[int], hop: int):
        return _feature_matrix(view, qi, n, chain, hop)


HOP_ROWS_KEPT = 200_000  # memoised (question, chain) feature rows per part, a few KB each


class BabiTask:
    """bAbI task 1, 2 or 3 as a `fitness.base.Task` (see the module docstring)."""

    loss = "listwise"
    features = FEATURES
    metric_name = "support_recall"

    def linear_rule_text(self) -> str:
        return linear_rule_text(self.features)

    def reference_rules(self) -> dict[str, str]:
        # the hand-written rules name engineered features; the generic set has none written
        return reference_rules() if self.feature_set == "engineered" else {}

    def __init__(self, task: int = 2, valid_fraction: float = 0.2, chain_order: str = "file",
                 data_dir=None, features: str = "engineered", vocab_size: int | None = None):
        task = int(task)
        if task not in FILES:
            raise ValueError(f"bAbI task must be one of {sorted(FILES)}, not {task!r}")
        given = {"valid_fraction": valid_fraction, "chain_order": chain_order,
                 "features": features}
        if vocab_size is not None:
            if features != "generic":
                raise SettingsError("vocab_size", "applies only with features = 'generic'")
            given["vocab_size"] = vocab_size
        check_settings(given, SETTINGS)
        self.task = task
        self.k = task  # task 1: one supporting fact, task 2: two, task 3: three
        self.name = f"babi-{task}"
        self.valid_fraction = float(valid_fraction)
        self.chain_order = chain_order
        self.feature_set = features
        self.settings = {"task": task, "valid_fraction": self.valid_fraction,
                         "chain_order": chain_order, "features": FEATURE_VERSION}
        if features == "generic":  # engineered settings (and fingerprints) stay as they were
            from .babi_generic import DEFAULT_VOCAB, GENERIC_VERSION

            self.settings.update(features=GENERIC_VERSION, vocab_size=int(vocab_size or DEFAULT_VOCAB))
        train_bytes, train_src = _data_bytes(FILES[task][0], data_dir)
        test_bytes, test_src = _data_bytes(FILES[task][1], data_dir)
        self.fingerprint = fingerprint_of(self.name, self.settings, train_bytes, test_bytes)
        train = parse_babi(_text(train_bytes, train_src), train_src)
        test = parse_babi(_text(test_bytes, test_src), test_src)
        for stories in (train, test):
            for st in stories:
                for q in st.questions:
                    if len(q.supports) != self.k:
                        raise BabiFormatError(st.source, q.lineno, f"{q.line_id} {q.text}",
                                              f"task {task} questions cite {self.k} supporting "
                                              f"facts, this one cites {len(q.supports)}")
        n_valid = max(1, int(round(len(train) * self.valid_fraction)))
        if n_valid >= len(train):
            raise ValueError(f"{train_src}: {len(train)} stories: valid_fraction leaves no training stories")
        self.stories = {"train": train[:-n_valid], "valid": train[-n_valid:], "test": test}
        for part, src in (("train", train_src), ("valid", train_src), ("test", test_src)):
            if not any(st.questions for st in self.stories[part]):  # nothing to fit or score
                raise ValueError(f"{src}: no question in the {part} split "
                                 f"(of {len(self.stories[part])} stories)")
        if features == "generic":
            from .babi_generic import GenericFeatures

            self._set = GenericFeatures(self.stories["train"], self.settings["vocab_size"])
        else:
            self._set = _Engineered(self.stories["train"])
        self.stats = self._set.stats
        self.features = self._set.names
        self._batches: dict[str, Batch] = {}
        # hop rows depend only on (question, anchors chosen so far): scoring a rule rebuilds
        # few of them (profiled: rebuilding them all was 70% of a babi-2 evaluation)
        self._hop_rows: dict[str, dict] = {p: {} for p in PARTS}

    def __repr__(self) -> str:
        return f"BabiTask(task={self.task}, valid_fraction={self.valid_fraction}, " \
               f"chain_order={self.chain_order!r}, features={self.feature_set!r})"

    # ---------------------------------------------------------------- helpers

    @cached_property
    def _views(self) -> dict[str, list[_StoryView]]:
        return {p: [self._set.view(s) for s in self.stories[p]] for p in PARTS}

    def _check_part(self, part: str) -> None:
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")

    def questions(self, part: str) -> list[tuple[int, int, Question]]:
        """(story index, question index, question) of a part, in file order."""
        self._check_part(part)
        return [(si, qi, q) for si, st in enumerate(self.stories[part])
                for qi, q in enumerate(st.questions)]

    def chain(self, q: Question) -> tuple[int, ...]:
        """The supporting facts (statement positions) in teacher-forcing hop order."""
        if self.chain_order == "file":
            return q.support_pos
        return tuple(sorted(q.support_pos, reverse=self.chain_order == "reverse"))

    def _rows(self, part: str, chains: Sequence[Sequence[int]], hop: int):
        """Feature rows of hop `hop` for every question of `part` given the chains (first
        `hop` entries used): (feature -> column, candidate positions per question, sizes)."""
        views = self._views[part]
        memo = self._hop_rows[part]
        mats: list[np.ndarray] = []
        cand: list[np.ndarray] = []
        for j, ((si, qi, q), ch) in enumerate(zip(self.questions(part), chains)):
            key = (j, tuple(ch[:hop]))
            rows = memo.get(key)
            if rows is None:
                if len(memo) >= HOP_ROWS_KEPT:  # bounded: a long run meets many anchor chains
                    memo.clear()
                rows = memo[key] = self._set.matrix(views[si], qi, q.n_before, ch[:hop], hop)
            F, p = rows
            mats.append(F)
            cand.append(p)
        sizes = np.array([len(p) for p in cand], dtype=np.int64)
        F = np.concatenate(mats, axis=1) if mats else np.zeros((len(self.features), 0))
        return {f: np.ascontiguousarray(F[i]) for i, f in enumerate(self.features)}, cand, sizes

    # ---------------------------------------------------------------- protocol

    def batch(self, part: str) -> Batch:
        """Teacher-forced rows: group g = question * k + hop; rows = not-chosen candidates."""
        self._check_part(part)
        b = self._batches.get(part)
        if b is not None:
            return b
        views = self._views[part]
        mats, ys, gs = [], [], []
        for j, (si, qi, q) in enumerate(self.questions(part)):
            ch = self.chain(q)
            for h in range(self.k):
                F, cand = self._set.matrix(views[si], qi, q.n_before, ch[:h], h)
                mats.append(F)
                ys.append((cand == ch[h]).astype(np.float64))
                gs.append(np.full(len(cand), j * self.k + h, dtype=np.int64))
        F = np.concatenate(mats, axis=1)
        batch = Batch({f: np.ascontiguousarray(F[i]) for i, f in enumerate(self.features)},
                      np.concatenate(ys), np.concatenate(gs))
        self._batches[part] = batch
        return batch

    def infer(self, part: str, scorer: Scorer) -> list[tuple[int, ...]]:
        """Greedy k-hop retrieval: the chosen statement positions of every question."""
        self._check_part(part)
        qs = self.questions(part)
        chains: list[list[int]] = [[] for _ in qs]
        for h in range(self.k):
            X, cand, sizes = self._rows(part, chains, h)
            n_rows = int(sizes.sum())
            s = np.asarray(scorer(X), dtype=np.float64).reshape(-1)
            if s.shape[0] != n_rows:
                raise ValueError(f"scorer returned {s.shape[0]} scores for {n_rows} rows")
            starts = np.r_[0, np.cumsum(sizes)[:-1]]
            best = _segment_argmax(s, starts, n_rows)
            for j in range(len(qs)):
                chains[j].append(int(cand[j][best[j] - starts[j]]))
        return [tuple(c) for c in chains]

    def score_units(self, part: str, scorer: Scorer) -> np.ndarray:
        """Per question, its support recall (the mean is score()["support_recall"])."""
        return np.array([len(set(ch) & set(self.chain(q))) / self.k
                         for (_, _, q), ch in zip(self.questions(part), self.infer(part, scorer))])

    def unit_clusters(self, part: str) -> np.ndarray:
        """The story of each question: questions of one story share its sentences."""
        return np.array([si for si, _, _ in self.questions(part)])

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        qs = self.questions(part)
        chosen = self.infer(part, scorer)
        recall, exact = [], []
        hop_hits = np.zeros(self.k)
        for (_, _, q), ch in zip(qs, chosen):
            truth = self.chain(q)
            hit = len(set(ch) & set(truth))
            recall.append(hit / self.k)
            exact.append(float(hit == self.k))
            hop_hits += np.array([c == t for c, t in zip(ch, truth)], dtype=float)
        n = max(len(qs), 1)
        out = {"support_recall": float(np.mean(recall)) if recall else 0.0,
               "exact": float(np.mean(exact)) if exact else 0.0}
        for h in range(self.k):
            out[f"hop{h + 1}"] = float(hop_hits[h] / n)
        return out


# ============================================================================ baselines


def linear_rule_text(features: Sequence[str] = FEATURES) -> str:
    """A weighted sum of every feature (plus nothing else: a constant cancels in a softmax)."""
    return "(add " + " ".join(f"(mul w x.{f})" for f in features) + ")"


GATE = "(mul w x.after_anchor (add w x.anchor_persist))"


def reference_rules() -> dict[str, str]:
    """Hand-written rules over FEATURES (name -> rule text).

    - chain-sum: a weighted sum of the chain evidence plus one product, the persistence gate
      `after_anchor * (w + anchor_persist)`: a sentence after the anchor is penalised unless the
      anchor's association lasts ("took": the person still has it, so their latest location
      counts; "dropped": only locations before the drop count).
    - eml-gated: the seed's structured form (eml signal (add 1 (exp damping))) =
      exp(signal) - softplus(damping) with the same signal and askable as damping (a sentence
      about an askable thing is not a location fact).
    - recency-only: the trivial rule, latest sentence first.
    """
    signal = ("(mul w x.focus_latest) (mul w x.hop_link) (mul w x.q_new) (mul w x.recency) "
              + GATE)
    return {
        "chain-sum": f"(add {signal} (mul w x.askable))",
        "eml-gated": f"(eml (add {signal}) (add 1 (exp (mul w x.askable))))",
        "recency-only": "(mul w x.recency)",
    }


def fit_and_score(task: BabiTask, rule_text: str, part: str = "test", *, max_iter: int = 20,
                  **fit_kwargs) -> dict:
    """Fit `rule_text` on task.batch("train") with `evo_rules.fit` (listwise), then run greedy
    inference on `part`. Returns rule (canonical text), size, weights, loss, iterations, valid
    and the metrics of `task.score` (support_recall, exact, hop<i>)."""
    import evo_rules  # imported lazily: the data side works without the engine

    rule = evo_rules.parse(rule_text)
    tr = task.batch("train")
    res = evo_rules.fit(rule, tr.X, tr.y, loss=task.loss, groups=tr.groups, max_iter=max_iter,
                        **fit_kwargs)
    weights = np.asarray(res.weights, dtype=np.float64)
    out: dict = {"rule": rule.text, "size": rule.size, "weights": weights.tolist(),
                 "loss": float(res.loss), "iterations": int(res.iterations),
                 "valid": bool(res.valid)}
    if res.valid and np.all(np.isfinite(weights)):
        out.update(task.score(part, lambda X: rule.evaluate(X, weights)))
    else:
        out.update({"support_recall": 0.0, "exact": 0.0})
    return out


def measure_baselines(task: BabiTask, part: str = "test", **fit_kwargs) -> dict[str, dict]:
    """fit_and_score of the linear rule and of every reference rule: name -> result."""
    rules = {"linear": task.linear_rule_text(), **task.reference_rules()}
    return {name: fit_and_score(task, text, part, **fit_kwargs) for name, text in rules.items()}


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="bAbI 1/2/3: fitted baselines, greedy inference")
    ap.add_argument("tasks", nargs="*", type=int, default=[2, 3])
    ap.add_argument("--features", default="engineered", choices=FEATURE_SETS)
    ap.add_argument("--part", default="test")
    ap.add_argument("--max-iter", type=int, default=20)
    args = ap.parse_args(argv)
    print(f"{'task':7s} {'rule':14s} {'size':>4s} {'recall':>7s} {'exact':>7s}  per-hop")
    for t in args.tasks:
        task = BabiTask(t, features=args.features)
        for name, r in measure_baselines(task, args.part, max_iter=args.max_iter).items():
            hops = " ".join(f"{r.get(f'hop{h + 1}', 0.0):.3f}" for h in range(task.k))
            print(f"{task.name:7s} {name:14s} {r['size']:4d} {r['support_recall']:7.3f} "
                  f"{r['exact']:7.3f}  {hops}")


if __name__ == "__main__":
    main()
