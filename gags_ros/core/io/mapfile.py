"""Save and load a whole map: geometry, language latents, decoders, configuration, in one file.

Format (``torch.save`` of a plain dict, read back with ``weights_only=True`` so a map file cannot run
code)::

    {"format": "gags_ros.map", "version": 2,
     "params":   {name: CPU float32 tensor} of the GaussianMap (means, scales, quats, opacities,
                 sh0 and, once distilled, features),
     "records":  {"fill": {name: float}, "values": {name: CPU float32 tensor [N, ...]}}: the map's
                 per-Gaussian records (language coverage, GaS's min-depth record); from version 2,
     "field":    {"feature_dim": F, "embed_dim": D, "state": decoder state dict} or None,
     "config":   nested dict of the GagsConfig,
     "metadata": {"gags_ros_version", "torch_version", "gaussians", "created_unix"},
     "extra":    caller's plain data (keyframe poses, stats...) or None}

Writes go to a temporary file ``.<name>.<pid>.<random>.tmp`` in the target's directory, are flushed
to disk, then renamed over the target (``os.replace``), so a reader never sees half a map and a
crash keeps the old file. A failed write removes its temporary file; one left by a killed process is
removed by :func:`remove_stale_temp_files` (the mapping node calls it at start-up). Map files get the
mode ``ros.map_file_mode``, by default 0666 minus the umask (0644 under the usual umask 022), like any
file the user creates, not the 0600 of a temporary file.

Loading validates the file before anything uses it (:func:`check_map_data`): finite values, shapes
and counts that agree; every problem is named.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import torch

from .. import config as C
from ..files import file_mode, remove_stale_temp_files, write_atomically  # noqa: F401 - re-exported (torch-free module)
from ..gaussians import GaussianMap
from ..language.field import LanguageField

__all__ = ["MAP_FORMAT", "MAP_VERSION", "MapFormatError", "check_map_data", "load_map", "remove_stale_temp_files",
           "save_map"]

log = logging.getLogger("gags_ros.mapfile")

MAP_FORMAT = "gags_ros.map"
MAP_VERSION = 2  # 2: per-Gaussian records (language coverage); version 1 files load without them


class MapFormatError(ValueError):
    """The file is not a gags_ros map, or one this version cannot read."""


def save_map(path: str | os.PathLike, gaussians: GaussianMap, field: Optional[LanguageField],
             cfg: C.GagsConfig, extra: Optional[dict] = None) -> Path:
    """Write the map to ``path`` atomically; returns the path. ``extra`` must hold plain data
    (numbers, strings, tensors, lists, tuples, dicts; numpy arrays are stored as tensors), else
    TypeError before anything is written."""
    from ... import __version__

    path = Path(path)
    data = {
        "format": MAP_FORMAT,
        "version": MAP_VERSION,
        "params": gaussians.state_dict(),
        "records": {"fill": dict(gaussians.records),
                    "values": {k: gaussians.record(k).detach().cpu().clone() for k in gaussians.records}},
        "field": None if field is None else {
            **field.config(),
            "state": {k: v.detach().cpu().clone() for k, v in field.state_dict().items()},
        },
        "config": C.to_dict(cfg),
        "metadata": {
            "gags_ros_version": __version__,
            "torch_version": str(torch.__version__),
            "gaussians": len(gaussians),
            "created_unix": time.time(),
        },
        "extra": _plain(extra),
    }
    return write_atomically(path, lambda f: torch.save(data, f), file_mode(cfg.ros.map_file_mode))


def load_map(path: str | os.PathLike, device: str | torch.device = "cpu"
             ) -> Tuple[GaussianMap, Optional[LanguageField], C.GagsConfig, Any]:
    """Read a map written by :func:`save_map`: ``(gaussians, field or None, config, extra)`` on
    ``device``. Raises :class:`MapFormatError` for another kind of file or a newer version,
    ``FileNotFoundError`` when there is no file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no map file at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of foreign files: report them as a format problem
        raise MapFormatError(f"{path}: not a gags_ros map file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != MAP_FORMAT:
        raise MapFormatError(f"{path}: not a gags_ros map file (format "
                             f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}, "
                             f"expected {MAP_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise MapFormatError(f"{path}: invalid map format version {version!r}")
    if version > MAP_VERSION:
        raise MapFormatError(f"{path}: map format version {version} is newer than this gags_ros reads "
                             f"(up to {MAP_VERSION}); update gags_ros")
    problems = check_map_data(data)
    if problems:
        raise MapFormatError(f"{path}: refused: " + "; ".join(problems))
    try:
        gaussians = GaussianMap.from_state_dict(data["params"], device=device)
    except (KeyError, ValueError) as e:
        raise MapFormatError(f"{path}: Gaussian parameters unreadable: {e}") from None
    records = data.get("records") or {"fill": {}, "values": {}}
    if version < 2:
        log.info("%s: map format version %d has no per-Gaussian records: language coverage unknown, every "
                 "Gaussian counts as known to queries", path, version)
    try:
        for name, values in records["values"].items():
            gaussians.add_record(str(name), float(records["fill"][name]), init=values)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MapFormatError(f"{path}: per-Gaussian records unreadable: {e}") from None
    field = None
    fd = data.get("field")
    if fd is not None:
        try:
            field = LanguageField(int(fd["feature_dim"]), int(fd["embed_dim"]))
            field.load_state_dict(fd["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: shape mismatch
            raise MapFormatError(f"{path}: language field unreadable: {type(e).__name__}: {e}") from None
        field = field.to(device).eval()
        if gaussians.has_features and gaussians.features.shape[1] != field.feature_dim:
            raise MapFormatError(f"{path}: latents have {gaussians.params['features'].shape[1]} channels, "
                                 f"the field expects {field.feature_dim}")
    cfg = _config_from(data.get("config") or {}, path)
    return gaussians, field, cfg, data.get("extra")


def _config_from(saved: dict, path: Path) -> C.GagsConfig:
    """The saved configuration; parameters this version no longer has are dropped with a warning
    (so an older map still loads), invalid values raise MapFormatError."""
    cfg = C.GagsConfig()
    known = {info.name for info in C.iter_fields(cfg)}
    flat = {}

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[prefix + str(k)] = v

    walk(saved, "")
    unknown = sorted(set(flat) - known)
    if unknown:
        log.warning("%s: ignoring parameters unknown to this version: %s", path, ", ".join(unknown))
    # Set every leaf first and validate once: one at a time, the cross-field rules could reject
    # an intermediate state (e.g. a lowered keep_neighbours before the lowered drop_neighbours).
    for name, value in flat.items():
        if name in known:
            *sections, leaf = name.split(".")
            obj = cfg
            for s in sections:
                obj = getattr(obj, s)
            setattr(obj, leaf, list(value) if isinstance(value, tuple) else value)
    try:
        return C.validate(cfg)
    except C.ConfigError as e:
        raise MapFormatError(f"{path}: saved configuration invalid: {e}") from None


def _plain(x):
    """``extra`` with numpy arrays as tensors (what ``weights_only`` loading accepts); TypeError
    for anything else than numbers, strings, tensors, arrays and lists/tuples/dicts of them."""
    import numpy as np

    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, np.generic):
        return x.item()
    if torch.is_tensor(x):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    raise TypeError(f"map extra data must be plain (numbers, strings, tensors, arrays, lists, dicts); "
                    f"got {type(x).__name__}")


# Trailing shapes of the geometry parameters ([N, ...]); see gags_ros.core.gaussians.
_SHAPES = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (), "sh0": (1, 3)}


def check_map_data(data: dict) -> List[str]:
    """Every problem of a loaded map dict (empty when usable): parameters that are not float tensors
    with one row per Gaussian and the documented trailing shapes, non-finite values, zero quaternions,
    a Gaussian count that disagrees with the metadata, a language field that is not finite or whose
    latent size differs from the map's."""
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        return ["no Gaussian parameters"]
    problems = [f"lacks parameter {k!r}" for k in _SHAPES if k not in params]
    means = params.get("means")
    n = int(means.shape[0]) if torch.is_tensor(means) and means.dim() >= 1 else None
    for k, v in params.items():
        if not torch.is_tensor(v) or not v.is_floating_point() or v.dim() == 0:
            problems.append(f"{k!r} is not a floating-point tensor with one row per Gaussian")
            continue
        if k in _SHAPES and tuple(v.shape[1:]) != _SHAPES[k]:
            problems.append(f"{k!r} has shape {list(v.shape)}, expected [N, {', '.join(map(str, _SHAPES[k]))}]"
                            .replace(", ]", "]"))
        if k == "features" and v.dim() != 2:
            problems.append(f"'features' has shape {list(v.shape)}, expected [N, F]")
        if n is not None and v.shape[0] != n:
            problems.append(f"{k!r} has {v.shape[0]} rows but 'means' has {n}")
        bad = int((~torch.isfinite(v)).sum())
        if bad:
            problems.append(f"{k!r}: {bad} of {v.numel()} values are not finite")
    quats = params.get("quats")
    if torch.is_tensor(quats) and quats.is_floating_point() and quats.dim() == 2:
        zero = int((quats.norm(dim=-1) == 0).sum())
        if zero:
            problems.append(f"'quats': {zero} zero quaternions (no rotation)")
    if n == 0:
        problems.append("the map has no Gaussian")
    meta = data.get("metadata")
    if isinstance(meta, dict) and "gaussians" in meta and n is not None and meta["gaussians"] != n:
        problems.append(f"metadata says {meta['gaussians']} Gaussians but 'means' has {n}")
    fd = data.get("field")
    if fd is not None:
        if not isinstance(fd, dict) or not isinstance(fd.get("state"), dict):
            problems.append("the language field has no decoder state")
        else:
            for k, v in fd["state"].items():
                if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    problems.append(f"language field {k!r}: {int((~torch.isfinite(v)).sum())} values are not finite")
            feats = params.get("features")
            if torch.is_tensor(feats) and feats.dim() == 2 and fd.get("feature_dim") != feats.shape[1]:
                problems.append(f"latents have {feats.shape[1]} channels, the field expects {fd.get('feature_dim')}")
    return problems
