"""The one stage timer of the package (teachers, queries, ...)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator

import torch


class StageTimer:
    """Wall-clock seconds of named stages. ``with timer("name"):`` accumulates a stage into
    ``seconds``; :meth:`lap` returns the seconds since the previous lap (or the timer's creation).

    ``sync`` (CUDA devices only): synchronise the device at each boundary, so that asynchronous
    kernels are charged to the stage that launched them (exact, but each sync costs time: queries
    leave it off unless profiling)."""

    def __init__(self, device: str | torch.device, sync: bool = True):
        self.device = torch.device(device)
        self.sync = sync and self.device.type == "cuda"
        self.seconds: Dict[str, float] = {}
        self._sync()
        self._t = time.perf_counter()

    def _sync(self) -> None:
        if self.sync:
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def lap(self) -> float:
        """Seconds since the previous lap (synchronised first when ``sync``)."""
        self._sync()
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        return dt
