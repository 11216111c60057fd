"""OpenCLIP as an :class:`~gags_ros.core.teachers.base.Embedder`: one embedding per mask (GAGS section 1).

Each mask becomes a CLIP input the way GAGS builds it: the image outside the mask is black, the
mask's box is padded to a square (black, content centred) and resized to ``crop_size``. Here that is
two ``roi_align`` calls per batch on the model's device, one on the image and one on the masks
(each region reading its own mask), multiplied: no per-mask image copies, no PIL. Crops are
normalised with the model's mean/std and encoded in batches of ``clip_batch`` (float16 weights on
CUDA when ``half_precision``, float32 on CPU; the crops themselves are computed in float32).

Weights: ``clip_pretrained`` is an open_clip tag (looked up in the local Hugging Face cache only:
the robot never reaches the network at run time) or the path of a weights file; empty builds the
same architecture with random initialisation, only with ``allow_random_weights``: for tests and
benchmarks only (real cost, no semantics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..types import Frame
from ..timing import StageTimer

CANONICAL_PHRASES = ("object", "things", "stuff", "texture")
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


class ClipWeightsError(FileNotFoundError):
    """Configured CLIP weights that are not on disk; the message says how to provide them."""


def resolve_clip_weights(model_name: str, pretrained: str, allow_random_weights: bool = False) -> dict:
    """``open_clip.create_model`` keyword arguments for a tag, a path or empty (random
    initialisation, only with ``allow_random_weights``): ``pretrained`` (a file or None),
    ``force_preprocess_cfg`` (the tag's mean / std) and ``force_quick_gelu``. Raises
    :class:`ClipWeightsError` naming the parameter and the weights to provide.

    A tag is resolved to its file in the local cache, and open_clip applies a tag's activation only
    when it loads by tag: tags trained with QuickGELU (``quick_gelu`` in open_clip's pretrained
    registry: ViT-B-16 ``openai``, ``dfn2b``, ``metaclip_*``) would otherwise get plain GELU, degraded
    embeddings and no error. A file path carries no tag: name a ``-quickgelu`` model for such weights.
    """
    import open_clip

    hint = (f"Provide the weights as a file and set teacher.clip_pretrained to its path. A randomly "
            f"initialised {model_name} (tests and benchmarks only: no semantics) needs an empty "
            f"teacher.clip_pretrained and teacher.allow_random_weights: true.")
    if not pretrained:
        if allow_random_weights:
            return dict(pretrained=None, force_preprocess_cfg=None, force_quick_gelu=False)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ClipWeightsError(f"teacher.clip_pretrained is empty, and teacher.segmenter 'sam' needs CLIP "
                               f"weights for {model_name}: set it to an open_clip tag whose weights are in "
                               f"the local Hugging Face cache (tags of {model_name}: {tags}) or to the path "
                               f"of a weights file, e.g. ~/.ros/gags_models/{model_name}.bin. {hint}")
    looks_like_path = Path(pretrained).suffix in _WEIGHT_SUFFIXES or "/" in pretrained
    if Path(pretrained).expanduser().is_file():
        return dict(pretrained=str(Path(pretrained).expanduser()), force_preprocess_cfg=None, force_quick_gelu=False)
    tag_cfg = None if looks_like_path else open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        if looks_like_path:
            raise ClipWeightsError(f"CLIP weights file not found: {pretrained} (teacher.clip_pretrained, "
                                   f"model {model_name}). {hint}")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ClipWeightsError(f"teacher.clip_pretrained={pretrained!r} is neither a file nor an open_clip "
                               f"tag of {model_name} (tags: {tags}). {hint}")
    repo = tag_cfg.get("hf_hub", "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return dict(pretrained=hit, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                            force_preprocess_cfg={k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg} or None)
    where = f"https://huggingface.co/{repo} (open_clip_pytorch_model.bin)" if repo else tag_cfg.get("url", "")
    raise ClipWeightsError(
        f"open_clip weights of tag {pretrained!r} for {model_name} are not in the local cache, and this "
        f"node does not download at run time. Download them where there is network access, e.g. "
        f"`python -c \"import open_clip; "
        f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` "
        f"(fills the Hugging Face cache) or from {where}. {hint}")


def load_clip(model_name: str, pretrained: str, device: str | torch.device, half: bool = True,
              allow_random_weights: bool = False, **model_kwargs):
    """``(model, tokenizer)`` of open_clip in eval mode; float16 on CUDA when ``half``.
    ``pretrained``: see :func:`resolve_clip_weights`. ``model_kwargs`` override the model's
    configuration (e.g. ``vision_cfg``; tests build tiny towers this way)."""
    import open_clip

    device = torch.device(device)
    weights = resolve_clip_weights(model_name, pretrained, allow_random_weights)
    precision = "fp16" if (half and device.type == "cuda") else "fp32"
    model = open_clip.create_model(model_name, device=device, precision=precision, **weights, **model_kwargs)
    return model.eval().requires_grad_(False), open_clip.get_tokenizer(model_name)


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32) -> dict:
    """``open_clip.create_model`` overrides that shrink ViT-B-16's towers to a few hundred thousand
    parameters (the real tokenizer and vocabulary): for CPU tests and quick benchmark runs."""
    return dict(embed_dim=embed_dim,
                vision_cfg=dict(image_size=image_size, layers=1, width=32, head_width=16, patch_size=8),
                text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def build_tiny_clip(device: str | torch.device = "cpu", embed_dim: int = 32, image_size: int = 32,
                    seed: int = 0):
    """``(model, tokenizer)``: a randomly initialised open_clip CLIP with tiny towers
    (:func:`tiny_clip_config`)."""
    torch.manual_seed(seed)
    return load_clip("ViT-B-16", "", device, half=False, allow_random_weights=True,
                     **tiny_clip_config(embed_dim, image_size))


def square_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``[M, 4]`` float (x0, y0, x1, y1) squares around ``masks`` ``[M, H, W]`` bool, in continuous
    pixel coordinates (pixel i covers [i, i+1)): centred on the mask's box, side = its longer side."""
    from segment_anything.utils.amg import batched_mask_to_box

    b = batched_mask_to_box(masks).float()
    x0, y0, x1, y1 = b.unbind(1)
    x1, y1 = x1 + 1, y1 + 1  # inclusive pixel indices -> exclusive edges
    half = torch.maximum(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], 1)


