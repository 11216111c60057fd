"""Granularity-aware distillation of the teachers' three-level embeddings into the map's latents.

:class:`Distiller` is driven by the single GPU worker, interleaved with mapping:

- ``add_teacher_output(k, out)`` stores keyframe ``k``'s :class:`TeacherOutput` at the render
  resolution (mask ids resized by nearest neighbour, embeddings kept in float16 on the device);
- ``step(n)`` runs ``n`` optimisation steps. Each samples a keyframe that has a teacher output
  (keyframes whose output just arrived first, then uniformly), renders the latents
  ``gaussians.features`` with geometry detached (no gradient reaches means, scales,
  rotations, opacities or colours, and nothing here densifies), decodes them per pixel and applies
  the losses of :mod:`.losses` with the schedule of Eq. 7 over ``LanguageConfig.total_steps``
  counted across all calls; then it steps the latents' Adam (``mapper.optimizers["features"]``,
  registered through ``mapper.add_param`` so densify/prune keep it aligned) and the decoders' Adam.
- each teacher output also adds its keyframe's language coverage to the map's per-Gaussian
  records (:mod:`.coverage`): which Gaussians a mask ever supervised;
- ``offline(steps)`` is the evaluation schedule: ``steps`` iterations over every stored keyframe in
  shuffled epochs, switching to the second-half objective at ``steps / 2``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import Dict, Optional

import numpy as np
import torch
from torch.nn import functional as F

from ..teachers.base import TeacherOutput
from . import coverage
from .field import LanguageField, autocast_dtype, init_latents, render_channels
from .losses import LossWeights, TeacherTargets, language_losses, schedule_weights

log = logging.getLogger("gags_ros.distill")

__all__ = ["Distiller", "autocast_dtype"]

FEATURES = "features"


class Distiller:
    """Distils teacher outputs into ``mapper.gaussians.features`` and a :class:`LanguageField`.

    ``mapper``: provides ``gaussians`` (GaussianMap), ``keyframes`` (objects with ``index``,
    ``T_world_cam`` [4, 4] camera-to-world, ``intrinsics``), ``optimizers`` (dict of Adam per
    parameter), ``add_param(name, init [N, F], lr)`` and ``renderer``. ``embed_dim``: size of the
    teacher's embeddings (512 for CLIP ViT-B-16, 384 for the MiniLM simulation teacher).
    ``renderer``: overrides ``mapper.renderer``.
    """

    def __init__(self, cfg, mapper, embed_dim: int, device: str | torch.device, renderer=None):
        self.cfg = cfg
        self.lcfg = cfg.language
        self.mapper = mapper
        self.device = torch.device(device)
        self.embed_dim = int(embed_dim)
        self.renderer = renderer if renderer is not None else getattr(mapper, "renderer", None)
        if self.renderer is None:
            from ..render.factory import make_renderer

            self.renderer = make_renderer(cfg.mapping.renderer, self.device)
        # The decoders' initial weights come from cfg.seed, not from torch's global RNG (which
        # imported libraries draw from), so a map built twice from the same stream is the same map.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(getattr(cfg, "seed", 0)))
            self.field = LanguageField(self.lcfg.feature_dim, self.embed_dim)
        self.field = self.field.to(self.device)
        self.decoder_optimizer = torch.optim.Adam(self.field.parameters(), lr=self.lcfg.lr_decoders)
        self._targets: "collections.OrderedDict[int, TeacherTargets]" = collections.OrderedDict()
        self._resized: Dict[int, TeacherTargets] = {}
        self._fresh: collections.deque = collections.deque()
        self._rng = np.random.default_rng(int(getattr(cfg, "seed", 0)))
        self._gen = torch.Generator().manual_seed(int(getattr(cfg, "seed", 0)))
        self.steps_total = 0
        self.ensure_features()

    # ---- latents ------------------------------------------------------------------------------
    def ensure_features(self) -> torch.Tensor:
        """Register the latents with the mapper if absent; check they match the Gaussians."""
        g = self.mapper.gaussians
        if FEATURES not in g.params:
            init = init_latents(len(g), self.lcfg.feature_dim, self.device, generator=self._gen)
            self.mapper.add_param(FEATURES, init, self.lcfg.lr_features)
        feats = g.params[FEATURES]
        if feats.shape != (len(g), self.lcfg.feature_dim):
            raise RuntimeError(f"language latents have shape {tuple(feats.shape)}, expected "
                               f"({len(g)}, {self.lcfg.feature_dim}): the map lost alignment")
        return feats

    def load_field(self, field: LanguageField) -> None:
        """Continue from a loaded field (a fresh decoder optimiser; Adam moments are not saved)."""
        if field.embed_dim != self.embed_dim or field.feature_dim != self.lcfg.feature_dim:
            raise ValueError(f"field is {field.feature_dim}->{field.embed_dim}, this distiller needs "
                             f"{self.lcfg.feature_dim}->{self.embed_dim}")
        self.field = field.to(self.device)
        self.decoder_optimizer = torch.optim.Adam(self.field.parameters(), lr=self.lcfg.lr_decoders)

    # ---- teacher outputs ----------------------------------------------------------------------
    @property
    def teacher_keyframes(self) -> list:
        """Keyframe indices with a stored teacher output, oldest first."""
        return list(self._targets.keys())

    def add_teacher_output(self, keyframe_index: int, out: TeacherOutput) -> None:
        """Store ``out`` for keyframe ``keyframe_index`` (any resolution: mask ids are resized to the
        render size by nearest neighbour); it joins the loss from the next :meth:`step` on, first in
        line. Beyond ``teacher.cache_keyframes`` stored outputs the oldest is dropped."""
        if out.embeddings.shape[-1] != self.embed_dim:
            raise ValueError(f"teacher embeddings are {out.embeddings.shape[-1]}-d, the field decodes "
                             f"to {self.embed_dim}-d")
        if out.level_ids.dim() != 3 or out.level_ids.shape[0] != 3:
            raise ValueError(f"level_ids must be [3, H, W], got {tuple(out.level_ids.shape)}")
        self._keyframe(keyframe_index)  # fail now, not in a later step, for an unknown keyframe
        self._targets.pop(keyframe_index, None)
        self._targets[keyframe_index] = TeacherTargets(
            out.level_ids.to(self.device, torch.int32).contiguous(),
            out.embeddings.to(self.device, torch.float16).contiguous())
        self._resized.pop(keyframe_index, None)
        if keyframe_index in self._fresh:
            self._fresh.remove(keyframe_index)
        self._fresh.append(keyframe_index)
        self._add_coverage(keyframe_index)
        cap = int(getattr(getattr(self.cfg, "teacher", None), "cache_keyframes", 0) or 0)
        while cap and len(self._targets) > cap:
            old, _ = self._targets.popitem(last=False)
            self._resized.pop(old, None)
            if old in self._fresh:
                self._fresh.remove(old)

    def _add_coverage(self, keyframe_index: int) -> None:
        """Accumulate the keyframe's language coverage (:mod:`.coverage`) into the map's records,
        once per keyframe, at the distillation render size."""
        if not hasattr(self.mapper, "add_record"):
            return                                   # a mapper without per-Gaussian records
        kf = self._keyframe(keyframe_index)
        if getattr(kf, "coverage_counted", False):
            return
        intr = kf.intrinsics.scaled(self.lcfg.render_scale)
        with self._lock():
            t = self.targets_at(keyframe_index, int(intr.height), int(intr.width))
            coverage.accumulate(self.renderer, self.mapper, t.level_ids, kf.T_world_cam, intr, self.device)
            kf.coverage_counted = True

    def targets_at(self, keyframe_index: int, height: int, width: int) -> TeacherTargets:
        """Keyframe ``keyframe_index``'s teacher output with int64 mask ids at ``height x width``
        (cached until the render size changes)."""
        t = self._targets[keyframe_index]
        hit = self._resized.get(keyframe_index)
        if hit is not None and tuple(hit.level_ids.shape[1:]) == (height, width):
            return hit
        ids = t.level_ids
        if tuple(ids.shape[1:]) != (height, width):
            # float32 holds every id exactly (< 2^24 masks); "nearest-exact" samples pixel centres.
            ids = F.interpolate(ids.float()[None], size=(height, width), mode="nearest-exact")[0]
        hit = TeacherTargets(ids.long().contiguous(), t.embeddings)
        self._resized[keyframe_index] = hit
        return hit

    def _keyframe(self, index: int):
        kfs = self.mapper.keyframes
        if 0 <= index < len(kfs) and getattr(kfs[index], "index", index) == index:
            return kfs[index]
        for kf in kfs:
            if getattr(kf, "index", None) == index:
                return kf
        raise KeyError(f"keyframe {index} is not in the map ({len(kfs)} keyframes)")

    # ---- optimisation -------------------------------------------------------------------------
    def _weights(self, step: int, total: int) -> LossWeights:
        c = self.lcfg
        return schedule_weights(step, total, c.entropy_weight_early, c.entropy_weight_late, c.variance_weight)

    def render_latents(self, keyframe_index: int) -> torch.Tensor:
        """``[H, W, F]`` latents of keyframe ``keyframe_index`` at the render scale; gradients flow
        into the latents only."""
        kf = self._keyframe(keyframe_index)
        intr = kf.intrinsics.scaled(self.lcfg.render_scale)
        return render_channels(self.renderer, self.mapper.gaussians, self.ensure_features(),
                               kf.T_world_cam, intr, self.device)

    def _step_one(self, keyframe_index: int, weights: LossWeights) -> Dict[str, torch.Tensor]:
        c = self.lcfg
        latents = self.render_latents(keyframe_index)
        t = self.targets_at(keyframe_index, latents.shape[0], latents.shape[1])
        amp = autocast_dtype(c.precision, self.device)
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = language_losses(latents, t, self.field, c.mode, weights)
        opt_f = self.mapper.optimizers[FEATURES]
        # learning rates are live parameters: apply the current ones
        opt_f.param_groups[0]["lr"] = c.lr_features
        self.decoder_optimizer.param_groups[0]["lr"] = c.lr_decoders
        opt_f.zero_grad(set_to_none=True)
        self.decoder_optimizer.zero_grad(set_to_none=True)
        if out["loss"].requires_grad:
            out["loss"].backward()
            opt_f.step()
            self.decoder_optimizer.step()
        out["loss"] = out["loss"].detach()
        return out

    def _lock(self):
        """The mapper's lock (``Mapper.lock``) around one step, or nothing for lock-less mappers."""
        lock = getattr(self.mapper, "lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def _next_keyframe(self) -> int:
        if self._fresh:
            return self._fresh.popleft()
        keys = self.teacher_keyframes
        return keys[int(self._rng.integers(len(keys)))]

    def step(self, n: int = 1) -> dict:
        """``n`` online steps (schedule position ``steps_total``). Returns mean ``loss``,
        ``distill``, ``entropy``, ``variance`` over the steps, ``steps`` done, ``steps_total`` and
        ``phase`` (1 or 2 of Eq. 7); ``{"steps": 0, ...}`` when no teacher output is stored yet or
        the map is empty."""
        if not self._targets or len(self.mapper.gaussians) == 0 or n <= 0:
            return {"steps": 0, "steps_total": self.steps_total}
        acc = []
        for _ in range(int(n)):
            with self._lock():  # per step, so queries and renders can run in between
                w = self._weights(self.steps_total, self.lcfg.total_steps)
                acc.append(self._step_one(self._next_keyframe(), w))
                self.steps_total += 1
        return self._summary(acc, 2 if w.region_aware else 1)

    def offline(self, steps: Optional[int] = None, log_every: int = 0) -> dict:
        """The evaluation schedule: ``steps`` (default ``language.total_steps``) iterations over all
        stored keyframes in shuffled epochs, Eq. 7's switch at ``steps / 2``. Returns the summary of
        the last ``max(1, steps // 20)`` steps plus ``first_loss`` (mean of the first ones)."""
        steps = int(self.lcfg.total_steps if steps is None else steps)
        if not self._targets or len(self.mapper.gaussians) == 0 or steps <= 0:
            return {"steps": 0, "steps_total": self.steps_total}
        window = max(1, steps // 20)
        first, last = [], collections.deque(maxlen=window)
        order: list = []
        w = self._weights(0, steps)
        for t in range(steps):
            if not order:
                keys = self.teacher_keyframes
                order = [keys[i] for i in self._rng.permutation(len(keys))]
            w = self._weights(t, steps)
            with self._lock():
                out = self._step_one(order.pop(), w)
                self.steps_total += 1
            if t < window:
                first.append(out)
            last.append(out)
            if log_every and (t + 1) % log_every == 0:
                log.info("distill %d/%d loss %.4f", t + 1, steps, float(out["loss"]))
        summary = self._summary(list(last), 2 if w.region_aware else 1)
        summary["first_loss"] = self._summary(first, 1)["loss"]
        summary["steps"] = steps
        return summary

    def _summary(self, acc: list, phase: int) -> dict:
        keys = ("loss", "distill", "entropy", "variance")
        # One stack + one transfer instead of a device sync per step.
        vals = torch.stack([torch.stack([o[k].detach().float() for k in keys]) for o in acc]).mean(0).tolist()
        res = dict(zip(keys, vals))
        res.update(steps=len(acc), steps_total=self.steps_total, phase=phase,
                   pixels=int(np.mean([o["pixels"] for o in acc])))
        return res

