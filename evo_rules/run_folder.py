"""The run folder: every path a run reads or writes, named in one place.

A run folder (default `runs/TASK-seedN-K`, the first K not yet holding a run) holds:

| name | written by | what |
|---|---|---|
| `config.json` | `app` | the resolved config; a resume may take edits of [run] budgets and [evaluation] |
| `checkpoint.json`, `checkpoint.prev.json` | `checkpoint` | the last two checkpoints (`.tmp` while writing) |
| `lineage.jsonl` | `lineage` | one record per birth |
| `cache.sqlite` (`-wal`, `-shm`) | `cache` | the fitness cache, unless [cache] path shares one elsewhere |
| `report.json` | `report` | the final report |
| `run.lock` | `runlock` | the folder's lock (left in place: see `runlock`) |
| `families.json`, `plots/*.png` | `evo-rules lineage --families-json`, `evo-rules plot` | on request |

A sweep folder (default `runs/TASK-sweep`) holds `sweep.json` and its cache. Modules take a
folder as a `str` or `Path` and build a `RunFolder` from it: no file name is spelt elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUNS = "runs"  # where run folders go by default, relative to the working folder

CONFIG = "config.json"
CHECKPOINT = "checkpoint.json"
PREVIOUS_CHECKPOINT = "checkpoint.prev.json"
LINEAGE = "lineage.jsonl"
CACHE = "cache.sqlite"
CACHE_SIDE_FILES = ("-wal", "-shm")  # SQLite's write-ahead log and shared-memory index
REPORT = "report.json"
LOCK = "run.lock"
FAMILIES = "families.json"
SWEEP = "sweep.json"
PLOTS = "plots"
PLOT_NAMES = ("families.png", "ancestry.png", "pareto.png", "logbook.png", "muller.png")
LEADS_PLOT = "leads.png"  # only for a report with a final table of per-seed leads (optimizer track)
TMP = ".tmp"  # suffix of a file being written, renamed over the real one when complete


def _in_folder(name: str, doc: str | None = None) -> property:
    """The path of file `name` in the folder, as a read-only attribute."""
    return property(lambda self: self.path / name, doc=doc or f"The folder's {name}.")


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)

    # ------------------------------------------------------------------ files

    config = _in_folder(CONFIG)
    checkpoint = _in_folder(CHECKPOINT)
    previous_checkpoint = _in_folder(PREVIOUS_CHECKPOINT)
    checkpoint_tmp = _in_folder(CHECKPOINT + TMP)
    lineage = _in_folder(LINEAGE)
    cache = _in_folder(CACHE, "The run's own fitness cache (a config's [cache] path may name a shared one).")
    report = _in_folder(REPORT)
    lock = _in_folder(LOCK)
    families = _in_folder(FAMILIES)
    sweep = _in_folder(SWEEP)
    plots = _in_folder(PLOTS)

    def plot_paths(self, out: str | os.PathLike | None = None) -> tuple[Path, ...]:
        """The PNGs of `evo-rules plot`, in `out` (default: the folder's plots/)."""
        folder = Path(out) if out is not None else self.plots
        return tuple(folder / name for name in PLOT_NAMES)

    def leads_plot_path(self, out: str | os.PathLike | None = None) -> Path:
        """`leads.png`, written beside the five plots for a run whose report has per-seed leads."""
        return (Path(out) if out is not None else self.plots) / LEADS_PLOT

    def cache_path(self, shared: str = "") -> Path:
        """The cache a run uses: `shared` ([cache] path) when set, else the run's own."""
        return Path(shared) if shared else self.cache

    # ------------------------------------------------------------------ the folder as a whole

    def holds_run(self) -> bool:
        """A run has checkpointed here (current or previous checkpoint)."""
        return self.checkpoint.exists() or self.previous_checkpoint.exists()

    def run_files(self, own_cache: bool = True) -> tuple[Path, ...]:
        """What a run writes here and `overwrite` removes (the lock stays: see `runlock`); a
        shared cache elsewhere is never part of the folder."""
        files = [self.checkpoint, self.previous_checkpoint, self.checkpoint_tmp, self.lineage,
                 self.report, self.config]
        if own_cache:
            files += [self.cache, *(Path(f"{self.cache}{s}") for s in CACHE_SIDE_FILES)]
        return tuple(files)

    @staticmethod
    def names() -> frozenset[str]:
        """Every name a run or its tools may create directly in a run folder."""
        return frozenset({CONFIG, CHECKPOINT, PREVIOUS_CHECKPOINT, CHECKPOINT + TMP, LINEAGE, CACHE,
                          *(CACHE + s for s in CACHE_SIDE_FILES), REPORT, LOCK, FAMILIES, SWEEP, PLOTS})


def make_folder(path: str | os.PathLike) -> None:
    """Create the folder `path` (and its parents); a file in its place is one clear error, not
    "[Errno 17] File exists"."""
    for p in [Path(path), *Path(path).parents]:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{p}: is a file, not a folder (--out names a folder)")
    os.makedirs(path, exist_ok=True)


def default_folder(task: str, seed: int, runs: str | os.PathLike = RUNS, resume: bool = False) -> RunFolder:
    """The default run folder `runs/TASK-seedN-K`: the first K that holds no run (`resume`: the
    last one that does, else the first free)."""
    base = Path(runs) / f"{task}-seed{seed}"
    k = 1
    while RunFolder(f"{base}-{k}").holds_run():
        k += 1
    if resume and k > 1:
        k -= 1
    return RunFolder(f"{base}-{k}")


def sweep_folder(task: str, runs: str | os.PathLike = RUNS) -> RunFolder:
    """The default folder of `evo-rules sweep`: runs/TASK-sweep."""
    return RunFolder(Path(runs) / f"{task}-sweep")
