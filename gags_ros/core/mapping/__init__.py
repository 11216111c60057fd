"""Incremental 3D Gaussian mapping: keyframes, seeding, windowed optimisation, densification."""

from .keyframes import Keyframe
from .mapper import Mapper, append_gaussians, default_strategy

__all__ = ["Keyframe", "Mapper", "append_gaussians", "default_strategy"]
