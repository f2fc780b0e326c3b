"""Stage 3: memory selection for a small GPT on TinyStories (task `tinystories-memory`).

A rule scores each memory chunk (a sentence) of a story; under a budget of K chunks the recent
chunk is always kept and the K - 1 best-scored others join it; the model then reads the kept
chunks (in story order) and the target sentence. The true metric is the model's continuation
loss on the target.

Expensive part once, cheap part many times (DESIGN 7b). Everything the model says about the
data is computed once per (model, data, settings) fingerprint and cached on disk as a NumPy
`.npz` (no pickle): each candidate chunk's features (text ones from `memory_text`, the model's
own view from `lm.memory`) and its *leave-one-in utility*: the target's mean loss given only the
recent chunk minus its loss given this chunk plus the recent chunk (nats; positive = the chunk
helps). Training labels average that utility over the target and the `label_horizon - 1`
sentences after it (labels may look ahead, features never do); the metric uses the target alone.
The search's inner loop fits a rule listwise against softmax(utility / label_temperature) on
train episodes; the fitness is `utility_k2`, the mean utility of the rule's top chunk on valid
episodes: exactly the loss reduction over "last chunk only" that the rule buys at K = 2.

The finalists and the reported winner are then scored with real LM forwards on the test
episodes beside every baseline (`final_evaluation`), at K = 2 and K = 3.

Settings: `model` (folder of a trained model; empty: the one shipped in the package), `data`
(TinyStories folder; empty: the shipped copies), `label_horizon` (2), `label_temperature`
(0.1), `targets_per_story` (3, test episodes) and `train_targets_per_story` (6),
`max_stories` (0 = all; a cap per split, for tests), `cache_dir` (empty: $EVO_RULES_CACHE or
~/.cache/evo-rules), `threads` (0: every core), `device` ("cpu"; "cuda" where there is one),
`features` ("all", "text" or "model").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from . import tinystories
from .base import Batch, Scorer, Setting, check_settings, fingerprint_of
from .memory_text import TEXT_FEATURES

MODEL_FEATURES = ("attn_recent", "attn_last", "attn_received", "surprisal", "hidden_sim", "hidden_last",
                  "help_recent", "imagined_gain", "full_agree", "sampled_gain")
FEATURE_SETS = {"all": TEXT_FEATURES + MODEL_FEATURES, "text": TEXT_FEATURES, "model": MODEL_FEATURES}
PARTS = ("train", "valid", "test")
CACHE_VERSION = 3  # 3: sampled_gain
# `[task.settings]` (checked before a run starts and by the task)
SETTINGS = {"model": Setting(str), "data": Setting(str), "label_horizon": Setting(int, 1, 100),
            "label_temperature": Setting(float, 0.0, None, open=True),
            "targets_per_story": Setting(int, 1, 1_000), "train_targets_per_story": Setting(int, 1, 1_000),
            "max_stories": Setting(int, 0, 1_000_000_000), "cache_dir": Setting(str),
            "threads": Setting(int, 0, 4_096), "features": Setting(str, choices=tuple(FEATURE_SETS)),
            "device": Setting(str)}


def shipped_model() -> Path:
    return Path(str(resources.files("evo_rules.fitness.data").joinpath("lm")))


def default_cache_dir() -> Path:
    env = os.environ.get("EVO_RULES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "evo-rules"


def _model_digest(folder: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        p = folder / name
        if not p.exists():
            raise ValueError(f"{folder}: no {name}: not a trained model folder "
                             "(train one with `evo-rules lm train --out DIR`)")
        h.update(name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class PartData:
    """One split's cached numbers: rows are candidate chunks, grouped by episode."""

    X: np.ndarray  # (rows, features) all features
    groups: np.ndarray  # (rows,) episode index, contiguous
    u_label: np.ndarray  # (rows,) utility averaged over the label horizon
    u_target: np.ndarray  # (rows,) utility on the target alone
    story: np.ndarray  # (episodes,) story index within the split
    tokens: dict | None = None  # test only: per-token target losses, see `precompute`

    @property
    def n_episodes(self) -> int:
        return len(self.story)

    def starts(self) -> np.ndarray:
        return np.searchsorted(self.groups, np.arange(self.n_episodes))

    def subset(self, episodes: np.ndarray) -> "PartData":
        keep = np.isin(self.groups, episodes)
        remap = np.full(self.n_episodes, -1)
        remap[episodes] = np.arange(len(episodes))
        return PartData(self.X[keep], remap[self.groups[keep]], self.u_label[keep],
                        self.u_target[keep], self.story[episodes])  # per-token losses: test only


