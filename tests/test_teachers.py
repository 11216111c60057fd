"""SAM segmenter, CLIP embedder and the keyframe teacher, with tiny random models of the real classes."""

import sys

import numpy as np
import pytest
import torch

from gags_ros.core.config import GagsConfig
from gags_ros.core.teachers import (LEVELS, KeyframeTeacher, LevelMasks, TeacherCache, TeacherOutput,
                                    build_teacher)
from gags_ros.core.teachers.clip import ClipEmbedder, ClipWeightsError, build_tiny_clip, load_clip, mask_crops
from gags_ros.core.teachers.keyframe import paint_level
from gags_ros.core.teachers.sam import (SAM_CHECKPOINT_URLS, CheckpointNotFoundError, SamSegmenter,
                                        build_tiny_sam, load_sam, mask_nms)
from gags_ros.core.types import Frame, Intrinsics


def box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def frame(h=96, w=128, seed=0):
    img = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    return Frame(img, np.eye(4), Intrinsics(100.0, 100.0, w / 2, h / 2, w, h))


# ---- mask NMS ------------------------------------------------------------------------------------

def test_mask_nms_iou():
    a = box_mask(40, 40, 0, 10, 0, 10)
    b = box_mask(40, 40, 0, 10, 0, 9)  # IoU 0.9 with a
    c = box_mask(40, 40, 0, 10, 5, 15)  # IoU 1/3 with a
    keep = mask_nms(torch.stack([a, b, c]), torch.tensor([0.8, 0.9, 0.75]))
    assert keep.tolist() == [1, 2]  # b outscores a and suppresses it; c overlaps too little
    keep = mask_nms(torch.stack([a, b]), torch.tensor([0.8, 0.9]), iou_thresh=0.95)
    assert keep.tolist() == [1, 0]


def test_mask_nms_containment():
    big = box_mask(40, 40, 0, 20, 0, 20)  # 400 px
    small = box_mask(40, 40, 2, 6, 2, 6)  # 16 px, all inside big, 4 % of it: nested -> dropped
    half = box_mask(40, 40, 0, 20, 0, 12)  # 240 px inside big, 60 % of it: kept (IoU 0.6 < 0.8)
    keep = mask_nms(torch.stack([big, small, half]), torch.tensor([0.75, 0.95, 0.8]))
    assert keep.tolist() == [2, 0]  # the nested mask goes whatever its score
    keep = mask_nms(torch.stack([big, small]), torch.tensor([0.75, 0.95]), containment=0.01)
    assert keep.tolist() == [1, 0]
    # Mostly (but < 85 %) inside: not nested.
    straddle = box_mask(40, 40, 15, 25, 0, 4)  # 40 px, 20 inside big
    assert sorted(mask_nms(torch.stack([big, straddle]), torch.tensor([0.8, 0.8])).tolist()) == [0, 1]


def test_mask_nms_score_threshold_and_fallback():
    masks = torch.stack([box_mask(40, 40, 0, 5, 5 * i, 5 * i + 4) for i in range(5)])
    keep = mask_nms(masks, torch.tensor([0.9, 0.6, 0.71, 0.7, 0.95]))
    assert keep.tolist() == [4, 0, 2]  # score must exceed 0.7; best first
    keep = mask_nms(masks, torch.tensor([0.1, 0.5, 0.3, 0.2, 0.4]))
    assert keep.tolist() == [1, 4, 2]  # nothing passes: the three best stay
    assert mask_nms(masks[:0], torch.zeros(0)).numel() == 0


# ---- crops ---------------------------------------------------------------------------------------

def two_colour_image(h=64, w=64):
    img = torch.zeros(3, h, w)
    img[2] = 1.0  # blue everywhere
    return img


def test_crop_of_a_square_mask_is_its_content():
    img = two_colour_image()
    img[:, 16:32, 8:24] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # red square under the mask
    crop = mask_crops(img, box_mask(64, 64, 16, 32, 8, 24)[None], 32)[0]
    assert crop.shape == (3, 32, 32)
    inner = crop[:, 1:-1, 1:-1]
    assert torch.allclose(inner, torch.tensor([1.0, 0, 0])[:, None, None])  # content fills the crop
    assert crop[2].max() < 0.5  # blue outside the mask never dominates (border bins blend < 1/2)


