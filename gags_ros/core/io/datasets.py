"""Posed frame streams from datasets on disk: nerfstudio / instant-ngp, Blender NeRF-synthetic, COLMAP.

Every loader yields :class:`gags_ros.core.types.Frame` objects in stream order with

- ``image``: ``[H, W, 3]`` uint8 RGB, undistorted to a pinhole camera when the source has lens
  distortion (``undistort="crop"``: focal scaled so that no output pixel lies outside the source;
  ``"same"``: the source intrinsics kept, unseen pixels black);
- ``T_world_cam``: validated by :func:`gags_ros.core.types.check_rigid` (a non-finite or non-rigid
  pose raises :class:`~gags_ros.core.types.PoseError` naming the frame), converted by
  :mod:`gags_ros.core.camera`;
- ``depth``: ``[H, W]`` float32 metres (0 = unknown) and ``masks``: ``{"whole"|"part"|"subpart":
  [H, W] int32}`` when the dataset has them;
- ``stamp = index / rate`` seconds, ``index`` being the frame's position in the dataset's own list
  (frames that are skipped or belong to another split leave gaps, as dropped frames would);
- ``extra``: ``{"index", "file_path", "split"}``.

Images that are missing or unreadable are skipped with ONE warning on the ``gags_ros.datasets``
logger that counts them and names a few. ``downscale`` divides the image size (2.0 -> half width);
images are box-filtered, depth and masks sampled at the nearest pixel.

``iter_*`` variants are generators: they check every image's header up front (so the warning is
complete before the first frame) and decode one frame at a time, for replaying large datasets.

Dataset format written by :func:`write_nerfstudio` (and by other tools; documented in the README)
------------------------------------------------------------------------------------------------
``transforms.json`` in the nerfstudio convention: ``fl_x fl_y cx cy w h`` (pixels, pixel centre of
``(u, v)`` at ``(u + 0.5, v + 0.5)``), optional ``k1 k2 p1 p2 [k3]``; any of these may be repeated
inside a frame to override it. Per frame: ``file_path``, ``transform_matrix`` (4x4 camera-to-world,
OpenGL camera axes: x right, y up, z backward), and optionally

- ``depth_file_path``: 16-bit PNG of z-depth in millimetres (0 = unknown; the scale can be changed
  with a top-level ``depth_unit_scale_factor``, metres per unit, default 0.001);
- ``split``: ``"train"`` or ``"eval"``;
- ``mask_file_paths``: ``{"whole", "part", "subpart"}`` -> 16-bit PNGs of instance ids, 0 = none.

Beside it, ``labels.json``: ``{"whole": {"<id>": "<text>"}, "part": {...}, "subpart": {...}}`` and
``queries.json``: a list of ``{"text", "level", "ids", "box_min", "box_max"[, "boxes"]}`` (world-frame
axis-aligned box of the target, metres; ``boxes``: optional, one ``[min, max]`` per instance).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..camera import (Distortion, T_world_cam_from_colmap, T_world_cam_from_opengl, opengl_from_T_world_cam,
                     undistort_image, undistorted_intrinsics)
from ..types import Frame, Intrinsics, PoseError, check_rigid

log = logging.getLogger("gags_ros.datasets")

LEVELS = ("whole", "part", "subpart")
SPLITS = ("train", "eval")
DEFAULT_RATE_HZ = 10.0
FORMAT_VERSION = 1
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG")
_NAMED_IN_WARNING = 5

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------------
# One frame, before its pixels are read
# --------------------------------------------------------------------------------------------------

@dataclass
class _Record:
    index: int  # position in the dataset's own frame list (sets the stamp)
    label: str  # how errors and warnings name the frame
    file_path: str  # as written in the dataset
    image_path: Path
    T_world_cam: np.ndarray  # [4, 4]
    camera: dict  # fl_x fl_y cx cy w h camera_angle_x camera_angle_y (resolved with the image size)
    distortion: Distortion
    split: Optional[str] = None
    depth_path: Optional[Path] = None
    depth_scale: float = 1e-3  # metres per stored unit
    mask_paths: Dict[str, Path] = field(default_factory=dict)
    intrinsics: Optional[Intrinsics] = None  # of the image as stored, set by _scan


def _validated_pose(T: np.ndarray, label: str) -> np.ndarray:
    T = check_rigid(T, name=label)
    # Remove the rounding noise of text formats so downstream code sees an exact rotation.
    U, _, Vt = np.linalg.svd(T[:3, :3])
    T = T.copy()
    T[:3, :3] = U @ Vt
    return T


def _resolve_image_path(base: Path, file_path: str) -> Path:
    p = base / file_path
    if p.suffix == "" and not p.exists():  # Blender lists "./train/r_0" without an extension
        for suf in _IMAGE_SUFFIXES:
            if p.with_name(p.name + suf).exists():
                return p.with_name(p.name + suf)
        return p.with_name(p.name + ".png")
    return p


def _intrinsics_from_camera(cam: dict, img_w: int, img_h: int, label: str) -> Intrinsics:
    """Intrinsics of the stored image from nerfstudio-style camera keys, rescaled if the stored
    image's size differs from the declared ``w``/``h`` (e.g. pre-downscaled image folders)."""
    w = float(cam["w"]) if cam.get("w") is not None else float(img_w)
    h = float(cam["h"]) if cam.get("h") is not None else float(img_h)
    fx = cam.get("fl_x")
    fy = cam.get("fl_y")
    if fx is None and cam.get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * float(cam["camera_angle_x"]))
    if fy is None and cam.get("camera_angle_y") is not None:
        fy = 0.5 * h / math.tan(0.5 * float(cam["camera_angle_y"]))
    if fx is None and fy is None:
        raise ValueError(f"{label}: no focal length (fl_x / fl_y / camera_angle_x)")
    fx = float(fx if fx is not None else fy)
    fy = float(fy if fy is not None else fx)
    cx = float(cam["cx"]) if cam.get("cx") is not None else w / 2.0
    cy = float(cam["cy"]) if cam.get("cy") is not None else h / 2.0
    sx, sy = img_w / w, img_h / h
    return Intrinsics(fx * sx, fy * sy, cx * sx, cy * sy, int(img_w), int(img_h))