def mask_crops(image: torch.Tensor, masks: torch.Tensor, size: int) -> torch.Tensor:
    """``[M, 3, size, size]`` masked, box-cropped, black square-padded crops.

    image: ``[3, H, W]`` float (any range); masks: ``[M, H, W]`` bool. Outside the image and outside
    the mask the crop is 0.
    """
    from torchvision.ops import roi_align

    m = masks.shape[0]
    boxes = square_boxes(masks).to(image.dtype)
    idx = torch.arange(m, device=image.device, dtype=image.dtype)[:, None]
    rois = torch.cat([torch.zeros_like(idx), boxes], 1)
    # sampling_ratio 0 = adaptive (ceil(box / size) samples per bin): area-averages large boxes.
    crops = roi_align(image[None], rois, size, 1.0, 0, aligned=True)
    rois[:, 0] = idx[:, 0]  # region i reads mask i
    inside = roi_align(masks[:, None].to(image.dtype), rois, size, 1.0, 0, aligned=True)
    return crops * (inside >= 0.5)


class ClipEmbedder:
    """Mask and text embeddings from an open_clip model.

    After each :meth:`embed_masks`, ``timings`` holds seconds for ``crops`` and ``clip``.
    """

    def __init__(self, model, tokenizer, device: str | torch.device, crop_size: int = 224,
                 batch: int = 128, canonical_phrases: Sequence[str] = CANONICAL_PHRASES):
        from open_clip.model import get_model_preprocess_cfg

        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        # The dtype the image tower computes in: open_clip's fp16 casts conv/linear weights only,
        # while e.g. the class embedding stays fp32, so the first parameter does not tell.
        self.dtype = next(m.weight.dtype for m in model.visual.modules()
                          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        self.crop_size = int(crop_size)
        self.batch = int(batch)
        self.dim = int(model.visual.output_dim)
        pp = get_model_preprocess_cfg(model)
        self.mean = torch.tensor(pp["mean"], device=self.device)[:, None, None]
        self.std = torch.tensor(pp["std"], device=self.device)[:, None, None]
        self._text_cache: Dict[str, torch.Tensor] = {}
        self.timings: dict = {}
        self.embed_text(canonical_phrases)

    @classmethod
    def from_config(cls, cfg, device: str | torch.device,
                    canonical_phrases: Sequence[str] = CANONICAL_PHRASES) -> "ClipEmbedder":
        """``cfg``: TeacherConfig (``clip_model``, ``clip_pretrained``, ``crop_size``, ``clip_batch``)."""
        model, tok = load_clip(cfg.clip_model, cfg.clip_pretrained, device, cfg.half_precision,
                               cfg.allow_random_weights)
        return cls(model, tok, device, cfg.crop_size, cfg.clip_batch, canonical_phrases)

    def _image(self, frame: Frame, size) -> torch.Tensor:
        """``[3, h, w]`` float32 RGB in [0, 1] at ``size`` (the masks' size)."""
        img = torch.as_tensor(np.ascontiguousarray(frame.image), device=self.device).permute(2, 0, 1).float()
        if frame.image.dtype == np.uint8:
            img = img / 255.0
        if tuple(img.shape[-2:]) != tuple(size):  # masks made at SAM's downscaled working size
            img = F.interpolate(img[None], tuple(size), mode="bilinear", align_corners=False,
                                antialias=True)[0]
        return img

    @torch.no_grad()  # not inference_mode: its tensors could not be modified by training code later
    def embed_masks(self, frame: Frame, masks: torch.Tensor) -> torch.Tensor:
        """``[M, dim]`` unit-norm float32 embeddings of ``masks`` ``[M, h, w]`` bool.

        The masks may be at a smaller size than ``frame.image`` (SAM's working size); the image is
        resized to theirs.
        """
        timer = StageTimer(self.device)
        masks = masks.to(self.device)
        out = torch.zeros(masks.shape[0], self.dim, device=self.device)
        with timer("crops"):
            image = self._image(frame, masks.shape[-2:])
        for start in range(0, masks.shape[0], self.batch):
            with timer("crops"):
                # Crops in float32: box corners in float16 would round to 0.5 px beyond 512 px.
                x = mask_crops(image, masks[start:start + self.batch], self.crop_size)
                x = ((x - self.mean) / self.std).to(self.dtype)
            with timer("clip"), self._autocast():
                out[start:start + x.shape[0]] = F.normalize(self.model.encode_image(x).float(), dim=-1)
        self.timings = timer.seconds
        return out

    def _autocast(self):
        """Autocast to the towers' half dtype on CUDA: fp16 conv/linear weights next to layers left
        in fp32 (LayerNorm in some open_clip configs) then see matching inputs."""
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.device.type == "cuda" and self.dtype != torch.float32)

    @torch.no_grad()  # not inference_mode: its tensors could not be modified by training code later
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, dim]`` unit-norm float32 text embeddings; each text is encoded once and cached."""
        new = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if new:
            tokens = self.tokenizer(new).to(self.device)
            with self._autocast():
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(new, emb))
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.stack([self._text_cache[t] for t in texts])