def test_crop_pads_to_square_with_black_and_masks_the_box():
    img = two_colour_image()
    img[0] = 1.0  # magenta everywhere: any visible pixel has red = 1
    tall = box_mask(64, 64, 10, 26, 20, 28)  # 16 tall, 8 wide -> square of 16 centred on x = 24
    crop = mask_crops(img, tall[None], 32)[0]
    assert crop[:, :, :7].abs().max() == 0 and crop[:, :, 25:].abs().max() == 0  # padding is black
    assert torch.all(crop[0, 1:-1, 9:23] == 1.0)  # the mask's 8 columns map to crop columns 8..24
    ell = box_mask(64, 64, 0, 16, 0, 4) | box_mask(64, 64, 12, 16, 0, 16)  # L shape, box 16 x 16
    crop = mask_crops(img, ell[None], 16)[0]
    assert crop[:, :11, 5:].abs().max() == 0  # inside the box but outside the mask: black
    assert torch.all(crop[0, 13:, :] == 1.0) and torch.all(crop[0, :, :3] == 1.0)
    edge = box_mask(64, 64, 0, 4, 0, 16)  # at the image border: square box runs outside the image
    crop = mask_crops(img, edge[None], 16)[0]
    assert crop[:, :5].abs().max() == 0 and crop[:, 11:].abs().max() == 0
    assert torch.all(crop[0, 6:10] == 1.0)


# ---- models --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip():
    return build_tiny_clip()


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam()


def test_clip_embeddings_and_text_cache(tiny_clip):
    model, tok = tiny_clip
    calls = []

    def counting_tokenizer(texts):
        calls.append(list(texts))
        return tok(texts)

    emb = ClipEmbedder(model, counting_tokenizer, "cpu", crop_size=32, batch=3)
    assert calls == [["object", "things", "stuff", "texture"]]  # canonical phrases cached at start
    t = emb.embed_text(["a mug", "object", "a mug"])
    assert t.shape == (3, emb.dim) and torch.equal(t[0], t[2])
    assert calls[1:] == [["a mug"]]
    emb.embed_text(["a mug", "stuff"])
    assert len(calls) == 2
    fr = frame(48, 64)
    masks = torch.stack([box_mask(48, 64, 0, 10, 0, 10), box_mask(48, 64, 5, 40, 20, 60),
                         box_mask(48, 64, 30, 48, 0, 64), box_mask(48, 64, 0, 48, 0, 64)])
    e = emb.embed_masks(fr, masks)
    assert e.shape == (4, emb.dim) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    assert set(emb.timings) == {"crops", "clip"}
    # Batching does not change results; masks at a smaller working size resize the image.
    single = ClipEmbedder(model, tok, "cpu", crop_size=32, batch=1).embed_masks(fr, masks)
    assert torch.allclose(e, single, atol=1e-5)
    small = emb.embed_masks(fr, masks[:, ::2, ::2])
    assert small.shape == (4, emb.dim)


def test_sam_levels_are_ordered_by_area(tiny_sam):
    cfg = GagsConfig().teacher
    seg = SamSegmenter(tiny_sam, cfg, "cpu")
    x, _ = seg.encoder_input(torch.rand(1, 3, 48, 64) * 255)
    emb = tiny_sam.image_encoder(x)
    pts = torch.rand(20, 2) * torch.tensor([64.0, 48.0])
    low, iou = seg._decode(emb, tiny_sam.prompt_encoder.get_dense_pe(), pts, (48, 64))
    assert low.shape[:2] == (20, 3) and iou.shape == (20, 3)
    area = (low > tiny_sam.mask_threshold).sum((-1, -2))
    assert torch.all(area[:, 0] <= area[:, 1]) and torch.all(area[:, 1] <= area[:, 2])


