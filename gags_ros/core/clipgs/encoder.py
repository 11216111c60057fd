"""The CLIP-GS object encoder: GS tokenizer -> transformer -> projection into the teacher's space.

Sized to train from scratch here (the paper starts from Uni3D's ViT-B, ~88M parameters; no such
weights exist on these machines): the default is 4 layers, 256 wide, 4 heads, 64 patches of 32
Gaussians out of 1024 per object, about 3.5M parameters.

Tokens: one CLS token, then the patch tokens in serialised order. Each patch token gets a
positional embedding from its centre (an MLP of xyz, as Point-BERT / Uni3D); with serialisation it
also gets the embedding of its index in the order and the order indicator (added by the
tokenizer), so the sequence order carries information the set of centres alone does not. The output
is the final CLS state concatenated with the max over patch states, projected to the teacher's
dimension (384 for MiniLM) and L2-normalised.

Save format (:func:`save_encoder`): ``torch.save`` of
``{"format": "gags_ros.clipgs", "version": 1, "config": {...}, "state": state_dict, "meta": {...}}``,
written to a temporary file and renamed, so a crash never leaves half a file. Read back
weights-only (no code runs from a file); ``python -m gags_ros.core.clipgs.encoder --convert OLD NEW``
rewrites files of older versions whose metadata held numpy numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .objects import ATTR_DIM, ObjectGaussians, attributes, canonicalize
from .tokenizer import ORDERS, GSTokenizer

__all__ = ["FORMAT", "FORMAT_VERSION", "EncoderConfig", "ClipGSEncoder", "save_encoder", "load_encoder",
           "load_image_tower", "convert"]

FORMAT = "gags_ros.clipgs"
FORMAT_VERSION = 1


@dataclass
class EncoderConfig:
    """Shape of one encoder (everything needed to rebuild it before loading weights). Not the node's
    ``clipgs`` parameters (``gags_ros.core.config.ClipGSConfig``: services, vocabulary, proposals).

    ``attributes``: "all" (the 19-d vector) or "xyzrgb" (point-cloud baseline).
    ``tokenizer``: "gs" (both branches + serialisation orders) or "point" (one mini PointNet over
    the chosen attributes, no serialisation: with "all" this is the "raw attributes" ablation).
    Canonicalisation: ``budget`` Gaussians per object, ``up`` axis of the map (world frame),
    ``min_opacity`` drop threshold, ``resample`` ("fps" or "random").
    """

    embed_dim: int = 384
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    num_patches: int = 64
    patch_size: int = 32
    budget: int = 1024
    pointnet_width: int = 64
    attributes: str = "all"
    tokenizer: str = "gs"
    orders: List[str] = field(default_factory=lambda: list(ORDERS))
    inference_order: int = 1          # index into orders used at inference ("z")
    up: List[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    min_opacity: float = 0.05
    resample: str = "fps"

    def __post_init__(self) -> None:
        if self.attributes not in ("all", "xyzrgb"):
            raise ValueError(f"EncoderConfig.attributes must be 'all' or 'xyzrgb', got {self.attributes!r}")
        if self.tokenizer not in ("gs", "point"):
            raise ValueError(f"EncoderConfig.tokenizer must be 'gs' or 'point', got {self.tokenizer!r}")
        if self.patch_size > self.budget or self.num_patches > self.budget:
            raise ValueError(f"EncoderConfig: patches ({self.num_patches} x {self.patch_size}) need at most "
                             f"budget={self.budget} Gaussians each")
        if self.width % self.heads:
            raise ValueError(f"EncoderConfig: width {self.width} is not divisible by heads {self.heads}")

    @property
    def attr_dim(self) -> int:
        return ATTR_DIM if self.attributes == "all" else 6


class ClipGSEncoder(nn.Module):
    """``[B, N, 19]`` canonical attributes -> ``[B, embed_dim]`` unit embeddings."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        gs = cfg.tokenizer == "gs"
        self.tokenizer = GSTokenizer(cfg.attr_dim, cfg.width, cfg.num_patches, cfg.patch_size,
                                     refine=gs, serialize=gs, pointnet_width=cfg.pointnet_width,
                                     orders=cfg.orders)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.width))
        self.seq_embed = nn.Parameter(torch.zeros(cfg.num_patches, cfg.width)) if gs else None
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, cfg.width))
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, int(cfg.width * cfg.mlp_ratio), cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(2 * cfg.width, cfg.embed_dim)
        # CLIP's learnable temperature, kept with the encoder so a checkpoint resumes training exactly.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        if self.seq_embed is not None:
            nn.init.trunc_normal_(self.seq_embed, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.cls.device

    def forward(
        self,
        attrs: torch.Tensor,          # [B, N, 19] (or [B, N, 6] when attributes == "xyzrgb")
        order: Optional[int] = None,  # serialisation order; None = cfg.inference_order
    ) -> torch.Tensor:
        """``[B, embed_dim]`` L2-normalised embeddings."""
        if attrs.shape[-1] == ATTR_DIM and self.cfg.attr_dim != ATTR_DIM:
            attrs = attrs[..., : self.cfg.attr_dim]
        order = self.cfg.inference_order if order is None else int(order)
        tok, centres = self.tokenizer(attrs, order)                          # [B, g, W], [B, g, 3]
        tok = tok + self.pos_embed(centres)
        if self.seq_embed is not None:
            tok = tok + self.seq_embed
        B = tok.shape[0]
        x = torch.cat([(self.cls + self.cls_pos).expand(B, -1, -1), tok], dim=1)
        x = self.norm(self.blocks(x))
        z = self.head(torch.cat([x[:, 0], x[:, 1:].amax(dim=1)], dim=-1))
        return F.normalize(z, dim=-1)

    # -- objects in, embeddings out ------------------------------------------------------------

    def prepare(self, objs: Sequence[ObjectGaussians]) -> torch.Tensor:
        """Canonicalise objects with this encoder's settings: ``[B, budget, 19]`` attributes.
        Deterministic: an object always gives the same attributes (fixed-seed padding draws)."""
        c = self.cfg
        out = []
        for o in objs:
            g = torch.Generator().manual_seed(0)
            out.append(attributes(canonicalize(o.to(self.device), budget=c.budget, up=c.up, min_opacity=c.min_opacity,
                                               resample=c.resample, generator=g).gaussians))
        return torch.stack(out)

    @torch.no_grad()
    def encode_objects(self, objs: Sequence[ObjectGaussians], batch_size: int = 64) -> torch.Tensor:
        """``[B, embed_dim]`` unit embeddings of world-frame objects (eval mode, no gradients)."""
        was = self.training
        self.eval()
        try:
            out = [self(self.prepare(objs[i:i + batch_size])) for i in range(0, len(objs), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.cfg.embed_dim, device=self.device)


def _plain(x):
    """``x`` with numpy scalars and arrays as Python numbers and lists, tuples as lists: what
    weights-only loading reads back without allowing any extra type."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, torch.Tensor):   # numpy scalar or array
        return x.tolist()
    return x


def _write(path: Path, blob: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def save_encoder(path: str | Path, encoder: ClipGSEncoder, meta: Optional[dict] = None,
                 image_tower: Optional[nn.Module] = None) -> Path:
    """Write ``encoder`` (config + weights + ``meta``) atomically to ``path``; with ``image_tower``
    (:class:`.views.ImageTower`) its config and weights go in the same file (render-and-embed).
    ``meta`` holds plain data (numpy values are stored as Python numbers and lists)."""
    blob = {"format": FORMAT, "version": FORMAT_VERSION, "config": _plain(dataclasses.asdict(encoder.cfg)),
            "state": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}, "meta": _plain(meta or {})}
    if image_tower is not None:
        blob["image_tower"] = {"config": _plain(image_tower.config()),
                               "state": {k: v.detach().cpu() for k, v in image_tower.state_dict().items()}}
    return _write(Path(path), blob)


def _check(path: Path, blob) -> dict:
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a CLIP-GS encoder file (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    if blob.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: CLIP-GS format version {blob.get('version')} is not supported "
                         f"(this code reads version {FORMAT_VERSION})")
    return blob


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no CLIP-GS encoder at {path}; train one with "
                                f"`python -m gags_ros.sim.clipgs_train --out {path}`")
    # Weights only: a crafted file must not run code as the robot's user (docs/security.md).
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds more than weights and plain data, so it is not loaded (it could run "
                         f"code). Encoder files written before gags_ros read them weights-only keep numpy "
                         f"numbers in their metadata: convert such a file once, if you trust where it came "
                         f"from, with `python -m gags_ros.core.clipgs.encoder --convert {path} NEW_PATH` "
                         f"({str(e).splitlines()[0]})") from None
    return _check(path, blob)


def convert(src: str | Path, dst: str | Path) -> Path:
    """Rewrite an encoder file of the same format whose ``meta`` holds numpy scalars or arrays (as
    written before weights-only loading) into one that loads weights-only; returns ``dst``.

    Still weights-only: only numpy's scalar and array types are allowed in addition, so a file with
    any other object (code) is refused with ValueError and nothing is written.
    """
    import numpy as np

    src, dst = Path(src), Path(dst)
    allowed = [np.dtype, np.ndarray, np._core.multiarray.scalar, np._core.multiarray._reconstruct]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    try:
        with torch.serialization.safe_globals(allowed):
            blob = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{src} holds not only weights and numpy data; refused ({str(e).splitlines()[0]})") from None
    blob = _check(src, blob)
    return _write(dst, {k: (v if k == "state" else _plain(v)) for k, v in blob.items()})


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Tuple[ClipGSEncoder, dict]:
    """``(encoder in eval mode on device, meta)`` from a file written by :func:`save_encoder`."""
    path = Path(path)
    blob = _read(path)
    known = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = set(blob["config"]) - known
    if unknown:
        raise ValueError(f"{path}: unknown config fields {sorted(unknown)}")
    enc = ClipGSEncoder(EncoderConfig(**blob["config"]))
    enc.load_state_dict(blob["state"])
    return enc.to(device).eval(), blob.get("meta", {})


def load_image_tower(path: str | Path, device: str | torch.device = "cpu"):
    """The frozen :class:`.views.ImageTower` saved with an encoder (ValueError if there is none)."""
    from .views import ImageTower

    path = Path(path)
    blob = _read(path)
    if "image_tower" not in blob:
        raise ValueError(f"{path} holds no image tower (it was saved without one)")
    tower = ImageTower(**blob["image_tower"]["config"])
    tower.load_state_dict(blob["image_tower"]["state"])
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower.to(device).eval()


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gags_ros.core.clipgs.encoder",
                                 description="Convert a CLIP-GS encoder file whose metadata holds numpy "
                                             "numbers into one that loads weights-only.")
    ap.add_argument("--convert", nargs=2, metavar=("OLD", "NEW"), required=True)
    args = ap.parse_args(argv)
    try:
        print(f"wrote {convert(*args.convert)}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
