"""2D language teachers: granularity-aware SAM prompts, three-level masks, CLIP mask embeddings.

:mod:`.factory` is the teacher registry (``teacher.segmenter`` -> segmenter + embedder).
:class:`~.sam.SamSegmenter` and :class:`~.clip.ClipEmbedder` import segment_anything / open_clip,
which take seconds: they are re-exported lazily (on first attribute access).
"""

from .base import LEVELS, Embedder, LevelMasks, Segmenter, TeacherOutput
from .factory import build_teacher, register_teacher, teacher_names
from ..timing import StageTimer
from .keyframe import KeyframeTeacher, TeacherCache, paint_level
from .prompts import MinDepthRecord, Prompts, PromptSampler, ViewDepthStats

__all__ = [
    "LEVELS", "ClipEmbedder", "Embedder", "KeyframeTeacher", "LevelMasks", "MinDepthRecord",
    "PromptSampler", "Prompts", "SamSegmenter", "Segmenter", "StageTimer", "TeacherCache",
    "TeacherOutput", "ViewDepthStats", "build_teacher", "paint_level", "register_teacher", "teacher_names",
]

_LAZY = {"SamSegmenter": ".sam", "ClipEmbedder": ".clip"}


def __getattr__(name):
    # segment_anything and open_clip take seconds to import; load them on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
