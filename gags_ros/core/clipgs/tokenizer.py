"""GS tokenizer of CLIP-GS: Gaussians -> patch tokens.

Steps (batched over objects, all in torch):

1. :func:`farthest_point_sampling` picks ``g`` patch centres among the Gaussian centres;
2. :func:`knn_patches` groups the ``n`` nearest Gaussians of each centre into a patch;
3. patches are serialised along a space-filling curve of their centres (:func:`serialize`:
   ``xyz`` lexicographic, ``z`` Morton / z-order, ``hilbert`` 3D Hilbert; all three exact on a
   ``2^bits`` grid), and an order-indicator embedding tells the encoder which order it reads;
4. :class:`GSTokenizer` embeds each patch with two branches summed:
   (a) a refinement branch over all per-Gaussian attributes (shared point-wise MLP, i.e. 1x1
   convolutions over the patch's Gaussians, with BatchNorm/ReLU, then max pooling), and
   (b) a mini PointNet over position + colour (Point-BERT's two-stage patch encoder),
   then a linear layer and LayerNorm.

The per-Gaussian attribute vector (see :mod:`.objects`) is 19 numbers: xyz 3, rgb 3, opacity 1,
squashed scale 3 and the rotation as a 3x3 matrix (9). The paper counts 14 because it stores the
rotation as a quaternion (4) before turning it into a matrix.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = ["ORDERS", "farthest_point_sampling", "knn_patches", "morton_code", "hilbert_code",
           "lexicographic_code", "serialize", "GSTokenizer", "PatchPointNet", "PatchMLP"]

ORDERS: Tuple[str, ...] = ("xyz", "z", "hilbert")


# ------------------------------------------------------------------------------------------------
# Sampling and grouping
# ------------------------------------------------------------------------------------------------

def farthest_point_sampling(
    xyz: torch.Tensor,   # [B, N, 3]
    g: int,
    start: str | int = "farthest",
) -> torch.Tensor:
    """Indices ``[B, g]`` (int64) of ``g`` farthest-point samples of each cloud.

    ``start``: ``"farthest"`` begins with the point farthest from the cloud's centroid (a choice
    that depends only on geometry, so a permuted or rigidly moved cloud gives the same picks),
    ``"first"`` with index 0, an int with that index. Vectorised over the batch: one loop of ``g``
    steps, each an O(B N) update of the distance to the chosen set. ``g > N`` is an error.
    """
    B, N, _ = xyz.shape
    if g > N:
        raise ValueError(f"farthest_point_sampling: asked for {g} points from a cloud of {N}")
    xyz = xyz.detach()
    if start == "farthest":
        cur = (xyz - xyz.mean(dim=1, keepdim=True)).square().sum(-1).argmax(dim=1)   # [B]
    elif start == "first":
        cur = torch.zeros(B, dtype=torch.long, device=xyz.device)
    else:
        cur = torch.full((B,), int(start), dtype=torch.long, device=xyz.device)
    idx = torch.empty(B, g, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device, dtype=xyz.dtype)
    ar = torch.arange(B, device=xyz.device)
    for i in range(g):
        idx[:, i] = cur
        d = (xyz - xyz[ar, cur][:, None, :]).square().sum(-1)                         # [B, N]
        dist = torch.minimum(dist, d)
        cur = dist.argmax(dim=1)
    return idx


def knn_patches(
    xyz: torch.Tensor,      # [B, N, 3]
    centres: torch.Tensor,  # [B, g, 3]
    n: int,
) -> torch.Tensor:
    """Indices ``[B, g, n]`` of the ``n`` nearest Gaussians of each centre, nearest first."""
    if n > xyz.shape[1]:
        raise ValueError(f"knn_patches: patch size {n} exceeds the {xyz.shape[1]} Gaussians")
    d = torch.cdist(centres.detach(), xyz.detach())                                    # [B, g, N]
    return d.topk(n, dim=-1, largest=False, sorted=True).indices


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, N, C]`` gathered at ``idx`` ``[B, ...]`` -> ``[B, ..., C]``."""
    B = x.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(x, 1, flat[..., None].expand(-1, -1, x.shape[-1]))
    return out.reshape(idx.shape + (x.shape[-1],))