def test_sam_segment_shapes_and_working_size(tiny_sam):
    cfg = GagsConfig().teacher
    cfg.pred_iou_thresh = cfg.stability_score_thresh = 0.0
    cfg.min_mask_area, cfg.max_image_height, cfg.prompt_batch = 10, 64, 7
    seg = SamSegmenter(tiny_sam, cfg, "cpu")
    fr = frame(96, 128)
    levels = seg.segment(fr, np.random.default_rng(0).random((30, 2)) * [128, 96])
    assert len(levels) == 3
    for lv in levels:
        assert lv.masks.dtype == torch.bool and lv.masks.shape[1:] == (64, 85)  # 96 -> 64 high
        assert lv.scores.shape == lv.masks.shape[:1]
        assert (lv.masks.sum((1, 2)) >= 10).all()
    assert seg.stats["prompts"] == 30 and seg.stats["masks_filtered"] >= seg.stats["masks_box_nms"]
    assert set(seg.timings) == {"image_encoder", "decoder", "filtering_nms"}
    none = seg.segment(fr, np.zeros((0, 2)))
    assert all(lv.masks.shape == (0, 64, 85) for lv in none)


class RecordingEncoder(torch.nn.Module):
    """SAM's image encoder interface: records its input, returns a constant embedding."""

    def __init__(self, img_size=1024):
        super().__init__()
        self.img_size, self.seen = img_size, None

    def forward(self, x):
        self.seen = x.clone()
        return torch.zeros(1, 1, self.img_size // 16, self.img_size // 16)


class CoordPromptEncoder(torch.nn.Module):
    """SAM's prompt encoder interface: the sparse embedding is the point itself, in continuous
    coordinates of SAM's input frame (+0.5: SAM's prompt encoder takes points as pixel indices)."""

    def get_dense_pe(self):
        return torch.zeros(1, 1, 64, 64)

    def forward(self, points, boxes, masks):
        coords, _ = points
        return coords + 0.5, torch.zeros(coords.shape[0], 1, 64, 64)


class DiscDecoder(torch.nn.Module):
    """SAM's mask decoder interface: three discs (radius 20, 40, 80 px of SAM's input frame) around
    each prompt, as signed-distance logits on SAM's low-res grid (pixel j covers [4j, 4j + 4))."""

    def __init__(self, img_size=1024):
        super().__init__()
        self.img_size = img_size

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        n = self.img_size // 4
        c = (torch.arange(n) * 4 + 2.0)
        p = sparse_prompt_embeddings[:, 0]  # [B, 2] (x, y)
        d = torch.hypot(c[None, None, :] - p[:, 0, None, None], c[None, :, None] - p[:, 1, None, None])
        low = torch.stack([r - d for r in (20.0, 40.0, 80.0)], 1)
        return low, torch.ones(low.shape[0], 3)


@pytest.mark.parametrize("w,h", [(640, 480), (1280, 720), (1920, 1080), (800, 800)])
def test_sam_sees_the_whole_image_and_masks_land_on_their_prompts(w, h):
    """The encoder sees the frame at its own aspect, longest side 1024, zero-padded; a prompt's
    masks are centred on the prompted frame pixel (SAM's own preprocess / postprocess run)."""
    from segment_anything.modeling import Sam

    sam = Sam(RecordingEncoder(), CoordPromptEncoder(), DiscDecoder()).eval()
    cfg = GagsConfig().teacher
    cfg.pred_iou_thresh = cfg.stability_score_thresh = cfg.mask_nms_score = 0.0
    cfg.max_image_height = 1080
    seg = SamSegmenter(sam, cfg, "cpu")
    # Red encodes the column, green the row, as fractions of the frame's width / height.
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx + 0.5) / w * 255, (yy + 0.5) / h * 255, np.full_like(xx, 128.0)], -1).astype(np.float32)
    fr = Frame(img, np.eye(4), Intrinsics(500.0, 500.0, w / 2, h / 2, w, h))
    prompts = [(w * 0.5, h * 0.5), (w * 0.1, h * 0.15), (w * 0.9, h * 0.85), (w * 0.2, h * 0.8)]
    judged = 0
    for k, (px, py) in enumerate(prompts):
        levels = seg.segment(fr, np.array([[px, py]]))
        if k == 0:
            ih, iw = round(h * 1024 / max(h, w)), round(w * 1024 / max(h, w))
            x = sam.image_encoder.seen[0]
            assert x.shape == (3, 1024, 1024)
            content = (x != 0).any(0)  # blue 128 is never 0 after normalisation; the padding is 0
            rows, cols = torch.nonzero(content, as_tuple=True)
            assert (int(rows.max()) + 1, int(cols.max()) + 1) == (ih, iw) and bool(content[:ih, :iw].all())
            seen = x * sam.pixel_std + sam.pixel_mean  # undo SAM's normalisation
            # Row v / column u of SAM's input show frame row v * h / ih / column u * w / iw.
            v, u = torch.arange(ih, dtype=torch.float32), torch.arange(iw, dtype=torch.float32)
            assert torch.allclose(seen[1, :ih, 0] / 255, (v + 0.5) / ih, atol=2 / ih + 1e-3)
            assert torch.allclose(seen[0, 0, :iw] / 255, (u + 0.5) / iw, atol=2 / iw + 1e-3)
        for lv in levels:
            assert lv.masks.shape == (1, h, w)
            ys, xs = torch.nonzero(lv.masks[0], as_tuple=True)
            # Masks clipped by the frame border are not round: judge the unclipped ones only.
            if int(ys.min()) > 0 and int(xs.min()) > 0 and int(ys.max()) < h - 1 and int(xs.max()) < w - 1:
                cy, cx = ys.float().mean() + 0.5, xs.float().mean() + 0.5  # pixel i covers [i, i + 1)
                assert abs(float(cx) - px) <= 2 and abs(float(cy) - py) <= 2, (k, float(cx), float(cy))
                judged += 1
    assert judged >= 2 * len(prompts)


