"""A search run: the generation loop tying population, cache, backend, lineage and checkpoints.

The task and the operators arrive as plain values (a picklable task factory, a `Variation`);
this module imports neither `operators/` nor `fitness/`. The population manager owns its state
(`state()` / `restore()`), the cache its schema (`mark()` / `rollback()`), `RunFolder` every
path; the evaluator (cache + backend) is built once per `run` call. A run holds its folder's
lock for its life; it stops early, always at a completed generation with its checkpoint
written, on a signal (see `stopping`) or when [run] max_seconds / max_evaluations are spent.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from deap import tools

from . import checkpoint, lineage
from .backends import make_backend
from .cache import FitnessCache
from .config import RunConfig, from_dict
from .evaluate import task_from
from .evaluator import Evaluator
from .population import Birth, Individual, PopulationManager, Variation
from .rule import parse
from .run_folder import RunFolder, make_folder
from .runlock import RunLock
from .stopping import Abandoned, Stop

LOG_FIELDS = ("gen", "evals", "cache_hits", "dedup", "invalid", "best", "median", "median_size",
              "seconds")


class RunFolderError(ValueError):
    pass


@dataclass
class TaskHandle:
    """How to build the task anywhere: a picklable zero-argument factory and a name for it."""

    factory: Callable[[], Any]
    token: str

    def build(self):
        return task_from(self.factory, self.token)


def _shorten(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class Search:
    def __init__(self, config: RunConfig, task: TaskHandle, variation: Variation, out_dir: str,
                 seeds: list[str] = (), progress: bool = True, resume: bool = False,
                 stop: Stop | None = None, overwrite: bool = False, rebuild_cache: bool = False,
                 lock: RunLock | None = None):
        self.config = config
        self.task_handle = task
        self.task = task.build()
        self.variation = variation
        self.out = os.path.abspath(out_dir)
        self.folder = RunFolder(self.out)
        self.progress = progress
        self.seed_texts = list(seeds)
        self.interrupted = False
        self.stop_reason = ""  # why the last run() ended early: SIGINT, SIGTERM, max_seconds, ...
        self.stop = stop or Stop()
        make_folder(self.out)
        self.lock = lock or RunLock(self.out)  # before anything in the folder is read or written
        try:
            self._prepare_folder(out_dir, resume, overwrite)
            self.cache = FitnessCache(self.folder.cache_path(config.cache.path), self.task.fingerprint,
                                      config.fit_settings, rebuild=rebuild_cache)
        except BaseException:
            self.lock.release()
            raise
        rc = config.run
        self.manager = PopulationManager(
            variation, rc.population, np.random.default_rng(rc.seed),
            selection=config.search.selection, tournament_size=config.search.tournament_size,
            parsimony=config.search.parsimony, elite=config.search.elite,
            hall_of_fame=config.search.hall_of_fame)
        self.logbook = tools.Logbook()
        self.logbook.header = list(LOG_FIELDS)
        self.generation = -1  # last completed generation
        self.lineage: lineage.LineageWriter | None = None
        self.backend = None
        self.evaluator: Evaluator | None = None  # built once per `run` call, with its backend
        self.lineage_bytes = 0
        self.lineage_digest = lineage.new_hash().hexdigest()
        self._lineage_resume = None  # (length, running hash) verified by load_state
        self._checkpointed = None  # generation of the last checkpoint written

    def _prepare_folder(self, out_dir: str, resume: bool, overwrite: bool) -> None:
        if resume or not self.folder.holds_run():
            return
        if not overwrite:
            raise RunFolderError(
                f"{self.out} already holds a run; resume it with `evo-rules resume {out_dir}` "
                "(Python: resume=True) or choose another --out (Python: overwrite=True replaces it)")
        for path in self.folder.run_files(own_cache=self._own_cache()):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "generation": self.generation,
            **self.manager.state(),  # rng, next_id, population, hall_of_fame, front
            "logbook": list(self.logbook),
            "config": self.config.to_dict(),
            "task": {"name": self.task.name, "fingerprint": self.task.fingerprint},
            "lineage_bytes": self.lineage_bytes,
            "lineage_blake2b": self.lineage_digest,
            "cache_rowid": self._cache_rowid(),
        }

    def _own_cache(self) -> bool:
        return not self.config.cache.path

    def _cache_rowid(self) -> int | None:
        """The run's own cache's mark: results stored after it came after this checkpoint."""
        if not self._own_cache():
            return None
        return self.cache.mark()

    def load_state(self, state: dict) -> None:
        want = self.config.to_dict()
        # resolved like the config: a key added since the checkpoint was written gets its default
        saved = from_dict(state["config"], source=os.fspath(self.folder.checkpoint)).to_dict()
        for section in ("task", "grammar", "fit", "search"):
            have, now = saved.get(section) or {}, want.get(section) or {}
            if have != now:
                diffs = [f"{k} = {json.dumps(have.get(k))} in the checkpoint, {json.dumps(now.get(k))} now"
                         for k in sorted(set(have) | set(now)) if have.get(k) != now.get(k)]
                raise RunFolderError(
                    f"{self.out}: the config's [{section}] differs from the checkpoint's "
                    f"({'; '.join(diffs)}); resume with the run's own config")
        for key in ("seed", "population"):
            if saved["run"][key] != want["run"][key]:
                raise RunFolderError(f"{self.out}: [run].{key} differs from the checkpoint's")
        if state["task"]["fingerprint"] != self.task.fingerprint:
            raise RunFolderError(
                f"{self.out}: the task data differ from the checkpoint's (fingerprint "
                f"{state['task']['fingerprint']} vs {self.task.fingerprint})")
        self.manager.restore(state)
        for row in state["logbook"]:
            self.logbook.record(**row)
        self.generation = state["generation"]
        self._checkpointed = self.generation
        self.lineage_bytes = state["lineage_bytes"]
        # None: a checkpoint written before lineage checksums (its length is still checked)
        digest = state.get("lineage_blake2b")
        hasher = lineage.verify(self.out, self.lineage_bytes, digest)
        self.lineage_digest = hasher.hexdigest()
        self._lineage_resume = (self.lineage_bytes, hasher)
        mark = state.get("cache_rowid")
        if mark is not None and self._own_cache():
            # results stored after the checkpoint would turn the redone generation's evaluations
            # into cache hits: drop them, so the logbook equals the uninterrupted run's
            self.cache.rollback(mark)

    # ------------------------------------------------------------------ evaluation

    def _births_to_individuals(self, births: list[Birth], gen: int, t0: float) -> tuple[list[Individual], dict]:
        with self.stop.abandonable():  # the first signal may cut the evaluation short
            results, hits = self.evaluator.evaluate([b.rule for b in births])
        inds = [self.manager.make_individual(b, r, gen) for b, r in zip(births, results)]
        for ind in inds:
            self.lineage.record(ind)
        return inds, {"evals": len(births) - hits, "cache_hits": hits,
                      "invalid": sum(not i.valid for i in inds), "t0": t0}

    def _finish_generation(self, gen: int, counts: dict, dedup: int) -> None:
        self.lineage_bytes, self.lineage_digest = self.lineage.flush()
        stats = self.manager.statistics()
        self.logbook.record(gen=gen, evals=counts["evals"], cache_hits=counts["cache_hits"],
                            dedup=dedup, invalid=counts["invalid"], best=stats["best"],
                            median=stats["median"], median_size=stats["median_size"],
                            seconds=round(time.perf_counter() - counts["t0"], 3))
        self.generation = gen
        if gen % self.config.run.checkpoint_every == 0 or gen == self._last_gen:
            self._checkpoint()

    def _checkpoint(self) -> None:
        checkpoint.write(self.out, self.state())
        self._checkpointed = self.generation

    def _seed_rules(self) -> list:
        return [parse(t) for t in self.seed_texts]

    def _budget_spent(self, started: float, evaluations: int) -> str:
        rc = self.config.run
        if rc.max_seconds is not None and time.monotonic() - started >= rc.max_seconds:
            return "max_seconds"
        if rc.max_evaluations is not None and evaluations >= rc.max_evaluations:
            return "max_evaluations"
        return ""

    # ------------------------------------------------------------------ the loop

    def run(self, generations: int | None = None) -> dict:
        """Run up to `generations` (default: the config's), from the last checkpoint if any.

        Ends early, at a completed and checkpointed generation, on a first SIGINT/SIGTERM (the
        generation being evaluated is abandoned) or a spent budget; `stop_reason` says which."""
        total = self.config.run.generations if generations is None else generations
        self._last_gen = total
        started, evaluations = time.monotonic(), 0
        self.stop_reason = ""
        ev = self.config.evaluation
        self.backend = make_backend(ev.backend, self.task_handle.factory, self.task_handle.token,
                                    self.config.fit_settings, workers=ev.n_workers, chunk=ev.chunk,
                                    retries=ev.retries, scheduler=ev.scheduler)
        self.stop.folder = self.out
        self.evaluator = Evaluator(self.cache, self.backend, self.config.fit_settings)
        self.stop.on_abort = self.backend.kill  # a second signal: no worker outlives the run
        self.lineage = lineage.LineageWriter(self.out, resume=self._lineage_resume)
        if self.generation < 0:  # a checkpoint before any work: a run killed from here on resumes
            self._checkpoint()
        bar = None
        abandoned = False
        try:
            if self.progress:
                from tqdm import tqdm

                bar = tqdm(total=total + 1, initial=self.generation + 1, unit="gen",
                           desc=self.task.name, dynamic_ncols=True)
            while self.generation < total and not self.stop_reason:
                self.stop.raise_if_aborted()
                if self.stop.signum is not None:
                    self.stop_reason = self.stop.name
                    break
                gen = self.generation + 1
                t0 = time.perf_counter()  # the logbook's seconds: variation, evaluation, selection
                savepoint = self.manager.savepoint()
                try:
                    if gen == 0:
                        births, dedup = self.manager.initial_births(self._seed_rules())
                        inds, counts = self._births_to_individuals(births, 0, t0)
                        self.manager.set_population(
                            self.manager.select(inds) if len(inds) > self.manager.size else inds)
                    else:
                        births, dedup = self.manager.offspring_births(self.manager.size)
                        inds, counts = self._births_to_individuals(births, gen, t0)
                        self.manager.set_population(self.manager.select(self.manager.population + inds))
                except Abandoned:
                    # back to the last completed generation (nothing of this one was recorded)
                    self.manager.rewind(savepoint)
                    self.stop_reason, abandoned = self.stop.name, True
                    break
                except Exception as exc:  # workers a swallowed second signal killed: say so
                    self.stop.raise_if_aborted(exc)
                    raise
                self._finish_generation(gen, counts, dedup)
                evaluations += counts["evals"]
                if bar is not None:
                    self._update_bar(bar)
                if self.generation < total:
                    self.stop_reason = self._budget_spent(started, evaluations)
        finally:
            if bar is not None:
                bar.close()
            self.lineage.close()
            self.backend.close(kill=abandoned)
            self.stop.on_abort = lambda: None
        self._lineage_resume = (self.lineage_bytes, self.lineage.hash)
        if self.stop_reason:
            self.interrupted = True
            if self._checkpointed != self.generation:  # checkpoint_every > 1: keep what was done
                self._checkpoint()
        return self.state()

    def _update_bar(self, bar) -> None:
        row = self.logbook[-1]
        total = sum(r["evals"] + r["cache_hits"] for r in self.logbook)
        hits = sum(r["cache_hits"] for r in self.logbook)
        best = max(self.manager.population, key=lambda i: (i.metric, -i.size))
        bar.set_postfix_str(f"best={row['best']:.4f} hit={hits / max(total, 1):.0%} "
                            f"rule={_shorten(best.text)}", refresh=False)
        bar.update(1)

    # ------------------------------------------------------------------ results

    def close(self) -> None:
        self.cache.close()
        self.lock.release()
