"""SAM as a three-level :class:`~gags_ros.core.teachers.base.Segmenter` (GAGS section 1).

One image-encoder pass per keyframe, then point prompts in batches through SAM's prompt encoder and
mask decoder with ``multimask_output=True``: three masks per prompt. SAM's three outputs are meant
to be nested granularities, but the decoder's output order is a training convention, not a
guarantee (and a randomly initialised model has none), so each prompt's three masks are ordered by
their area: smallest -> sub-part, middle -> part, largest -> whole. For a trained SAM this agrees
with the output order almost always; where it does not, area is what "granularity" means.

Then, as SAM's automatic mask generator does (no crop layers): predicted-IoU filter, stability
score (offset 1.0) filter, boxes, a minimum area (a plain area threshold: SAM's hole/island
clean-up runs per mask in OpenCV and is left out), box NMS, here per level; then the GAGS mask NMS
per level (:func:`mask_nms`). Everything runs on tensors of the model's device; nothing loops over
masks or mask pairs in Python.

Checkpoints: ``TeacherConfig.sam_model`` names the architecture in ``sam_model_registry``;
``sam_checkpoint`` is the path of its weights. An empty path builds the same architecture with
random initialisation, only with ``allow_random_weights``: for tests and benchmarks only (compute
cost is real, masks mean nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..types import Frame
from .base import LEVELS, LevelMasks
from ..timing import StageTimer

SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
STABILITY_OFFSET = 1.0  # SAM's automatic mask generator default
NMS_CHUNK = 64  # masks upsampled at once (bounds the 1024 x 1024 intermediate of postprocess_masks)


class CheckpointNotFoundError(FileNotFoundError):
    """A configured model checkpoint that is not on disk; the message says how to obtain it."""


def check_sam_weights(model_name: str, checkpoint: str, allow_random_weights: bool = False) -> None:
    """Raise :class:`CheckpointNotFoundError` unless ``checkpoint`` is a file, or is empty and
    ``allow_random_weights`` permits a randomly initialised model. The message names the parameter,
    the file to download and where to put it."""
    if model_name not in SAM_CHECKPOINT_URLS:
        raise ValueError(f"teacher.sam_model={model_name!r}: expected one of {sorted(SAM_CHECKPOINT_URLS)}")
    if (checkpoint and Path(checkpoint).expanduser().is_file()) or (not checkpoint and allow_random_weights):
        return
    url = SAM_CHECKPOINT_URLS[model_name]
    file = url.rsplit("/", 1)[1]
    if checkpoint:
        where = (f"SAM checkpoint not found: {checkpoint} (teacher.sam_checkpoint, model {model_name}). "
                 f"Download {file} from {url} on a machine with network access and copy it to {checkpoint}")
    else:
        where = (f"teacher.sam_checkpoint is empty, and teacher.segmenter 'sam' needs SAM weights (model "
                 f"{model_name}). Download {file} from {url} on a machine with network access, copy it "
                 f"to this machine, e.g. to ~/.ros/gags_models/{file}, and set teacher.sam_checkpoint to "
                 f"that path")
    others = "\n".join(f"  {k}: {v}" for k, v in SAM_CHECKPOINT_URLS.items())
    raise CheckpointNotFoundError(
        f"{where} (or change teacher.sam_model to the architecture of a checkpoint you have:\n{others}\n)."
        f" A randomly initialised model (tests and benchmarks only: its masks mean nothing) needs an "
        f"empty teacher.sam_checkpoint and teacher.allow_random_weights: true.")


def load_sam(model_name: str, checkpoint: str, device: str | torch.device, allow_random_weights: bool = False):
    """A ``segment_anything.modeling.Sam`` in eval mode on ``device``.

    ``checkpoint`` empty -> random initialisation (no semantics), only with ``allow_random_weights``.
    Raises :class:`CheckpointNotFoundError` otherwise, and when a path is given but missing.
    """
    from segment_anything import sam_model_registry

    check_sam_weights(model_name, checkpoint, allow_random_weights)
    # Parameters are created directly on the device (a ViT-H initialised on CPU takes many seconds);
    # the two normalisation buffers are built by a legacy constructor that ignores the context.
    with torch.device(device):
        sam = sam_model_registry[model_name]()
    sam.to(device)
    if checkpoint:
        state = torch.load(Path(checkpoint).expanduser(), map_location=device, weights_only=True)
        sam.load_state_dict(state)
    return sam.eval().requires_grad_(False)


def build_tiny_sam(device: str | torch.device = "cpu", img_size: int = 256, seed: int = 0):
    """A randomly initialised SAM of the real classes with tiny dimensions (a few hundred thousand
    parameters, 256 px input, 64 x 64 low-res masks): for CPU tests and quick benchmark runs."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, patch = 32, 16
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=32, depth=2, num_heads=2,
                                      mlp_ratio=2, out_chans=dim, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      window_size=4, global_attn_indexes=(1,)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // patch,) * 2,
                                     input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64,
                                                               num_heads=2),
                                 iou_head_depth=2, iou_head_hidden_dim=32),
    )
    return sam.to(device).eval().requires_grad_(False)


