"""Map file paths requested over the network, confined to the map folder.

Anyone on the node's DDS domain can call ``gags/save_map`` and ``gags/load_map`` (docs/security.md).
Left open, a caller could overwrite any file the robot's user may write (a shell profile, a robot
configuration) with a map, or probe the file system with loads. :func:`resolve_map_path` turns the
requested string into a file inside the ``save_dir`` folder, with symlinks and ``..`` resolved first,
or raises :class:`PathRefused` naming the reason; nothing is created or read here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MAP_SUFFIX = ".gags"


class PathRefused(ValueError):
    """A requested map path that the node will not read or write; the message says why."""


def default_map_name(suffix: str = MAP_SUFFIX) -> str:
    """File name of a map saved without an explicit path (local time stamp), e.g. ``.gags`` or
    ``.ply`` (a semantic export)."""
    return time.strftime(f"map_%Y%m%d_%H%M%S{suffix}")


def map_dir(save_dir: str) -> Path:
    """The map folder ``save_dir`` (``~`` expanded, symlinks resolved); it need not exist yet."""
    return Path(os.path.expanduser(save_dir)).resolve()


def resolve_map_path(requested: str, save_dir: str, *, for_write: bool, allow_any_path: bool = False,
                     default_suffix: str = MAP_SUFFIX) -> Path:
    """The absolute, symlink-free file that ``requested`` names, or :class:`PathRefused`.

    ``requested``: empty (save only: a time-stamped name ending in ``default_suffix`` in
    ``save_dir``), a name relative to
    ``save_dir``, or an absolute path. Refused: control characters (NUL, newline, ...), anything that
    resolves outside ``save_dir`` (``..``, absolute paths, symlinks pointing out) unless
    ``allow_any_path``, the folder itself or any other directory, a special file (device, FIFO,
    socket), and for reading a file that does not exist.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in requested):
        raise PathRefused(f"path {requested!r} contains control characters (NUL, newline, ...)")
    root = map_dir(save_dir)
    if not requested:
        if not for_write:
            raise PathRefused("no path given: name a map file in the map folder "
                              f"(parameter save_dir = {root})")
        requested = default_map_name(default_suffix)
    p = Path(os.path.expanduser(requested))
    target = (p if p.is_absolute() else root / p).resolve()
    if target == root:
        raise PathRefused(f"path {requested!r} is a directory (the map folder itself); name a map file")
    if not allow_any_path and root not in target.parents:
        raise PathRefused(f"path {requested!r} resolves to {target}, outside the map folder {root} "
                          f"(parameter save_dir); name a file inside it, or start the node with "
                          f"allow_any_path:=true on a trusted set-up")
    if target.is_dir():
        raise PathRefused(f"path {requested!r} is a directory ({target}); name a map file")
    if target.exists() and not target.is_file():
        raise PathRefused(f"path {requested!r} is not a regular file ({target})")
    if not for_write and not target.exists():
        raise PathRefused(f"no map file at {target}")
    return target

