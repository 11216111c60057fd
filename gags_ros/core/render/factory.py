"""Choose a renderer backend for a device."""

from __future__ import annotations

import torch

from . import Renderer


def make_renderer(name: str, device: str | torch.device) -> Renderer:
    """A renderer for tensors on ``device``.

    ``name``: ``"gsplat"`` (CUDA only), ``"torch"`` (any device) or ``"auto"`` (gsplat on a CUDA
    device, torch otherwise).
    """
    dev = torch.device(device)
    if name == "auto":
        name = "gsplat" if dev.type == "cuda" else "torch"
    if name == "torch":
        from ._torch import TorchRenderer

        return TorchRenderer()
    if name == "gsplat":
        if dev.type != "cuda":
            raise ValueError(f"renderer 'gsplat' needs a CUDA device, got {dev}; "
                             "use 'torch' or 'auto' on this machine")
        from ._gsplat import GsplatRenderer

        return GsplatRenderer()
    raise ValueError(f"unknown renderer {name!r}: expected 'auto', 'torch' or 'gsplat'")
