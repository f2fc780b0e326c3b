"""A search run: the generation loop tying population, cache, backend, lineage and checkpoints.

The task and the operators arrive as plain values (a picklable task factory, a `Variation`);
this module imports neither `operators/` nor `fitness/`.
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
from .evaluate import evaluate_rule, task_from
from .evaluator import Evaluator
from .population import Birth, Individual, PopulationManager, Variation, generation_stats
from .rule import parse

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
                 seeds: list[str] = (), progress: bool = True, resume: bool = False):
        self.config = config
        self.task_handle = task
        self.task = task.build()
        self.variation = variation
        self.out = os.path.abspath(out_dir)
        self.progress = progress
        self.seed_texts = list(seeds)
        self.interrupted = False
        if not resume and any(os.path.exists(os.path.join(self.out, n))
                              for n in (checkpoint.NAME, checkpoint.PREVIOUS)):
            raise RunFolderError(
                f"{self.out} already holds a run; resume it with `evo-rules resume {out_dir}` "
                "or choose another --out")
        os.makedirs(self.out, exist_ok=True)
        rc = config.run
        self.manager = PopulationManager(
            variation, rc.population, np.random.default_rng(rc.seed),
            selection=config.search.selection, tournament_size=config.search.tournament_size,
            parsimony=config.search.parsimony, elite=config.search.elite,
            hall_of_fame=config.search.hall_of_fame)
        self.logbook = tools.Logbook()
        self.logbook.header = list(LOG_FIELDS)
        self.generation = -1  # last completed generation
        cache_path = config.cache.path or os.path.join(self.out, "cache.sqlite")
        self.cache = FitnessCache(cache_path, self.task.fingerprint, config.fit_settings)
        self.lineage: lineage.LineageWriter | None = None
        self.backend = None
        self.lineage_bytes = 0

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "generation": self.generation,
            "rng": self.manager.rng.bit_generator.state,
            "next_id": self.manager.next_id,
            "population": [i.to_dict() for i in self.manager.population],
            "hall_of_fame": [i.to_dict() for i in self.manager.hof],
            "front": [i.to_dict() for i in self.manager.front],
            "logbook": list(self.logbook),
            "config": self.config.to_dict(),
            "task": {"name": self.task.name, "fingerprint": self.task.fingerprint},
            "lineage_bytes": self.lineage_bytes,
            "cache_rowid": self._cache_rowid(),
        }

    def _own_cache(self) -> bool:
        return not self.config.cache.path

    def _cache_rowid(self) -> int | None:
        """The run's own cache's last row: rows past it were written after this checkpoint."""
        if not self._own_cache():
            return None
        return self.cache.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM evaluations").fetchone()[0]

    def load_state(self, state: dict) -> None:
        want = self.config.to_dict()
        # resolved like the config: a key added since the checkpoint was written gets its default
        saved = from_dict(state["config"], source=os.path.join(self.out, checkpoint.NAME)).to_dict()
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
        m = self.manager
        m.rng.bit_generator.state = state["rng"]
        m.next_id = state["next_id"]
        # oldest first: DEAP puts a later insert before its fitness ties, so this restores the
        # saved order exactly (which tie the hall of fame drops next depends on it)
        m.hof.update([Individual.from_dict(d) for d in reversed(state["hall_of_fame"])])
        m.front.update([Individual.from_dict(d) for d in reversed(state["front"])])
        m.set_population([Individual.from_dict(d) for d in state["population"]])
        for row in state["logbook"]:
            self.logbook.record(**row)
        self.generation = state["generation"]
        self.lineage_bytes = state["lineage_bytes"]
        mark = state.get("cache_rowid")
        if mark is not None and self._own_cache():
            # results stored after the checkpoint would turn the redone generation's evaluations
            # into cache hits: drop them, so the logbook equals the uninterrupted run's
            with self.cache.db:
                self.cache.db.execute("DELETE FROM evaluations WHERE rowid > ?", (mark,))

    # ------------------------------------------------------------------ evaluation

    def _births_to_individuals(self, births: list[Birth], gen: int, t0: float) -> tuple[list[Individual], dict]:
        results, hits = Evaluator(self.cache, self.backend).evaluate([b.rule for b in births])
        inds = [self.manager.make_individual(b, r, gen) for b, r in zip(births, results)]
        for ind in inds:
            self.lineage.record(ind)
        return inds, {"evals": len(births) - hits, "cache_hits": hits,
                      "invalid": sum(not i.valid for i in inds), "t0": t0}

    def _finish_generation(self, gen: int, counts: dict, dedup: int) -> None:
        self.lineage_bytes = self.lineage.flush()
        stats = generation_stats(self.manager.population)
        self.logbook.record(gen=gen, evals=counts["evals"], cache_hits=counts["cache_hits"],
                            dedup=dedup, invalid=counts["invalid"], best=stats["best"],
                            median=stats["median"], median_size=stats["median_size"],
                            seconds=round(time.perf_counter() - counts["t0"], 3))
        self.generation = gen
        if gen % self.config.run.checkpoint_every == 0 or gen == self._last_gen:
            checkpoint.write(self.out, self.state())

    def _seed_rules(self) -> list:
        return [parse(t) for t in self.seed_texts]

    # ------------------------------------------------------------------ the loop

    def run(self, generations: int | None = None) -> dict:
        """Run up to `generations` (default: the config's), from the last checkpoint if any."""
        total = self.config.run.generations if generations is None else generations
        self._last_gen = total
        ev = self.config.evaluation
        self.backend = make_backend(ev.backend, self.task_handle.factory, self.task_handle.token,
                                    self.config.fit_settings, workers=ev.n_workers, chunk=ev.chunk,
                                    retries=ev.retries, scheduler=ev.scheduler)
        resuming = self.generation >= 0
        self.lineage = lineage.LineageWriter(self.out, truncate_to=self.lineage_bytes if resuming else 0)
        if self.generation < 0:  # a checkpoint before any work: a run killed from here on resumes
            checkpoint.write(self.out, self.state())
        bar = None
        try:
            if self.progress:
                from tqdm import tqdm

                bar = tqdm(total=total + 1, initial=self.generation + 1, unit="gen",
                           desc=self.task.name, dynamic_ncols=True)
            while self.generation < total:
                gen = self.generation + 1
                t0 = time.perf_counter()  # the logbook's seconds: variation, evaluation, selection
                if gen == 0:
                    births, dedup = self.manager.initial_births(self._seed_rules())
                    inds, counts = self._births_to_individuals(births, 0, t0)
                    self.manager.set_population(
                        self.manager.select(inds) if len(inds) > self.manager.size else inds)
                else:
                    births, dedup = self.manager.offspring_births(self.manager.size)
                    inds, counts = self._births_to_individuals(births, gen, t0)
                    self.manager.set_population(self.manager.select(self.manager.population + inds))
                self._finish_generation(gen, counts, dedup)
                if bar is not None:
                    self._update_bar(bar)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if bar is not None:
                bar.close()
            self.lineage.close()
            self.backend.close()
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

    def test_evaluation(self, text: str) -> dict:
        return evaluate_rule(text, self.task, self.config.fit_settings, part="test")

    def close(self) -> None:
        self.cache.close()
