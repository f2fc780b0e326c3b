"""Lineage: an append-only JSON-lines record of every birth.

One compact line per individual: id, key, parent ids, operator, generation, size, metric
(null when invalid) and the canonical rule text (so the file alone names every rule: graphs,
families and plots need no cache). Nothing is kept in memory; the file is read back on demand
(graph, families, plots: see `lineage_graph` and `families`). The writer reports its byte size
so a checkpoint can record it and a resume can cut off records of a generation that was not
checkpointed (a resumed run's lineage equals the uninterrupted run's).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

NAME = "lineage.jsonl"


class LineageWriter:
    def __init__(self, folder: str, truncate_to: int | None = None):
        self.path = os.path.join(folder, NAME)
        if truncate_to is not None and os.path.exists(self.path):
            with open(self.path, "r+b") as fh:
                fh.truncate(truncate_to)
        self.fh = open(self.path, "a", encoding="utf-8")

    def record(self, ind) -> None:
        rec = {"id": ind.id, "key": ind.key, "parents": list(ind.parents), "op": ind.op,
               "gen": ind.birth, "size": ind.size, "metric": ind.metric if ind.valid else None,
               "text": ind.text}
        self.fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def flush(self) -> int:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()


def read(folder: str) -> Iterator[dict]:
    path = os.path.join(folder, NAME)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: malformed lineage record") from None