class FixedSegmenter:
    """Hand-made masks: subpart {a, b}, part {c}, whole {}."""

    def __init__(self, h, w):
        a = box_mask(h, w, 0, 10, 0, 10)
        b = box_mask(h, w, 5, 15, 5, 15)  # overlaps a; same size -> lower index wins the overlap
        c = box_mask(h, w, 0, 30, 0, 30)
        self.levels = [LevelMasks(torch.stack([a, b]), torch.ones(2)), LevelMasks(c[None], torch.ones(1)),
                       LevelMasks(torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0))]
        self.points = None

    def segment(self, frame, points=None):
        self.points = points
        return self.levels


def test_keyframe_teacher_needs_a_map_to_teach(tiny_clip):
    teacher = KeyframeTeacher(GagsConfig(), FixedSegmenter(40, 60), ClipEmbedder(*tiny_clip, "cpu", crop_size=32), "cpu")
    assert teacher.mapper is None and teacher.min_depth is None
    with pytest.raises(RuntimeError, match="attach_map"):
        teacher.teach(frame(40, 60), 0)


def test_paint_level_smallest_wins():
    big = box_mask(20, 20, 0, 20, 0, 20)
    small = box_mask(20, 20, 5, 8, 5, 8)
    ids = paint_level(torch.stack([small, big]), first_id=10)
    assert ids.dtype == torch.int32 and (ids[5:8, 5:8] == 10).all() and (ids[~small] == 11).all()
    ids = paint_level(torch.stack([big, small]))
    assert (ids[5:8, 5:8] == 1).all() and (ids[0, 0] == 0)
    assert (paint_level(torch.zeros(0, 4, 4, dtype=torch.bool)) == -1).all()


