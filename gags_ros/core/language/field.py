"""The language field: per-Gaussian latents and the two decoders of GAGS (section 2).

Each Gaussian carries a ``feature_dim``-d latent (``gaussians.features``, 16 by default),
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

__all__ = ["DecodeDot", "FeatureDecoder", "GranularityDecoder", "LanguageField", "autocast_dtype",
           "init_latents", "render_channels"]


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

    def decode_dot(self, f: torch.Tensor, vecs: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``[n, F]`` latents, ``[V, D]`` vectors -> ``[n, V]`` float32 ``decode(f) @ vecs.T`` (cosines
        for unit ``vecs``), without materialising the ``[n, D]`` embeddings. ``dtype``: arithmetic of
        the hidden layers (bfloat16 / float16, as under autocast; None = float32). Inference only.
        For many chunks of latents build the plan once: ``self.dot_plan(vecs, dtype)(f)``."""
        return self.dot_plan(vecs, dtype)(f)

    def dot_plan(self, vecs: torch.Tensor, dtype: Optional[torch.dtype] = None) -> "DecodeDot":
        """The :meth:`decode_dot` of ``vecs`` ``[V, D]`` as a callable ``[n, F] -> [n, V]``. The
        text-independent part (cast weights, folded biases, the QR factor of the last layer) is
        cached until a decoder parameter changes (in-place optimiser steps bump their versions)."""
        dec = self.feature_decoder
        params = list(dec.parameters())
        dev = params[0].device
        dt = dtype or torch.float32
        key = (str(dev), dt) + tuple((p.data_ptr(), p._version) for p in params)
        cache = self.__dict__.get("_dot_cache")
        if cache is None or cache[0] != key:
            cache = (key, _DecoderFold(dec, dt))
            self.__dict__["_dot_cache"] = cache     # not a buffer: never saved, rebuilt on demand
        return DecodeDot(cache[1], vecs.to(dev, torch.float32))

    def granularity(self, f: torch.Tensor) -> torch.Tensor:
        """``[..., F]`` latents -> ``[..., 3]`` level weights; no gradient reaches ``f``."""
        return self.granularity_decoder(f.detach())

    def forward(self, f: torch.Tensor):
        return self.decode(f), self.granularity(f)

    def config(self) -> dict:
        """What the constructor needs to rebuild this field (save files)."""
        return {"feature_dim": self.feature_dim, "embed_dim": self.embed_dim}


