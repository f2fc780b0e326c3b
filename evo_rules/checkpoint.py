"""Checkpoints: versioned, checksummed JSON written atomically; the previous one is kept.

Never pickle: a checkpoint may come from someone else. Layout of the file:
    {"format": "evo-rules-checkpoint", "version": 1, "sha256": <hex of the body text>,
     "body": "<JSON text of the state>"}
Writing: temporary file in the same folder, flush + fsync, the current checkpoint renamed to
`checkpoint.prev.json`, the temporary file renamed over `checkpoint.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

from .run_folder import CHECKPOINT, PREVIOUS_CHECKPOINT, RunFolder

FORMAT = "evo-rules-checkpoint"
VERSION = 1
NAME = CHECKPOINT  # the names, for callers that spell a folder's files (run_folder names them)
PREVIOUS = PREVIOUS_CHECKPOINT


# what every checkpoint holds (Search.state): a body without one of these is not a run's state
REQUIRED = ("generation", "config", "task", "logbook", "population", "hall_of_fame", "lineage_bytes")


class CheckpointError(ValueError):
    pass


def write(folder: str, state: dict) -> str:
    body = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
    doc = {"format": FORMAT, "version": VERSION,
           "sha256": hashlib.sha256(body.encode()).hexdigest(), "body": body}
    run = RunFolder(folder)
    path, tmp = os.fspath(run.checkpoint), run.checkpoint_tmp
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if os.path.exists(path):
        os.replace(path, run.previous_checkpoint)
    os.replace(tmp, path)
    _fsync_dir(folder)
    return path


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike) -> dict:
    """The state in one checkpoint file, or CheckpointError saying what is wrong with it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an evo-rules checkpoint")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc.get('version')} (this evo-rules reads {VERSION})")
    body = doc.get("body")
    if not isinstance(body, str) or hashlib.sha256(body.encode()).hexdigest() != doc.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch (the checkpoint is corrupt)")
    try:
        state = json.loads(body)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (its body is not JSON: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a readable checkpoint (its body is a JSON "
                              f"{type(state).__name__}, not an object)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a readable checkpoint (no {', '.join(missing)})")
    return state


def read_latest(folder: str) -> dict:
    """The newest readable checkpoint of a run folder; falls back to the previous one, with a warning."""
    run = RunFolder(folder)
    current, prev = os.fspath(run.checkpoint), os.fspath(run.previous_checkpoint)
    if not run.holds_run():
        raise CheckpointError(
            f"{folder}: nothing to resume (no checkpoint: the run stopped before it saved one); "
            f"start it again with `evo-rules run CONFIG --out {folder}`")
    try:
        return read_file(current)
    except CheckpointError as first:
        if not os.path.exists(prev):
            raise
        try:
            state = read_file(prev)
        except CheckpointError as second:
            if not os.path.exists(current):
                raise
            raise CheckpointError(f"{first}; and {second}") from None  # both named: neither is usable
        if os.path.exists(current):
            warnings.warn(f"{first}; using the previous checkpoint {prev}", stacklevel=2)
        return state