# ------------------------------------------------------------------------------------------------
# Serialisation (space-filling curves over patch centres)
# ------------------------------------------------------------------------------------------------

def quantize(xyz: torch.Tensor, bits: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """``[..., 3]`` coordinates in [lo, hi] (canonical objects live in the unit ball) to int64 grid
    cells in ``[0, 2^bits)``; values outside are clamped."""
    cells = (1 << bits)
    q = torch.floor((xyz.detach() - lo) / (hi - lo) * cells).long()
    return q.clamp(0, cells - 1)


def lexicographic_code(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., 3]`` int64 cells -> ``[...]`` x-major, then y, then z (the "xyz" order)."""
    return (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]


def morton_code(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., 3]`` int64 cells -> ``[...]`` Morton (z-order) codes: bits interleaved x, y, z
    from the most significant level down (x highest within a level)."""
    code = torch.zeros(q.shape[:-1], dtype=torch.long, device=q.device)
    for b in range(bits - 1, -1, -1):
        for d in range(3):
            code = (code << 1) | ((q[..., d] >> b) & 1)
    return code


def hilbert_code(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., 3]`` int64 cells -> ``[...]`` 3D Hilbert indices in ``[0, 2^(3 bits))``.

    Skilling's algorithm ("Programming the Hilbert curve", AIP Conf. Proc. 707, 2004): the axes
    are turned into the curve's "transposed" index by undoing the excess work level by level and
    Gray-encoding; the index is the transpose's bits interleaved. Consecutive indices are always
    face-adjacent cells (the test checks this on a full grid), which Morton codes are not.
    """
    X = [q[..., d].clone() for d in range(3)]
    M = 1 << (bits - 1)
    Q = M
    while Q > 1:
        P = Q - 1
        for i in range(3):
            has = (X[i] & Q) != 0
            # Bit set: invert the low bits of X[0]; otherwise exchange the low bits of X[0], X[i].
            t = (X[0] ^ X[i]) & P
            x0_inv = X[0] ^ P
            x0_swp = X[0] ^ t
            xi_swp = X[i] ^ t
            if i == 0:
                X[0] = torch.where(has, x0_inv, X[0])   # exchanging X[0] with itself is a no-op
            else:
                X[0], X[i] = torch.where(has, x0_inv, x0_swp), torch.where(has, X[i], xi_swp)
        Q >>= 1
    for i in range(1, 3):
        X[i] = X[i] ^ X[i - 1]
    t = torch.zeros_like(X[0])
    Q = M
    while Q > 1:
        t = torch.where((X[2] & Q) != 0, t ^ (Q - 1), t)
        Q >>= 1
    X = [x ^ t for x in X]
    code = torch.zeros_like(X[0])
    for b in range(bits - 1, -1, -1):
        for d in range(3):
            code = (code << 1) | ((X[d] >> b) & 1)
    return code


def serialize(
    centres: torch.Tensor,  # [B, g, 3] canonical coordinates, roughly in [-1, 1]
    order: str,
    bits: int = 10,
) -> torch.Tensor:
    """Permutation ``[B, g]`` that sorts each object's patches along the curve ``order``
    (one of :data:`ORDERS`); ties (patches in one cell) keep their sampling order."""
    q = quantize(centres, bits)
    if order == "xyz":
        code = lexicographic_code(q, bits)
    elif order == "z":
        code = morton_code(q, bits)
    elif order == "hilbert":
        code = hilbert_code(q, bits)
    else:
        raise ValueError(f"unknown serialisation order {order!r}; expected one of {ORDERS}")
    return torch.sort(code, dim=-1, stable=True).indices


# ------------------------------------------------------------------------------------------------
# Patch embedding
# ------------------------------------------------------------------------------------------------

class _PointLayer(nn.Module):
    """Linear map applied to every point, then BatchNorm over all points and ReLU: exactly a 1x1
    convolution + BN + ReLU, written as a matmul on ``[M, n, C]`` (much faster than Conv1d on CPU)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.lin = nn.Linear(c_in, c_out, bias=False)   # BN's shift makes a bias redundant
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return torch.relu(self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape))