class MemoryTask:
    name = "tinystories-memory"
    loss = "listwise"
    metric_name = "utility_k2"

    def __init__(self, model: str = "", data: str = "", label_horizon: int = 2,
                 label_temperature: float = 0.1, targets_per_story: int = 3,
                 train_targets_per_story: int = 6, max_stories: int = 0, cache_dir: str = "",
                 threads: int = 0, features: str = "all", device: str = "cpu", _parts=None, _meta=None):
        model, data, cache_dir = (os.fspath(p) if isinstance(p, os.PathLike) else p
                                  for p in (model, data, cache_dir))
        check_settings(dict(model=model, data=data, label_horizon=label_horizon,
                            label_temperature=label_temperature, targets_per_story=targets_per_story,
                            train_targets_per_story=train_targets_per_story, max_stories=max_stories,
                            cache_dir=cache_dir, threads=threads, features=features, device=device),
                       SETTINGS)
        self.settings = {"label_horizon": label_horizon, "label_temperature": label_temperature,
                         "targets_per_story": targets_per_story,
                         "train_targets_per_story": train_targets_per_story,
                         "max_stories": max_stories, "features": features}
        self.model_dir = Path(model) if model else shipped_model()
        self.data = data
        self.threads = threads
        self.device = device  # an execution detail, like threads: not in the fingerprint
        self.features = FEATURE_SETS[features]
        self._cols = [FEATURE_SETS["all"].index(f) for f in self.features]
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if _parts is not None:  # a resampled copy
            self.parts, self.meta = _parts, _meta
        else:
            self.parts, self.meta = self._load_or_compute()
        self.fingerprint = fingerprint_of(self.name, {**self.settings, "resample": self.meta.get("resample")},
                                          self.meta["data_fingerprint"])

    # ------------------------------------------------------------------ cache

    def stories(self) -> dict[str, list]:
        """Split -> stories of this task (capped by max_stories)."""
        splits = tinystories.load_splits(self.data or None)
        cap = self.settings["max_stories"]
        return {p: (splits[p][:cap] if cap else splits[p]) for p in PARTS}

    def _load_or_compute(self):
        stories = self.stories()
        data_digest = fingerprint_of("tinystories", {}, *[s.text for p in PARTS for s in stories[p]])
        model_digest = _model_digest(self.model_dir)
        key = fingerprint_of(self.name, {k: v for k, v in self.settings.items() if k != "features"},
                             data_digest, model_digest, str(CACHE_VERSION))
        path = self.cache_dir / f"tinystories-memory-{key}.npz"
        if path.exists():
            try:
                return _read_cache(path, key)
            except ValueError as exc:
                import warnings

                warnings.warn(f"{exc}; computing it again")
        parts, meta = precompute(self.model_dir, stories, self.settings, self.threads, device=self.device)
        meta.update(data_fingerprint=key, model_digest=model_digest, model=str(self.model_dir))
        _write_cache(path, parts, meta)
        return parts, meta

    # ------------------------------------------------------------------ the Task protocol

    def _check(self, part: str) -> PartData:
        if part not in self.parts:
            raise ValueError(f"unknown part {part!r} (use one of {PARTS})")
        return self.parts[part]

    def _X(self, d: PartData) -> dict[str, np.ndarray]:
        return {f: np.ascontiguousarray(d.X[:, c]) for f, c in zip(self.features, self._cols)}

    def batch(self, part: str) -> Batch:
        d = self._check(part)
        y = _softmax_in_groups(d.u_label / self.settings["label_temperature"], d.groups)
        return Batch(self._X(d), y, d.groups.astype(np.int64))

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        d = self._check(part)
        scores = np.broadcast_to(np.asarray(scorer(self._X(d)), dtype=np.float64), d.groups.shape)
        if not np.all(np.isfinite(scores)):
            return {self.metric_name: math.nan}
        return utility_metrics(d, scores)

    def score_units(self, part: str, scorer: Scorer) -> np.ndarray:
        """Per episode, the utility of the rule's top chunk (the mean is utility_k2)."""
        d = self._check(part)
        scores = np.broadcast_to(np.asarray(scorer(self._X(d)), dtype=np.float64), d.groups.shape)
        if not np.all(np.isfinite(scores)):
            return np.full(d.n_episodes, np.nan)
        return _top_utilities(d, scores)

    def unit_clusters(self, part: str) -> np.ndarray:
        """The story of each episode (several episodes share a story's memory)."""
        return self._check(part).story

    def linear_rule_text(self) -> str:
        return "(add " + " ".join(f"(mul w x.{f})" for f in self.features) + ")"

    def reference_rules(self) -> dict[str, str]:
        # the fixed policies as weightless rules: report baselines, and seeds when seed_reference
        refs = {"recent": "x.recency", "overlap": "x.overlap_recent", "h2o": "x.attn_received"}
        return {k: v for k, v in refs.items() if v[2:] in self.features}

    def resample(self, seed: int) -> "MemoryTask":
        """The same task with train and valid episodes redrawn by story (for the rerun gate)."""
        tr, va = self.parts["train"], self.parts["valid"]
        pooled = _concat(tr, va)
        stories = np.unique(pooled.story)
        rng = np.random.default_rng(seed)
        valid_stories = rng.choice(stories, size=len(np.unique(va.story)), replace=False)
        is_valid = np.isin(pooled.story, valid_stories)
        parts = {"train": pooled.subset(np.flatnonzero(~is_valid)),
                 "valid": pooled.subset(np.flatnonzero(is_valid)), "test": self.parts["test"]}
        t = MemoryTask.__new__(MemoryTask)
        t.__dict__.update(self.__dict__)
        t.parts = parts
        t.meta = {**self.meta, "resample": seed}
        t.fingerprint = fingerprint_of(self.name, {**self.settings, "resample": seed},
                                       self.meta["data_fingerprint"])
        return t

    def __repr__(self) -> str:
        n = {p: self.parts[p].n_episodes for p in PARTS}
        return f"MemoryTask(model={self.model_dir}, episodes={n}, features={len(self.features)})"

    # ------------------------------------------------------------------ real-LM scoring

    def final_evaluation(self, rules: Sequence[dict], progress: bool = True) -> dict:
        """Real LM continuation losses on the test episodes for every baseline and the given
        rules (dicts with name, text, weights); see `fitness.lm.scoring`."""
        require_lm()
        from .lm.scoring import final_evaluation

        return final_evaluation(self, rules, progress=progress)


