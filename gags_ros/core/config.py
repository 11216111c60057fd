"""The one typed configuration tree of gags_ros.

Every tunable value lives here, once, with its unit, meaning and allowed range. Two views are made
from it and checked against it by tests:

- ``config/mapping.yaml``: a ROS 2 parameter file (``/**: ros__parameters: ...``), written by
  ``python -m gags_ros.core.config --write config/mapping.yaml``;
- the ROS parameters the nodes declare (``gags_ros.ros.params`` builds descriptors from
  :func:`iter_fields`).

Sections own their fields; a stage that needs a new setting adds a field to its section with
:func:`param` (default, help text with unit, range or choices), then regenerates the YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

FORMAT_VERSION = 1


class ConfigError(ValueError):
    """A configuration value outside its allowed range or choices; names parameter and value."""


# Why a parameter is read-only on a running node (``param(read_only=...)``; the node's refusal says it).
FIXED_AT_START = "the models, map layout or memory it shapes are built once, at start"
NAMES_A_RESOURCE = ("it names a file, folder, device or file permission, which nobody on the DDS domain may "
                    "change (docs/security.md)")
WIRED_AT_START = ("topics, QoS and queues are set up once, at start (remap a topic with name:=new_name "
                  "instead)")


def param(default: Any, help: str, *, unit: str = "", lo: Optional[float] = None,
          hi: Optional[float] = None, choices: Optional[Sequence[Any]] = None,
          read_only: bool | str = False):
    """A dataclass field with documentation and validation metadata.

    ``lo``/``hi`` are inclusive bounds for numbers (and for every element of a numeric list);
    ``choices`` lists allowed values for strings. ``read_only`` parameters cannot be changed on a
    running node: True (they shape models or memory: :data:`FIXED_AT_START`) or the reason why.
    Every other parameter takes effect at its next use (the next query, frame or period).
    """
    reason = read_only if isinstance(read_only, str) else (FIXED_AT_START if read_only else "")
    meta = dict(help=help, unit=unit, lo=lo, hi=hi, choices=tuple(choices) if choices else None,
                read_only=bool(read_only), read_only_reason=reason)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda d=list(default): list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class MappingConfig:
    """Geometry: keyframes, Gaussian initialisation, optimisation, densification."""

    renderer: str = param("auto", "Rasterizer backend: gsplat (CUDA), torch (pure PyTorch, any device) "
                          "or auto (gsplat when the device is CUDA)", choices=["auto", "gsplat", "torch"],
                          read_only=True)
    strategy: str = param("default", "gsplat densification strategy: default (DefaultStrategy: clone, "
                          "split, prune) or mcmc (MCMCStrategy: relocate under a fixed budget)",
                          choices=["default", "mcmc"], read_only=True)
    max_gaussians: int = param(1_000_000, "Budget of Gaussians in the map; densification stops and MCMC "
                               "caps here", unit="Gaussians", lo=1_000, hi=50_000_000, read_only=True)
    max_frame_rate: float = param(10.0, "Frames per second (by image stamp) the mapper examines for keyframes; "
                                  "frames in between are skipped cheaply; 0 = examine every frame",
                                  unit="Hz", lo=0.0, hi=1000.0)
    max_image_width: int = param(640, "Frames wider than this are downscaled before mapping",
                                 unit="px", lo=32, hi=8192)
    keyframe_min_translation: float = param(0.10, "A frame becomes a keyframe when it moved at least "
                                            "this far from every keyframe", unit="m", lo=0.0, hi=100.0)
    keyframe_min_rotation: float = param(15.0, "... or turned at least this much from the nearest "
                                         "keyframe", unit="deg", lo=0.0, hi=180.0)
    keyframe_max_overlap: float = param(0.85, "... or the fraction of its pixels the map already covers "
                                        "from the nearest keyframe is below this", unit="fraction",
                                        lo=0.0, hi=1.0)
    window_recent: int = param(8, "Optimisation window: most recent keyframes", unit="keyframes", lo=1, hi=1000)
    window_random: int = param(8, "Optimisation window: older keyframes sampled uniformly",
                               unit="keyframes", lo=0, hi=1000)
    steps_per_keyframe: int = param(150, "Optimisation steps run after each new keyframe (more while "
                                    "idle)", unit="steps", lo=0, hi=100_000)
    final_refine_steps: int = param(2_000, "Steps over all keyframes when the stream ends or on request",
                                    unit="steps", lo=0, hi=1_000_000)
    init_points_per_keyframe: int = param(20_000, "At most this many new Gaussians seeded per keyframe",
                                          unit="Gaussians", lo=0, hi=10_000_000)
    init_depth_no_depth: float = param(2.0, "Seed depth along rays when neither a depth image nor the "
                                       "map gives one", unit="m", lo=0.01, hi=1000.0)
    ssim_weight: float = param(0.2, "Weight of the D-SSIM term in the photometric loss (3DGS uses 0.2)",
                               lo=0.0, hi=1.0)
    depth_weight: float = param(0.1, "Weight of the L1 depth loss when depth images are given",
                                unit="1/m", lo=0.0, hi=100.0)
    lr_means: float = param(1.6e-4, "Adam learning rate of Gaussian centres, times the scene extent",
                            unit="m/step", lo=0.0, hi=1.0)
    lr_scales: float = param(5e-3, "Adam learning rate of log-scales", lo=0.0, hi=1.0)
    lr_quats: float = param(1e-3, "Adam learning rate of rotations", lo=0.0, hi=1.0)
    lr_opacities: float = param(5e-2, "Adam learning rate of opacity logits", lo=0.0, hi=1.0)
    lr_colors: float = param(2.5e-3, "Adam learning rate of colours (SH degree 0)", lo=0.0, hi=1.0)
    background: list = param([0.0, 0.0, 0.0], "Background colour composited behind the map, RGB",
                             unit="[0,1]", lo=0.0, hi=1.0)


@dataclass
class TeacherConfig:
    """2D language supervision: granularity-aware SAM prompting and CLIP mask embeddings."""

    segmenter: str = param("sam", "Mask source: sam (segment_anything) or sim (label-grounded simulation "
                           "teacher)", choices=["sam", "sim"], read_only=True)
    sim_dataset: str = param("", "Simulated dataset folder (labels.json, scene.json) of the sim teacher; "
                             "frames without ground-truth masks (from ROS topics) get them ray-cast from "
                             "the scene", read_only=NAMES_A_RESOURCE)
    sim_embedding_std: float = param(0.05, "Simulation teacher: std of the Gaussian noise added to every "
                                     "dimension of a mask's label embedding before normalisation (the "
                                     "simulation issue's fixed noise model is 0.05; other values only for "
                                     "sensitivity studies)", unit="embedding units", lo=0.0, hi=1.0,
                                     read_only=True)
    sim_regime: str = param("clip", "Simulation teacher's embedding regime: clip (CLIP's numbers: mask-text "
                            "cosines ~0.27, margins of a few hundredths, a modality gap; "
                            "docs/sim_teacher.md) or text (masks carry their label's text embedding: "
                            "cosines ~0.8; sim_embedding_std applies to this regime only)",
                            choices=["clip", "text"], read_only=True)
    sam_model: str = param("vit_h", "segment_anything registry name", choices=["vit_h", "vit_l", "vit_b"],
                           read_only=True)
    sam_checkpoint: str = param("", "Path of the SAM checkpoint (.pth) of sam_model; empty = random "
                                "initialisation, refused unless allow_random_weights", read_only=NAMES_A_RESOURCE)
    prompt_mode: str = param("granularity", "Prompt placement: granularity (GAGS Eq. 1) or uniform grid",
                             choices=["granularity", "uniform"])
    prompt_patches: int = param(8, "Image split into this many patches per side for prompt density",
                                unit="patches", lo=1, hi=64)
    prompt_n_max: int = param(20, "Upper clamp of n (n*n prompts per patch)", lo=1, hi=64)
    uniform_points_per_side: int = param(16, "Uniform mode: points per image side", lo=1, hi=128)
    prompt_scale: float = param(0.25, "Granularity mode: each patch gets this fraction of Eq. 1's n*n "
                                "prompts (randomised rounding), the same in every view, so prompt density "
                                "per unit of surface stays equal across views; 0.25 = 256 prompts for a "
                                "view at r = 1 with 8 x 8 patches, at most 0.25 * 64 * prompt_n_max^2",
                                lo=0.001, hi=1.0)
    prompt_batch: int = param(256, "Prompts decoded per SAM batch", unit="prompts", lo=1, hi=8192)
    pred_iou_thresh: float = param(0.7, "Keep masks whose predicted IoU is at least this", lo=0.0, hi=1.0)
    stability_score_thresh: float = param(0.85, "Keep masks whose stability score is at least this",
                                          lo=0.0, hi=1.0)
    box_nms_thresh: float = param(0.7, "Box NMS IoU threshold among a level's masks", lo=0.0, hi=1.0)
    mask_nms_iou: float = param(0.8, "Mask NMS: IoU above which the lower-scored mask is dropped",
                                lo=0.0, hi=1.0)
    mask_nms_score: float = param(0.7, "Mask NMS: minimum score kept", lo=0.0, hi=1.0)
    mask_nms_containment: float = param(0.5, "Mask NMS: a mask nested in another of its level (see "
                                        "mask_nms_inside) is dropped when it covers less than this "
                                        "fraction of that mask", lo=0.0, hi=1.0)
    mask_nms_inside: float = param(0.85, "Mask NMS: a mask with at least this fraction of its area inside "
                                   "another mask of its level counts as nested in it (dropped when it "
                                   "also covers less than mask_nms_containment of that mask)",
                                   lo=0.0, hi=1.0)
    min_mask_area: int = param(100, "Masks smaller than this are dropped", unit="px", lo=0, hi=1_000_000)
    max_image_height: int = param(1080, "Keyframes taller than this are downscaled for SAM", unit="px",
                                  lo=64, hi=8192)
    half_precision: bool = param(True, "On CUDA, SAM runs under bfloat16 autocast and CLIP in float16 "
                                 "(CPU always float32)", read_only=True)
    clip_model: str = param("ViT-B-16", "open_clip model name", read_only=True)
    clip_pretrained: str = param("laion2b_s34b_b88k", "open_clip pretrained tag or path of a local "
                                 "weights file; empty = random initialisation, refused unless "
                                 "allow_random_weights", read_only=NAMES_A_RESOURCE)
    allow_random_weights: bool = param(False, "Allow randomly initialised SAM / CLIP where sam_checkpoint / "
                                       "clip_pretrained is empty: tests and benchmarks only (masks and "
                                       "embeddings mean nothing; status and diagnostics say so)",
                                       read_only=True)
    crop_size: int = param(224, "CLIP input crop size", unit="px", lo=32, hi=1024, read_only=True)
    clip_batch: int = param(128, "Crops encoded per CLIP batch", unit="crops", lo=1, hi=4096)
    cache_keyframes: int = param(256, "Keyframes whose teacher outputs are kept for distillation",
                                 unit="keyframes", lo=1, hi=100_000)


@dataclass
class LanguageConfig:
    """Granularity-aware distillation into per-Gaussian latents (GAGS section 2)."""

    enabled: bool = param(True, "Distil language features while mapping")
    feature_dim: int = param(16, "Per-Gaussian latent size", unit="channels", lo=1, hi=128, read_only=True)
    mode: str = param("gad", "Target of distillation: gad (learned granularity weights), avg (mean of "
                      "levels) or one level", choices=["gad", "avg", "subpart", "part", "whole"],
                      read_only=True)
    render_scale: float = param(0.5, "Distillation renders at this fraction of the keyframe size",
                                lo=0.05, hi=1.0)
    lr_features: float = param(1e-2, "Adam learning rate of the latents (GAGS uses 1e-3 over 30k offline "
                               "steps; online maps get ~100 steps per keyframe, and 1e-2 fits them better on "
                               "the simulation)", lo=0.0, hi=1.0)
    lr_decoders: float = param(1e-3, "Adam learning rate of both decoders (GAGS: 1e-4 over 30k steps)",
                               lo=0.0, hi=1.0)
    entropy_weight_early: float = param(0.001, "Entropy weight in the first half of the schedule",
                                        lo=0.0, hi=10.0)
    entropy_weight_late: float = param(0.002, "Entropy weight in the second half", lo=0.0, hi=10.0)
    variance_weight: float = param(0.1, "Feature-consistency weight in the second half", lo=0.0, hi=10.0)
    steps_per_keyframe: int = param(100, "Distillation steps after each keyframe's teacher output arrives",
                                    unit="steps", lo=0, hi=100_000)
    total_steps: int = param(30_000, "Length of the schedule (second half switches losses)", unit="steps",
                             lo=1, hi=10_000_000)
    precision: str = param("auto", "Arithmetic of the decoders during distillation: auto (bfloat16 "
                           "autocast on CUDA, float32 elsewhere), float32, bfloat16 or float16",
                           choices=["auto", "float32", "bfloat16", "float16"])


@dataclass
class QueryConfig:
    """Text queries: relevancy, thresholding, 3D clustering."""

    canonical_phrases: list = param(["object", "things", "stuff", "texture"],
                                    "Negative phrases of the relevancy score")
    temperature: float = param(10.0, "Softmax temperature of the relevancy score", lo=0.01, hi=1000.0)
    threshold: float = param(0.8, "Gaussians with min-max normalised relevancy (over the known Gaussians, per "
                             "text) above this are selected. 0.8: targets=mass on the varied training maps "
                             "(seeds 0-2) gave hit@1 27.1 % at 0.8, 22.1 % at 0.9 (0.4 was the cluster era's)",
                             lo=0.0, hi=1.0)
    neighbour_radius: float = param(0.05, "Radius of the neighbour cleanup", unit="m", lo=0.0, hi=100.0)
    keep_neighbours: int = param(20, "Selected Gaussians with more selected neighbours than this are kept",
                                 unit="Gaussians", lo=0, hi=100_000)
    drop_neighbours: int = param(10, "Selected Gaussians with fewer selected neighbours are dropped",
                                 unit="Gaussians", lo=0, hi=100_000)
    cluster_radius: float = param(0.10, "Kept Gaussians closer than this join one target", unit="m",
                                  lo=0.0, hi=100.0)
    peak_radius: float = param(0.05, "A target's location and score come from its Gaussians within this "
                               "distance of its most relevant one (its relevancy peak); its box still "
                               "covers all its Gaussians", unit="m", lo=0.0, hi=100.0)
    targets: str = param("mass", "How targets are extracted: mass (the default: peaks of relevant mass, opacity x "
                         "relevancy summed within mass_radius spacing units), cluster (connected components of "
                         "the selected Gaussians after the neighbour cleanup, located at their relevancy peak) "
                         "or peak (the most relevant known Gaussian, then the next one at least nms_radius "
                         "away, ...). On the 160x120 CPU training maps mass 26.5 %, cluster 5.5 % hit@1; on the "
                         "GPU maps of training seeds 0-2 (default set) cluster 47.0 % vs mass 35.4 % (oracle "
                         "80.7 vs 67.4 %), but its radii are metres: on coarse maps (the CPU demo, the CLI "
                         "tests' scene) it finds nothing. Mass stays the default until the cluster radii "
                         "follow the map's spacing; "
                         "docs/results/answers.md",
                         choices=["cluster", "peak", "mass"])
    mass_radius: float = param(3.0, "targets=mass: a peak's relevant mass, location and score come from the "
                               "selected Gaussians within this many spacing units (the median geometric-mean "
                               "scale of the known Gaussians) of it", unit="spacing units", lo=0.1, hi=1000.0)
    location: str = param("mean", "targets=mass: a target's location is the weighted mean of the selected "
                          "Gaussians within the mass radius of its peak (mean) or the one of them nearest to "
                          "that mean (medoid: always a point of the object's own Gaussians, never the empty "
                          "space between two legs or instances; on the varied training CPU maps hit@1 21.0 % vs 26.5 % for "
                          "mean, bench.answers GRID mass_medoid)", choices=["mean", "medoid"])
    inset: float = param(0.0, "targets=mass: a target's location moves this far into the surface it lies "
                         "on, along the direction its Gaussians were seen from (the map's view records; "
                         "maps without them: no move), so the answer is a point inside the object, not "
                         "on its skin. Off by default: on the varied training CPU maps (seeds 0-2, view records added by "
                         "bench.answers_maps views) hit@1 26.5 % at 0, 23.8 % at 0.5, 22.7 % at 1 (the 3D label "
                         "oracle 63.0 % -> 49.7 % at 1): their surface Gaussians already sit about a centimetre "
                         "behind the surface, and thin objects (paintings, doors) are left through the back", unit="spacing units", lo=0.0, hi=100.0)
    nms_radius: float = param(0.3, "targets=peak and mass: a further target lies at least this far from every better "
                              "one", unit="m", lo=0.0, hi=100.0)
    min_peak_support: int = param(3, "targets=peak: a relevancy peak with fewer selected Gaussians within "
                                  "peak_radius (itself included) is a speck, not a target", unit="Gaussians",
                                  lo=1, hi=100_000)
    min_coverage: float = param(0.5, "Gaussians whose share of teacher-supervised blend weight (language "
                                "coverage) is below this are unknown: never selected, never a target; 0 = off",
                                lo=0.0, hi=1.0)
    max_targets: int = param(5, "Default number of targets per query", unit="targets", lo=1, hi=1000)
    min_score: float = param(0.45, "Default minimum target score (mean raw relevancy around the target's "
                             "relevancy peak; 0.5 = on a par with the best canonical phrase). 0.45: the "
                             "highest value that still answers >= 85 % of the queries of objects present "
                             "in the simulation with CLIP-like teacher cosines (docs/results/"
                             "sim_regimes_small_cpu.md)", lo=0.0, hi=1.0)
    calibration: list = param([-5.542, 1.102, 19.76, 9.796, 0.3974, -0.2627],
                              "Coefficients of the target confidence, sigmoid(c . x) over x = [1, score, "
                              "score - median raw relevancy of the eligible Gaussians, score - their 0.9 "
                              "quantile, ln(1 + Gaussians behind the score), log10(selected / eligible "
                              "Gaussians)] (gags_ros/core/calibration.py). Produced only by `python -m "
                              "bench.answers calibrate` on training scenes: this value from the 3 small-preset CPU "
                              "maps of the varied generator's training seeds 0-2 (--quick, targets=mass, 217 "
                              "first targets, training ECE 4.9 %; docs/results/answers.md), to be refitted on "
                              "GPU maps of seeds 0-9",
                              lo=-1e4, hi=1e4)
    min_confidence: float = param(0.123, "Targets with a lower confidence (calibrated probability of being "
                                  "right) are not answers; when none reaches it the answer is 'not found' "
                                  "(success, zero targets); 0 = off. Chosen by `python -m bench.answers "
                                  "calibrate` with the coefficients: the least cut at which absent-object "
                                  "queries get a target at most 10 % of the time on the training maps (8.3 %; hit@1 24.9 %)",
                                  lo=0.0, hi=1.0)
    chunk_size: int = param(1_000_000, "Gaussians decoded per chunk", unit="Gaussians", lo=1_000,
                            hi=100_000_000)
    max_text_length: int = param(256, "Longest accepted query text", unit="characters", lo=1, hi=100_000)
    min_opacity: float = param(0.05, "Gaussians less opaque than this are never selected (their latents "
                               "are barely supervised)", lo=0.0, hi=1.0)
    decode_precision: str = param("auto", "Arithmetic of the feature decoder over all Gaussians: auto "
                                  "(bfloat16 autocast on CUDA, float32 elsewhere), float32, bfloat16 or "
                                  "float16", choices=["auto", "float32", "bfloat16", "float16"])


@dataclass
class ClipGSConfig:
    """CLIP-GS object encoder: classify and retrieve the map's objects without rendering."""

    encoder_path: str = param("", "Saved CLIP-GS encoder (python -m gags_ros.sim.clipgs_train); empty = the "
                              "classify/retrieve services answer that none is loaded", read_only=NAMES_A_RESOURCE)
    vocabulary: list = param(["chair", "table", "mug", "bottle", "monitor", "lamp", "bookshelf", "plant",
                              "ball", "rug", "door", "painting"],
                             "Default class names of ClassifyObjects when the request gives none")
    top_k: int = param(3, "Labels per object in ClassifyObjects answers", unit="labels", lo=1, hi=100)
    cluster_similarity: float = param(0.9, "Object proposals: cosine of decoded embeddings to a group's seed",
                                      lo=0.0, hi=1.0)
    cluster_radius: float = param(0.05, "Object proposals: Gaussians closer than this are linked", unit="m",
                                  lo=0.0, hi=100.0)
    min_cluster_gaussians: int = param(64, "Object proposals: smallest object kept", unit="Gaussians",
                                       lo=1, hi=10_000_000)
    proposals: int = param(5, "Two-stage answers: the language field proposes this many objects (RetrieveObjects) "
                           "or labels (ClassifyObjects; at least the number asked for) and CLIP-GS ranks them; "
                           "0 = CLIP-GS alone over all", unit="candidates", lo=0, hi=10_000)


