"""Plain data types shared by every stage of the core.

Conventions (used everywhere in gags_ros):
- Poses are 4x4 homogeneous float64 matrices named ``T_to_from``; ``T_world_cam`` maps points in the
  camera's OpenCV optical frame (x right, y down, z forward) to the world frame. Units: metres.
- Images are RGB, ``[H, W, 3]``; uint8 or float32 in [0, 1]. Depth is float32 metres ``[H, W]``,
  0 where unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height`` pixels.

    Pixel (u, v) covers [u, u+1) x [v, v+1) and its centre is at (u + 0.5, v + 0.5) (COLMAP,
    nerfstudio, gsplat). ROS CameraInfo and OpenCV put the centre at (u, v): their cx, cy are 0.5 px
    smaller (converted in :mod:`gags_ros.core.camera_info`).
    """

    fx: float  # px
    fy: float  # px
    cx: float  # px
    cy: float  # px
    width: int  # px
    height: int  # px

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, s: float) -> "Intrinsics":
        """Intrinsics of the same camera with the image resized by factor ``s`` (rounded size)."""
        w, h = max(1, int(round(self.width * s))), max(1, int(round(self.height * s)))
        sx, sy = w / self.width, h / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h)

    @staticmethod
    def from_K(K: np.ndarray, width: int, height: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64)
        return Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))


@dataclass
class Frame:
    """One posed camera image, as streamed to the mapper.

    ``image``: ``[H, W, 3]`` uint8 RGB. ``depth``: optional ``[H, W]`` float32 metres (0 = invalid).
    ``T_world_cam``: ``[4, 4]`` float64. ``stamp``: seconds. ``masks``: optional ground-truth
    instance masks per level (``{"whole"|"part"|"subpart": [H, W] int32 ids, 0 = none}``), only from
    simulated data.
    """

    image: np.ndarray
    T_world_cam: np.ndarray
    intrinsics: Intrinsics
    depth: Optional[np.ndarray] = None
    stamp: float = 0.0
    name: str = ""
    masks: Optional[dict] = None
    extra: dict = field(default_factory=dict)

    def with_pose(self, T_world_cam: np.ndarray) -> "Frame":
        return replace(self, T_world_cam=np.asarray(T_world_cam, dtype=np.float64))


class PoseError(ValueError):
    """A pose that is not a finite rigid transform."""


def check_rigid(T: np.ndarray, name: str = "pose", tol: float = 1e-3) -> np.ndarray:
    """Return ``T`` as a ``[4, 4]`` float64 rigid transform or raise :class:`PoseError`.

    ``tol`` bounds ``|R^T R - I|`` and ``|det R - 1|``; scale is not allowed (metres in, metres out).
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise PoseError(f"{name}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise PoseError(f"{name}: pose has non-finite entries")
    R = T[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1.0) > tol:
        raise PoseError(f"{name}: rotation part is not a rotation (orthonormality error "
                        f"{np.abs(R.T @ R - np.eye(3)).max():.3g}, det {np.linalg.det(R):.4f})")
    if np.abs(T[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 1e-9:
        raise PoseError(f"{name}: last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    return T