def _scan(records: List[_Record], source: str) -> List[_Record]:
    """Keep records whose image header reads; warn once about the others."""
    kept, skipped = [], []
    for r in records:
        try:
            with Image.open(r.image_path) as im:
                w, h = im.size
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped.append(r)
            continue
        r.intrinsics = _intrinsics_from_camera(r.camera, w, h, r.label)
        kept.append(r)
    if skipped:
        named = ", ".join(r.file_path for r in skipped[:_NAMED_IN_WARNING])
        more = f" and {len(skipped) - _NAMED_IN_WARNING} more" if len(skipped) > _NAMED_IN_WARNING else ""
        log.warning("%s: skipped %d of %d frames whose images are missing or unreadable: %s%s",
                    source, len(skipped), len(records), named, more)
    return kept


# --------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------

def _composite(im: Image.Image, background: Sequence[float]) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``; images with alpha are composited over ``background`` (RGB in [0, 1])."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        rgb = a[..., :3] * a[..., 3:] + bg * (1.0 - a[..., 3:])
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _resize_nearest(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-pixel resize of ``[H, W, ...]`` (keeps ids and depths unblended)."""
    H, W = arr.shape[:2]
    if (W, H) == (width, height):
        return arr
    rows = np.minimum(((np.arange(height) + 0.5) * H / height).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * W / width).astype(np.int64), W - 1)
    return arr[rows[:, None], cols[None, :]]


def _read_uint16_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # some tools write grey values into RGB(A)
        arr = arr[..., 0]
    return arr


def _load_record(r: _Record, downscale: float, undistort: str, background: Sequence[float],
                 rate: float) -> Frame:
    src = r.intrinsics
    assert src is not None
    target = src.scaled(1.0 / downscale) if downscale != 1.0 else src
    with Image.open(r.image_path) as im:
        im.load()
        if (target.width, target.height) != (src.width, src.height):
            # Composite first: box-filtering straight alpha would bleed the transparent pixels' colour.
            rgb = _composite(im, background)
            im2 = Image.fromarray(rgb).resize((target.width, target.height), Image.Resampling.BOX)
            image = np.asarray(im2, dtype=np.uint8)
        else:
            image = _composite(im, background)
    depth = None
    if r.depth_path is not None:
        raw = _read_uint16_png(r.depth_path)
        depth = _resize_nearest(raw.astype(np.float32) * np.float32(r.depth_scale), target.width, target.height)
    masks = None
    if r.mask_paths:
        masks = {lvl: _resize_nearest(_read_uint16_png(p).astype(np.int32), target.width, target.height)
                 for lvl, p in r.mask_paths.items()}
    intr = target
    if not r.distortion.is_zero:
        # Distortion acts on normalised coordinates, so resizing first and undistorting the small
        # image is exact and much cheaper than the other way round.
        intr = undistorted_intrinsics(target, r.distortion, undistort)
        image = undistort_image(image, target, r.distortion, intr, order=1)
        if depth is not None:
            depth = undistort_image(depth, target, r.distortion, intr, order=0)
        if masks is not None:
            masks = {k: undistort_image(v, target, r.distortion, intr, order=0) for k, v in masks.items()}
    return Frame(image=np.ascontiguousarray(image), T_world_cam=r.T_world_cam.copy(), intrinsics=intr,
                 depth=depth, stamp=r.index / rate, name=Path(r.file_path).stem, masks=masks,
                 extra={"index": r.index, "file_path": r.file_path, "split": r.split})


def _stream(records: List[_Record], source: str, downscale: float, undistort: str,
            background: Sequence[float], rate: float) -> Iterator[Frame]:
    # Arguments are checked now, not at the first next().
    if not downscale > 0.0:
        raise ValueError(f"downscale must be > 0, got {downscale}")
    if not rate > 0.0:
        raise ValueError(f"rate must be > 0 Hz, got {rate}")
    if undistort not in ("crop", "same"):
        raise ValueError(f"undistort must be 'crop' or 'same', got {undistort!r}")
    if len(background) != 3:
        raise ValueError(f"background must be 3 numbers (RGB in [0, 1]), got {background!r}")
    return _generate(records, source, downscale, undistort, background, rate)


def _generate(records: List[_Record], source: str, downscale: float, undistort: str,
              background: Sequence[float], rate: float) -> Iterator[Frame]:
    for r in _scan(records, source):
        try:
            yield _load_record(r, downscale, undistort, background, rate)
        except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data past the header
            if isinstance(e, PoseError):
                raise
            log.warning("%s: skipped %s: cannot decode its data (%s)", source, r.label, e)


# --------------------------------------------------------------------------------------------------
# nerfstudio / instant-ngp / Blender
# --------------------------------------------------------------------------------------------------

_CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_DIST_KEYS = ("k1", "k2", "p1", "p2", "k3")


def _find_transforms(path: Path) -> Path:
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise FileNotFoundError(f"no transforms.json at {path}")
    return path


def _split_filter(meta: dict, split: Optional[str]):
    """A predicate ``(frame dict, file_path) -> bool`` for the requested split."""
    if split is None:
        return lambda fr, fp: True
    frames = meta.get("frames", [])
    if any("split" in fr for fr in frames):
        return lambda fr, fp: fr.get("split") == split
    keys = [f"{split}_filenames"] + (["val_filenames", "test_filenames"] if split == "eval" else [])
    for k in keys:
        if k in meta:
            names = {os.path.normpath(n) for n in meta[k]}
            return lambda fr, fp: os.path.normpath(fp) in names
    raise ValueError(f"split {split!r} requested but the dataset has no per-frame 'split' and no "
                     f"'{split}_filenames' list")


def _nerfstudio_records(json_path: Path, split: Optional[str], file_label: str) -> List[_Record]:
    meta = json.loads(json_path.read_text())
    base = json_path.parent
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "PERSPECTIVE"):
        raise ValueError(f"{json_path}: camera_model {model!r} is not supported (pinhole with OpenCV "
                         "radial-tangential distortion only)")
    depth_scale = float(meta.get("depth_unit_scale_factor", 1e-3))
    keep = _split_filter(meta, split)
    records = []
    for i, fr in enumerate(meta.get("frames", [])):
        fp = str(fr.get("file_path", ""))
        label = f"{file_label} frame {i} ({fp!r})"
        if not keep(fr, fp):
            continue
        if "transform_matrix" not in fr:
            raise PoseError(f"{label}: no transform_matrix")
        try:
            c2w = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise PoseError(f"{label}: transform_matrix is not a numeric matrix ({e})") from None
        if c2w.shape not in ((4, 4), (3, 4)):
            raise PoseError(f"{label}: transform_matrix has shape {c2w.shape}, expected 4x4")
        T = _validated_pose(T_world_cam_from_opengl(c2w), label)
        cam = {k: fr.get(k, meta.get(k)) for k in _CAMERA_KEYS}
        dist = {k: float(fr.get(k, meta.get(k, 0.0)) or 0.0) for k in _DIST_KEYS}
        if float(fr.get("k4", meta.get("k4", 0.0)) or 0.0) != 0.0:
            raise ValueError(f"{label}: k4 is set; only k1 k2 p1 p2 k3 (radial-tangential) are supported")
        depth_path = base / fr["depth_file_path"] if fr.get("depth_file_path") else None
        masks = {lvl: base / p for lvl, p in (fr.get("mask_file_paths") or {}).items() if p}
        bad = set(masks) - set(LEVELS)
        if bad:
            raise ValueError(f"{label}: unknown mask levels {sorted(bad)} (expected {LEVELS})")
        records.append(_Record(index=i, label=label, file_path=fp, image_path=_resolve_image_path(base, fp),
                               T_world_cam=T, camera=cam, distortion=Distortion(**dist),
                               split=fr.get("split", split), depth_path=depth_path,
                               depth_scale=depth_scale, mask_paths=masks))
    return records


def iter_nerfstudio(path: PathLike, split: Optional[str] = None, downscale: float = 1.0,
                    rate: float = DEFAULT_RATE_HZ, undistort: str = "crop",
                    background: Sequence[float] = (1.0, 1.0, 1.0)) -> Iterator[Frame]:
    """Stream a nerfstudio / instant-ngp dataset (``path``: its folder or its ``transforms.json``).

    ``split``: ``None`` for every frame, else ``"train"`` / ``"eval"`` (per-frame ``split`` keys, or
    nerfstudio's ``train_filenames`` / ``val_filenames`` / ``test_filenames`` lists). Poses are all
    validated before the first frame is yielded.
    """
    json_path = _find_transforms(Path(path))
    records = _nerfstudio_records(json_path, split, json_path.name)
    return _stream(records, str(json_path), downscale, undistort, background, rate)


def load_nerfstudio(path: PathLike, split: Optional[str] = None, downscale: float = 1.0,
                    rate: float = DEFAULT_RATE_HZ, undistort: str = "crop",
                    background: Sequence[float] = (1.0, 1.0, 1.0)) -> List[Frame]:
    """All frames of :func:`iter_nerfstudio` in a list."""
    return list(iter_nerfstudio(path, split, downscale, rate, undistort, background))


def iter_blender(path: PathLike, split: str = "train", background: Sequence[float] = (1.0, 1.0, 1.0),
                 downscale: float = 1.0, rate: float = DEFAULT_RATE_HZ) -> Iterator[Frame]:
    """Stream a NeRF-synthetic scene: ``path/transforms_{split}.json``; RGBA composited on ``background``
    (RGB in [0, 1]); focal from ``camera_angle_x``, principal point at the image centre."""
    json_path = Path(path) / f"transforms_{split}.json"
    if not json_path.is_file():
        raise FileNotFoundError(f"no {json_path.name} in {path}")
    records = _nerfstudio_records(json_path, None, json_path.name)
    for r in records:
        r.split = split
    return _stream(records, str(json_path), downscale, "same", background, rate)


def load_blender(path: PathLike, split: str = "train", background: Sequence[float] = (1.0, 1.0, 1.0),
                 downscale: float = 1.0, rate: float = DEFAULT_RATE_HZ) -> List[Frame]:
    """All frames of :func:`iter_blender` in a list."""
    return list(iter_blender(path, split, background, downscale, rate))


# --------------------------------------------------------------------------------------------------
# Writer of the dataset format
# --------------------------------------------------------------------------------------------------

def _safe_stem(name: str, i: int, used: set) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if name else "") or f"{i:05d}"
    if stem in used:
        stem = f"{stem}_{i:05d}"
    used.add(stem)
    return stem


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _intrinsics_dict(k: Intrinsics) -> dict:
    return {"fl_x": k.fx, "fl_y": k.fy, "cx": k.cx, "cy": k.cy, "w": k.width, "h": k.height}


def write_nerfstudio(path: PathLike, frames: Sequence[Frame], splits: Optional[Sequence[str]] = None,
                     labels: Optional[dict] = None, queries: Optional[list] = None,
                     image_format: str = "png") -> Path:
    """Write ``frames`` as a dataset in the format above; returns the ``transforms.json`` path.

    Images go to ``images/<name>.<image_format>``, depth to ``depth/<name>.png`` (uint16 mm; depths
    beyond 65.535 m or non-finite are written as 0 = unknown), masks to ``masks/<level>/<name>.png``
    (uint16 ids; ids above 65535 raise ``ValueError``). ``splits`` (one per frame) defaults to each
    frame's ``extra["split"]`` when present. Intrinsics shared by all frames are written once at the
    top level, otherwise per frame. ``labels`` / ``queries`` are written to ``labels.json`` /
    ``queries.json`` when given. ``transforms.json`` is written last and atomically, so a reader never
    sees it before the files it names.
    """
    root = Path(path)
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if splits is not None and len(splits) != len(frames):
        raise ValueError(f"{len(splits)} splits for {len(frames)} frames")
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    shared = frames[0].intrinsics if frames and all(f.intrinsics == frames[0].intrinsics for f in frames) else None
    out_frames, used = [], set()
    for i, fr in enumerate(frames):
        label = f"frame {i} ({fr.name!r})"
        T = check_rigid(fr.T_world_cam, name=label)
        img = np.asarray(fr.image)
        if img.dtype != np.uint8:
            img = np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        if img.shape != (fr.intrinsics.height, fr.intrinsics.width, 3):
            raise ValueError(f"{label}: image shape {img.shape} does not match intrinsics "
                             f"{fr.intrinsics.width}x{fr.intrinsics.height}")
        stem = _safe_stem(fr.name, i, used)
        entry: dict = {"file_path": f"images/{stem}.{image_format}",
                       "transform_matrix": opengl_from_T_world_cam(T).tolist()}
        Image.fromarray(img).save(root / entry["file_path"], **({"quality": 95} if image_format == "jpg" else {}))
        if shared is None:
            entry.update(_intrinsics_dict(fr.intrinsics))
        split = splits[i] if splits is not None else fr.extra.get("split")
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"{label}: split must be one of {SPLITS}, got {split!r}")
            entry["split"] = split
        if fr.depth is not None:
            d = np.asarray(fr.depth, dtype=np.float64)
            mm = np.where(np.isfinite(d) & (d > 0) & (d <= 65.535), np.rint(d * 1000.0), 0).astype(np.uint16)
            (root / "depth").mkdir(exist_ok=True)
            entry["depth_file_path"] = f"depth/{stem}.png"
            Image.fromarray(mm).save(root / entry["depth_file_path"])
        if fr.masks:
            entry["mask_file_paths"] = {}
            for lvl, m in fr.masks.items():
                if lvl not in LEVELS:
                    raise ValueError(f"{label}: unknown mask level {lvl!r} (expected {LEVELS})")
                m = np.asarray(m)
                if m.size and (m.min() < 0 or m.max() > 65535):
                    raise ValueError(f"{label}: {lvl} mask ids must be in [0, 65535]")
                (root / "masks" / lvl).mkdir(parents=True, exist_ok=True)
                rel = f"masks/{lvl}/{stem}.png"
                Image.fromarray(m.astype(np.uint16)).save(root / rel)
                entry["mask_file_paths"][lvl] = rel
        out_frames.append(entry)
    meta: dict = {"gags_ros_format": FORMAT_VERSION, "camera_model": "PINHOLE", "depth_unit_scale_factor": 1e-3}
    if shared is not None:
        meta.update(_intrinsics_dict(shared))
    meta["frames"] = out_frames
    if labels is not None:
        write_labels(root / "labels.json", labels)
    if queries is not None:
        write_queries(root / "queries.json", queries)
    out = root / "transforms.json"
    _write_json_atomic(out, meta)
    return out


def write_labels(path: PathLike, labels: dict) -> None:
    """``labels``: ``{level: {id: text}}`` for the three levels; ids are written as strings."""
    obj = {}
    for lvl in LEVELS:
        obj[lvl] = {str(int(k)): str(v) for k, v in (labels.get(lvl) or {}).items()}
    bad = set(labels) - set(LEVELS)
    if bad:
        raise ValueError(f"unknown label levels {sorted(bad)} (expected {LEVELS})")
    _write_json_atomic(Path(path), obj)


def load_labels(path: PathLike) -> Dict[str, Dict[int, str]]:
    """``labels.json`` -> ``{level: {int id: text}}`` (missing levels are empty)."""
    raw = json.loads(Path(path).read_text())
    return {lvl: {int(k): str(v) for k, v in (raw.get(lvl) or {}).items()} for lvl in LEVELS}


def _check_query(q: dict, i: int) -> dict:
    try:
        out = {"text": str(q["text"]), "level": str(q["level"]), "ids": [int(x) for x in q["ids"]],
               "box_min": [float(x) for x in q["box_min"]], "box_max": [float(x) for x in q["box_max"]]}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"query {i}: needs text, level, ids, box_min, box_max ({e!r})") from None
    if out["level"] not in LEVELS:
        raise ValueError(f"query {i} ({out['text']!r}): level must be one of {LEVELS}")
    if len(out["box_min"]) != 3 or len(out["box_max"]) != 3 or any(
            a > b for a, b in zip(out["box_min"], out["box_max"])):
        raise ValueError(f"query {i} ({out['text']!r}): box_min/box_max must be 3 numbers with min <= max")
    if "boxes" in q:  # optional: one [min [3], max [3]] per instance (any of them is a right answer)
        try:
            out["boxes"] = [[[float(x) for x in b[0]], [float(x) for x in b[1]]] for b in q["boxes"]]
        except (IndexError, TypeError, ValueError) as e:
            raise ValueError(f"query {i} ({out['text']!r}): boxes must be a list of [min [3], max [3]] ({e!r})") from None
        if not out["boxes"] or any(len(lo) != 3 or len(hi) != 3 or any(a > b for a, b in zip(lo, hi))
                                   for lo, hi in out["boxes"]):
            raise ValueError(f"query {i} ({out['text']!r}): boxes must be a non-empty list of [min [3], max [3]] "
                             "with min <= max")
    return out


def write_queries(path: PathLike, queries: Sequence[dict]) -> None:
    """``queries``: list of ``{"text", "level", "ids", "box_min", "box_max"}`` and optionally
    ``"boxes"`` (``[[min [3], max [3]], ...]`` per instance), validated."""
    _write_json_atomic(Path(path), [_check_query(q, i) for i, q in enumerate(queries)])


def load_queries(path: PathLike) -> List[dict]:
    """``queries.json`` -> validated list of ``{"text", "level", "ids", "box_min", "box_max"}`` (plus
    ``"boxes"`` where the file has them)."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of queries")
    return [_check_query(q, i) for i, q in enumerate(raw)]


# --------------------------------------------------------------------------------------------------
# COLMAP
# --------------------------------------------------------------------------------------------------

# model id -> (name, number of parameters); ids as in COLMAP's src/colmap/sensor/models.h.
COLMAP_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                 4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                 8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12)}
_COLMAP_MODEL_IDS = {name: i for i, (name, _) in COLMAP_MODELS.items()}


