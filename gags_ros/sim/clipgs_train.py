"""Training of the CLIP-GS encoder: text contrastive loss + image voting loss, frozen teachers.

Triplets (object Gaussians, K rendered views, caption) come from the simulation's synthetic
objects (:func:`.clipgs_objects.scene_objects`) and, optionally, from a map's own clusters
(:func:`build_triplets` takes any world-frame :class:`ObjectGaussians` with captions).

Teachers (frozen while the encoder trains):

- text: the offline MiniLM sentence model (384-d), through :class:`~gags_ros.core.clipgs.text.TextEmbedder`;
- image: no pretrained image tower exists on these machines, so :class:`~gags_ros.core.clipgs.views.ImageTower`, a small
  CNN, is trained first (:func:`train_image_tower`) to map rendered views of the *training* objects
  onto their caption embeddings, then frozen. Why a trained tower rather than a hand-made view
  score: the voting weights then measure how recognisable a view really is, and the same tower
  gives the render-and-embed baseline (see docs/clipgs.md).

Losses, for a batch of B objects with unit embeddings z_b, caption embeddings t_b and view
embeddings v_bk (k = 1..K), learnable logit scale s:

- L_text: symmetric InfoNCE between z and the batch's *distinct* captions (objects sharing a
  caption are all positives of it, so two "red mug"s are not pushed apart);
- L_img (voting): for each view index k, symmetric InfoNCE between z and v_.k, the term of object b
  weighted by S_bk = max(0, cos(v_bk, t_b)), normalised by the sum of weights; ``voting=False``
  gives every term weight 1 (the "uniform views" ablation);
- L = text_weight * L_text + image_weight * L_img.

CLI::

    python -m gags_ros.sim.clipgs_train --out runs/clipgs.pt --seed 0 [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.clipgs.classify import classification_metrics, render_and_embed, retrieval_metrics
from ..core.clipgs.encoder import EncoderConfig, ClipGSEncoder, save_encoder
from ..core.clipgs.objects import ObjectGaussians, attributes, canonicalize
from ..core.clipgs.text import TextEmbedder, TextFn
from ..core.clipgs.views import VIEW_KINDS, ImageTower, render_views, view_cameras
from ..core.render.factory import make_renderer
from .clipgs_objects import scene_objects
from .scene import CATEGORIES
from .text_model import encode_texts

__all__ = ["TrainConfig", "Triplets", "quick_config", "full_config", "synthetic_split", "build_triplets",
           "train_image_tower", "embed_views", "train_encoder", "init_from_xyzrgb", "text_infonce",
           "image_voting_infonce", "evaluate", "encode_attrs", "view_weight_stats", "main"]


@dataclass
class TrainConfig:
    """Everything one training run needs besides the encoder's shape.

    Scenes: training objects come from simulated rooms ``seed * 10000 + [0, train_scenes)``,
    held-out ones from ``seed * 10000 + 5000 + [0, test_scenes)``: disjoint rooms, so every held-out
    object is an instance never seen in training (its categories and label words are shared).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    seed: int = 0
    device: str = "cpu"
    renderer: str = "auto"           # render.make_renderer name for the views
    train_scenes: int = 200
    test_scenes: int = 40
    oversample: float = 1.5          # synthetic Gaussians per object = oversample * budget (then FPS)
    views: int = 5                   # K rendered views per object (the paper uses 5)
    view_size: int = 64              # px, square
    bad_view_prob: float = 0.3       # chance that a training view is from below / too close / occluded
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    text_weight: float = 1.0
    image_weight: float = 1.0
    voting: bool = True
    tower_steps: int = 1500
    tower_batch: int = 128
    tower_lr: float = 2e-3
    tower_width: int = 32
    log_every: int = 100


def quick_config(seed: int = 0, device: str = "cpu") -> TrainConfig:
    """Small model and data for a 2-core CPU (minutes): 256 Gaussians, 32 patches of 16,
    2 layers x 96 wide; 32x32 views."""
    enc = EncoderConfig(width=96, depth=2, heads=4, mlp_ratio=2.0, num_patches=32, patch_size=16, budget=256,
                       pointnet_width=32)
    return TrainConfig(encoder=enc, seed=seed, device=device, train_scenes=40, test_scenes=12, views=5,
                       view_size=32, steps=200, batch_size=32, lr=1e-3, warmup=15, tower_steps=300,
                       tower_batch=96, tower_width=16, log_every=50)


