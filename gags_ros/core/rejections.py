"""Counts and last reasons of refused input, for the status topic and the diagnostics.

ROS-free. A rejection has a kind (what was refused: image, CameraInfo, depth, TF, pose, frame...)
and a reason that may name several failed checks joined by "; ". Counts are kept per kind and per
reason (numbers in a reason are replaced by ``#`` so "moved 3.2 m" and "moved 7 m" count as one);
the last reason of each kind is kept with its time so a status can show only recent ones.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from typing import Callable, Dict, Tuple

_LIST = re.compile(r"\[[-+\d\s.,eEnaif]*\]")  # a list of numbers
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\bnan\b|\binf\b")


def reason_key(problem: str, max_length: int = 160) -> str:
    """``problem`` with lists of numbers shown as ``[...]`` and other numbers as ``#`` (a stable key to count by)."""
    return _NUMBER.sub("#", _LIST.sub("[...]", problem)).strip()[:max_length]


class RejectionLog:
    """Thread-safe counts of rejections; at most ``max_reasons`` distinct reason keys (further ones
    are counted under "other reasons") so untrusted input cannot grow it without bound."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_reasons: int = 64):
        self.clock = clock
        self.max_reasons = max_reasons
        self.total = 0
        self.by_kind: Dict[str, int] = {}
        self.by_reason: Dict[str, int] = {}
        self._last: Dict[str, Tuple[str, float]] = {}  # kind -> (reason, monotonic seconds)
        self._times: collections.deque = collections.deque(maxlen=4096)  # (monotonic seconds, kind), newest last
        self._lock = threading.Lock()

    def add(self, kind: str, reason: str) -> None:
        now = self.clock()
        with self._lock:
            self.total += 1
            if kind not in self.by_kind and len(self.by_kind) >= self.max_reasons:
                kind = "other"
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            self._times.append((now, kind))
            self._last[kind] = (reason, now)
            for problem in reason.split("; "):
                key = reason_key(problem)
                if key not in self.by_reason and len(self.by_reason) >= self.max_reasons:
                    key = "other reasons"
                self.by_reason[key] = self.by_reason.get(key, 0) + 1

    def recent(self, max_age: float) -> Dict[str, Tuple[str, float]]:
        """``{kind: (last reason, age in s)}`` of the kinds refused within ``max_age`` seconds."""
        now = self.clock()
        with self._lock:
            return {k: (r, now - t) for k, (r, t) in self._last.items() if now - t <= max_age}

    def recent_counts(self, max_age: float) -> Dict[str, int]:
        """``{kind: rejections within max_age seconds}`` (of the last 4096 rejections)."""
        now = self.clock()
        out: Dict[str, int] = {}
        with self._lock:
            for t, kind in reversed(self._times):
                if now - t > max_age:
                    break
                out[kind] = out.get(kind, 0) + 1
        return out

    def last_time(self) -> float:
        """Monotonic seconds of the latest rejection (-inf before any)."""
        with self._lock:
            return max((t for _, t in self._last.values()), default=float("-inf"))
