"""gsplat backend: ``gsplat.rasterization`` with the conventions of :mod:`gags_ros.core.render`.

Classic 3DGS rasterization (``rasterize_mode="classic"``, ``eps2d=0.3``), unpacked layout
(``packed=False``: ``meta["means2d"]`` and ``meta["radii"]`` are ``[C, N, 2]`` like the torch
backend's, which is what gsplat's strategies read), expected depth from ``render_mode="RGB+ED"``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import RenderOutput


class GsplatRenderer:
    """CUDA rasterizer from gsplat (imported lazily so the package imports without it)."""

    name = "gsplat"

    def __init__(self, eps2d: float = 0.3, tile_size: int = 16):
        import gsplat  # noqa: F401  (fail here, with gsplat's own message, if it is missing)

        self.eps2d = float(eps2d)
        self.tile_size = int(tile_size)

    def render(
        self,
        means: torch.Tensor,      # [N, 3] metres, world frame
        quats: torch.Tensor,      # [N, 4] unit (w, x, y, z)
        scales: torch.Tensor,     # [N, 3] standard deviations, metres
        opacities: torch.Tensor,  # [N] in (0, 1)
        colors: torch.Tensor,     # [N, D] or [C, N, D]
        viewmats: torch.Tensor,   # [C, 4, 4] world -> camera
        Ks: torch.Tensor,         # [C, 3, 3] pixels
        width: int,
        height: int,
        background: Optional[torch.Tensor] = None,  # [C, D] or [D]
        with_depth: bool = True,
        near: float = 0.01,       # metres
        far: float = 1e10,        # metres
    ) -> RenderOutput:
        from gsplat import rasterization

        if means.device.type != "cuda":
            raise RuntimeError(f"GsplatRenderer needs CUDA tensors, got {means.device}; "
                               "use the torch renderer on this device")
        C, D = viewmats.shape[0], colors.shape[-1]
        if background is not None:
            background = background.to(means)
            background = background.expand(C, D) if background.dim() == 1 else background
        img, alpha, meta = rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
            near_plane=near, far_plane=far, eps2d=self.eps2d, packed=False,
            tile_size=self.tile_size, backgrounds=background,
            render_mode="RGB+ED" if with_depth else "RGB", rasterize_mode="classic")
        depth = None
        if with_depth:
            img, depth = img[..., :D], img[..., D:]
        return RenderOutput(colors=img, alpha=alpha, depth=depth, meta=meta)