def full_config(seed: int = 0, device: str = "cuda") -> TrainConfig:
    """The default encoder (4 x 256, 64 patches of 32 out of 1024 Gaussians), 64x64 views (a GPU run)."""
    return TrainConfig(seed=seed, device=device)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

@dataclass
class Triplets:
    """M training or test objects.

    attrs ``[M, budget, 19]`` canonical attributes; captions / categories ``[M]``; text ``[M, E]``
    caption embeddings; views ``[M, K, 3, S, S]`` (None when not rendered) and their ``kinds``;
    full ``[M]`` canonical objects with every kept Gaussian (for rendering).
    """

    attrs: torch.Tensor
    captions: List[str]
    categories: List[str]
    text: torch.Tensor
    views: Optional[torch.Tensor]
    kinds: List[List[str]]
    full: List[ObjectGaussians]

    def __len__(self) -> int:
        return int(self.attrs.shape[0])


def synthetic_split(cfg: TrainConfig, split: str) -> list:
    """The synthetic objects of ``split`` ("train" or "test"), see :class:`TrainConfig`."""
    base = cfg.seed * 10000 + (0 if split == "train" else 5000)
    n = cfg.train_scenes if split == "train" else cfg.test_scenes
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
    return scene_objects(range(base, base + n), int(round(cfg.oversample * cfg.encoder.budget)), rng)


def build_triplets(
    objs: Sequence[ObjectGaussians],    # world frame
    captions: Sequence[str],
    categories: Sequence[str],
    cfg: TrainConfig,
    text: TextFn,
    renderer=None,                      # None: no views rendered
    rng: Optional[np.random.Generator] = None,
    bad_view_prob: Optional[float] = None,
) -> Triplets:
    """Canonicalise ``objs`` with the encoder's settings and, given a renderer, render K training
    views of each (:func:`.views.view_cameras`)."""
    e = cfg.encoder
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    dev = torch.device(cfg.device)
    attrs, full, views, kinds = [], [], [], []
    for i, o in enumerate(objs):
        # Own generator per object: padding draws must not depend on what ran before (global RNG).
        pad = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        c = canonicalize(o.to(dev), budget=e.budget, up=e.up, min_opacity=e.min_opacity, resample=e.resample,
                         generator=pad)
        attrs.append(attributes(c.gaussians))
        full.append(c.full)
        if renderer is not None:
            vs = view_cameras(cfg.views, rng, cfg.bad_view_prob if bad_view_prob is None else bad_view_prob)
            views.append(render_views(renderer, c.full, vs, cfg.view_size, rng))
            kinds.append(vs.kinds)
    return Triplets(torch.stack(attrs), list(captions), list(categories), text(list(captions)).to(dev),
                    torch.stack(views) if views else None, kinds, full)


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------

def text_infonce(
    z: torch.Tensor,          # [B, E] unit object embeddings
    t: torch.Tensor,          # [B, E] unit caption embeddings of each object
    caption_ids: torch.Tensor,  # [B] int, equal for equal captions
    scale: torch.Tensor,      # [] logit scale
) -> torch.Tensor:
    """Symmetric InfoNCE against the distinct captions of the batch (multi-positive text side)."""
    uniq, inv = torch.unique(caption_ids, return_inverse=True)
    first = torch.zeros(len(uniq), dtype=torch.long, device=z.device).scatter_(
        0, inv.flip(0), torch.arange(len(inv) - 1, -1, -1, device=z.device))
    T = t[first]                                                       # [U, E]
    logits = scale * z @ T.T                                           # [B, U]
    l_g2t = F.cross_entropy(logits, inv)
    target = F.one_hot(inv, len(uniq)).T.float()                       # [U, B]
    target = target / target.sum(dim=1, keepdim=True)
    l_t2g = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (l_g2t + l_t2g)


def image_voting_infonce(
    z: torch.Tensor,          # [B, E]
    v: torch.Tensor,          # [B, K, E] unit view embeddings
    w: torch.Tensor,          # [B, K] non-negative weights (S_i, or ones)
    scale: torch.Tensor,
) -> torch.Tensor:
    """Per view index k, symmetric InfoNCE between objects and their k-th views; each (b, k) term
    weighted by ``w[b, k]``; the weighted mean over all terms."""
    B, K, _ = v.shape
    logits = scale * torch.einsum("be,cke->kbc", z, v)                 # [K, B, B]: z_b . v_ck
    labels = torch.arange(B, device=z.device).repeat(K)
    g2i = F.cross_entropy(logits.reshape(K * B, B), labels, reduction="none").reshape(K, B)
    i2g = F.cross_entropy(logits.transpose(1, 2).reshape(K * B, B), labels, reduction="none").reshape(K, B)
    wk = w.T
    return (wk * 0.5 * (g2i + i2g)).sum() / wk.sum().clamp_min(1e-8)


