"""A small ROS-free transform buffer: what tf2's BufferCore does for the poses we need.

Used by the mapping node where tf2_ros is not installed (our listener feeds it from /tf and
/tf_static). Edges are stored per child frame (each frame has one parent, as in tf2) with a time
history; a lookup walks both frames up to their common ancestor, interpolating each dynamic edge at
the requested time (slerp + lerp) and composing the chain.

Lookups fail with :class:`TransformError` whose message says what is missing: an unknown frame,
frames in different trees, or a time outside an edge's history (stale TF / future TF), which the
node turns into a clear drop reason.

A sample more than ``jump_threshold`` seconds older than its edge's newest one means time jumped
back (a bag played in a loop, a simulator reset): the edge's history restarts from it, as tf2
clears its buffer on a backward clock jump (without that, every later sample would fall outside the
kept history and mapping would stop for good).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .camera import interpolate_pose, invert_pose


class TransformError(LookupError):
    """A transform that cannot be looked up; ``kind`` is unknown_frame, not_connected, past or future."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: List[float] = field(default_factory=list)  # seconds, sorted
    poses: List[np.ndarray] = field(default_factory=list)  # T_parent_child [4, 4]


class TransformBuffer:
    """Thread-safe store of ``T_parent_child`` samples with ``cache_time`` seconds of history."""

    def __init__(self, cache_time: float = 10.0, jump_threshold: float = float("inf")):
        self.cache_time = float(cache_time)
        self.jump_threshold = float(jump_threshold)
        self._edges: Dict[str, _Edge] = {}
        self._lock = threading.Lock()

    def set_transform(self, parent: str, child: str, stamp: float, T_parent_child: np.ndarray,
                      static: bool = False) -> bool:
        """Add one sample (``stamp`` seconds; ignored for static edges). Returns True when the sample
        was a backward time jump that restarted the edge's history."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if parent == child:
            raise ValueError(f"transform from {child!r} to itself")
        T = np.asarray(T_parent_child, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"transform {parent} -> {child} is not a finite 4x4 matrix")
        with self._lock:
            e = self._edges.get(child)
            if e is None or e.parent != parent or e.static != static:
                e = self._edges[child] = _Edge(parent, static)
            if static:
                e.stamps, e.poses = [0.0], [T]
                return False
            jumped = bool(e.stamps) and stamp < e.stamps[-1] - self.jump_threshold
            if jumped:
                e.stamps, e.poses = [], []
            i = bisect.bisect_left(e.stamps, stamp)
            if i < len(e.stamps) and e.stamps[i] == stamp:
                e.poses[i] = T
            else:
                e.stamps.insert(i, stamp)
                e.poses.insert(i, T)
            # Drop history older than cache_time before the newest sample.
            cut = bisect.bisect_left(e.stamps, e.stamps[-1] - self.cache_time)
            if cut > 0:
                del e.stamps[:cut], e.poses[:cut]
        return jumped

    def drop_after(self, t: float) -> None:
        """Forget dynamic samples newer than ``t`` s (a backward time jump seen on another stream:
        samples of the old, later time would make every new lookup fall before them)."""
        with self._lock:
            for child in list(self._edges):
                e = self._edges[child]
                if e.static:
                    continue
                keep = bisect.bisect_right(e.stamps, t)
                del e.stamps[keep:], e.poses[keep:]
                if not e.stamps:
                    del self._edges[child]

    def clear(self) -> None:
        """Forget every dynamic sample; static transforms stay (tf2 on a backward clock jump)."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static}

    def frames(self) -> List[str]:
        with self._lock:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _edge_at(self, child: str, e: _Edge, t: Optional[float]) -> np.ndarray:
        if e.static:
            return e.poses[0]
        if t is None:  # latest
            return e.poses[-1]
        s = e.stamps
        if t < s[0] - 1e-9:
            raise TransformError(f"{e.parent} -> {child}: requested time {t:.3f} s is {s[0] - t:.3f} s older "
                                 f"than the oldest transform kept ({s[0]:.3f} s)", "past")
        if t > s[-1] + 1e-9:
            raise TransformError(f"{e.parent} -> {child}: no transform yet at {t:.3f} s (newest is "
                                 f"{t - s[-1]:.3f} s older)", "future")
        i = bisect.bisect_left(s, t)
        if s[i] == t or i == 0:
            return e.poses[i]
        a = (t - s[i - 1]) / (s[i] - s[i - 1])
        return interpolate_pose(e.poses[i - 1], e.poses[i], a)

    def _chain(self, frame: str) -> List[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > 1000:
                raise TransformError(f"loop in the transform tree at {frame!r}", "not_connected")
        return chain

    def lookup(self, target: str, source: str, t: Optional[float] = None) -> np.ndarray:
        """``T_target_source`` at time ``t`` (seconds; None = latest of every edge)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for f in (target, source):
                if f not in known:
                    raise TransformError(f"frame {f!r} does not exist (known: {sorted(known) or 'none'})",
                                         "unknown_frame")
            if target == source:
                return np.eye(4)
            up_s, up_t = self._chain(source), self._chain(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                raise TransformError(f"{target!r} and {source!r} are not connected in the transform tree",
                                     "not_connected")
            T_common_source = np.eye(4)
            for f in up_s[:up_s.index(common)]:
                e = self._edges[f]
                T_common_source = self._edge_at(f, e, t) @ T_common_source
            T_common_target = np.eye(4)
            for f in up_t[:up_t.index(common)]:
                e = self._edges[f]
                T_common_target = self._edge_at(f, e, t) @ T_common_target
        return invert_pose(T_common_target) @ T_common_source

    def can_transform(self, target: str, source: str, t: Optional[float] = None) -> Tuple[bool, str]:
        try:
            self.lookup(target, source, t)
            return True, ""
        except TransformError as e:
            return False, str(e)
