"""Photometric losses and image metrics (pure PyTorch, any device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, padding: str = "same", window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images ``a``, ``b`` ``[..., H, W, C]`` in [0, 1] (Gaussian window 11, sigma 1.5).

    ``padding="same"`` zero-pads like the 3DGS training loss; ``"valid"`` uses only full windows,
    like the usual evaluation code (scikit-image / torchmetrics with a Gaussian window).
    """
    C = a.shape[-1]
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2)
    w = _gaussian_window(window, sigma, C, x)
    pad = window // 2 if padding == "same" else 0
    conv = lambda t: F.conv2d(t, w, padding=pad, groups=C)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x * mu_x
    syy = conv(y * y) - mu_y * mu_y
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))
    return s.mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (``a`` clamped to [0, 1] first, as it would be displayed)."""
    mse = torch.mean((a.clamp(0, 1) - b) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