# ---------------------------------------------------------------------- metrics


def _softmax_in_groups(z: np.ndarray, groups: np.ndarray) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else np.zeros(0, int)
    if not len(starts):
        return np.zeros(0)
    m = np.maximum.reduceat(z, starts)
    row_g = np.cumsum(np.r_[True, groups[1:] != groups[:-1]]) - 1
    e = np.exp(z - m[row_g])
    return e / np.add.reduceat(e, starts)[row_g]


def _top_utilities(d: PartData, scores: np.ndarray) -> np.ndarray:
    """Per episode, the target utility of its top-scored chunk (ties: the first)."""
    starts = np.r_[d.starts(), len(d.groups)]
    return np.array([d.u_target[a:b][np.argmax(scores[a:b])] for a, b in zip(starts[:-1], starts[1:])])


def utility_metrics(d: PartData, scores: np.ndarray) -> dict[str, float]:
    starts = np.r_[d.starts(), len(d.groups)]
    k2, k3, best, hit = [], [], [], []
    for e in range(d.n_episodes):
        a, b = starts[e], starts[e + 1]
        s, u = scores[a:b], d.u_target[a:b]
        order = np.argsort(-s, kind="stable")
        k2.append(u[order[0]])
        k3.append(u[order[:2]].sum())
        best.append(u.max())
        hit.append(float(np.argmax(u) == order[0]))
    k2, best = np.asarray(k2), np.asarray(best)
    return {"utility_k2": float(k2.mean()), "utility_k3_sum": float(np.mean(k3)),
            "captured_k2": float(k2.mean() / best.mean()) if best.mean() > 0 else 0.0,
            "top1_is_best": float(np.mean(hit))}


def _concat(a: PartData, b: PartData) -> PartData:
    off = a.story.max() + 1 if len(a.story) else 0
    return PartData(np.vstack([a.X, b.X]), np.r_[a.groups, b.groups + a.n_episodes],
                    np.r_[a.u_label, b.u_label], np.r_[a.u_target, b.u_target],
                    np.r_[a.story, b.story + off])


# ---------------------------------------------------------------------- precompute and cache


def episodes_for(stories: dict[str, list], settings: dict) -> dict[str, list[tinystories.Episode]]:
    out = {}
    for p in PARTS:
        per = settings["targets_per_story"] if p == "test" else settings["train_targets_per_story"]
        out[p] = tinystories.episodes(stories[p], targets_per_story=per)
    return out


