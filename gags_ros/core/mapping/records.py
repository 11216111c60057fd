"""Per-Gaussian records that live in the map, so gsplat's strategy moves them with their Gaussians.

The mechanism is :meth:`GaussianMap.add_record <gags_ros.core.gaussians.GaussianMap.add_record>`
(a non-trainable entry of the map's ParameterDict; the module doc of ``gags_ros.core.gaussians``
says why it lives there). This module adapts users of per-Gaussian state to it.
"""

from __future__ import annotations

import torch

from ..teachers.prompts import DEPTH_TOLERANCE, MinDepthRecord

MIN_DEPTH = "min_depth"  # record name: metres, +inf until the Gaussian is seen visible


class MapMinDepthRecord(MinDepthRecord):
    """GaS's minimum-depth record (:class:`~gags_ros.core.teachers.prompts.MinDepthRecord`) stored
    as the map's per-Gaussian record ``min_depth`` of ``mapper``.

    ``values`` ``[N]`` float32 metres is the map's record itself, so densification (children inherit
    their parent's D_min), pruning and MCMC relocation (a relocated Gaussian takes its source's)
    keep it aligned; new seeds start at +inf. Nothing to sync: a count mismatch is a bug.
    """

    def __init__(self, mapper, tolerance: float = DEPTH_TOLERANCE):
        # The base constructor would set an empty record: the values are the map's instead.
        self.mapper = mapper
        self.device = mapper.device
        self.tolerance = float(tolerance)
        mapper.add_record(MIN_DEPTH, float("inf"))

    @property
    def values(self) -> torch.Tensor:
        return self.mapper.gaussians.record(MIN_DEPTH)

    @values.setter
    def values(self, v: torch.Tensor) -> None:
        self.values.copy_(v)  # shape-checked: [N] of the map

    def sync(self, num_gaussians: int, index_map=None) -> None:
        """The record is the map's: it has ``num_gaussians`` entries or the caller's means are stale."""
        if num_gaussians != len(self):
            raise RuntimeError(f"means of {num_gaussians} Gaussians for a map of {len(self)}: the caller "
                               "read the map before its last densification step")
