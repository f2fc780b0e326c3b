"""Evaluation backends: serial, a local process pool, or a dask.distributed cluster.

Each maps `evaluate_batch` over chunks of rule texts and returns results in submission order,
so a run's results do not depend on the backend, the number of workers or completion order.
Workers receive plain data (texts) and a picklable task factory; each builds the task once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Mapping

from .evaluate import evaluate_batch


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _worker_init(manager_pid: int) -> None:
    """Workers leave Ctrl-C to the manager (which stops them), and die with it however it dies:
    Linux's parent-death signal, else a thread that watches the parent pid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(manager_pid,), daemon=True).start()
    if os.getppid() != manager_pid:  # the manager died before the line above took effect
        os._exit(1)


def _die_with_parent() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(manager_pid: int) -> None:
    while os.getppid() == manager_pid:
        time.sleep(0.5)
    os._exit(1)


class SerialBackend:
    name = "serial"

    def __init__(self, factory: Callable[[], Any], token: str, fit_settings: Mapping, **_):
        self.args = (factory, token, dict(fit_settings))

    def map(self, texts: list[str]) -> list[dict]:
        return evaluate_batch(list(texts), *self.args)

    def close(self, kill: bool = False) -> None:
        pass

    def kill(self) -> None:
        pass


class ProcessBackend:
    """A pool of spawned worker processes (spawn: no state inherited from the manager)."""

    name = "process"

    def __init__(self, factory, token, fit_settings, workers: int = 2, chunk: int = 8,
                 retries: int = 2, **_):
        self.args = (factory, token, dict(fit_settings))
        self.workers = max(1, workers)
        self.chunk = chunk
        self.retries = retries
        self.pool: ProcessPoolExecutor | None = None
        self.killed = False

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init, initargs=(os.getpid(),))
        return self.pool

    def map(self, texts: list[str]) -> list[dict]:
        chunks = _chunks(list(texts), self.chunk)
        done: dict[int, list[dict]] = {}
        for attempt in range(self.retries + 1):
            pending = [i for i in range(len(chunks)) if i not in done]
            if not pending:
                break
            pool = self._pool()
            futures = {i: pool.submit(evaluate_batch, chunks[i], *self.args) for i in pending}
            broken = False
            for i, fut in futures.items():
                try:
                    done[i] = fut.result()
                except BrokenProcessPool:
                    broken = True
            if broken:  # a worker died: start a new pool and retry what is missing
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
                if self.killed:  # by `kill`: the run is aborting, nothing to retry
                    raise RuntimeError("evaluation workers were killed (the run is aborting)")
                if attempt == self.retries:
                    raise RuntimeError(f"evaluation workers died {self.retries + 1} times in a row")
        return [r for i in range(len(chunks)) for r in done[i]]

    def close(self, kill: bool = False) -> None:
        """Shut the pool down; `kill`: work in flight is abandoned, so kill the workers first."""
        if self.pool is None:
            return
        if kill:
            procs = list((getattr(self.pool, "_processes", None) or {}).values())
            self.kill()
            for p in procs:
                p.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    def worker_pids(self) -> list[int]:
        procs = getattr(self.pool, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.pid]

    def kill(self) -> None:
        """Stop at once, work in flight abandoned: SIGKILL the workers (never blocks, safe in a
        signal handler); the pool then sees them gone and shuts down, and `map` no longer
        retries."""
        self.killed = True
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class DaskBackend:
    """dask.distributed: a scheduler address, or a LocalCluster of `workers` processes."""

    name = "dask"

    def __init__(self, factory, token, fit_settings, workers: int = 2, chunk: int = 8,
                 retries: int = 2, scheduler: str = "", **_):
        from dask.distributed import Client, LocalCluster

        self.args = (factory, token, dict(fit_settings))
        self.chunk = chunk
        self.retries = retries
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            self.cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)

    def map(self, texts: list[str]) -> list[dict]:
        chunks = _chunks(list(texts), self.chunk)
        futures = [self.client.submit(evaluate_batch, c, *self.args, pure=False,
                                      retries=self.retries) for c in chunks]
        results = self.client.gather(futures)  # gathered in submission order
        return [r for chunk in results for r in chunk]

    def close(self, kill: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def kill(self) -> None:
        pass  # a local cluster's workers are its nanny's children: they go when the manager does


def make_backend(name: str, factory, token: str, fit_settings: Mapping, **options):
    kinds = {"serial": SerialBackend, "process": ProcessBackend, "dask": DaskBackend}
    if name not in kinds:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(kinds)})")
    return kinds[name](factory, token, fit_settings, **options)
