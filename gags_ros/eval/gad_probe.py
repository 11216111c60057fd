"""A controlled probe of granularity-aware distillation: does the granularity decoder pick the level
whose teacher output is consistent across views, and how much embedding noise does that survive?

GaD has no labels for the granularity weights ``w``: the only signal is that a 3D point's masks and
embeddings agree across views at some levels and not at others. This probe isolates that signal
from the map: a ``size x size`` grid of free latents (one per "point", no renderer) is seen in
``views`` views. On the left half the sub-part level is consistent (the same mask and label in every
view) and the whole level is a random label per view; on the right half the reverse; the part level
is random everywhere. Every mask of every view gets its own noisy embedding, the simulation teacher's
model: ``normalize(label + N(0, sigma^2) per dimension)`` (the issue's sigma is 0.05 on 384-d
MiniLM embeddings, a noise vector about as long as the label's). Label embeddings share a common
direction (mean cosine about 0.25, like MiniLM's labels).

It runs the real objective (:func:`~gags_ros.core.language.losses.language_losses` with Eq. 7's
schedule), the real :class:`~gags_ros.core.language.field.LanguageField` and Adam at the configured
learning rates, and reports the mean weight of the consistent level (1.0: GaD found it on every
point; 1/3: uniform weights, i.e. GaD degenerates to Avg) and the mean entropy of ``w`` (nats;
ln 3 = 1.0986 is uniform). ``bench/gad_probe.py`` records it over sigma; a test checks that
noise-free views are resolved.
"""

from __future__ import annotations

from typing import Optional

import torch

SUBPART, PART, WHOLE = 0, 1, 2


def _teacher_views(size: int, views: int, dim: int, labels: int, sigma: float, g: torch.Generator):
    """``views`` :class:`TeacherTargets` of the probe (see the module doc) and the ``[size, size]``
    bool mask of the left half."""
    from ..core.language.losses import TeacherTargets

    c = 0.577  # shared component: cos(a, b) ~ c^2 / (1 + c^2) = 0.25 between labels
    shared = torch.nn.functional.normalize(torch.randn(1, dim, generator=g), dim=-1) * dim ** 0.5
    base = torch.nn.functional.normalize(torch.randn(labels, dim, generator=g) + c * shared, dim=-1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    half = size // 2
    quad = (yy // half) * 2 + (xx // half)          # four regions, ids 0..3
    left = xx < half
    out = []
    for _ in range(views):
        def random_label():
            return torch.randint(8, labels, (4,), generator=g)[quad]  # one random label per region

        sub = torch.where(left, quad, random_label())
        whole = torch.where(left, random_label(), 4 + quad)
        ids = torch.stack([sub, random_label(), whole])  # [3, H, W] label ids
        # every (level, mask) of this view is its own mask: its own noise draw
        keys, inv = torch.unique(ids * 3 + torch.arange(3)[:, None, None], return_inverse=True)
        emb = base[keys // 3]
        if sigma > 0:
            emb = emb + sigma * torch.randn(emb.shape, generator=g)
        out.append(TeacherTargets(inv.long(), torch.nn.functional.normalize(emb, dim=-1)))
    return out, left


def gad_probe(sigma: float = 0.05, steps: int = 800, views: int = 16, size: int = 16, dim: int = 384,
              labels: int = 200, seed: int = 0, lr_features: Optional[float] = None,
              lr_decoders: Optional[float] = None) -> dict:
    """Run the probe; returns ``{"consistent_weight", "left_weights", "right_weights", "entropy",
    "loss"}`` (weights: mean ``[subpart, part, whole]`` over each half after ``steps`` steps).

    ``lr_features`` / ``lr_decoders``: default the configuration's (``language.lr_features``,
    ``language.lr_decoders``). Deterministic in ``seed`` on one machine (CPU).
    """
    from ..core.config import GagsConfig
    from ..core.language.field import LanguageField, init_latents
    from ..core.language.losses import language_losses, schedule_weights

    lcfg = GagsConfig().language
    lr_f = lcfg.lr_features if lr_features is None else lr_features
    lr_d = lcfg.lr_decoders if lr_decoders is None else lr_decoders
    g = torch.Generator().manual_seed(int(seed))
    targets, left = _teacher_views(size, views, dim, labels, float(sigma), g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        latents = torch.nn.Parameter(init_latents(size * size, lcfg.feature_dim).reshape(size, size, -1))
        field = LanguageField(lcfg.feature_dim, dim)
    opt_f = torch.optim.Adam([latents], lr=lr_f)
    opt_d = torch.optim.Adam(field.parameters(), lr=lr_d)
    out = {}
    for s in range(int(steps)):
        w = schedule_weights(s, steps, lcfg.entropy_weight_early, lcfg.entropy_weight_late, lcfg.variance_weight)
        out = language_losses(latents, targets[s % views], field, "gad", w)
        opt_f.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt_f.step()
        opt_d.step()
    with torch.no_grad():
        w = field.granularity(latents.reshape(size * size, -1)).reshape(size, size, 3)
        ent = float((-(w * torch.log(w + 1e-6)).sum(-1)).mean())
        lw, rw = w[left].mean(0), w[~left].mean(0)
    return {"consistent_weight": float(0.5 * (lw[SUBPART] + rw[WHOLE])), "left_weights": lw.tolist(),
            "right_weights": rw.tolist(), "entropy": ent, "loss": float(out["loss"].detach()) if out else float("nan")}
