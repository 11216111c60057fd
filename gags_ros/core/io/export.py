"""Semantic export: the map's Gaussians as one binary PLY for software that does not speak ROS.

The file is the standard 3DGS PLY (:mod:`.ply`: any splat viewer reads the geometry) with more
float32 / int32 vertex properties:

- ``f_lang_0`` .. ``f_lang_{F-1}``: each Gaussian's language latent (``language.feature_dim``); the
  decoders that turn latents into CLIP embeddings live in the ``.gags`` map file;
- ``coverage``: share of the Gaussian's seen blend weight on teacher-supervised pixels, in [0, 1];
  -1 where the map keeps no coverage records (:mod:`.language.coverage`);
- given a vocabulary, ``label`` (int32 index into it: the text of highest relevancy) and ``score``
  (that relevancy, in [0, 1], as the query engine computes it: :mod:`.query`); both -1 for the
  Gaussians a query never selects (less opaque than ``query.min_opacity``, or less covered than
  ``query.min_coverage``).

The vocabulary is stored in the header, one ``comment vocabulary <index> <JSON string>`` line per
entry (JSON escapes keep the header ASCII). Readable by plyfile, Open3D's tensor API and
:func:`.ply.read_ply_vertices`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..language import coverage
from ..query import check_query_text
from .ply import write_gaussians_ply

FORMAT = "gags_ros semantic export 1"
UNKNOWN = -1
TEXTS_PER_PASS = 32   # vocabulary entries scored per relevancy pass: bounds the [N, T] buffer
MAX_VOCABULARY = 1000


def check_vocabulary(vocabulary: Sequence[str], max_text_length: int) -> str:
    """Why ``vocabulary`` cannot label a map ("" when it can)."""
    if len(vocabulary) > MAX_VOCABULARY:
        return f"vocabulary of {len(vocabulary)} entries: at most {MAX_VOCABULARY}"
    for i, text in enumerate(vocabulary):
        why = check_query_text(text, max_text_length)
        if why:
            return f"vocabulary entry {i}: {why}"
    return ""


def label_gaussians(engine, gaussians, field, vocabulary: Sequence[str],
                    coverage_mode: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(label [N] int32, score [N] float32)``: per Gaussian the index of the vocabulary entry of
    highest raw relevancy (``engine``: :class:`~.query.QueryEngine`) and that relevancy in [0, 1];
    ``UNKNOWN`` for the Gaussians a query would not consider (opacity, coverage)."""
    n = len(gaussians)
    label = np.full(n, UNKNOWN, np.int32)
    score = np.full(n, float(UNKNOWN), np.float32)
    with torch.no_grad():
        eligible = gaussians.opacities.detach() >= engine.cfg.min_opacity
        known = engine.known(gaussians, coverage_mode)
        if known is not None:
            eligible &= known
        index = eligible.nonzero(as_tuple=True)[0]
        if index.numel() == 0 or not vocabulary:
            return label, score
        dev = gaussians.params["features"].device
        best = torch.full((index.numel(),), -1.0, device=dev)
        arg = torch.zeros(index.numel(), dtype=torch.long, device=dev)
        for s in range(0, len(vocabulary), TEXTS_PER_PASS):
            emb = engine.encode(vocabulary[s:s + TEXTS_PER_PASS], dev)
            rel = engine.gaussian_relevancy(gaussians, field, emb, index)       # [n, t]
            top, top_arg = rel.max(dim=1)
            better = top > best
            best = torch.where(better, top, best)
            arg = torch.where(better, top_arg + s, arg)
        idx = index.cpu().numpy()
        label[idx] = arg.cpu().numpy().astype(np.int32)
        score[idx] = best.float().cpu().numpy()
    return label, score


def write_semantic_ply(path: str | Path, gaussians, field=None, engine=None, vocabulary: Sequence[str] = (),
                       coverage_mode: str = "gad", world_frame: str = "map", mode: str = "") -> dict:
    """Write ``gaussians`` (:class:`~.gaussians.GaussianMap`) as the semantic PLY described above,
    atomically (the folder is created; ``mode``: permission bits as for map files,
    ``ros.map_file_mode``). ``field`` / ``engine``: the language field and query engine (needed for
    labels; the latents are written whenever the map has them). Returns ``{"gaussians",
    "labelled", "path"}``.

    Raises ValueError for a bad vocabulary, or a vocabulary given for a map without language."""
    vocabulary = [str(v) for v in vocabulary]
    if vocabulary:
        if engine is None or field is None or "features" not in gaussians.params:
            raise ValueError("labels need language features: no keyframe has been distilled yet")
        why = check_vocabulary(vocabulary, engine.cfg.max_text_length)
        if why:
            raise ValueError(why)
    p = {k: v.detach().float().cpu() for k, v in gaussians.params.items()}
    n = len(gaussians)
    extra = {}
    comments = [FORMAT, f"frame {world_frame} (positions in metres)"]
    if "features" in p:
        lat = p["features"].reshape(n, -1).numpy()
        extra.update({f"f_lang_{i}": lat[:, i] for i in range(lat.shape[1])})
        comments.append(f"f_lang_0..{lat.shape[1] - 1}: language latents (decoders: the .gags map file)")
    frac = coverage.supervised_fraction(gaussians, coverage_mode)
    extra["coverage"] = (np.full(n, float(UNKNOWN), np.float32) if frac is None
                         else frac.detach().float().cpu().numpy())
    comments.append("coverage: supervised share of seen blend weight 0..1; -1 = not recorded")
    labelled = 0
    if vocabulary:
        label, score = label_gaussians(engine, gaussians, field, vocabulary, coverage_mode)
        extra["label"], extra["score"] = label, score
        labelled = int((label != UNKNOWN).sum())
        comments.append("label: vocabulary index of highest relevancy; score: that relevancy 0..1; "
                        "both -1 = unknown (query.min_opacity, query.min_coverage)")
        comments += [f"vocabulary {i} {json.dumps(v)}" for i, v in enumerate(vocabulary)]
    write_gaussians_ply(path, p["means"].numpy(), p["sh0"].reshape(n, -1)[:, :3].numpy(), p["opacities"].numpy(),
                        p["scales"].numpy(), p["quats"].numpy(), extra=extra, comments=comments, mode=mode)
    return {"gaussians": n, "labelled": labelled, "path": str(path)}


def read_vocabulary(comments: Sequence[str]) -> list[str]:
    """The vocabulary stored in a semantic PLY's header comments (plyfile's ``PlyData.comments``)."""
    out = {}
    for c in comments:
        if c.startswith("vocabulary "):
            _, i, text = c.split(" ", 2)
            out[int(i)] = json.loads(text)
    return [out[i] for i in sorted(out)]