def _pairwise_intersections(flat: torch.Tensor) -> torch.Tensor:
    """``[M, M]`` pixel counts of pairwise intersections of ``flat`` ``[M, P]`` bool masks.

    One float32 matrix product: 0/1 inputs are exact and fp32 accumulation is exact below 2**24
    pixels, so counts are exact for any image up to 16 Mpx.
    """
    f = flat.float()
    return f @ f.T


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thresh: float = 0.8,
             score_thresh: float = 0.7, containment: float = 0.5, inside: float = 0.85) -> torch.Tensor:
    """GAGS mask NMS within one level; returns kept indices into ``masks``, best score first.

    masks: ``[M, H, W]`` bool; scores: ``[M]`` (GAGS: predicted IoU x stability score).

    A mask is dropped when
    - a higher-scored mask overlaps it with IoU > ``iou_thresh``; all pairs are judged at once
      (as the GAGS implementation does), so a mask suppressed by an itself-suppressed mask stays
      dropped; this removes a little more than greedy NMS would and needs no sequential loop;
    - it lies mostly inside another mask of the level (at least ``inside`` of its area) that it
      covers less than ``containment`` of: one level should hold one granularity, and a nested
      finer mask belongs to a finer level (score does not matter here);
    - its score is at most ``score_thresh``; if no mask of the level passes, the three best-scored
      do, so a level with masks never ends up empty.
    """
    m = masks.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=masks.device)
    order = torch.argsort(scores, descending=True)
    s = scores[order]
    inter = _pairwise_intersections(masks[order].flatten(1))
    area = inter.diagonal()
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)
    drop_iou = torch.triu(iou, diagonal=1).amax(0) > iou_thresh  # column j: best i < j
    frac = inter / area[:, None].clamp_min(1.0)  # frac[a, b] = |a & b| / |a|
    nested = (frac >= inside) & (frac.T < containment)
    nested.fill_diagonal_(False)
    confident = s > score_thresh
    if not bool(confident.any()):
        confident = torch.arange(m, device=masks.device) < 3
    keep = confident & ~drop_iou & ~nested.any(1)
    return order[keep]