def test_keyframe_teacher_level_maps(tiny_clip):
    cfg = GagsConfig()
    cfg.teacher.prompt_scale = 1 / 16  # no depth: r = 1, n = 4 -> one prompt in each of 8 x 8 patches
    seg = FixedSegmenter(40, 60)
    emb = ClipEmbedder(*tiny_clip, "cpu", crop_size=32)
    teacher = KeyframeTeacher(cfg, seg, emb, "cpu")
    out = teacher.process(frame(40, 60), keyframe=4)
    assert isinstance(out, TeacherOutput) and out.keyframe == 4
    assert out.level_ids.shape == (3, 40, 60) and out.level_ids.dtype == torch.int32
    assert out.embeddings.shape == (3, emb.dim) and out.embeddings.dtype == torch.float16
    sub, part, whole = out.level_ids
    assert (sub[0:5, 0:10] == 0).all() and (sub[10:15, 5:15] == 1).all() and (sub[5:10, 5:10] == 0).all()
    assert (sub[20:, :] == -1).all() and (part[:30, :30] == 2).all() and (part[30:] == -1).all()
    assert (whole == -1).all()
    assert seg.points.shape == (64, 2)  # the scaled prompts reached the segmenter
    assert teacher.stats == {"prompts": 64, "masks_subpart": 2, "masks_part": 1, "masks_whole": 0}
    assert {"prompts", "crops", "clip", "level_maps", "total"} <= set(teacher.timings)
    dense = out.level_features(1)
    assert dense.shape == (40, 60, emb.dim) and torch.all(dense[35, 35] == 0)


def test_keyframe_teacher_end_to_end_tiny_models(tiny_sam, tiny_clip):
    cfg = GagsConfig()
    t = cfg.teacher
    t.prompt_scale, t.prompt_batch, t.min_mask_area = 1 / 64, 32, 20  # r = 2: n = 8, 1 prompt per patch
    t.pred_iou_thresh = t.stability_score_thresh = 0.0  # random models: let masks through
    t.mask_nms_score = 0.0
    seg, emb = SamSegmenter(tiny_sam, t, "cpu"), ClipEmbedder(*tiny_clip, "cpu", 32, 16)
    teacher = KeyframeTeacher(cfg, seg, emb, "cpu")
    fr = frame(60, 80)
    out = teacher.process(fr, depth=np.full((60, 80), 2.0, np.float32),
                          min_depth=np.full((60, 80), 1.0, np.float32), keyframe=1)
    m = out.embeddings.shape[0]
    counts = [teacher.stats[f"masks_{n}"] for n in LEVELS]
    assert sum(counts) == m > 0 and out.level_ids.shape == (3, 60, 80)
    first = 0
    for k, n in enumerate(counts):  # each level's ids index its own block of embeddings
        ids = out.level_ids[k]
        used = ids[ids >= 0]
        assert ids.min() >= -1 and (used >= first).all() and (used < first + n).all()
        first += n
    assert torch.allclose(out.embeddings.float().norm(dim=1), torch.ones(m), atol=1e-2)
    expected = {"prompts", "image_encoder", "decoder", "filtering_nms", "crops", "clip", "level_maps"}
    assert set(teacher.timings) == expected | {"total"} and teacher.stats["prompts"] == 64


def test_teacher_cache_is_bounded_lru():
    cache = TeacherCache(2)
    outs = [TeacherOutput(torch.zeros(3, 2, 2, dtype=torch.int32), torch.zeros(0, 4), k) for k in range(3)]
    cache.put(0, outs[0])
    cache.put(1, outs[1])
    assert cache.get(0) is outs[0]  # 0 is now the most recent
    cache.put(2, outs[2])
    assert 1 not in cache and cache.keys() == [0, 2] and len(cache) == 2 and cache.get(1) is None
    with pytest.raises(ValueError):
        TeacherCache(0)


# ---- checkpoints ---------------------------------------------------------------------------------