def _clip_scale(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(0, math.log(100.0)).exp()


# ------------------------------------------------------------------------------------------------
# Image tower
# ------------------------------------------------------------------------------------------------

def train_image_tower(trip: Triplets, cfg: TrainConfig, log: Callable[[str], None] = print) -> ImageTower:
    """Train the CNN on the clean (view, caption) pairs of ``trip`` (text side frozen), return it
    frozen. Views from below, too close or occluded are left out of its training."""
    dev = torch.device(cfg.device)
    g = torch.Generator().manual_seed(cfg.seed * 7 + 1)
    torch.manual_seed(cfg.seed * 7 + 1)
    tower = ImageTower(trip.text.shape[1], cfg.tower_width).to(dev)
    opt = torch.optim.AdamW(tower.parameters(), lr=cfg.tower_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.tower_lr, total_steps=max(cfg.tower_steps, 1), pct_start=0.1)
    M, K = trip.views.shape[:2]
    cap_ids = _caption_ids(trip.captions).to(dev)
    imgs = trip.views.reshape(M * K, *trip.views.shape[2:])
    # Clean views only: a pretrained tower (EVA-CLIP in the paper) never saw our degraded views
    # either, so its agreement with the caption drops on them; that drop is what voting uses.
    good = torch.tensor([k == "good" for row in trip.kinds for k in row]) if trip.kinds else torch.ones(M * K, dtype=torch.bool)
    pool = torch.nonzero(good).squeeze(1)
    if pool.numel() == 0:
        raise ValueError("train_image_tower: no clean views to train on")
    tower.train()
    for step in range(cfg.tower_steps):
        pick = pool[torch.randint(0, len(pool), (min(cfg.tower_batch, len(pool)),), generator=g)].to(dev)
        x = imgs[pick]
        # Cheap augmentation: horizontal flips (a mirrored view is still the same object class).
        flip = torch.rand(len(x), generator=g).to(dev) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        obj = pick // K
        loss = text_infonce(tower(x), trip.text[obj], cap_ids[obj], _clip_scale(tower.logit_scale))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.tower_steps - 1):
            log(f"[tower] step {step:5d} loss {loss.item():.4f}")
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower


