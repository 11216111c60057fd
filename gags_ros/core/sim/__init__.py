"""Simulation: synthetic rooms with three-level ground truth, an analytic ray-caster, the dataset
writer, a label-grounded teacher and the scoring of the evaluation.

Heavy pieces (the text model of the teacher) load lazily; importing this package is cheap.
"""

from .scene import CATEGORIES, LEVEL_NAMES, CameraView, Scene, default_intrinsics, make_scene

__all__ = ["CATEGORIES", "LEVEL_NAMES", "CameraView", "Scene", "default_intrinsics", "make_scene"]
