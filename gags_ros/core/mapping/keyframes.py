"""Keyframes and the policy that decides which frames become one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..camera import invert_pose, rotation_angle_deg
from ..types import Frame, Intrinsics, check_rigid


@dataclass
class Keyframe:
    """A frame kept for optimisation, at mapping resolution, on the mapper's device.

    ``image``: ``[H, W, 3]`` float32 in [0, 1]. ``depth``: ``[H, W]`` float32 metres, 0 = invalid
    (None when the frame had no depth). ``viewmat``: ``[4, 4]`` world -> camera. ``K``: ``[3, 3]`` px
    of ``intrinsics`` (the mapping resolution). ``frame``: the frame as it arrived (full resolution).
    """

    index: int
    frame: Frame
    intrinsics: Intrinsics
    image: torch.Tensor
    depth: Optional[torch.Tensor]
    viewmat: torch.Tensor
    K: torch.Tensor
    # Its teacher output's language coverage is in the map's records (counted once per keyframe,
    # whichever Distiller adds it: the evaluation's offline modes re-add the same outputs).
    coverage_counted: bool = False

    @property
    def T_world_cam(self) -> np.ndarray:
        return self.frame.T_world_cam

    @property
    def name(self) -> str:
        return self.frame.name


def frame_to_tensors(frame: Frame, max_width: int, device: torch.device
                     ) -> Tuple[Intrinsics, torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Validate a frame and bring it to mapping resolution on ``device``.

    Returns ``(intrinsics, image [H, W, 3] float in [0, 1], depth [H, W] or None, viewmat [4, 4], K [3, 3])``.
    Frames wider than ``max_width`` px are downscaled (area filter for colour, nearest for depth, so
    invalid zeros do not blend into valid depths). Raises ``ValueError`` naming the frame.
    """
    label = frame.name or f"frame at t={frame.stamp:.3f}"
    T = check_rigid(frame.T_world_cam, label)
    intr = frame.intrinsics
    img = np.asarray(frame.image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != (intr.height, intr.width):
        raise ValueError(f"{label}: image shape {img.shape} does not match intrinsics "
                         f"{intr.width}x{intr.height} RGB")
    image = torch.tensor(img, device=device)  # a copy: frames may hold read-only arrays
    image = image.float() / 255.0 if img.dtype == np.uint8 else image.float()
    depth = None
    if frame.depth is not None:
        d = np.asarray(frame.depth, dtype=np.float32)
        if d.shape != (intr.height, intr.width):
            raise ValueError(f"{label}: depth shape {d.shape} does not match the image")
        depth = torch.from_numpy(np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)).to(device)
    if intr.width > max_width:
        intr = intr.scaled(max_width / intr.width)
        size = (intr.height, intr.width)
        image = F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
        if depth is not None:
            depth = F.interpolate(depth[None, None], size=size, mode="nearest-exact")[0, 0]
    viewmat = torch.from_numpy(invert_pose(T)).to(device, torch.float32)
    K = torch.from_numpy(intr.K).to(device, torch.float32)
    return intr, image.contiguous(), depth, viewmat, K


def pose_difference(T_a: np.ndarray, T_b: np.ndarray) -> Tuple[float, float]:
    """``(distance between camera centres in m, relative rotation angle in deg)``."""
    return (float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3])),
            rotation_angle_deg(T_a[:3, :3].T @ T_b[:3, :3]))


def nearest_close_keyframe(T_world_cam: np.ndarray, keyframe_poses: Sequence[np.ndarray],
                           min_translation: float, min_rotation: float) -> Optional[int]:
    """The keyframe the new pose is closest to in rotation among those that are "close" (centre
    nearer than ``min_translation`` m and rotation smaller than ``min_rotation`` deg), or None when
    none is: then the pose alone makes the frame a keyframe."""
    best, best_angle = None, float("inf")
    for i, T in enumerate(keyframe_poses):
        dist, angle = pose_difference(T_world_cam, T)
        if dist < min_translation and angle < min_rotation and angle < best_angle:
            best, best_angle = i, angle
    return best


def view_overlap(alpha_new: torch.Tensor, alpha_keyframe: torch.Tensor) -> float:
    """How much of what the map shows from the nearest keyframe it also shows from the new view:
    mean rendered alpha of the new view over that of the keyframe, clipped to [0, 1].

    A ratio rather than the plain covered fraction, so that a view whose background the map never
    covers (an object on a turntable, the sky) is not mistaken for unexplored space.
    """
    ref = float(alpha_keyframe.mean())
    return 1.0 if ref <= 1e-6 else min(1.0, float(alpha_new.mean()) / ref)


def sample_window(n_keyframes: int, recent: int, n_random: int, rng: np.random.Generator) -> List[int]:
    """Indices of the optimisation window: the ``recent`` newest keyframes plus ``n_random`` older
    ones drawn uniformly without replacement."""
    newest = list(range(max(0, n_keyframes - recent), n_keyframes))
    older = n_keyframes - len(newest)
    if older > 0 and n_random > 0:
        newest += sorted(rng.choice(older, size=min(n_random, older), replace=False).tolist())
    return newest