def test_sam_without_checkpoint_refuses_to_configure():
    """The shipped defaults (segmenter sam, no checkpoint) refuse, naming the parameter and the file
    to put where; random weights only with teacher.allow_random_weights (CLIP alike)."""
    from gags_ros.core.config import ConfigError
    from gags_ros.core.teachers.factory import check_teacher_weights, random_weight_models

    cfg = GagsConfig()
    with pytest.raises(ConfigError) as e:
        check_teacher_weights(cfg)
    msg = str(e.value)
    assert "teacher.sam_checkpoint is empty" in msg and "sam_vit_h_4b8939.pth" in msg
    assert SAM_CHECKPOINT_URLS["vit_h"] in msg and "~/.ros/gags_models/sam_vit_h_4b8939.pth" in msg
    assert "teacher.allow_random_weights: true" in msg
    with pytest.raises(ConfigError, match="teacher.sam_checkpoint is empty"):
        build_teacher(cfg, "cpu")
    with pytest.raises(CheckpointNotFoundError, match="sam_vit_b_01ec64.pth"):
        load_sam("vit_b", "", "cpu")
    cfg.teacher.allow_random_weights = True  # SAM may now be random; CLIP's empty tag still refused
    cfg.teacher.clip_pretrained = ""
    assert random_weight_models(cfg) == ["SAM", "CLIP"]
    check_teacher_weights(cfg)
    cfg.teacher.allow_random_weights = False
    cfg.teacher.segmenter = "sim"
    check_teacher_weights(cfg)  # the simulated teacher needs no weights
    assert random_weight_models(cfg) == []
    cfg.teacher.segmenter = "sam"
    cfg.language.enabled = False
    check_teacher_weights(cfg)  # no teacher is built


def test_clip_without_weights_refuses_to_configure(tmp_path):
    from gags_ros.core.config import ConfigError
    from gags_ros.core.teachers.factory import check_teacher_weights

    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    cfg = GagsConfig()
    cfg.teacher.sam_checkpoint, cfg.teacher.clip_pretrained = str(ckpt), ""
    with pytest.raises(ConfigError, match="teacher.clip_pretrained is empty.*laion2b_s34b_b88k.*"
                                          "teacher.allow_random_weights: true"):
        check_teacher_weights(cfg)
    with pytest.raises(ClipWeightsError, match="teacher.clip_pretrained is empty"):
        load_clip("ViT-B-16", "", "cpu")
    cfg.teacher.allow_random_weights = True
    check_teacher_weights(cfg)
    from gags_ros.core.teachers.factory import random_weight_models

    assert random_weight_models(cfg) == ["CLIP"]


def test_weight_paths_may_start_at_home(tmp_path, monkeypatch):
    """The refusal messages suggest ~/.ros/gags_models/...: such paths are found."""
    from gags_ros.core.teachers.clip import resolve_clip_weights
    from gags_ros.core.teachers.sam import check_sam_weights

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sam.pth").write_bytes(b"")
    (tmp_path / "clip.bin").write_bytes(b"")
    check_sam_weights("vit_b", "~/sam.pth")
    assert resolve_clip_weights("ViT-B-16", "~/clip.bin")["pretrained"] == str(tmp_path / "clip.bin")


