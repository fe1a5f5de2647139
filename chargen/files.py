"""Files written so that nothing is lost: atomic replacement, temporaries named by their writer, and a folder lock.

A file is written to a hidden temporary beside it, synced, then renamed over the old one,
so a crash at any moment leaves either the old file or the new one. A temporary's name
holds its writer's pid, so one left by a killed process is recognised and removed the
next time that file is written. A training run holds a lock on its output folder
(`fcntl.flock`, which the kernel releases when the process dies, so a stale lock never
blocks anyone).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from chargen.errors import ChargenError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two runs into one folder are not detected there
    fcntl = None  # type: ignore[assignment]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, name: str) -> None:
    """Remove the temporaries of `name` in `folder` whose writer is no longer running."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        pid = tmp.name[len(name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, text: bool = False) -> Iterator[IO]:
    """Write `path` through a temporary that replaces it only when the block ends without an error."""
    path = Path(path)
    remove_stale(path.parent, path.name)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "x" if text else "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, as the person's umask says
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FolderLock:
    """Held while a run writes to `folder`; a second run into the same folder is refused with the first's pid."""

    NAME = ".lock"

    def __init__(self, folder: Path) -> None:
        self.path, self._file = Path(folder) / self.NAME, None

    def __enter__(self) -> FolderLock:
        if fcntl is None:
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise ChargenError(
                f"another chargen train (pid {holder}) is writing to {self.path.parent}: "
                "wait for it to finish, or choose another folder with --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock; the file stays, harmless
            self._file = None