def require_lm() -> None:
    """A clear error, not a traceback, where the lm extra is missing."""
    try:
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"task tinystories-memory needs the lm extra ({exc.name} is missing): "
                         "python3 -m pip install 'evo-rules[lm]'") from None


def precompute(model_dir: Path, stories: dict[str, list], settings: dict, threads: int = 0,
               progress: bool = True, device: str = "cpu") -> tuple[dict[str, PartData], dict]:
    require_lm()
    from .lm.memory import MemoryLM, encode_episodes, leave_one_in
    from .memory_text import text_features

    started = time.perf_counter()
    lm = MemoryLM(model_dir, threads=threads, device=device)
    H = settings["label_horizon"]
    parts, counts = {}, {}
    eps_all = episodes_for(stories, settings)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(v) for v in eps_all.values()), unit="episode",
                   desc="stage 3: LM utilities and features (once, then cached)", leave=False)
    for p in PARTS:
        pairs = encode_episodes(lm, eps_all[p], H)
        eps, toks = [e for e, _ in pairs], [t for _, t in pairs]
        rows_X, groups, u_label, u_target, story = [], [], [], [], []
        tok = {"length": [], "base": [], "full": [], "with": [], "recall": []}
        step = 64
        for i in range(0, len(toks), step):
            chunk_t, chunk_e = toks[i: i + step], eps[i: i + step]
            mfeat = lm.model_features(chunk_t)
            lo = leave_one_in(lm, chunk_t, H)
            for j, (ep, et, mf, l) in enumerate(zip(chunk_e, chunk_t, mfeat, lo)):
                e = i + j
                tf = text_features(ep.chunks)
                rows_X.append(np.hstack([tf, mf]))
                n_seg = len(l["base"])
                base = np.array([l["base"][s].mean() for s in range(n_seg)])
                u = np.array([[base[s] - w[s].mean() for s in range(n_seg)] for w in l["with"]])
                u_label.append(u.mean(axis=1))
                u_target.append(u[:, 0])
                groups.append(np.full(len(ep.chunks) - 1, e))
                story.append(ep.story)
                if p == "test":  # real per-token losses: the K = 2 rows of the report read them
                    tok["length"].append(len(et.target))
                    tok["base"].append(l["base"][0])
                    tok["full"].append(l["full"][0])
                    tok["with"].extend(w[0] for w in l["with"])
                    tok["recall"].append(et.recall_mask())
            if bar is not None:
                bar.update(len(chunk_t))
        F_ = len(TEXT_FEATURES) + len(MODEL_FEATURES)
        parts[p] = PartData(np.vstack(rows_X) if rows_X else np.zeros((0, F_)),
                            np.concatenate(groups) if groups else np.zeros(0, np.int64),
                            np.concatenate(u_label) if u_label else np.zeros(0),
                            np.concatenate(u_target) if u_target else np.zeros(0),
                            np.asarray(story, dtype=np.int64),
                            {k: (np.asarray(v, dtype=np.int64) if k == "length" else
                                 np.concatenate(v) if v else np.zeros(0)) for k, v in tok.items()}
                            if p == "test" else None)
        counts[p] = {"episodes": len(eps), "dropped_too_long": len(eps_all[p]) - len(eps),
                     "stories": len(stories[p])}
    if bar is not None:
        bar.close()
    for p in ("train", "valid"):
        if parts[p].n_episodes == 0:
            raise ValueError(f"tinystories-memory: no {p} episodes (stories too short or too few)")
    meta = {"seconds": round(time.perf_counter() - started, 1), "counts": counts}
    return parts, meta


def _write_cache(path: Path, parts: dict[str, PartData], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for p, d in parts.items():
        for f in ("X", "groups", "u_label", "u_target", "story"):
            arrays[f"{p}.{f}"] = getattr(d, f)
        for k, v in (d.tokens or {}).items():
            arrays[f"{p}.tokens.{k}"] = v
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_cache(path: Path, key: str) -> tuple[dict[str, PartData], dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            parts = {}
            for p in PARTS:
                tokens = {k.split(".")[-1]: z[k] for k in z.files if k.startswith(f"{p}.tokens.")}
                parts[p] = PartData(*(z[f"{p}.{f}"] for f in ("X", "groups", "u_label", "u_target", "story")),
                                    tokens or None)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated, damaged
        raise ValueError(f"{path}: unreadable stage-3 cache ({type(exc).__name__}: {exc})") from None
    if meta.get("data_fingerprint") != key:
        raise ValueError(f"{path}: cache of another fingerprint")
    return parts, meta