@dataclass(frozen=True)
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: Tuple[float, ...]

    def intrinsics_and_distortion(self) -> Tuple[Intrinsics, Distortion]:
        p, m = self.params, self.model
        if m == "SIMPLE_PINHOLE":
            f, cx, cy = p
            fx = fy = f
            d = Distortion()
        elif m == "PINHOLE":
            fx, fy, cx, cy = p
            d = Distortion()
        elif m == "SIMPLE_RADIAL":
            f, cx, cy, k = p
            fx = fy = f
            d = Distortion(k1=k)
        elif m == "RADIAL":
            f, cx, cy, k1, k2 = p
            fx = fy = f
            d = Distortion(k1=k1, k2=k2)
        elif m == "OPENCV":
            fx, fy, cx, cy, k1, k2, p1, p2 = p
            d = Distortion(k1=k1, k2=k2, p1=p1, p2=p2)
        else:
            raise ValueError(f"COLMAP camera {self.camera_id}: model {m} is not supported (SIMPLE_PINHOLE, "
                             "PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV)")
        return Intrinsics(fx, fy, cx, cy, self.width, self.height), d


@dataclass(frozen=True)
class ColmapImage:
    image_id: int
    qvec: Tuple[float, float, float, float]  # world-to-camera rotation, w x y z
    tvec: Tuple[float, float, float]  # world-to-camera translation
    camera_id: int
    name: str


