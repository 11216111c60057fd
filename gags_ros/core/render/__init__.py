"""Rendering of Gaussian maps: one interface, two backends with identical conventions.

- ``gsplat``: gsplat's CUDA rasterizer (fast; CUDA devices only).
- ``torch``: our own pure-PyTorch EWA splatting with front-to-back alpha compositing (any device;
  meant for small images on machines without a GPU, and as the reference the GPU test compares
  against).

Conventions (both backends): ``viewmats`` are world-to-camera ``[C, 4, 4]`` (inverse of
``T_world_cam``, OpenCV optical frame), ``Ks`` ``[C, 3, 3]`` pixels, pixel centres at +0.5.
Colours are composited as ``sum_i c_i a_i T_i + (1 - alpha) * background``; depth is the expected
depth ``sum_i z_i a_i T_i / alpha`` (metres, 0 where alpha is ~0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch


@dataclass
class RenderOutput:
    """What a renderer returns for C cameras of H x W pixels and D colour channels.

    colors: ``[C, H, W, D]`` composited channels (background added when given).
    alpha:  ``[C, H, W, 1]`` accumulated opacity in [0, 1].
    depth:  ``[C, H, W, 1]`` expected depth in metres (None if not asked for).
    meta:   backend-specific data needed by densification strategies (gsplat's ``info`` dict:
            ``means2d``, ``radii``, ``gaussian_ids``...; the torch backend fills the same keys
            it can).
    """

    colors: torch.Tensor
    alpha: torch.Tensor
    depth: Optional[torch.Tensor]
    meta: dict


class Renderer(Protocol):
    """Differentiable rasterizer of Gaussians with activated parameters."""

    name: str

    def render(
        self,
        means: torch.Tensor,      # [N, 3] metres, world frame
        quats: torch.Tensor,      # [N, 4] unit (w, x, y, z)
        scales: torch.Tensor,     # [N, 3] standard deviations, metres
        opacities: torch.Tensor,  # [N] in (0, 1)
        colors: torch.Tensor,     # [N, D] any number of channels (RGB, 16-d latents, ...)
        viewmats: torch.Tensor,   # [C, 4, 4] world -> camera
        Ks: torch.Tensor,         # [C, 3, 3] pixels
        width: int,
        height: int,
        background: Optional[torch.Tensor] = None,  # [C, D] or [D]
        with_depth: bool = True,
        near: float = 0.01,       # metres
        far: float = 1e10,        # metres
    ) -> RenderOutput:
        ...
from .factory import make_renderer  # noqa: E402  (re-exported; needs Renderer defined above)
