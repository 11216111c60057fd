"""Plausibility checks of camera input against :class:`~gags_ros.core.config.LimitsConfig`.

ROS-free: the node's message conversions and the frame assembler call these and refuse what fails,
naming every limit broken (not only the first), so garbage that is well-formed (fx = 1e-3 px,
depth of 1e6 m, a quaternion of norm 2, a camera teleported 200 km) never reaches the map.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from .config import LimitsConfig
from .types import Intrinsics


def fov_deg(focal_px: float, size_px: float) -> float:
    """Field of view in degrees of a pinhole camera: ``2 atan(size / 2 f)``."""
    return math.degrees(2.0 * math.atan2(size_px, 2.0 * focal_px))


def intrinsics_problems(intr: Intrinsics, limits: LimitsConfig) -> List[str]:
    """Every field-of-view limit ``intr`` breaks (empty when plausible). Needs fx, fy > 0."""
    out = []
    for axis, f, size in (("horizontal", intr.fx, intr.width), ("vertical", intr.fy, intr.height)):
        fov = fov_deg(f, size)
        if not limits.min_fov <= fov <= limits.max_fov:
            which = "fx" if axis == "horizontal" else "fy"
            out.append(f"{axis} field of view {fov:.4g} deg ({which}={f:.4g} px, {size} px) outside "
                       f"[limits.min_fov, limits.max_fov] = [{limits.min_fov}, {limits.max_fov}] deg")
    return out


def depth_in_range(depth: np.ndarray, limits: LimitsConfig) -> np.ndarray:
    """``depth`` ``[H, W]`` float32 metres with every pixel outside ``[min_depth, max_depth]`` (and
    every non-finite one) set to 0 (= no measurement), in place. Raises ValueError, with the counts,
    when no pixel is left."""
    finite = np.isfinite(depth)
    valid = finite & (depth >= limits.min_depth) & (depth <= limits.max_depth) & (depth > 0)
    if not valid.any():
        far = int((finite & (depth > limits.max_depth)).sum())
        near = int((finite & (depth > 0) & (depth < limits.min_depth)).sum())
        raise ValueError(f"depth image has no value in [limits.min_depth, limits.max_depth] = "
                         f"[{limits.min_depth}, {limits.max_depth}] m ({int((~finite).sum())} non-finite, "
                         f"{far} farther, {near} nearer, {int((finite & (depth <= 0)).sum())} zero or negative "
                         f"of {depth.size} pixels)")
    depth[~valid] = 0.0
    return depth


def quaternion_problem(q_xyzw: Sequence[float], tolerance: float) -> str:
    """Why tf2 would refuse the quaternion ("" when it accepts it): it needs finite values with
    ``|x^2 + y^2 + z^2 + w^2 - 1| < tolerance`` (tf2's QUATERNION_NORMALIZATION_TOLERANCE)."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    if not np.all(np.isfinite(q)):
        return f"quaternion {q.tolist()} has non-finite values"
    n2 = float(q @ q)
    if not abs(n2 - 1.0) < tolerance:
        return (f"quaternion is not unit (norm {math.sqrt(n2):.6g}; |norm^2 - 1| = {abs(n2 - 1.0):.3g} >= "
                f"limits.quaternion_tolerance = {tolerance:g})")
    return ""


def pose_jump_problem(T_prev: Optional[np.ndarray], T: np.ndarray, limits: LimitsConfig) -> str:
    """Why the camera cannot have moved from ``T_prev`` to ``T`` (``[4, 4]``, metres) between two
    frames ("" when it can, or without a previous pose)."""
    if T_prev is None:
        return ""
    d = float(np.linalg.norm(T[:3, 3] - T_prev[:3, 3]))
    if d > limits.max_pose_jump:
        return (f"camera moved {d:.4g} m since the previous frame (limits.max_pose_jump = "
                f"{limits.max_pose_jump} m)")
    return ""
