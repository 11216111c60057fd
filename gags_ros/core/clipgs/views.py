"""Rendered views of canonical objects and the image tower that embeds them.

No pretrained image tower (CLIP, EVA-CLIP) can be obtained here, so the image side of CLIP-GS is a
small CNN (:class:`ImageTower`) that we train first, contrastively, to map rendered views of the
*training* objects onto the MiniLM embeddings of their captions, and then freeze. It plays the two
roles the paper gives EVA-CLIP's image tower:

- targets of the image term of the loss, and the voting weights ``S_i = cos(image_i, text)``:
  a view that shows the object badly (from below, too close, behind an occluder; see
  :func:`view_cameras`) is harder to recognise, so the tower's embedding of it agrees less with the
  caption and the view pulls less on the encoder;
- the honest baseline: render-and-embed (render a cluster from K views, embed each, average).

The alternative the issue allows, a hand-made view embedding whose agreement falls with occlusion
and viewing angle, would make the voting weights a formula we chose rather than something measured,
and would give no render-and-embed baseline at all; so we train the tower. Its limits: it knows
only the training categories and it is trained on renders of sampled splats, not photographs.

Views are rendered with the project's Gaussian renderer (``render.make_renderer``) from cameras on a
sphere around the canonical object (radius 1), OpenCV optical frame, square images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..camera import invert_pose, look_at
from .objects import ObjectGaussians

__all__ = ["VIEW_KINDS", "ImageTower", "ViewSet", "render_views", "ring_cameras", "view_cameras",
           "intrinsics_matrix"]

VIEW_KINDS = ("good", "below", "close", "occluded")
FOV_DEG = 50.0          # horizontal = vertical field of view of the object views
VIEW_DISTANCE = 2.6     # camera distance from the centre of a radius-1 object: it fills ~80%
BACKGROUND = 0.5        # grey background of every view


def intrinsics_matrix(size: int) -> torch.Tensor:
    """``[3, 3]`` pinhole matrix of a ``size`` x ``size`` view with :data:`FOV_DEG`."""
    f = size / (2 * math.tan(math.radians(FOV_DEG) / 2))
    return torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])


def _camera(az: float, el: float, dist: float, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    eye = np.asarray(target) + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(eye, target)          # T_world_cam, OpenCV optical frame, z up


@dataclass
class ViewSet:
    """K cameras around one canonical object: ``T_world_cam`` ``[K, 4, 4]`` float64 and what each
    is (``kinds``, from :data:`VIEW_KINDS`); occluded views carry the occluder's centre
    ``[3]`` (else None) in ``occluders``."""

    T_world_cam: np.ndarray
    kinds: List[str]
    occluders: List[Optional[np.ndarray]]


def ring_cameras(k: int, elevation_deg: float = 30.0, phase: float = 0.0) -> ViewSet:
    """K clean views evenly spaced in azimuth (render-and-embed at inference)."""
    T = np.stack([_camera(phase + 2 * math.pi * i / k, math.radians(elevation_deg), VIEW_DISTANCE) for i in range(k)])
    return ViewSet(T, ["good"] * k, [None] * k)


def view_cameras(k: int, rng: np.random.Generator, bad_prob: float = 0.3) -> ViewSet:
    """K training views: azimuths evenly spaced with a random phase, elevation 10-50 deg; each view
    is, with probability ``bad_prob``, a bad one: seen from below (elevation -80 to -50 deg), a
    close-up of a random spot (distance 1.15, so most of the object is out of frame), or behind an
    occluder (a flat disc of one random colour hiding about half of the object)."""
    phase = rng.uniform(0, 2 * math.pi)
    Ts, kinds, occ = [], [], []
    for i in range(k):
        az = phase + 2 * math.pi * i / k + rng.uniform(-0.3, 0.3)
        kind = "good" if rng.random() >= bad_prob else str(rng.choice(VIEW_KINDS[1:]))
        if kind == "below":
            Ts.append(_camera(az, math.radians(rng.uniform(-80, -50)), VIEW_DISTANCE))
            occ.append(None)
        elif kind == "close":
            target = rng.uniform(-0.5, 0.5, 3)
            Ts.append(_camera(az, math.radians(rng.uniform(0, 40)), 1.15, target))
            occ.append(None)
        else:
            el = math.radians(rng.uniform(10, 50))
            T = _camera(az, el, VIEW_DISTANCE)
            Ts.append(T)
            if kind == "occluded":
                # Halfway to the object, shifted sideways so it hides about half of it: at that
                # depth the object spans about +-0.5 across the image.
                eye = T[:3, 3]
                side = T[:3, 0] * rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)
                occ.append(eye * 0.5 + side)
            else:
                occ.append(None)
        kinds.append(kind)
    return ViewSet(np.stack(Ts), kinds, occ)


def _occluder(centre: np.ndarray, eye: np.ndarray, rng: np.random.Generator, n: int = 96) -> ObjectGaussians:
    """A flat opaque disc (radius 0.3) facing the camera at ``centre``: ``n`` Gaussians, one colour."""
    normal = eye - centre
    normal = normal / np.linalg.norm(normal)
    a = np.cross(normal, [0.0, 0.0, 1.0])
    a = a / max(np.linalg.norm(a), 1e-9)
    b = np.cross(normal, a)
    r = 0.3 * np.sqrt(rng.uniform(0, 1, n))
    th = rng.uniform(0, 2 * math.pi, n)
    pts = centre + r[:, None] * (np.cos(th)[:, None] * a + np.sin(th)[:, None] * b)
    R = np.stack([a, b, normal], axis=-1)
    from .objects import rotmat_to_quat

    q = rotmat_to_quat(torch.as_tensor(R, dtype=torch.float32))[None].expand(n, 4)
    colour = torch.as_tensor(rng.uniform(0.2, 0.8, 3), dtype=torch.float32)
    return ObjectGaussians(torch.as_tensor(pts, dtype=torch.float32), q.clone(),
                           torch.tensor([[0.06, 0.06, 0.006]]).expand(n, 3).clone(), torch.full((n,), 0.95),
                           colour[None].expand(n, 3).clone())


@torch.no_grad()
def render_views(
    renderer,
    obj: ObjectGaussians,            # canonical frame (radius ~1)
    views: ViewSet,
    size: int,
    rng: Optional[np.random.Generator] = None,
) -> torch.Tensor:
    """``[K, 3, size, size]`` RGB in [0, 1] of ``obj`` from each camera of ``views`` (occluders
    added where asked; ``rng`` draws their colour)."""
    dev = obj.means.device
    K = intrinsics_matrix(size).to(dev)
    rng = rng if rng is not None else np.random.default_rng(0)
    bg = torch.full((3,), BACKGROUND, device=dev)
    out = []
    plain = [i for i, o in enumerate(views.occluders) if o is None]
    imgs = [None] * len(views.kinds)
    if plain:
        vm = torch.as_tensor(np.stack([invert_pose(views.T_world_cam[i]) for i in plain]), dtype=torch.float32, device=dev)
        r = renderer.render(obj.means, obj.quats, obj.scales, obj.opacities, obj.rgb, vm, K[None].expand(len(plain), 3, 3),
                            size, size, background=bg, with_depth=False)
        for j, i in enumerate(plain):
            imgs[i] = r.colors[j]
    for i, c in enumerate(views.occluders):
        if c is None:
            continue
        o = ObjectGaussians.cat([obj, _occluder(c, views.T_world_cam[i][:3, 3], rng).to(dev)])
        vm = torch.as_tensor(invert_pose(views.T_world_cam[i]), dtype=torch.float32, device=dev)[None]
        r = renderer.render(o.means, o.quats, o.scales, o.opacities, o.rgb, vm, K[None], size, size,
                            background=bg, with_depth=False)
        imgs[i] = r.colors[0]
    for im in imgs:
        out.append(im.clamp(0, 1).permute(2, 0, 1))
    return torch.stack(out)


class ImageTower(nn.Module):
    """Small CNN: ``[B, 3, S, S]`` views -> ``[B, embed_dim]`` unit embeddings (S = 32 or 64).

    Four 3x3 conv stages (32-64-128-256 channels, stride 2 from the second on, BatchNorm + ReLU),
    global average pooling, a linear projection. Trained once on the training objects' views
    against their caption embeddings, then frozen.
    """

    def __init__(self, embed_dim: int = 384, width: int = 32):
        super().__init__()
        self.embed_dim, self.width = int(embed_dim), int(width)
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h = self.features((img - BACKGROUND) / 0.25).mean(dim=(2, 3))
        return F.normalize(self.head(h), dim=-1)

    def config(self) -> dict:
        return {"embed_dim": self.embed_dim, "width": self.width}
