"""Simulation: synthetic rooms with three-level ground truth (:mod:`.scene`, :mod:`.varied`), an
analytic ray-caster (:mod:`.raycast`), the dataset writer (:mod:`.dataset`), the label-grounded
teacher (:mod:`.teacher`, registered as teacher ``sim`` in :mod:`gags_ros.core.teachers.factory`),
the offline text model (:mod:`.text_model`) and CLIP-GS training data (:mod:`.clipgs_objects`,
:mod:`.clipgs_train`).

A layer above the production core: it imports ``gags_ros.core``, never the reverse (and never
``gags_ros.eval``); the contracts in ``.importlinter`` enforce it. Heavy pieces (the text model of
the teacher) load lazily; importing this package is cheap.
"""

from .scene import (CATEGORIES, GENERATORS, LEVEL_NAMES, CameraView, Scene, default_intrinsics, make_scene,
                    scene_from_meta)

__all__ = ["CATEGORIES", "GENERATORS", "LEVEL_NAMES", "CameraView", "Scene", "default_intrinsics", "make_scene",
           "scene_from_meta"]
