"""TinyStories text: stories, splits by story, sentence chunks, memory episodes (no PyTorch).

Data: every `*.txt` file in the TinyStories folder (default: the copies shipped in
`fitness/data/tinystories/`, CDLA-Sharing-1.0, see LICENSE-tinystories.md). Stories are separated
by a line `<|endoftext|>`; text after the last separator is an unfinished story and is dropped
(the train sample is a byte range). A file whose name contains `valid` holds stories of the
TinyStories *validation* split; the others hold *train*-split stories.

Splits (by story, never by sentence; a story found in both kinds of file counts as held out):
- `lm-train`: the train-split stories; the language model is trained on them and on nothing else.
- `train`, `valid`, `test`: the validation-split stories, assigned by a digest of the story's
  text (1/4, 1/4, 1/2), so adding files never moves a story from one split to another. Rules are
  fitted on `train` and selected on `valid`; `test` is only read to report. The language model's
  early stopping reads `valid`, never `test`.

Episodes: a story is split into sentence chunks (a sentence ends at `.`, `!` or `?`, with a
closing quote kept; a line break also ends one). An episode is a target chunk t (t >= min_target)
with memory = chunks 0..t-1; the last memory chunk ("recent") is always kept under a budget.
Up to `targets_per_story` targets are taken per story, evenly spaced from the last chunk back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

SEPARATOR = "<|endoftext|>"
SPLITS = ("lm-train", "train", "valid", "test")
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+[\"”']?|$)")


class TinyStoriesFormatError(ValueError):
    """A TinyStories file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Story:
    text: str
    source: str  # file name
    index: int  # position of the story in its file

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Episode:
    story: int  # index into the split's story list (standard errors cluster on it)
    chunks: tuple[str, ...]  # memory chunks 0..t-1 (the last one is the recent chunk)
    target: str  # chunk t
    lookahead: tuple[str, ...]  # chunks t+1.. (labels of training episodes may use them)


def data_dir(path: str | Path | None = None) -> Path:
    if path:
        p = Path(path)
        if not p.is_dir():
            raise TinyStoriesFormatError(f"{p}: not a folder of TinyStories files")
        return p
    return Path(str(resources.files("evo_rules.fitness.data").joinpath("tinystories")))


def parse_stories(text: str, source: str, drop_last_unfinished: bool) -> list[Story]:
    if SEPARATOR not in text:
        raise TinyStoriesFormatError(f"{source}: no '{SEPARATOR}' separator line: not a TinyStories file")
    parts = text.split(SEPARATOR)
    tail = parts.pop()  # after the last separator: empty, or an unfinished story
    if tail.strip() and not drop_last_unfinished:
        parts.append(tail)
    stories = [Story(p.strip(), source, i)
               for i, p in enumerate(parts) if p.strip()]
    if not stories:
        raise TinyStoriesFormatError(f"{source}: holds no complete story")
    return stories


def load_files(path: str | Path | None = None) -> dict[str, list[Story]]:
    """File name -> its stories, for every `*.txt` in the folder (sorted by name)."""
    folder = data_dir(path)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise TinyStoriesFormatError(f"{folder}: no *.txt TinyStories files")
    out = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise TinyStoriesFormatError(f"{f}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        out[f.name] = parse_stories(text, f.name, drop_last_unfinished=True)
    return out


def split_of(story: Story) -> str:
    if "valid" not in story.source:
        return "lm-train"
    bucket = int(story.digest, 16) % 4
    return "train" if bucket == 0 else "valid" if bucket == 1 else "test"


def load_splits(path: str | Path | None = None) -> dict[str, list[Story]]:
    """Split name -> stories, deduplicated by text (held-out copies win)."""
    files = load_files(path)
    held_out = {s.text for stories in files.values() for s in stories if "valid" in s.source}
    out: dict[str, list[Story]] = {k: [] for k in SPLITS}
    seen: set[str] = set()
    for stories in files.values():
        for s in stories:
            if s.text in seen or ("valid" not in s.source and s.text in held_out):
                continue
            seen.add(s.text)
            out[split_of(s)].append(s)
    return out


def sentences(text: str) -> list[str]:
    """Sentence chunks of a story, in order, whitespace-normalised."""
    out = []
    for line in text.splitlines():
        for m in _SENTENCE.finditer(line):
            s = " ".join(m.group().split())
            if s:
                out.append(s)
    return out


def episodes(stories: Sequence[Story], min_target: int = 6, targets_per_story: int = 3,
             max_chunks: int = 24) -> list[Episode]:
    """Episodes of each story: targets t = n-1, then evenly spaced back to min_target."""
    out = []
    for si, story in enumerate(stories):
        chunks = sentences(story.text)
        n = min(len(chunks), max_chunks + 1)
        if n - 1 < min_target:
            continue
        span = range(min_target, n)
        k = min(targets_per_story, len(span))
        picks = sorted({span[len(span) - 1 - round(i * (len(span) - 1) / max(k - 1, 1))] for i in range(k)})
        for t in picks:
            out.append(Episode(si, tuple(chunks[:t]), chunks[t], tuple(chunks[t + 1:n])))
    return out


def story_texts(stories: Iterable[Story]) -> list[str]:
    return [s.text for s in stories]