@dataclass
class RosConfig:
    """Topics, frames, buffering and publishing of the ROS nodes."""

    image_topic: str = param("camera/image_raw", "Colour images (sensor_msgs/Image)", read_only=WIRED_AT_START)
    compressed_image_topic: str = param("", "Compressed colour images (sensor_msgs/CompressedImage); "
                                        "empty = not subscribed", read_only=WIRED_AT_START)
    camera_info_topic: str = param("camera/camera_info", "Intrinsics (sensor_msgs/CameraInfo)",
                                   read_only=WIRED_AT_START)
    depth_topic: str = param("", "Depth images aligned with colour (16UC1 mm or 32FC1 m); empty = none",
                             read_only=WIRED_AT_START)
    depth_camera_info_topic: str = param("", "CameraInfo of depth images in their own optical frame (not "
                                         "registered to colour): the node registers them with it and TF; "
                                         "empty = depth must be registered (its frame_id the colour image's)",
                                         read_only=WIRED_AT_START)
    pose_source: str = param("tf", "Where camera poses come from", choices=["tf", "pose", "odometry"],
                             read_only=WIRED_AT_START)
    pose_topic: str = param("camera/pose", "PoseStamped or Odometry topic when pose_source is not tf",
                            read_only=WIRED_AT_START)
    world_frame: str = param("map", "Fixed frame of the map and of every published output")
    camera_frame: str = param("", "Optical frame of the camera; empty = the image header's frame_id")
    pose_frame: str = param("", "Frame whose pose the PoseStamped messages give (e.g. base_link; composed "
                            "with TF to the image's optical frame); empty = the optical frame itself. "
                            "Odometry names it in child_frame_id")
    camera_model: str = param("auto", "How CameraInfo describes the images (as image_geometry): raw = k and d "
                              "(distorted images are undistorted into p), rectified = p (image_proc's "
                              "image_rect*), auto = rectified when the image topic's name contains 'rect', "
                              "else raw", choices=["auto", "raw", "rectified"])
    time_jump_threshold: float = param(1.0, "A stamp this much older than the newest one of its stream (a bag "
                                       "loop, a simulator reset) is a backward time jump: the TF and frame "
                                       "stores are cleared and mapping goes on", unit="s", lo=0.001, hi=1e6)
    time_jump_resets_map: bool = param(False, "On a backward time jump of the image stream also reset the map "
                                       "(false: keep it, e.g. a bag played in a loop maps the same place)")
    tf_timeout: float = param(0.5, "How long a frame waits for its TF before it is dropped", unit="s",
                              lo=0.0, hi=10.0)
    max_sync_offset: float = param(0.02, "Largest stamp difference for colour/depth/pose matching",
                                   unit="s", lo=0.0, hi=10.0)
    frame_buffer: int = param(8, "Frames waiting for the worker; the oldest is dropped and counted when "
                              "full", unit="frames", lo=1, hi=1000, read_only=WIRED_AT_START)
    qos_depth: int = param(5, "Keep-last depth of sensor subscriptions", unit="messages", lo=1, hi=1000,
                           read_only=WIRED_AT_START)
    qos_reliable: bool = param(False, "Sensor subscriptions reliable instead of best-effort",
                               read_only=WIRED_AT_START)
    marker_topic: str = param("gags/targets", "MarkerArray of query targets (transient local)",
                              read_only=WIRED_AT_START)
    cloud_topic: str = param("gags/map", "Map as PointCloud2 (RGB, optional relevancy)", read_only=WIRED_AT_START)
    status_topic: str = param("gags/status", "MappingStatus messages", read_only=WIRED_AT_START)
    status_period: float = param(1.0, "Status and diagnostics period", unit="s", lo=0.05, hi=3600.0)
    cloud_period: float = param(5.0, "Map cloud publishing period; 0 = only after queries", unit="s",
                                lo=0.0, hi=3600.0)
    cloud_max_points: int = param(200_000, "Map cloud is subsampled to at most this", unit="points",
                                  lo=1, hi=50_000_000)
    request_queue: int = param(32, "Service requests that may wait for the worker; one more is answered at "
                               "once with success=false and a message starting 'busy:'", unit="requests",
                               lo=1, hi=100_000, read_only=WIRED_AT_START)
    service_qos_depth: int = param(256, "Keep-last depth of every service's request and response queues "
                                   "(reliable): at least request_queue, and at least the requests all "
                                   "clients together may have outstanding, or DDS drops the oldest "
                                   "(clients need as much: every answer reaches every client)",
                                   unit="requests", lo=1, hi=1_000_000, read_only=WIRED_AT_START)
    autostart: bool = param(True, "Lifecycle: configure and activate the node at start (false: it starts "
                            "unconfigured, for `ros2 lifecycle set` or a lifecycle manager such as nav2's)",
                            read_only="it is read once, when the node starts")
    message_expiry: float = param(30.0, "An error or rejection stays in status.message and the diagnostics' "
                                  "last reasons this long after it last happened", unit="s", lo=0.1, hi=1e6)
    shutdown_timeout: float = param(1.0, "On shutdown, how long the worker's current step may take to "
                                    "finish before it is abandoned", unit="s", lo=0.0, hi=60.0)
    map_file_mode: str = param("", "Permission bits of saved map files in octal (e.g. 0640); empty = "
                               "0666 minus the process umask (0644 under the usual umask 022)",
                               read_only=NAMES_A_RESOURCE)


