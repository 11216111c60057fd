"""Teacher registry: a segmenter + embedder pair is built by name (``teacher.segmenter``).

Builders register with :func:`register_teacher` (like the renderers of :mod:`..render.factory`, but
open: code outside the core adds its own). ``sam`` (SAM + CLIP) registers here. Teachers that live
outside the core package are named in :data:`ENTRY_POINTS`, ``name -> module path``: the module
registers its builder when imported, and it is imported on first use, so the core holds no static
import of it (the simulation's label-grounded teacher ``sim`` lives in ``gags_ros.sim.teacher``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple

import torch

from .base import Embedder, Segmenter
from .keyframe import KeyframeTeacher

# (cfg: GagsConfig, device, **options) -> (segmenter, embedder); options are the caller's
# (e.g. GagsPipeline's teacher_options), each builder takes those it knows.
TeacherBuilder = Callable[..., Tuple[Segmenter, Embedder]]

# Teachers registered by modules outside gags_ros.core, imported when first named.
ENTRY_POINTS: Dict[str, str] = {"sim": "gags_ros.sim.teacher"}

_BUILDERS: Dict[str, TeacherBuilder] = {}


def register_teacher(name: str, builder: TeacherBuilder) -> None:
    """Make ``builder`` the teacher ``teacher.segmenter = name`` builds (a later one replaces it)."""
    _BUILDERS[name] = builder


def teacher_names() -> List[str]:
    """Every teacher name that can be built: registered or in :data:`ENTRY_POINTS`."""
    return sorted(set(_BUILDERS) | set(ENTRY_POINTS))


def teacher_builder(name: str) -> TeacherBuilder:
    """The builder registered as ``name``, importing its :data:`ENTRY_POINTS` module first if needed.

    ValueError for an unknown name; ImportError when the registering module is not installed."""
    if name in ENTRY_POINTS:   # imported every time (a no-op once loaded), so a removed module is named
        module = ENTRY_POINTS[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if not (e.name and module.startswith(e.name)):
                raise
            raise ImportError(f"teacher.segmenter={name!r} needs {module}, which this installation "
                              "does not have") from e
    if name not in _BUILDERS:
        raise ValueError(f"teacher.segmenter={name!r}: expected one of {teacher_names()}")
    return _BUILDERS[name]


def random_weight_models(cfg) -> List[str]:
    """Names of the teacher models ``cfg`` (GagsConfig) runs with random weights ("SAM", "CLIP"):
    empty paths, permitted by ``teacher.allow_random_weights`` only (none while language is off)."""
    t = cfg.teacher
    if t.segmenter != "sam" or not t.allow_random_weights or not cfg.language.enabled:
        return []
    return [name for name, path in (("SAM", t.sam_checkpoint), ("CLIP", t.clip_pretrained)) if not path]


def check_teacher_weights(cfg) -> None:
    """Raise :class:`~gags_ros.core.config.ConfigError` when ``cfg`` (GagsConfig) would teach with
    missing weights, or with random ones that ``teacher.allow_random_weights`` does not permit; the
    message names, for SAM and CLIP alike, the parameter and the file to put where. Loads nothing; CLIP tags are looked up in
    the local Hugging Face cache."""
    from ..config import ConfigError

    t = cfg.teacher
    if t.segmenter != "sam" or not cfg.language.enabled:
        return
    from .clip import ClipWeightsError, resolve_clip_weights
    from .sam import CheckpointNotFoundError, check_sam_weights

    problems = []  # both at once: a user fixing one should not meet the other on the next start
    for check, args in ((check_sam_weights, (t.sam_model, t.sam_checkpoint)),
                        (resolve_clip_weights, (t.clip_model, t.clip_pretrained))):
        try:
            check(*args, t.allow_random_weights)
        except (CheckpointNotFoundError, ClipWeightsError) as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))


def _build_sam(cfg, device: str | torch.device, **options) -> Tuple[Segmenter, Embedder]:
    """:class:`~.sam.SamSegmenter` + :class:`~.clip.ClipEmbedder` from the configured models
    (:func:`check_teacher_weights` first: missing or unpermitted random weights raise ConfigError).
    ``options``: other teachers' (e.g. the simulation's ``labels``), unused."""
    from .clip import ClipEmbedder
    from .sam import SamSegmenter

    check_teacher_weights(cfg)
    segmenter = SamSegmenter.from_config(cfg.teacher, device)
    embedder = ClipEmbedder.from_config(cfg.teacher, device, cfg.query.canonical_phrases)
    return segmenter, embedder


register_teacher("sam", _build_sam)


def build_teacher(cfg, device: str | torch.device, **options) -> KeyframeTeacher:
    """The teacher ``cfg.teacher.segmenter`` names (:func:`teacher_builder`), on ``device``.

    ``options`` go to its builder: ``sam`` takes none; ``sim`` (``gags_ros.sim.teacher``) takes
    ``labels``, the dataset's ``labels.json`` content.
    """
    segmenter, embedder = teacher_builder(cfg.teacher.segmenter)(cfg, device, **options)
    return KeyframeTeacher(cfg, segmenter, embedder, device)