class SamSegmenter:
    """Three levels of SAM masks from point prompts.

    ``sam``: a ``segment_anything.modeling.Sam`` (any size: tests build tiny ones from the same
    classes). ``cfg``: :class:`~gags_ros.core.config.TeacherConfig`. After each :meth:`segment`,
    ``timings`` holds seconds per stage (``image_encoder``; ``decoder``: prompt encoder and mask
    decoder; ``filtering_nms``: quality filters, upsampling of the surviving masks, box and mask NMS)
    and ``stats`` counts (prompts, masks after the quality filters and after each NMS) and
    ``pred_iou_best_mean``: the mean over prompts of the best of their three predicted IoUs, before
    any filter (a trained SAM is confident about most point prompts; NaN without prompts).
    """

    def __init__(self, sam, cfg, device: str | torch.device):
        self.sam = sam
        self.cfg = cfg
        self.device = torch.device(device)
        self.autocast = self.device.type == "cuda" and cfg.half_precision
        self.timings: dict = {}
        self.stats: dict = {}

    @classmethod
    def from_config(cls, cfg, device: str | torch.device) -> "SamSegmenter":
        """``cfg``: TeacherConfig (``sam_model``, ``sam_checkpoint``)."""
        return cls(load_sam(cfg.sam_model, cfg.sam_checkpoint, device, cfg.allow_random_weights), cfg, device)

    def input_size(self, height: int, width: int):
        """(h, w) of an image of ``height`` x ``width`` inside SAM's square input: longest side
        ``img_size``, the image's own aspect (SAM's ``ResizeLongestSide.get_preprocess_shape``)."""
        scale = self.sam.image_encoder.img_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def encoder_input(self, image: torch.Tensor):
        """``([1, 3, S, S], (h, w))``: ``image`` ``[1, 3, H, W]`` float RGB in 0-255 resized to
        :meth:`input_size`, normalised and zero-padded by ``Sam.preprocess``; (h, w) the resized size.

        The resize is computed here: segment-anything 1.0's ``apply_image_torch`` takes its target
        size from the batch and channel dimensions and squashes every image to 341 x 1024.
        """
        size = self.input_size(*image.shape[-2:])
        x = F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
        return self.sam.preprocess(x), size

    def working_size(self, height: int, width: int):
        """(h, w) at which masks are made: the frame, downscaled to at most ``max_image_height``."""
        s = min(1.0, self.cfg.max_image_height / height)
        return max(1, int(round(height * s))), max(1, int(round(width * s)))

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    @torch.no_grad()  # not inference_mode: its tensors could not be modified by training code later
    def segment(self, frame: Frame, points: Optional[np.ndarray] = None) -> List[LevelMasks]:
        """Three :class:`LevelMasks` at :meth:`working_size`; ``points`` ``[P, 2]`` (x, y) frame pixels.

        ``points`` None: a uniform grid of ``uniform_points_per_side``^2 prompts.
        """
        cfg, sam = self.cfg, self.sam
        timer = StageTimer(self.device)
        H0, W0 = frame.image.shape[:2]
        h, w = self.working_size(H0, W0)
        if points is None:
            from segment_anything.utils.amg import build_point_grid

            points = build_point_grid(cfg.uniform_points_per_side) * np.array([W0, H0])
        pts = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device).reshape(-1, 2)
        pts = pts * torch.tensor([w / W0, h / H0], device=self.device)

        with timer("image_encoder"), self._amp():
            img = torch.as_tensor(frame.image, device=self.device).permute(2, 0, 1)[None].float()
            if (h, w) != (H0, W0):
                img = F.interpolate(img, (h, w), mode="bilinear", align_corners=False, antialias=True)
            x, input_size = self.encoder_input(img)
            embedding = sam.image_encoder(x)
            image_pe = sam.prompt_encoder.get_dense_pe()

        self.stats = {"prompts": int(pts.shape[0])}
        parts, best = [self._empty((h, w))], [torch.zeros(0, device=self.device)]
        for start in range(0, pts.shape[0], cfg.prompt_batch):
            batch = pts[start:start + cfg.prompt_batch]
            with timer("decoder"), self._amp():
                low, iou = self._decode(embedding, image_pe, batch, (h, w))
            best.append(iou.amax(1))
            with timer("filtering_nms"):
                parts.append(self._filter(low, iou, input_size, (h, w)))
        with timer("filtering_nms"):
            levels = self._nms(parts, (h, w))
        self.stats["pred_iou_best_mean"] = float(torch.cat(best).mean()) if pts.shape[0] else float("nan")
        self.timings = timer.seconds
        return levels

    def _decode(self, embedding, image_pe, points, size):
        """Low-res logits ``[B, 3, h', w']`` and predicted IoU ``[B, 3]``, ordered by mask area.

        ``points`` ``[B, 2]`` (x, y) pixels of an image of ``size`` (h, w), mapped into SAM's input
        frame (:meth:`input_size`)."""
        sam = self.sam
        ih, iw = self.input_size(*size)
        coords = (points * torch.tensor([iw / size[1], ih / size[0]], device=points.device))[:, None, :]
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=self.device)
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=image_pe,
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=True)
        area = (low > sam.mask_threshold).sum((-1, -2))
        order = torch.argsort(area, dim=1, stable=True)  # smallest first: subpart, part, whole
        low = torch.take_along_dim(low, order[:, :, None, None], dim=1)
        iou = torch.take_along_dim(iou, order, dim=1)
        return low.float(), iou.float()

    def _filter(self, low, iou, input_size, size):
        """Quality filters of one batch; full-resolution masks of the survivors with level and scores."""
        from segment_anything.utils.amg import calculate_stability_score

        cfg, sam = self.cfg, self.sam
        level = torch.arange(3, device=self.device).expand_as(iou)
        keep = iou >= cfg.pred_iou_thresh  # needs no mask: filter before upsampling
        low, iou, level = low[keep], iou[keep], level[keep]
        masks, stab = [], []
        for c in range(0, low.shape[0], NMS_CHUNK):
            logits = sam.postprocess_masks(low[c:c + NMS_CHUNK, None], input_size, size)[:, 0]
            stab.append(calculate_stability_score(logits, sam.mask_threshold, STABILITY_OFFSET))
            masks.append(logits > sam.mask_threshold)
        if not masks:
            return self._empty(size)
        masks, stab = torch.cat(masks), torch.cat(stab)
        keep = (stab >= cfg.stability_score_thresh) & (masks.sum((-1, -2)) >= max(cfg.min_mask_area, 1))
        return masks[keep], iou[keep], stab[keep], level[keep]

    def _empty(self, size):
        e = torch.zeros(0, device=self.device)
        return torch.zeros(0, *size, dtype=torch.bool, device=self.device), e, e, e.long()

    def _nms(self, parts, size) -> List[LevelMasks]:
        from segment_anything.utils.amg import batched_mask_to_box
        from torchvision.ops import batched_nms

        cfg = self.cfg
        masks, iou, stab, level = (torch.cat(t) for t in zip(*parts))
        self.stats["masks_filtered"] = int(masks.shape[0])
        keep = batched_nms(batched_mask_to_box(masks).float(), iou, level, cfg.box_nms_thresh)
        masks, iou, stab, level = masks[keep], iou[keep], stab[keep], level[keep]
        self.stats["masks_box_nms"] = int(masks.shape[0])
        out = []
        for k, name in enumerate(LEVELS):
            sel = torch.nonzero(level == k).squeeze(1)
            kept = sel[mask_nms(masks[sel], iou[sel] * stab[sel], cfg.mask_nms_iou, cfg.mask_nms_score,
                                cfg.mask_nms_containment, cfg.mask_nms_inside)]
            out.append(LevelMasks(masks[kept], iou[kept]))
            self.stats[f"masks_{name}"] = int(kept.shape[0])
        return out
