"""Fit settings: everything that changes a rule's fitted weights, and the fitness-cache key.

`FitSettings` is frozen. Its fields are the iteration cap (the config's `[fit] max_iter`), the
fitter's own constants (starts and the rows they are compared on, tolerance, L2, a version the fitter bumps whenever its numbers
change) and the kernel variant that computes exp/log (variants differ by a few ulp). The loss is
not here: it belongs to the task, whose fingerprint the cache keys on beside these settings.

`key()` is the digest the fitness cache stores results under (`FitnessCache` takes a
FitSettings and uses it): two settings have one key exactly when they fit every rule to the same
numbers. It is `cache.settings_digest` of `as_dict()`, the mapping the cache has always digested
(`{"max_iter", "kernel", "fitter"}`), so caches written before this type existed stay valid where
the kernel is the same: the kernel is `kernels.KERNEL_KIND` ("libmvec" for AVX2 and "libm" as
before; "libmvec-avx512" is new, and must be: its numbers differ). `FitSettings` is itself a read-only
mapping of that dict, so code that takes `Mapping` fit settings (`.get("max_iter")`,
`dict(settings)`) takes it unchanged; `FitSettings.coerce` reads any such mapping back,
including the short `{"max_iter": N}` form (the rest from this process's fitter and kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from . import fitting
from .cache import settings_digest
from .kernels import KERNEL_KIND

DEFAULT_MAX_ITER = 20
_KEYS = ("max_iter", "kernel", "fitter")
_FITTER_KEYS = ("version", "starts", "tol", "l2", "start_rows")


class FitSettingsError(ValueError):
    """Fit settings that are malformed, or that this process cannot fit under."""


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) + 0.0 for v in values)  # + 0.0: -0.0 is 0.0 (one JSON text, one key)


# The dataclass's own __eq__ and __hash__ (by fields) replace Mapping's dict comparison: settings
# compare and hash as settings, and a plain dict never equals them.
@dataclass(frozen=True)
class FitSettings(Mapping):
    max_iter: int = DEFAULT_MAX_ITER
    starts: tuple[float, ...] = field(default_factory=lambda: _floats(fitting.FITTER["starts"]))
    tol: float = field(default_factory=lambda: float(fitting.FITTER["tol"]))
    l2: float = field(default_factory=lambda: float(fitting.FITTER["l2"]))
    version: int = field(default_factory=lambda: int(fitting.FITTER["version"]))
    start_rows: int = field(default_factory=lambda: int(fitting.FITTER["start_rows"]))
    kernel: str = KERNEL_KIND

    def __post_init__(self):
        # normalised so that equal fits give equal JSON: 0 and 0.0 are one start, not two keys
        try:
            object.__setattr__(self, "max_iter", _count("max_iter", self.max_iter, 1))
            object.__setattr__(self, "version", _count("version", self.version, 0))
            object.__setattr__(self, "start_rows", _count("start_rows", self.start_rows, 1))
            object.__setattr__(self, "starts", _floats(self.starts))
            object.__setattr__(self, "tol", float(self.tol) + 0.0)
            object.__setattr__(self, "l2", float(self.l2) + 0.0)
        except (TypeError, ValueError) as exc:
            raise FitSettingsError(f"fit settings: {exc}") from None
        for name in ("tol", "l2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise FitSettingsError(f"fit settings: {name} must be a finite number >= 0, got {value!r}")
        if not self.starts or not all(math.isfinite(s) for s in self.starts):
            raise FitSettingsError(f"fit settings: starts must be one or more finite numbers, "
                                   f"got {self.starts!r}")
        if not isinstance(self.kernel, str) or not self.kernel:
            raise FitSettingsError(f"fit settings: kernel must be a variant name, got {self.kernel!r}")

    # ------------------------------------------------------------------ the cache key

    def as_dict(self) -> dict:
        """The plain JSON form the cache digests (and `coerce` reads back)."""
        return {"max_iter": self.max_iter, "kernel": self.kernel,
                "fitter": {"version": self.version, "starts": list(self.starts), "tol": self.tol,
                           "l2": self.l2, "start_rows": self.start_rows}}

    to_dict = as_dict

    def key(self) -> str:
        """The fitness cache's settings digest: equal exactly for settings that fit alike."""
        return settings_digest(self.as_dict())

    # read-only mapping of as_dict(): for code written against `Mapping` fit settings
    def __getitem__(self, name: str) -> Any:
        if name not in _KEYS:
            raise KeyError(name)
        return self.as_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    # ------------------------------------------------------------------ reading and checking

    @classmethod
    def coerce(cls, settings: "FitSettings | Mapping[str, Any] | None") -> "FitSettings":
        """`settings` as FitSettings: itself, or read from a mapping (`as_dict()`'s form, or any
        part of it, e.g. `{"max_iter": 8}`: the rest from this process's fitter and kernel)."""
        if isinstance(settings, FitSettings):
            return settings
        if settings is None:
            return cls()
        if not isinstance(settings, Mapping):
            raise FitSettingsError(f"fit settings must be a mapping or FitSettings, got "
                                   f"{type(settings).__name__}")
        unknown = sorted(set(settings) - set(_KEYS))
        if unknown:
            raise FitSettingsError(f"fit settings: unknown key(s) {', '.join(map(repr, unknown))} "
                                   f"(known: {', '.join(_KEYS)})")
        kw: dict[str, Any] = {k: settings[k] for k in ("max_iter", "kernel") if k in settings}
        fitter = settings.get("fitter") or {}
        if not isinstance(fitter, Mapping):
            raise FitSettingsError(f"fit settings: fitter must be a mapping, got {fitter!r}")
        unknown = sorted(set(fitter) - set(_FITTER_KEYS))
        if unknown:
            raise FitSettingsError(f"fit settings: unknown fitter constant(s) "
                                   f"{', '.join(map(repr, unknown))} (known: {', '.join(_FITTER_KEYS)}); "
                                   "written by another version of the fitter?")
        kw.update({k: fitter[k] for k in _FITTER_KEYS if k in fitter})
        return cls(**kw)

    def check_runnable(self) -> None:
        """Raise FitSettingsError unless this process fits under these settings: its fitter and
        kernel are the ones named, and `fitting.fit` can take the constants (only tol and L2
        are arguments; the starts, their rows and the version are the fitter's own)."""
        here = FitSettings(max_iter=self.max_iter, tol=self.tol, l2=self.l2)
        diffs = [f"{name} {getattr(self, name)!r} (this process: {getattr(here, name)!r})"
                 for name in ("version", "starts", "start_rows", "kernel") if getattr(self, name) != getattr(here, name)]
        if diffs:
            raise FitSettingsError("fit settings ask for a fit this process cannot make: "
                                   + "; ".join(diffs))


def _count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)

