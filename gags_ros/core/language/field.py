"""The language field: per-Gaussian latents and the two decoders of GAGS (section 2).

Each Gaussian carries a ``feature_dim``-d latent (``gaussians.params["features"]``, 16 by default),
rendered by the same rasterizer as colour. Two per-pixel MLPs read the rendered latents:

- :class:`FeatureDecoder` D_f: latent -> unit-norm embedding in the teacher's space (512-d for
  CLIP ViT-B-16, 384-d for the simulation's MiniLM text space; the size comes from the embedder).
- :class:`GranularityDecoder` D_g: latent -> softmax weights over the three SAM levels
  (subpart, part, whole). Its input is detached, so the granularity objective never moves the
  Gaussians' latents; D_g itself is trained by the distillation loss (no labels).

Both are ``nn.Linear`` stacks applied to the last axis, which is exactly a 1x1 convolution on an
image of latents and also decodes a flat ``[N, F]`` batch of Gaussians for 3D queries.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FeatureDecoder", "GranularityDecoder", "LanguageField", "autocast_dtype", "init_latents",
           "render_channels"]


class FeatureDecoder(nn.Module):
    """``[..., in_dim]`` latents -> ``[..., out_dim]`` unit-norm embeddings.

    ``in_dim -> 256``, then two residual blocks of three ``256 -> 256`` layers each (six layers,
    two residual additions), then ``256 -> out_dim`` and L2 normalisation.
    """

    def __init__(self, in_dim: int = 16, out_dim: int = 512, width: int = 256):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.block1 = self._block(width)
        self.block2 = self._block(width)
        self.out = nn.Linear(width, out_dim)

    @staticmethod
    def _block(width: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, width))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(f))
        h = torch.relu(h + self.block1(h))
        h = torch.relu(h + self.block2(h))
        y = self.out(h)
        # Normalise in fp32 even under autocast: the norm of a bf16 vector loses the last digits
        # that the relevancy's temperature of 10 amplifies.
        return F.normalize(y.float(), dim=-1, eps=1e-12)


class GranularityDecoder(nn.Module):
    """``[..., in_dim]`` latents -> ``[..., 3]`` softmax weights over (subpart, part, whole).

    ``in_dim-64-128-64-32-16-3`` with ReLUs.
    """

    def __init__(self, in_dim: int = 16, levels: int = 3):
        super().__init__()
        sizes = [in_dim, 64, 128, 64, 32, 16]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], levels))
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(f).float(), dim=-1)


class LanguageField(nn.Module):
    """Both decoders of one map. The latents themselves live in the :class:`GaussianMap`.

    ``feature_dim``: latent size F (16). ``embed_dim``: size of the teacher's embedding space.
    """

    def __init__(self, feature_dim: int = 16, embed_dim: int = 512):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.embed_dim = int(embed_dim)
        self.feature_decoder = FeatureDecoder(self.feature_dim, self.embed_dim)
        self.granularity_decoder = GranularityDecoder(self.feature_dim)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``[..., F]`` latents -> ``[..., embed_dim]`` float32 unit-norm embeddings."""
        return self.feature_decoder(f)

    def granularity(self, f: torch.Tensor) -> torch.Tensor:
        """``[..., F]`` latents -> ``[..., 3]`` level weights; no gradient reaches ``f``."""
        return self.granularity_decoder(f.detach())

    def forward(self, f: torch.Tensor):
        return self.decode(f), self.granularity(f)

    def config(self) -> dict:
        """What the constructor needs to rebuild this field (save files)."""
        return {"feature_dim": self.feature_dim, "embed_dim": self.embed_dim}


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a precision setting ("auto", "float32", "bfloat16", "float16") on
    ``device``, or None for plain float32. "auto": bfloat16 on CUDA (tensor cores; float32's range,
    so no loss scaling), float32 elsewhere."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def init_latents(n: int, feature_dim: int, device: str | torch.device = "cpu", std: float = 0.1,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[n, feature_dim]`` initial latents: small Gaussian noise, so different Gaussians start apart
    (identical latents would all receive the same decoder gradient direction at first)."""
    x = torch.randn(n, feature_dim, generator=generator) * std
    return x.to(device)


def render_channels(renderer, gaussians, channels: torch.Tensor, T_world_cam, intrinsics,
                    device: torch.device) -> torch.Tensor:
    """``[H, W, F]`` render of per-Gaussian ``channels`` ``[N, F]`` for one camera, with the
    geometry detached (only ``channels`` can receive gradients) and no background.

    ``T_world_cam``: ``[4, 4]`` camera-to-world (OpenCV optical frame), numpy or torch.
    ``intrinsics``: :class:`~gags_ros.core.types.Intrinsics` of the rendered image.
    """
    T = T_world_cam.detach().cpu().double() if torch.is_tensor(T_world_cam) else \
        torch.as_tensor(np.asarray(T_world_cam, dtype=np.float64))
    viewmat = torch.linalg.inv(T).to(device, torch.float32)[None]  # world -> camera
    K = torch.as_tensor(intrinsics.K, dtype=torch.float32, device=device)[None]
    g = gaussians
    out = renderer.render(g.means.detach(), g.quats.detach(), g.scales.detach(), g.opacities.detach(),
                          channels, viewmat, K, int(intrinsics.width), int(intrinsics.height),
                          background=None, with_depth=False)
    return out.colors[0]