def _linear_relu(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(x @ wt + b)``; on CUDA one GEMM with the bias and ReLU in its epilogue."""
    if hasattr(torch, "_addmm_activation"):
        return torch._addmm_activation(b, x, wt)
    return torch.addmm(b, x, wt).relu_()


def _residual_relu_(h: torch.Tensor, t: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """``h = relu(h + t @ wt)`` in place; with recent torch on CUDA one cuBLASLt GEMM reading ``h``
    as its C operand with the ReLU in its epilogue (otherwise the GEMM and an in-place ReLU)."""
    if hasattr(torch, "_addmm_activation"):
        return torch._addmm_activation(h, t, wt, out=h)
    return h.addmm_(t, wt).relu_()


def _mm_float(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float32 for float32 or low-precision operands (float32 accumulation and output,
    so the numbers that the relevancy compares are not rounded to bfloat16)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)   # cuBLAS, float32 output (torch >= 2.8)
        except (TypeError, RuntimeError, NotImplementedError):
            return (a @ b).float()                           # older torch: no float32 copy of a
    return a.float() @ b.float()


class _DecoderFold:
    """The feature decoder rearranged for :class:`DecodeDot` (all derived in float64).

    The bias of a residual block's last layer rides in its GEMM: the block's middle layer gets an
    extra output unit that is always 1 (zero weights, bias 1; padded to 8 units for aligned
    operands) and the last layer a matching input row holding the bias, so
    ``relu(h + L3(t))`` is one in-place GEMM (``h = relu(h + t' @ W3')``: beta = 1, ReLU in the
    epilogue), not bias, add and ReLU passes over ``[n, width]``. The last layer ``y = W h + b`` is never
    formed: ``y . v = h . (W^T v) + b . v``, and with the QR factors ``W = Q R``,
    ``||y||^2 = ||R h + Q^T b||^2 + ||b - Q Q^T b||^2`` (exact, any rank): a width-wide GEMM
    instead of the D-wide one.
    """

    PAD = 8

    def __init__(self, dec, dt: torch.dtype):
        def w(lin):
            return lin.weight.detach().double()

        def bias(lin):
            return lin.bias.detach().double()

        def cast(x):
            return x.to(dt).contiguous()

        self.dtype = dt
        self.w0t, self.b0 = cast(w(dec.inp).T), cast(bias(dec.inp))
        self.blocks = []
        for blk in (dec.block1, dec.block2):
            l1, l2, l3 = blk[0], blk[2], blk[4]
            width = w(l2).shape[0]
            w2 = torch.zeros(width + self.PAD, width, dtype=torch.float64, device=w(l2).device)
            w2[:width] = w(l2)
            b2 = torch.zeros(width + self.PAD, dtype=torch.float64, device=w2.device)
            b2[:width], b2[width] = bias(l2), 1.0              # unit `width` is relu(0 + 1) = 1
            w3t = torch.zeros(width + self.PAD, width, dtype=torch.float64, device=w2.device)
            w3t[:width], w3t[width] = w(l3).T, bias(l3)        # ... and carries the bias
            self.blocks.append((cast(w(l1).T), cast(bias(l1)), cast(w2.T), cast(b2), cast(w3t)))
        W = w(dec.out)                                         # [D, width]
        bout = bias(dec.out)
        q, r = torch.linalg.qr(W.cpu())                        # small; the CPU's LAPACK, no solver setup
        q, r = q.to(W.device), r.to(W.device)
        c = q.T @ bout
        self.rt, self.c = cast(r.T), cast(c)
        self.r0 = float((bout - q @ c).pow(2).sum())           # part of ||y||^2 no latent can change
        self.w_out = W.float()                                 # [D, width], for the text projections
        self.b_out = bout.float()


class DecodeDot:
    """``[n, F]`` latents -> ``[n, V]`` float32 ``decode(f) @ vecs.T`` (see :meth:`LanguageField.dot_plan`)."""

    def __init__(self, fold: _DecoderFold, vecs: torch.Tensor):
        self.fold = fold
        V = vecs.shape[0]
        pad = -V % 8                                           # aligned GEMM operand
        proj = fold.w_out.T @ vecs.T                           # [width, V]
        self.proj = torch.nn.functional.pad(proj, (0, pad)).to(fold.dtype).contiguous()
        self.bias = vecs @ fold.b_out                          # [V]
        self.V = V

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        # the plan fixes its own arithmetic: an enclosing autocast must not recast it
        with torch.no_grad(), torch.autocast(f.device.type, enabled=False):
            return self._dots(f)

    def _dots(self, f: torch.Tensor) -> torch.Tensor:
        fd = self.fold
        h = _linear_relu(f.to(fd.dtype), fd.w0t, fd.b0)       # [n, width]
        for w1t, b1, w2t, b2, w3t in fd.blocks:
            t = _linear_relu(h, w1t, b1)
            t = _linear_relu(t, w2t, b2)                       # [n, width + PAD], unit `width` = 1
            _residual_relu_(h, t, w3t)                         # relu(h + L3(t)), bias included
        dots = _mm_float(h, self.proj)[:, :self.V] + self.bias            # [n, V] = y . v
        z = torch.addmm(fd.c, h, fd.rt)                                    # [n, width]
        norm = torch.linalg.vector_norm(z, dim=-1, dtype=torch.float32)   # ||y|| less the constant part
        if fd.r0 > 0:
            norm = torch.sqrt(norm.square_() + fd.r0)
        return dots / norm.clamp_min_(1e-12)[:, None]          # as F.normalize's eps


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
