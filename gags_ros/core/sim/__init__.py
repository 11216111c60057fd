"""Simulation: synthetic rooms with three-level ground truth, an analytic ray-caster, the dataset
writer, a label-grounded teacher and the scoring of the evaluation.

Heavy pieces (the text model of the teacher) load lazily; importing this package is cheap.
"""

from .scene import (CATEGORIES, GENERATORS, LEVEL_NAMES, CameraView, Scene, default_intrinsics, make_scene,
                    scene_from_meta)

__all__ = ["CATEGORIES", "GENERATORS", "LEVEL_NAMES", "CameraView", "Scene", "default_intrinsics", "make_scene",
           "scene_from_meta"]