@torch.no_grad()
def embed_views(tower: ImageTower, views: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``[M, K, 3, S, S]`` views -> ``[M, K, E]`` unit embeddings."""
    M, K = views.shape[:2]
    flat = views.reshape(M * K, *views.shape[2:])
    out = torch.cat([tower(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    return out.reshape(M, K, -1)


def _caption_ids(captions: Sequence[str]) -> torch.Tensor:
    lut = {c: i for i, c in enumerate(sorted(set(captions)))}
    return torch.tensor([lut[c] for c in captions])


# ------------------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------------------

def _augment(attrs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random half turns about z (canonical yaw is ambiguous for round objects) and a small
    position jitter. ``attrs`` ``[B, N, 19]`` -> same."""
    B = attrs.shape[0]
    flip = (torch.rand(B, generator=g) < 0.5).to(attrs.device)
    sign = torch.ones(attrs.shape[-1], device=attrs.device)
    sign[[0, 1]] = -1.0                 # x, y of the position
    if attrs.shape[-1] > 6:
        sign[10:16] = -1.0              # rows 0 and 1 of the rotation matrix: R' = diag(-1,-1,1) R
    out = torch.where(flip[:, None, None], attrs * sign, attrs)
    jitter = torch.randn(out.shape[:-1] + (3,), generator=g).to(attrs.device) * 0.005
    return torch.cat([out[..., :3] + jitter, out[..., 3:]], dim=-1)


def train_encoder(
    enc_cfg: EncoderConfig,
    trip: Triplets,
    view_emb: Optional[torch.Tensor],   # [M, K, E] frozen image-tower embeddings (None: text loss only)
    cfg: TrainConfig,
    voting: Optional[bool] = None,
    log: Callable[[str], None] = print,
    init: Optional[ClipGSEncoder] = None,
    steps: Optional[int] = None,
) -> tuple:
    """Train one encoder; returns ``(encoder in eval mode, history)`` where history holds the
    per-step ``loss``, ``text`` and ``image`` values. ``init``: start from this encoder's weights
    (a copy; see :func:`init_from_xyzrgb`) instead of a random initialisation; ``steps``: override
    ``cfg.steps`` (fine-tuning)."""
    dev = torch.device(cfg.device)
    voting = cfg.voting if voting is None else voting
    torch.manual_seed(cfg.seed * 7 + 2)
    g = torch.Generator().manual_seed(cfg.seed * 7 + 3)
    if init is not None:
        if dataclasses.asdict(init.cfg) != dataclasses.asdict(enc_cfg):
            raise ValueError("train_encoder: init's config differs from enc_cfg")
        enc = ClipGSEncoder(enc_cfg).to(dev)
        enc.load_state_dict(init.state_dict())
    else:
        enc = ClipGSEncoder(enc_cfg).to(dev)
    n_steps = cfg.steps if steps is None else int(steps)
    decay = [p for n, p in enc.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in enc.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    total = max(n_steps, 1)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(total - cfg.warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    cap_ids = _caption_ids(trip.captions).to(dev)
    M = len(trip)
    if view_emb is not None:
        S = (view_emb * trip.text[:, None, :]).sum(-1).clamp_min(0.0)  # [M, K] voting weights
        W = S if voting else torch.ones_like(S)
    hist = {"loss": [], "text": [], "image": []}
    n_orders = len(enc_cfg.orders)
    enc.train()
    for step in range(n_steps):
        pick = torch.randperm(M, generator=g)[: min(cfg.batch_size, M)].to(dev)
        x = _augment(trip.attrs[pick], g)
        order = int(torch.randint(0, n_orders, (1,), generator=g)) if enc_cfg.tokenizer == "gs" else 0
        z = enc(x, order=order)
        scale = _clip_scale(enc.logit_scale)
        l_text = text_infonce(z, trip.text[pick], cap_ids[pick], scale)
        loss = cfg.text_weight * l_text
        l_img = torch.zeros((), device=dev)
        if view_emb is not None and cfg.image_weight > 0:
            l_img = image_voting_infonce(z, view_emb[pick], W[pick], scale)
            loss = loss + cfg.image_weight * l_img
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        sched.step()
        hist["loss"].append(loss.item()); hist["text"].append(l_text.item()); hist["image"].append(l_img.item())
        if cfg.log_every and (step % cfg.log_every == 0 or step == n_steps - 1):
            log(f"[encoder] step {step:5d} loss {hist['loss'][-1]:.4f} text {hist['text'][-1]:.4f} "
                f"image {hist['image'][-1]:.4f} scale {scale.item():.1f}")
    enc.eval()
    return enc, hist


@torch.no_grad()
def init_from_xyzrgb(xyzrgb: ClipGSEncoder, cfg: Optional[EncoderConfig] = None) -> ClipGSEncoder:
    """The paper's initialisation recipe in miniature: a CLIP-GS encoder (GS tokenizer, all 19
    attributes) whose every shared part is copied from a trained position + colour encoder
    (``attributes="xyzrgb"``, ``tokenizer="point"``) and whose 3DGS-attribute branch is
    zero-initialised, so it starts out computing exactly what ``xyzrgb`` computes.

    Copied: the mini PointNet over position + colour, the token projection, the positional MLP,
    CLS, transformer, norm, head and logit scale. Zeroed: the refinement branch's last layer (its
    output, added to the PointNet's, is 0 while its hidden layers keep their random start so
    gradients flow once the last layer moves), the serialisation-order embedding and the sequence
    embedding (the point encoder has neither; the transformer without them is order-invariant, so
    reading the patches in a curve's order changes nothing). ``cfg``: the new encoder's config
    (default: xyzrgb's with ``attributes="all"``, ``tokenizer="gs"``).
    """
    src = xyzrgb.cfg
    if src.attributes != "xyzrgb" or src.tokenizer != "point":
        raise ValueError(f"init_from_xyzrgb: expected an xyz+rgb point encoder, got attributes={src.attributes!r}, "
                         f"tokenizer={src.tokenizer!r}")
    cfg = cfg or dataclasses.replace(src, attributes="all", tokenizer="gs")
    if cfg.tokenizer != "gs" or cfg.attributes != "all":
        raise ValueError("init_from_xyzrgb: the new encoder must use the GS tokenizer on all attributes")
    enc = ClipGSEncoder(cfg).to(xyzrgb.device)
    missing, unexpected = enc.load_state_dict(xyzrgb.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"init_from_xyzrgb: shapes differ ({unexpected})")
    last = enc.tokenizer.refine_mlp.net[-1]
    for p in (last.weight, last.bias, enc.tokenizer.order_embed.weight, enc.seq_embed):
        p.zero_()
    left = [k for k in missing if not (k.startswith("tokenizer.refine_mlp.") or k in
                                       ("tokenizer.order_embed.weight", "seq_embed"))]
    if left:
        raise ValueError(f"init_from_xyzrgb: not initialised from xyz+rgb: {left}")
    return enc


@torch.no_grad()
def encode_attrs(enc: ClipGSEncoder, attrs: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """``[M, N, 19]`` canonical attributes -> ``[M, E]`` (eval mode)."""
    enc.eval()
    return torch.cat([enc(attrs[i:i + batch]) for i in range(0, len(attrs), batch)])


def evaluate(obj_emb: torch.Tensor, trip: Triplets, vocabulary: Sequence[str], text: TextFn) -> dict:
    """Top-1/top-5 zero-shot classification over ``vocabulary`` and text -> object R@1/R@5."""
    out = classification_metrics(obj_emb, trip.categories, vocabulary, text)
    out.update(retrieval_metrics(obj_emb, trip.captions, text))
    return out


def view_weight_stats(view_emb: torch.Tensor, trip: Triplets) -> dict:
    """Mean voting weight S per view kind (does the tower give bad views less weight?)."""
    S = (view_emb * trip.text[:, None, :]).sum(-1).cpu()
    out = {}
    for kind in VIEW_KINDS:
        mask = torch.tensor([[k == kind for k in row] for row in trip.kinds])
        if mask.any():
            out[kind] = float(S[mask].mean())
    return out


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gags_ros.sim.clipgs_train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="encoder file to write (.pt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    ap.add_argument("--renderer", default="auto", help="views: auto (gsplat on CUDA), torch or gsplat")
    ap.add_argument("--quick", action="store_true", help="small model and data (CPU minutes)")
    ap.add_argument("--steps", type=int, help="override encoder training steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = quick_config(args.seed, args.device) if args.quick else full_config(args.seed, args.device)
    if args.steps is not None:
        cfg.steps = args.steps
    cfg.renderer = args.renderer
    t0 = time.perf_counter()
    text = TextEmbedder(encode_texts)
    renderer = make_renderer(cfg.renderer, cfg.device)
    train_objs = synthetic_split(cfg, "train")
    test_objs = synthetic_split(cfg, "test")
    vocab = sorted({o.category for o in train_objs} | set(CATEGORIES))
    rng = np.random.default_rng([cfg.seed, 2])
    train = build_triplets([o.gaussians for o in train_objs], [o.label for o in train_objs],
                           [o.category for o in train_objs], cfg, text, renderer, rng)
    test = build_triplets([o.gaussians for o in test_objs], [o.label for o in test_objs],
                          [o.category for o in test_objs], cfg, text, None, rng)
    print(f"[data] {len(train)} training objects, {len(test)} held out, {time.perf_counter() - t0:.1f} s")
    tower = train_image_tower(train, cfg)
    view_emb = embed_views(tower, train.views)
    print(f"[tower] mean voting weight per view kind: {view_weight_stats(view_emb, train)}")
    enc, hist = train_encoder(cfg.encoder, train, view_emb, cfg)
    metrics = evaluate(encode_attrs(enc, test.attrs), test, vocab, text)
    re = render_and_embed([o.gaussians for o in test_objs], tower, renderer, cfg.views, cfg.view_size,
                          up=cfg.encoder.up, min_opacity=cfg.encoder.min_opacity)
    metrics_re = evaluate(re, test, vocab, text)
    print(f"[eval] held-out CLIP-GS {json.dumps(metrics)}")
    print(f"[eval] held-out render-and-embed {json.dumps(metrics_re)}")
    meta = {"train_config": dataclasses.asdict(cfg), "vocabulary": vocab, "text_model": "all-MiniLM-L6-v2",
            "metrics_heldout": metrics, "metrics_heldout_render_embed": metrics_re,
            "final_loss": hist["loss"][-1] if hist["loss"] else None,
            "image_tower": {"config": tower.config(), "view_size": cfg.view_size, "views": cfg.views}}
    save_encoder(args.out, enc, meta, image_tower=tower)
    print(f"[done] wrote {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
