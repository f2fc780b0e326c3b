"""Stopping a run: SIGINT and SIGTERM alike, budgets aside.

The first signal asks for a clean stop: a generation's evaluation in progress is abandoned (the
run goes back to its last completed generation, which is what the checkpoint holds), workers are
stopped and the folder is left resumable. A second signal aborts at once: the workers are killed
first, then `Aborted` (a KeyboardInterrupt) unwinds; the folder is as safe as after a SIGKILL.
Handlers are installed explicitly, so a run started with SIGINT ignored (`nohup ... &`) stops too.

A signal's exception raised while a C callback runs (llvmlite calls back into Python while numba
compiles) is swallowed by ctypes and printed as "Exception ignored": the hook below keeps those
quiet, `Stop` remembers the signal, and the search acts on it at its next check (the workers
killed by the abort make the evaluation in flight fail at once).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Abandoned(BaseException):
    """Raised inside an abandonable region by the first signal (BaseException: no `except
    Exception` in evaluation code swallows it)."""


class Aborted(KeyboardInterrupt):
    """A second signal: stop at once (the run folder keeps its last checkpoint)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Stop:
    """What a run is told to stop by: a signal number once one arrived."""

    def __init__(self):
        self.signum: int | None = None
        self.aborted: Aborted | None = None
        self.folder = ""
        self.on_abort: Callable[[], None] = lambda: None  # kills workers; must not block
        self._abandonable = 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0

    def handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            if self._abandonable:
                raise Abandoned()
            return
        self.on_abort()
        where = f"; {self.folder} resumes from its last checkpoint" if self.folder else ""
        self.aborted = Aborted(f"aborted by a second signal ({signal.Signals(signum).name}){where}", signum)
        raise self.aborted

    def raise_if_aborted(self, cause: BaseException | None = None) -> None:
        """Raise the second signal's `Aborted` if one arrived (its raise may have been swallowed)."""
        if self.aborted is not None:
            raise self.aborted from cause

    @contextmanager
    def abandonable(self):
        """Work the first signal may cut short (raising `Abandoned` inside it)."""
        if self.signum is not None:
            raise Abandoned()
        self._abandonable += 1
        try:
            yield
        finally:
            self._abandonable -= 1


def interrupt_in(exc: BaseException) -> BaseException | None:
    """The signal's exception (`Abandoned`, `Aborted`, KeyboardInterrupt) behind `exc`, if any.
    Raised while numba-compiled code runs, it comes back wrapped in a SystemError ("returned a
    result with an exception set"); an `except Exception` must not take it for a rule's error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if not isinstance(exc, Exception):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def handlers(stop: Stop):
    """Route SIGINT and SIGTERM to `stop` while the block runs (main thread only: elsewhere
    Python delivers no signals), then restore what was there."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {s: signal.signal(s, stop.handle) for s in SIGNALS}
    _quiet_swallowed_signals()
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def install() -> Stop:
    """For a command line: route SIGINT and SIGTERM to a new `Stop` for the rest of the process
    (then `exit_at_once`): no default handler comes back between the run and the exit."""
    stop = Stop()
    for s in SIGNALS:
        signal.signal(s, stop.handle)
    _quiet_swallowed_signals()
    return stop


def exit_at_once() -> None:
    """From here to the process's end (all is written) a signal ends it at once, with 128 + its
    number, instead of a KeyboardInterrupt inside the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    for s in SIGNALS:
        signal.signal(s, _exit_now)


def _exit_now(signum, frame) -> None:
    os._exit(128 + signum)


def _quiet_swallowed_signals() -> None:
    """Keep a signal's exception that a C callback swallowed out of the "Exception ignored"
    report (the `Stop` still holds the signal); everything else goes to the hook that was there."""
    previous = sys.unraisablehook
    if getattr(previous, "_evo_rules", False):
        return

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, (Abandoned, Aborted)):
            previous(unraisable)

    hook._evo_rules = True
    sys.unraisablehook = hook