@dataclass
class LimitsConfig:
    """Plausibility limits of the input: what a real camera and robot can give; anything outside is
    refused with the limit it broke (so garbage never reaches the map)."""

    min_fov: float = param(1.0, "Smallest field of view a CameraInfo may give, 2 atan(width / 2 fx) "
                           "horizontally and 2 atan(height / 2 fy) vertically", unit="deg", lo=0.01, hi=179.0)
    max_fov: float = param(170.0, "Largest field of view a CameraInfo may give (images are rectified "
                           "pinhole images; fx = 1e-3 px on a 640 px image is 180 deg)", unit="deg",
                           lo=1.0, hi=179.99)
    min_depth: float = param(0.01, "Depth pixels nearer than this are no measurement", unit="m",
                             lo=0.0, hi=1000.0)
    max_depth: float = param(100.0, "Depth pixels farther than this are no measurement (a depth image "
                             "with no pixel in range is refused)", unit="m", lo=0.001, hi=100_000.0)
    max_pose_jump: float = param(2.0, "A frame whose camera moved farther than this from the previous "
                                 "frame's pose is refused (a pose glitch; one frame after a relocalisation)",
                                 unit="m", lo=0.0, hi=1e6)
    quaternion_tolerance: float = param(0.01, "TF and pose quaternions q are refused unless "
                                        "|x^2 + y^2 + z^2 + w^2 - 1| < this (tf2's rule and default)",
                                        lo=1e-9, hi=1.0)