def _find_colmap_model(path: Path) -> Path:
    for cand in (path, path / "sparse" / "0", path / "sparse", path / "colmap" / "sparse" / "0"):
        if (cand / "cameras.bin").is_file() or (cand / "cameras.txt").is_file():
            return cand
    raise FileNotFoundError(f"no COLMAP model (cameras.bin / cameras.txt) at or under {path}")


def _data_lines(path: Path) -> Iterator[str]:
    for line in path.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            yield s


def _read_cameras_text(path: Path) -> Dict[int, ColmapCamera]:
    cams = {}
    for s in _data_lines(path):
        e = s.split()
        cid, model = int(e[0]), e[1]
        params = tuple(float(x) for x in e[4:])
        if model in _COLMAP_MODEL_IDS and len(params) != COLMAP_MODELS[_COLMAP_MODEL_IDS[model]][1]:
            raise ValueError(f"{path}: camera {cid} ({model}) has {len(params)} parameters")
        cams[cid] = ColmapCamera(cid, model, int(e[2]), int(e[3]), params)
    return cams


def _read_images_text(path: Path) -> Dict[int, ColmapImage]:
    images = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        i += 1
        if not s or s.startswith("#"):
            continue
        e = s.split()
        iid = int(e[0])
        images[iid] = ColmapImage(iid, tuple(float(x) for x in e[1:5]), tuple(float(x) for x in e[5:8]),
                                  int(e[8]), " ".join(e[9:]))
        i += 1  # the 2D points line follows every image line, and may be empty
    return images


