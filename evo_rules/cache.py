"""Persistent fitness cache: SQLite keyed by (task fingerprint, fit settings, rule key).

A fitness measured under other settings is never reused. Writes go in one transaction per
batch (SQLite's journal makes a crash mid-write lose at most that batch, never corrupt the
rest). Several runs on the same task may share one file: WAL mode and a busy timeout.
Values are JSON, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from typing import Iterable, Mapping

from .kernels import VECTOR_MATH

VECTOR_MATH_TAG = "libmvec" if VECTOR_MATH else "libm"

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    task TEXT NOT NULL,
    settings TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (task, settings, key)
)
"""


def settings_digest(fit_settings: Mapping) -> str:
    text = json.dumps(dict(fit_settings), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class FitnessCache:
    def __init__(self, path: str | os.PathLike, task_fingerprint: str, fit_settings: Mapping):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.task = task_fingerprint
        # the vector and scalar exp/log kernels differ by a few ulp: never mix their fitnesses
        self.settings = settings_digest(dict(fit_settings, kernel=VECTOR_MATH_TAG))
        try:
            self.db = sqlite3.connect(self.path, timeout=60.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"fitness cache {self.path} is not a usable SQLite file: {exc}") from None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, result FROM evaluations WHERE task=? AND settings=? AND key IN ({marks})",
                [self.task, self.settings, *chunk],
            ).fetchall()
            for key, result in rows:
                try:
                    found[key] = json.loads(result)
                except json.JSONDecodeError:
                    continue  # a damaged row is a miss: the rule is evaluated again
        return found

    def put_many(self, results: Iterable[dict]) -> None:
        rows = [(self.task, self.settings, r["key"], json.dumps(r, sort_keys=True)) for r in results]
        if not rows:
            return
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE task=? AND settings=?",
                               (self.task, self.settings)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
