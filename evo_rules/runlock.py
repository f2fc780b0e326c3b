"""An exclusive lock on a run folder, held for the life of a `run` or `resume`.

flock on `DIR/run.lock`: the kernel drops it when the holder exits however it dies (SIGKILL
too), so it is never left stale. The file holds the holder's pid, for the refusal message.
The file itself is left in place: deleting it would let two runs lock two different files.
"""

from __future__ import annotations

import fcntl
import os

from .run_folder import LOCK, RunFolder

NAME = LOCK  # the name, for callers that spell a folder's files (run_folder names them)


class FolderLocked(ValueError):
    pass


class RunLock:
    def __init__(self, folder: str):
        self.path = os.fspath(RunFolder(folder).lock)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLocked(f"{folder} is in use by another evo-rules run (pid {holder}); "
                               "wait for it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
