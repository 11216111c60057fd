"""Files written atomically through temporaries: their mode and the clean-up of temporaries left by
a killed writer. Torch-free, so the mapping node cleans up at start-up without importing torch.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` beside their target (see
:func:`gags_ros.core.io.mapfile.save_map`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable, List

log = logging.getLogger("gags_ros.files")


def file_mode(configured: str = "") -> int:
    """Permission bits of a new map file: ``configured`` (octal text such as "0640"), else 0666 minus
    the process umask."""
    if configured:
        return int(configured, 8)
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int) -> Path:
    """Create ``path`` (and its folder) through a temporary beside it that ``write(file)`` fills, with
    permission bits ``mode``, flushed to disk, then renamed over ``path``: readers see the old file
    or the whole new one. A killed writer leaves ``.<name>.<pid>.<random>.tmp``, removed by
    :func:`remove_stale_temp_files`. Returns ``path``."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_TEMP_OLD = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # before the writer's pid was in it


def remove_stale_temp_files(directory: str | os.PathLike) -> List[Path]:
    """Remove the temporary files of map writes in ``directory`` whose writing process is gone (a
    kill during a save); returns the paths removed. Writes in progress in live processes are kept."""
    d = Path(directory)
    removed = []
    try:
        names = [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:  # no such folder yet: nothing to clean
        return removed
    for p in names:
        m = _TEMP.match(p.name)
        if m is not None:
            pid = int(m["pid"])
            if pid != os.getpid() and _alive(pid):
                continue
        elif _TEMP_OLD.match(p.name) is None:
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError as e:
            log.warning("could not remove the stale temporary file %s: %s", p, e)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