def _read_points_text(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for s in _data_lines(path):
        e = s.split()
        xyz.append([float(x) for x in e[1:4]])
        rgb.append([int(x) for x in e[4:7]])
    return np.asarray(xyz, dtype=np.float64).reshape(-1, 3), np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def read(self, fmt: str):
        fmt = "<" + fmt
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated")
        self.pos += n

    def cstring(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        s = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s


def _read_cameras_binary(path: Path) -> Dict[int, ColmapCamera]:
    r = _Reader(path.read_bytes(), path)
    cams = {}
    for _ in range(r.read("Q")[0]):
        cid, mid, w, h = r.read("iiQQ")
        if mid not in COLMAP_MODELS:
            raise ValueError(f"{path}: camera {cid} has unknown model id {mid}")
        name, n = COLMAP_MODELS[mid]
        cams[cid] = ColmapCamera(cid, name, int(w), int(h), tuple(r.read("d" * n)))
    return cams


def _read_images_binary(path: Path) -> Dict[int, ColmapImage]:
    r = _Reader(path.read_bytes(), path)
    images = {}
    for _ in range(r.read("Q")[0]):
        iid = r.read("i")[0]
        qt = r.read("ddddddd")
        cid = r.read("i")[0]
        name = r.cstring()
        r.skip(r.read("Q")[0] * 24)  # points2D: x, y (double) and point3D id (int64)
        images[iid] = ColmapImage(iid, tuple(qt[:4]), tuple(qt[4:]), cid, name)
    return images


def _read_points_binary(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    r = _Reader(path.read_bytes(), path)
    n = r.read("Q")[0]
    xyz = np.empty((n, 3), dtype=np.float64)
    rgb = np.empty((n, 3), dtype=np.uint8)
    for i in range(n):
        vals = r.read("QdddBBBd")
        xyz[i] = vals[1:4]
        rgb[i] = vals[4:7]
        r.skip(r.read("Q")[0] * 8)  # track: image id, point2D index (int32 each)
    return xyz, rgb


def read_colmap_model(path: PathLike) -> Tuple[Dict[int, ColmapCamera], Dict[int, ColmapImage]]:
    """Cameras and images of a COLMAP sparse model (binary preferred when both exist)."""
    model = _find_colmap_model(Path(path))
    if (model / "cameras.bin").is_file() and (model / "images.bin").is_file():
        return _read_cameras_binary(model / "cameras.bin"), _read_images_binary(model / "images.bin")
    return _read_cameras_text(model / "cameras.txt"), _read_images_text(model / "images.txt")


def load_colmap_points(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Sparse points of a COLMAP model: ``(xyz [N, 3] float64 metres, rgb [N, 3] uint8)``."""
    model = _find_colmap_model(Path(path))
    if (model / "points3D.bin").is_file():
        return _read_points_binary(model / "points3D.bin")
    if (model / "points3D.txt").is_file():
        return _read_points_text(model / "points3D.txt")
    raise FileNotFoundError(f"no points3D.bin / points3D.txt in {model}")


def _colmap_records(path: Path, images_dir: str) -> Tuple[List[_Record], str]:
    model = _find_colmap_model(path)
    cams, images = read_colmap_model(path)
    img_root = next((c for c in (path / images_dir, model.parent.parent / images_dir, model.parent / images_dir)
                     if c.is_dir()), path / images_dir)
    records = []
    # COLMAP's image ids follow registration, not capture: stream in name order.
    for i, im in enumerate(sorted(images.values(), key=lambda m: m.name)):
        label = f"COLMAP image {im.image_id} ({im.name!r})"
        if im.camera_id not in cams:
            raise ValueError(f"{label}: unknown camera {im.camera_id}")
        intr, dist = cams[im.camera_id].intrinsics_and_distortion()
        q = np.asarray(im.qvec, dtype=np.float64)
        if not np.all(np.isfinite(q)) or not np.all(np.isfinite(im.tvec)):
            raise PoseError(f"{label}: pose has non-finite entries")
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise PoseError(f"{label}: quaternion is not unit length (|q| = {np.linalg.norm(q):.4f})")
        T = _validated_pose(T_world_cam_from_colmap(q, im.tvec), label)
        cam = {"fl_x": intr.fx, "fl_y": intr.fy, "cx": intr.cx, "cy": intr.cy, "w": intr.width, "h": intr.height}
        records.append(_Record(index=i, label=label, file_path=im.name, image_path=img_root / im.name,
                               T_world_cam=T, camera=cam, distortion=dist))
    return records, str(model)


def iter_colmap(path: PathLike, images_dir: str = "images", downscale: float = 1.0,
                rate: float = DEFAULT_RATE_HZ, undistort: str = "crop",
                background: Sequence[float] = (1.0, 1.0, 1.0)) -> Iterator[Frame]:
    """Stream a COLMAP reconstruction, frames in image-name order.

    ``path``: the model folder (with ``cameras``/``images`` ``.bin`` or ``.txt``) or a dataset root
    with ``sparse/0`` or ``sparse``. Images are looked up in ``path/images_dir`` or, for a model in
    ``<root>/sparse/0``, in ``<root>/images_dir``. Distorted camera models are undistorted.
    """
    records, source = _colmap_records(Path(path), images_dir)
    return _stream(records, source, downscale, undistort, background, rate)


def load_colmap(path: PathLike, images_dir: str = "images", downscale: float = 1.0,
                rate: float = DEFAULT_RATE_HZ, undistort: str = "crop",
                background: Sequence[float] = (1.0, 1.0, 1.0)) -> List[Frame]:
    """All frames of :func:`iter_colmap` in a list; sparse points: :func:`load_colmap_points`."""
    return list(iter_colmap(path, images_dir, downscale, rate, undistort, background))