def test_missing_sam_checkpoint_names_file_and_downloads(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    with pytest.raises(CheckpointNotFoundError) as e:
        load_sam("vit_b", str(path), "cpu")
    msg = str(e.value)
    assert str(path) in msg and "teacher.sam_checkpoint" in msg
    assert all(url in msg for url in SAM_CHECKPOINT_URLS.values())


def test_missing_clip_weights_are_explained(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(ClipWeightsError, match="weights file not found: .*missing.bin"):
        load_clip("ViT-B-16", str(tmp_path / "missing.bin"), "cpu")
    with pytest.raises(ClipWeightsError, match="neither a file nor an open_clip tag"):
        load_clip("ViT-B-16", "no_such_tag", "cpu")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ClipWeightsError, match="laion2b_s34b_b88k.*not in the local cache.*clip_pretrained"):
        load_clip("ViT-B-16", "laion2b_s34b_b88k", "cpu")


def test_clip_tags_keep_their_activation_when_loaded_from_the_cache(tmp_path, monkeypatch, tiny_clip):
    """Every ViT-B-16 tag, resolved to its file in the local Hugging Face cache (a tiny random
    checkpoint here), is built with the activation open_clip's pretrained registry gives the tag:
    QuickGELU for openai / dfn2b / metaclip_*, GELU otherwise."""
    import huggingface_hub.constants
    import open_clip
    from open_clip.transformer import QuickGELU

    from gags_ros.core.teachers.clip import tiny_clip_config

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    state = tmp_path / "tiny.bin"
    torch.save(tiny_clip[0].state_dict(), state)
    quick = set()
    for tag in open_clip.list_pretrained_tags_by_model("ViT-B-16"):
        repo = open_clip.get_pretrained_cfg("ViT-B-16", tag)["hf_hub"].rstrip("/")
        root = tmp_path / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text("0" * 40)
        (root / "snapshots" / ("0" * 40)).mkdir(parents=True)
        (root / "snapshots" / ("0" * 40) / "open_clip_pytorch_model.bin").symlink_to(state)
        model, _ = load_clip("ViT-B-16", tag, "cpu", **tiny_clip_config())
        acts = {type(m) for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
        expected = QuickGELU if open_clip.get_pretrained_cfg("ViT-B-16", tag).get("quick_gelu") else torch.nn.GELU
        assert acts == {expected}, tag
        assert torch.equal(model.visual.proj, tiny_clip[0].visual.proj)  # the cached file was loaded
        quick |= {tag} if expected is QuickGELU else set()
    assert {"openai", "dfn2b", "metaclip_400m", "metaclip_fullcc"} <= quick and "laion2b_s34b_b88k" not in quick


def test_sim_teacher_missing_module_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "gags_ros.sim.teacher", None)
    cfg = GagsConfig()
    cfg.teacher.segmenter = "sim"
    with pytest.raises(ImportError, match="gags_ros.sim.teacher"):
        build_teacher(cfg, "cpu")


def test_build_teacher_sim():
    from gags_ros.sim.teacher import SimEmbedder, SimSegmenter

    cfg = GagsConfig()
    cfg.teacher.segmenter = "sim"
    teacher = build_teacher(cfg, "cpu", labels={"whole": {"1": "mug"}})
    assert isinstance(teacher.segmenter, SimSegmenter) and isinstance(teacher.embedder, SimEmbedder)
    assert teacher.embedder.segmenter is teacher.segmenter


@pytest.mark.slow
def test_build_teacher_real_architectures_random_init():
    cfg = GagsConfig()
    cfg.teacher.sam_model = "vit_b"  # vit_h is 2.5 GB: the GPU benchmark builds that one
    cfg.teacher.clip_pretrained = ""  # random init: no weights can be had here
    cfg.teacher.allow_random_weights = True
    teacher = build_teacher(cfg, "cpu")
    assert teacher.embedder.dim == 512
    assert sum(p.numel() for p in teacher.segmenter.sam.parameters()) > 90e6
    assert teacher.embedder.embed_text(["object"]).shape == (1, 512)


@pytest.mark.slow
def test_benchmark_quick_mode_runs(capsys):
    from bench.teacher import main

    assert main(["--device", "cpu", "--quick", "--keyframes", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "16 prompts] total" in out and "48 prompts] total" in out


@pytest.mark.gpu
def test_keyframe_teacher_on_cuda(tiny_clip):
    cfg = GagsConfig()
    t = cfg.teacher
    t.prompt_scale, t.prompt_batch = 1 / 16, 32  # r = 1: n = 4, 1 prompt per patch
    t.pred_iou_thresh = t.stability_score_thresh = t.mask_nms_score = 0.0
    from open_clip.model import convert_weights_to_lp

    model, tok = tiny_clip
    model = model.to("cuda")
    convert_weights_to_lp(model)  # what open_clip's precision="fp16" does: conv/linear weights only
    teacher = KeyframeTeacher(cfg, SamSegmenter(build_tiny_sam("cuda"), t, "cuda"),
                              ClipEmbedder(model, tok, "cuda", 32), "cuda")
    out = teacher.process(frame(60, 80), depth=np.full((60, 80), 2.0, np.float32), keyframe=0)
    m = out.embeddings.shape[0]
    assert out.level_ids.is_cuda and out.level_ids.shape == (3, 60, 80) and out.level_ids.dtype == torch.int32
    assert out.embeddings.dtype == torch.float16 and m == sum(teacher.stats[f"masks_{n}"] for n in LEVELS)
    assert int(out.level_ids.max()) < m
