"""Lineage: an append-only JSON-lines record of every birth.

One compact line per individual: id, key, parent ids, operator, generation, size, metric
(null when invalid) and the canonical rule text (so the file alone names every rule: graphs,
families and plots need no cache). Nothing is kept in memory; the file is read back on demand
(graph, families, plots: see `lineage_graph` and `families`). The writer reports its byte size
and checksum so a checkpoint can record them and a resume can verify the file and cut off
records of a generation that was not checkpointed (a resumed run's lineage equals the
uninterrupted run's).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

from .run_folder import LINEAGE, RunFolder

NAME = LINEAGE  # the name, for callers that spell a folder's files (run_folder names them)


class LineageError(ValueError):
    pass


def new_hash():
    return hashlib.blake2b(digest_size=16)


def verify(folder: str, length: int, digest: str | None):
    """The running hash of the file's first `length` bytes, checked against a checkpoint's record.

    Refuses (LineageError) a missing, shorter or changed file: a resume never pads the file nor
    restarts it. `digest` None: a checkpoint written before checksums; then only the length and
    the last record's newline are checked."""
    h = new_hash()
    if length == 0:
        return h
    path = os.fspath(RunFolder(folder).lineage)
    fix = "restore it from a copy, or start a new run (a run cannot resume without its lineage)"
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise LineageError(f"{path}: missing, but the checkpoint records {length} bytes of lineage; {fix}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < length:
            raise LineageError(f"{path}: {size} bytes, shorter than the {length} the checkpoint records "
                               f"(truncated); {fix}")
        left, last = length, b""
        while left:
            block = fh.read(min(left, 1 << 20))
            if not block:
                raise LineageError(f"{path}: could not read {length} bytes; {fix}")
            h.update(block)
            left -= len(block)
            last = block[-1:]
    if digest is None and last != b"\n":
        raise LineageError(f"{path}: does not end a record where the checkpoint says ({length} bytes); {fix}")
    if digest is not None and h.hexdigest() != digest:
        raise LineageError(f"{path}: its first {length} bytes differ from what the checkpoint recorded "
                           f"(checksum mismatch: the file was changed); {fix}")
    return h


class LineageWriter:
    """Appends records and keeps a running hash of the file, so a checkpoint records the checksum
    of what it covers without reading the file again. `resume`: (length, hash) from `verify`;
    bytes past `length` (a generation that was not checkpointed) are cut off. None: a new file."""

    def __init__(self, folder: str, resume: tuple[int, object] | None = None):
        self.path = os.fspath(RunFolder(folder).lineage)
        if resume is None or not os.path.exists(self.path):
            self.fh = open(self.path, "wb")
            self.hash = new_hash()
        else:
            length, self.hash = resume[0], resume[1].copy()
            self.fh = open(self.path, "r+b")
            if os.fstat(self.fh.fileno()).st_size > length:  # never grows it: no NUL padding
                self.fh.truncate(length)
            self.fh.seek(length)

    def record(self, ind) -> None:
        rec = {"id": ind.id, "key": ind.key, "parents": list(ind.parents), "op": ind.op,
               "gen": ind.birth, "size": ind.size, "metric": ind.metric if ind.valid else None,
               "text": ind.text}
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        self.hash.update(line)
        self.fh.write(line)

    def flush(self) -> tuple[int, str]:
        """Flush to disk; the file's length and checksum (blake2b, hex) up to here."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.fh.tell(), self.hash.hexdigest()

    def close(self) -> None:
        self.fh.close()


# the fields of a record and the JSON types each may hold (`text` is absent from files written
# before rule texts were recorded; `metric` is null for an invalid rule)
FIELDS = {"id": (int,), "key": (str,), "parents": (list,), "op": (str,), "gen": (int,),
          "size": (int,), "metric": (int, float, type(None))}


def _problem(rec) -> str | None:
    """What is wrong with a parsed record (None: nothing)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    for name, types in FIELDS.items():
        if name not in rec:
            return f"no {name!r} field"
        if not isinstance(rec[name], types) or isinstance(rec[name], bool):
            return f"{name!r} is {json.dumps(rec[name])[:40]}"
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in rec["parents"]):
        return "'parents' must be a list of ids"
    if not isinstance(rec.get("text", ""), str):
        return "'text' must be a string"
    return None


def read(folder: str) -> Iterator[dict]:
    path = os.fspath(RunFolder(folder).lineage)
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{n}: malformed lineage record (not UTF-8 text)") from None
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: malformed lineage record") from None
            problem = _problem(rec)
            if problem:
                raise ValueError(f"{path}:{n}: malformed lineage record ({problem})")
            yield rec