@dataclass
class GagsConfig:
    """Root of the configuration tree."""

    device: str = param("auto", "Torch device: auto (cuda when available), cpu, cuda or cuda:N",
                        read_only=NAMES_A_RESOURCE)
    seed: int = param(0, "Seed of every random choice (prompt sampling, window sampling, init)",
                      lo=0, hi=2**31 - 1, read_only=True)
    save_dir: str = param("~/.ros/gags_maps", "The map folder: gags/save_map and gags/load_map read and write "
                          "only files inside it (a relative name means inside it; see allow_any_path)",
                          read_only=NAMES_A_RESOURCE)
    allow_any_path: bool = param(False, "Let gags/save_map and gags/load_map name any file the node's user "
                                 "may write or read, not only files inside save_dir: for trusted set-ups "
                                 "only (docs/security.md)", read_only=NAMES_A_RESOURCE)
    cpu_threads: int = param(0, "Torch CPU threads of the worker; 0 = torch's default (all cores)",
                             unit="threads", lo=0, hi=1024, read_only=True)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    clipgs: ClipGSConfig = field(default_factory=ClipGSConfig)
    ros: RosConfig = field(default_factory=RosConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def resolved_device(self) -> str:
        """The torch device string this configuration means on this machine."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class FieldInfo:
    """One leaf of the tree: dotted name, current value, python type and its metadata."""

    name: str
    value: Any
    type: type
    help: str
    unit: str
    lo: Optional[float]
    hi: Optional[float]
    choices: Optional[tuple]
    read_only: bool
    read_only_reason: str = ""

    @property
    def description(self) -> str:
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.help}{unit}"


def _leaf_type(default: Any) -> type:
    if isinstance(default, bool):
        return bool
    if isinstance(default, list):
        return list
    return type(default)


def iter_fields(cfg: Any, prefix: str = "") -> Iterator[FieldInfo]:
    """Every leaf of ``cfg`` in declaration order, nested sections flattened with dots."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, name + ".")
            continue
        m = f.metadata
        yield FieldInfo(name, value, _leaf_type(f.default if f.default is not dataclasses.MISSING
                                                else f.default_factory()),
                        m.get("help", ""), m.get("unit", ""), m.get("lo"), m.get("hi"),
                        m.get("choices"), bool(m.get("read_only", False)), m.get("read_only_reason", ""))


def _check_value(info: FieldInfo, value: Any) -> Any:
    """Coerce ``value`` to the field's type and check range/choices; raise ConfigError naming it."""
    name = info.name
    t = info.type
    try:
        if t is bool:
            if not isinstance(value, bool):
                raise TypeError
        elif t is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            value = int(value)
        elif t is float:
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        elif t is str:
            if not isinstance(value, str):
                raise TypeError
        elif t is list:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            value = list(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: expected {t.__name__}") from None
    numbers = value if t is list else [value]
    for v in numbers:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(float(v)):
                raise ConfigError(f"{name}={value!r}: must be finite")
            if (info.lo is not None and v < info.lo) or (info.hi is not None and v > info.hi):
                raise ConfigError(f"{name}={value!r}: out of range [{info.lo}, {info.hi}]"
                                  + (f" {info.unit}" if info.unit else ""))
    if info.choices is not None and value not in info.choices:
        raise ConfigError(f"{name}={value!r}: must be one of {list(info.choices)}")
    return value


def _cross_checks(cfg: GagsConfig) -> None:
    q = cfg.query
    if q.drop_neighbours > q.keep_neighbours:
        raise ConfigError(f"query.drop_neighbours={q.drop_neighbours}: must not exceed "
                          f"query.keep_neighbours={q.keep_neighbours}")
    if len(q.calibration) != 6:
        raise ConfigError(f"query.calibration={q.calibration!r}: expected 6 coefficients (intercept, score, "
                          f"margin, margin90, log_support, log_selected; gags_ros/core/calibration.py)")
    if len(cfg.mapping.background) != 3:
        raise ConfigError(f"mapping.background={cfg.mapping.background!r}: expected 3 values (RGB)")
    r = cfg.ros
    if r.service_qos_depth < r.request_queue:
        raise ConfigError(f"ros.service_qos_depth={r.service_qos_depth}: must be at least "
                          f"ros.request_queue={r.request_queue}")
    if r.map_file_mode and not re.fullmatch(r"0?[0-7]{3}", r.map_file_mode):
        raise ConfigError(f"ros.map_file_mode={r.map_file_mode!r}: expected octal permission bits like 0644")
    lim = cfg.limits
    if lim.min_fov >= lim.max_fov:
        raise ConfigError(f"limits.min_fov={lim.min_fov}: must be below limits.max_fov={lim.max_fov}")
    if lim.min_depth >= lim.max_depth:
        raise ConfigError(f"limits.min_depth={lim.min_depth}: must be below limits.max_depth={lim.max_depth}")
    d = cfg.device
    if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
        raise ConfigError(f"device={d!r}: must be auto, cpu, cuda or cuda:N")


def validate(cfg: GagsConfig) -> GagsConfig:
    """Check every leaf (type, range, choices) and the cross-field rules; return ``cfg``."""
    for info in iter_fields(cfg):
        _check_value(info, info.value)
    _cross_checks(cfg)
    return cfg


def _section_and_leaf(cfg: Any, dotted: str):
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise ConfigError(f"{dotted}: unknown parameter")
        obj = getattr(obj, p)
    if not any(f.name == parts[-1] for f in dataclasses.fields(obj)) or \
            dataclasses.is_dataclass(getattr(obj, parts[-1])):
        raise ConfigError(f"{dotted}: unknown parameter")
    return obj, parts[-1]


def field_info(cfg: GagsConfig, dotted: str) -> FieldInfo:
    for info in iter_fields(cfg):
        if info.name == dotted:
            return info
    raise ConfigError(f"{dotted}: unknown parameter")


def set_value(cfg: GagsConfig, dotted: str, value: Any) -> None:
    """Set one leaf by dotted name after checking it (the config stays valid if this raises)."""
    obj, leaf = _section_and_leaf(cfg, dotted)
    value = _check_value(field_info(cfg, dotted), value)
    old = getattr(obj, leaf)
    setattr(obj, leaf, value)
    try:
        _cross_checks(cfg)
    except ConfigError:
        setattr(obj, leaf, old)
        raise


def set_values(cfg: GagsConfig, values: dict) -> None:
    """Set several leaves ``{dotted_name: value}`` at once: each value is checked, then the cross-field
    rules on the result (so ``query.keep_neighbours`` and ``query.drop_neighbours`` can move together
    past each other). On any error nothing changes."""
    checked = [(*_section_and_leaf(cfg, k), _check_value(field_info(cfg, k), v)) for k, v in values.items()]
    old = [(obj, leaf, getattr(obj, leaf)) for obj, leaf, _ in checked]
    for obj, leaf, v in checked:
        setattr(obj, leaf, v)
    try:
        _cross_checks(cfg)
    except ConfigError:
        for obj, leaf, v in reversed(old):
            setattr(obj, leaf, v)
        raise


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (JSON/YAML-able)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict, base: Optional[GagsConfig] = None) -> GagsConfig:
    """A validated config from a nested dict (unknown keys raise); missing keys keep defaults."""
    cfg = base if base is not None else GagsConfig()

    def walk(d: dict, prefix: str):
        if not isinstance(d, dict):
            raise ConfigError(f"{prefix.rstrip('.') or '<root>'}: expected a mapping, got {d!r}")
        for k, v in d.items():
            name = prefix + str(k)
            if isinstance(v, dict):
                walk(v, name + ".")
            else:
                set_value(cfg, name, v)

    walk(data, "")
    return validate(cfg)


def flat_dict(cfg: GagsConfig) -> dict:
    """``{dotted_name: value}`` for every leaf."""
    return {info.name: info.value for info in iter_fields(cfg)}


def ros_params_yaml(cfg: Optional[GagsConfig] = None) -> str:
    """The ROS 2 parameter-file view of ``cfg`` (defaults when None), with help and units as comments."""
    cfg = cfg or GagsConfig()
    lines = [
        "# gags_ros parameters: generated from gags_ros/core/config.py by",
        "#   python -m gags_ros.core.config --write config/mapping.yaml",
        "# Edit the dataclasses, then regenerate; tests/test_config.py checks they agree.",
        "/**:",
        "  ros__parameters:",
    ]
    section = None
    for info in iter_fields(cfg):
        parts = info.name.split(".")
        indent = "    "
        if len(parts) == 2:
            if parts[0] != section:
                section = parts[0]
                lines.append(f"    {section}:")
            indent = "      "
        else:
            section = None
        rng = ""
        if info.choices:
            rng = f" (one of: {', '.join(map(str, info.choices))})"
        elif info.lo is not None or info.hi is not None:
            rng = f" (range {info.lo} .. {info.hi})"
        lines.append(f"{indent}# {info.description}{rng}")
        lines.append(f"{indent}{parts[-1]}: {_yaml_scalar(info.value)}")
    return "\n".join(lines) + "\n"


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    return str(v)


def load_yaml(path: str | Path, base: Optional[GagsConfig] = None) -> GagsConfig:
    """Read a parameter file (ROS form with ``ros__parameters``, or a plain nested mapping)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if isinstance(data, dict) and len(data) == 1:
        (only,) = data.values()
        if isinstance(only, dict) and "ros__parameters" in only:
            data = only["ros__parameters"]
    try:
        return from_dict(data, base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Print or write the ROS parameter-file view of the config")
    ap.add_argument("--write", metavar="PATH", help="write the YAML here instead of printing it")
    args = ap.parse_args(argv)
    text = ros_params_yaml()
    if args.write:
        Path(args.write).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