class PatchMLP(nn.Module):
    """Shared point-wise MLP (1x1 convolutions) with BatchNorm/ReLU, max-pooled over the patch:
    ``[M, n, C_in]`` -> ``[M, C_out]``. The refinement branch over all attributes."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (64, 128)):
        super().__init__()
        layers, c = [], in_dim
        for h in hidden:
            layers.append(_PointLayer(c, h))
            c = h
        layers.append(nn.Linear(c, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).amax(dim=1)


class PatchPointNet(nn.Module):
    """Point-BERT's patch encoder (mini PointNet): a shared MLP, max pool, the pooled feature
    concatenated back to every point, a second shared MLP, max pool.
    ``[M, n, C_in]`` -> ``[M, C_out]``."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 128):
        super().__init__()
        self.first = nn.Sequential(_PointLayer(in_dim, width), nn.Linear(width, 2 * width))
        self.second = nn.Sequential(_PointLayer(4 * width, 4 * width), nn.Linear(4 * width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.first(x)                                                  # [M, n, 2w]
        glob = f.amax(dim=1, keepdim=True).expand_as(f)
        return self.second(torch.cat([glob, f], dim=-1)).amax(dim=1)       # [M, out]


class GSTokenizer(nn.Module):
    """Gaussian attributes ``[B, N, A]`` -> patch tokens ``[B, g, D]`` and centres ``[B, g, 3]``.

    ``attr_dim``: A (19 for the full attribute vector, 6 for xyz+rgb). The first 6 attributes must be
    xyz then rgb. Within a patch, xyz is taken relative to the patch centre.

    Variants (the ablations of the paper):
    - ``refine=True, serialize=True``: the GS tokenizer (both branches, serialisation orders);
    - ``refine=False, serialize=False``: the plain point-cloud tokenizer (one mini PointNet over
      whatever attributes it is given: "raw attributes" with A=19, the point baseline with A=6).
    """

    def __init__(self, attr_dim: int, embed_dim: int, num_patches: int, patch_size: int,
                 refine: bool = True, serialize: bool = True, pointnet_width: int = 64,
                 orders: Sequence[str] = ORDERS):
        super().__init__()
        self.attr_dim, self.embed_dim = int(attr_dim), int(embed_dim)
        self.num_patches, self.patch_size = int(num_patches), int(patch_size)
        self.refine, self.serialize = bool(refine), bool(serialize)
        self.orders = tuple(orders)
        # Branch (b): position + colour with a mini PointNet; without the GS tokenizer it takes
        # every attribute it is given (the "raw attributes" baseline).
        pc_in = 6 if self.refine else self.attr_dim
        self.pointnet = PatchPointNet(pc_in, embed_dim, width=pointnet_width)
        # Branch (a): every attribute through the shared MLP.
        self.refine_mlp = PatchMLP(self.attr_dim, embed_dim) if self.refine else None
        self.out = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.order_embed = nn.Embedding(len(self.orders), embed_dim) if self.serialize else None

    def group(self, attrs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """FPS + kNN: ``(patches [B, g, n, A] with xyz relative to the centre, centres [B, g, 3])``."""
        xyz = attrs[..., :3]
        cidx = farthest_point_sampling(xyz, self.num_patches)
        centres = gather(xyz, cidx)                                        # [B, g, 3]
        pidx = knn_patches(xyz, centres, self.patch_size)                  # [B, g, n]
        patches = gather(attrs, pidx)                                      # [B, g, n, A]
        patches = torch.cat([patches[..., :3] - centres[:, :, None, :], patches[..., 3:]], dim=-1)
        return patches, centres

    def forward(
        self,
        attrs: torch.Tensor,  # [B, N, A]
        order: int = 0,       # index into self.orders (ignored without serialisation)
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``tokens [B, g, D]`` and ``centres [B, g, 3]``, both in serialised order."""
        B = attrs.shape[0]
        patches, centres = self.group(attrs)
        flat = patches.reshape(B * self.num_patches, self.patch_size, -1)
        if self.refine:
            tok = self.pointnet(flat[..., :6]) + self.refine_mlp(flat)
        else:
            tok = self.pointnet(flat)
        tok = self.out(tok).reshape(B, self.num_patches, self.embed_dim)
        if self.serialize:
            perm = serialize(centres, self.orders[order])
            tok = gather(tok, perm)
            centres = gather(centres, perm)
            tok = tok + self.order_embed.weight[order]
        return tok, centres
