"""Persistent fitness cache: SQLite keyed by (task fingerprint, fit settings, rule key).

A fitness measured under other settings is never reused. Writes go in one transaction per
batch (SQLite's journal makes a crash mid-write lose at most that batch, never corrupt the
rest). Several runs on the same task may share one file: WAL mode and a busy timeout (tested
with two processes writing at once). A damaged file is found when it is opened (SQLite's
quick_check) or used, and reported as `CacheError` with the way out: `rebuild=True` (the CLI's
`--rebuild-cache`) moves it aside and starts an empty cache. Only cached fitnesses are lost: the
checkpoint never depends on the cache. Values are JSON, never pickle.

This module alone knows the SQLite schema: a run marks the cache with each checkpoint
(`mark()`, plain JSON) and a resume forgets what came after it (`rollback(mark)`); tools that
read a finished run's cache use `stored_results(path)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

from .fitting import FITTER
from .kernels import KERNEL_KIND

# the kernel variant a plain-mapping settings digest names (as FitSettings.kernel): "libmvec"
# (AVX2) and "libm" as always, so caches written before variants keep their keys
VECTOR_MATH_TAG = KERNEL_KIND

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


def stored_results(path: str | os.PathLike) -> Iterator[dict]:
    """Every result a cache file holds (any task, any settings), read-only: for tools that read a
    finished run's cache (a missing file holds none)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (result,) in db.execute("SELECT result FROM evaluations"):
            try:
                yield json.loads(result)
            except ValueError:
                continue  # a damaged row: as a miss in a run
    finally:
        db.close()


class CacheError(ValueError):
    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.damaged = damaged


DAMAGE = ("malformed", "not a database", "corrupt")
OPEN_TIMEOUT = 60.0  # seconds a busy file is waited for, on open and on every write


class FitnessCache:
    def __init__(self, path: str | os.PathLike, task_fingerprint: str, fit_settings: Mapping,
                 rebuild: bool = False):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.task = task_fingerprint
        key = getattr(fit_settings, "key", None)  # FitSettings: its own digest, constants and all
        # a plain mapping ({"max_iter": N}): this process's kernel and fitter complete it (the
        # vector and scalar exp/log kernels differ by a few ulp: never mix their fitnesses)
        self.settings = key() if callable(key) else settings_digest(
            dict(fit_settings, kernel=VECTOR_MATH_TAG, fitter=FITTER))
        try:
            self._open()
        except CacheError as exc:
            if not (rebuild and exc.damaged):
                raise
            aside = self._move_aside()
            warnings.warn(f"fitness cache {self.path} was damaged: moved to {aside}; "
                          "starting an empty cache", stacklevel=2)
            self._open()

    def _open(self) -> None:
        # Switching a new file to WAL takes an exclusive lock and SQLite does not call its busy
        # handler for it: two processes opening one fresh file can see "database is locked" at
        # once. Retry the whole open for as long as the busy timeout would have waited.
        deadline = time.monotonic() + OPEN_TIMEOUT
        pause = 0.01
        while True:
            try:
                return self._open_once()
            except CacheError as exc:
                if exc.damaged or "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _open_once(self) -> None:
        self.db = None
        try:
            with self._guard():
                self.db = sqlite3.connect(self.path, timeout=OPEN_TIMEOUT)
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                bad = [row[0] for row in self.db.execute("PRAGMA quick_check").fetchall() if row[0] != "ok"]
                if bad:
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {' '.join(bad)[:200]}")
                self.db.execute(SCHEMA)
                self.db.commit()
        except CacheError:
            self.close()
            raise

    @contextmanager
    def _guard(self):
        """sqlite errors as one CacheError line naming the file and the way out."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if any(word in str(exc) for word in DAMAGE):
                raise self._damaged(exc) from None
            raise CacheError(f"fitness cache {self.path}: {exc}") from None

    def _damaged(self, exc) -> CacheError:
        if self.db is not None:
            self.db.close()
            self.db = None
        return CacheError(f"fitness cache {self.path} is damaged ({exc}); run again with "
                          "--rebuild-cache (Python: rebuild_cache=True) to move it aside and start "
                          "an empty one (only cached fitnesses are lost)", damaged=True)

    def _move_aside(self) -> str:
        aside = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        return aside

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            with self._guard():
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
        with self._guard(), self.db:
            self.db.executemany("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?)", rows)

    def mark(self) -> int:
        """A point in the file's history (plain JSON data, for a checkpoint): `rollback(mark)`
        removes every result stored after it."""
        with self._guard():
            return self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM evaluations").fetchone()[0]

    def rollback(self, mark: int) -> None:
        """Forget the results stored after `mark` (all tasks and settings: call it only on a cache
        no other run shares)."""
        with self._guard(), self.db:
            self.db.execute("DELETE FROM evaluations WHERE rowid > ?", (int(mark),))

    def __len__(self) -> int:
        with self._guard():
            return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE task=? AND settings=?",
                                   (self.task, self.settings)).fetchone()[0]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
