"""Object Gaussians taken from a map, canonicalised and turned into the per-Gaussian attribute
vectors the tokenizer reads.

Attribute vector (:func:`attributes`, 19 numbers per Gaussian, in this order):

    xyz       3   canonical position (object centred, gravity along -z, unit radius)
    rgb       3   degree-0 colour, clamped to [0, 1]
    opacity   1   sigmoid of the stored logit, i.e. the opacity in (0, 1)
    scale     3   sigmoid(log(s / radius) - log(SCALE_REF)): canonical std devs squashed to (0, 1),
                  a typical splat (2% of the object radius) lands at 0.5
    rotation  9   the rotation matrix (row-major) of the Gaussian's canonical orientation

The paper counts 14 dimensions because it stores the rotation as a quaternion (4); it turns the
quaternion into a matrix before the network, as we do, so the network sees 19 numbers.

Synthetic training objects sampled from the simulation's analytic objects live in
:mod:`gags_ros.sim.clipgs_objects`; objects cut from real maps (:func:`object_from_map`) are what
the encoder finally serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.nn import functional as F

from ..gaussians import GaussianMap, quat_to_rotmat

__all__ = ["ATTR_DIM", "SCALE_REF", "ObjectGaussians", "Canonical", "attributes", "canonicalize",
           "object_from_map", "quat_to_rotmat", "rotmat_to_quat", "quat_multiply"]

ATTR_DIM = 19
SCALE_REF = 0.02  # canonical std dev (fraction of the object radius) that maps to 0.5


# ------------------------------------------------------------------------------------------------
# Rotation helpers (quaternions are (w, x, y, z), as in gaussians.py)
# ------------------------------------------------------------------------------------------------

def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` rotations -> ``[..., 4]`` unit quaternions (w >= 0), batched Shepperd."""
    m = R.reshape(-1, 3, 3)
    t = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + t, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], dim=1)                                                          # [M, 4 candidates, 4]
    # Each candidate is 4 * q * (one component of q); take the one with the largest pivot.
    pivot = torch.stack([1 + t, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                         1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = pivot.argmax(-1)
    q = F.normalize(cands[torch.arange(len(m), device=m.device), best], dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``[..., 4]`` quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


# ------------------------------------------------------------------------------------------------
# Object Gaussians
# ------------------------------------------------------------------------------------------------

@dataclass
class ObjectGaussians:
    """One object's Gaussians with activated parameters (world or canonical frame).

    means [N, 3] metres (or canonical units), quats [N, 4] unit (w, x, y, z), scales [N, 3] std devs
    (same unit as means), opacities [N] in (0, 1), rgb [N, 3] in [0, 1].
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    rgb: torch.Tensor

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def select(self, idx: torch.Tensor) -> "ObjectGaussians":
        """Subset (or resample with repeats) by an index or boolean mask ``[N]``."""
        return ObjectGaussians(self.means[idx], self.quats[idx], self.scales[idx], self.opacities[idx],
                               self.rgb[idx])

    def to(self, device: str | torch.device) -> "ObjectGaussians":
        return ObjectGaussians(*(t.to(device) for t in (self.means, self.quats, self.scales,
                                                        self.opacities, self.rgb)))

    def transformed(self, R: torch.Tensor, t: torch.Tensor, s: float = 1.0) -> "ObjectGaussians":
        """The object moved by ``x -> s R x + t`` (``R`` ``[3, 3]`` rotation, ``t`` ``[3]``)."""
        R = R.to(self.means)
        qR = rotmat_to_quat(R)
        return ObjectGaussians(s * self.means @ R.T + t.to(self.means), quat_multiply(qR.expand_as(self.quats), self.quats),
                               s * self.scales, self.opacities, self.rgb)

    @staticmethod
    def cat(objs: Sequence["ObjectGaussians"]) -> "ObjectGaussians":
        return ObjectGaussians(*(torch.cat([getattr(o, k) for o in objs]) for k in
                                 ("means", "quats", "scales", "opacities", "rgb")))


def object_from_map(gmap: GaussianMap, indices: torch.Tensor | Sequence[int]) -> ObjectGaussians:
    """The Gaussians ``indices`` (e.g. a query target's, or one cluster of the language field) of a
    :class:`GaussianMap`, detached, activated, on the map's device."""
    idx = torch.as_tensor(indices, dtype=torch.long, device=gmap.device)
    with torch.no_grad():
        return ObjectGaussians(gmap.means[idx].detach().clone(), gmap.quats[idx].detach().clone(),
                               gmap.scales[idx].detach().clone(), gmap.opacities[idx].detach().clone(),
                               gmap.colors[idx].detach().clamp(0, 1).clone())


@dataclass
class Canonical:
    """A canonicalised object and the similarity that made it.

    ``gaussians``: canonical frame (centred, up = +z, principal horizontal axis = +x, radius 1),
    resampled to the budget. ``full``: every kept (opaque enough) Gaussian in the canonical frame,
    before resampling (what renders of the object use). Canonical ``x_c = R (x_w - centre) / radius``
    with ``R`` ``[3, 3]``, ``centre`` ``[3]`` metres, ``radius`` metres.
    """

    gaussians: ObjectGaussians
    full: ObjectGaussians
    R: torch.Tensor
    centre: torch.Tensor
    radius: float
    n_input: int
    n_kept: int


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[3, 3]`` rotation taking unit vector ``a`` to unit vector ``b`` (Rodrigues)."""
    a, b = F.normalize(a, dim=0), F.normalize(b, dim=0)
    v = torch.linalg.cross(a, b)
    c = float(torch.dot(a, b))
    if c < -1 + 1e-9:  # opposite: half turn about any axis orthogonal to a
        axis = torch.linalg.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype, device=a.device))
        if axis.norm() < 1e-6:
            axis = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype, device=a.device))
        axis = F.normalize(axis, dim=0)
        return 2 * torch.outer(axis, axis) - torch.eye(3, dtype=a.dtype, device=a.device)
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=a.dtype, device=a.device)
    return torch.eye(3, dtype=a.dtype, device=a.device) + vx + vx @ vx / (1 + c)


def canonicalize(
    obj: ObjectGaussians,
    budget: int = 1024,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    min_opacity: float = 0.05,
    resample: str = "fps",
    yaw: str = "pca",
    radius_quantile: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Canonical:
    """Canonical form of one object.

    1. Gaussians with opacity below ``min_opacity`` are dropped (if that leaves none, all are kept).
    2. Gravity alignment: the map's ``up`` axis (world frame; +z in the simulation) becomes +z.
    3. Centring on the mean of the kept centres.
    4. Yaw (``yaw="pca"``): the principal axis of the horizontal spread becomes +x, its sign chosen
       so that the third moment along x is positive (a rotation about z only, so up stays up).
       ``yaw="none"`` keeps the map's heading. Round objects have no stable principal axis; their
       yaw is arbitrary, which training augments against (random half turns).
    5. Scaling by the radius: the ``radius_quantile`` quantile of centre distances (1.0 = max).
    6. Resampling to ``budget`` Gaussians: farthest-point sampling (``"fps"``; deterministic,
       starting at the Gaussian farthest from the centre) or uniform random (``"random"``) when
       there are more; random draws with replacement when there are fewer.
    """
    dev, dt = obj.means.device, obj.means.dtype
    n_input = len(obj)
    if n_input == 0:
        raise ValueError("canonicalize: the object has no Gaussians")
    keep = obj.opacities >= min_opacity
    if bool(keep.any()):
        obj = obj.select(keep)
    R_up = _rotation_between(torch.as_tensor(up, dtype=dt, device=dev), torch.tensor([0.0, 0.0, 1.0], dtype=dt, device=dev))
    x = obj.means @ R_up.T
    centre_rot = x.mean(dim=0)
    x = x - centre_rot
    R = R_up
    if yaw == "pca":
        xy = x[:, :2].double()
        cov = xy.T @ xy / max(len(xy), 1)
        evals, evecs = torch.linalg.eigh(cov)                        # ascending
        e1 = evecs[:, 1]
        Rz = torch.tensor([[float(e1[0]), float(e1[1]), 0.0], [-float(e1[1]), float(e1[0]), 0.0], [0.0, 0.0, 1.0]],
                          dtype=dt, device=dev)
        if float(((x @ Rz.T)[:, 0].double() ** 3).sum()) < 0:        # half turn about z
            Rz = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=dt, device=dev)) @ Rz
        x = x @ Rz.T
        R = Rz @ R_up
    elif yaw != "none":
        raise ValueError(f"canonicalize: yaw must be 'pca' or 'none', got {yaw!r}")
    d = x.norm(dim=-1)
    radius = float(d.max() if radius_quantile >= 1.0 else torch.quantile(d, radius_quantile))
    radius = max(radius, 1e-9)
    x = x / radius
    centre = centre_rot @ R_up                                       # back to the world frame
    qR = rotmat_to_quat(R)
    canon = ObjectGaussians(x, quat_multiply(qR.expand_as(obj.quats), obj.quats), obj.scales / radius,
                            obj.opacities, obj.rgb)
    full = canon
    n_kept = len(canon)
    if n_kept > budget:
        if resample == "fps":
            from .tokenizer import farthest_point_sampling

            idx = farthest_point_sampling(canon.means[None], budget, start="farthest")[0]
        elif resample == "random":
            idx = torch.randperm(n_kept, generator=generator, device="cpu")[:budget].to(dev)
        else:
            raise ValueError(f"canonicalize: resample must be 'fps' or 'random', got {resample!r}")
        canon = canon.select(idx)
    elif n_kept < budget:
        extra = torch.randint(0, n_kept, (budget - n_kept,), generator=generator, device="cpu").to(dev)
        canon = canon.select(torch.cat([torch.arange(n_kept, device=dev), extra]))
    return Canonical(canon, full, R, centre, radius, n_input, n_kept)


def attributes(obj: ObjectGaussians) -> torch.Tensor:
    """``[N, 19]`` attribute vectors of a canonical object (see the module doc for the layout)."""
    scale = torch.sigmoid(torch.log(obj.scales.clamp_min(1e-8)) - math.log(SCALE_REF))
    rot = quat_to_rotmat(obj.quats).reshape(-1, 9)
    return torch.cat([obj.means, obj.rgb.clamp(0, 1), obj.opacities[:, None], scale, rot], dim=-1)
