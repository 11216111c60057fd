"""Interfaces of the 2D language teachers and the compact per-keyframe output they produce.

Levels are always ordered ``LEVELS = ("subpart", "part", "whole")`` (GAGS: s, m, l).

A teacher is a :class:`Segmenter` (three levels of masks for a keyframe) plus an :class:`Embedder`
(one unit-norm embedding per mask, and text embeddings in the same space). SAM + CLIP implement them
for real use; the simulation's label-grounded teacher implements them for semantic tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence

import numpy as np
import torch

from ..types import Frame

LEVELS = ("subpart", "part", "whole")


@dataclass
class LevelMasks:
    """Masks of one level for one image.

    masks:  ``[M, H, W]`` bool (on the teacher's device).
    scores: ``[M]`` float quality in [0, 1] (SAM: predicted IoU; simulation: 1).
    """

    masks: torch.Tensor
    scores: torch.Tensor


class Segmenter(Protocol):
    def segment(self, frame: Frame, points: Optional[np.ndarray] = None) -> List[LevelMasks]:
        """Three :class:`LevelMasks` (subpart, part, whole) for ``frame.image``.

        ``points``: ``[P, 2]`` float prompt pixels (x, y), or None for the segmenter's own choice.
        """
        ...


class Embedder(Protocol):
    dim: int

    def embed_masks(self, frame: Frame, masks: torch.Tensor) -> torch.Tensor:
        """``[M, dim]`` unit-norm float32 embeddings of masks ``[M, H, W]`` bool of ``frame.image``."""
        ...

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, dim]`` unit-norm float32 text embeddings (cached by implementations)."""
        ...


@dataclass
class TeacherOutput:
    """Compact teacher result of one keyframe (no dense 512-channel images).

    level_ids:  ``[3, H, W]`` int32; pixel value = row of ``embeddings`` of the mask covering it at
                that level, -1 where no mask covers it. Levels in ``LEVELS`` order.
    embeddings: ``[M, dim]`` float16 unit-norm, all levels' masks together.
    keyframe:   keyframe index in the mapper.
    """

    level_ids: torch.Tensor
    embeddings: torch.Tensor
    keyframe: int = -1

    @property
    def shape(self):
        return tuple(self.level_ids.shape[1:])

    def level_features(self, level: int) -> torch.Tensor:
        """Dense ``[H, W, dim]`` float32 features of one level (zeros where uncovered)."""
        ids = self.level_ids[level].long()
        emb = self.embeddings.float()
        out = emb[ids.clamp_min(0)]
        return out * (ids >= 0)[..., None]
