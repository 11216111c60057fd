"""Incremental Gaussian mapping from a stream of posed frames.

One :class:`Mapper` owns the map (a :class:`~gags_ros.core.gaussians.GaussianMap`), one Adam
optimizer per parameter (gsplat-examples style, so gsplat's strategies can edit both), the
keyframes and a gsplat densification strategy with its state. The caller drives it:

    idx = mapper.add_frame(frame)          # keyframe policy + seeding; cheap for other frames
    if idx is not None:
        mapper.step(cfg.mapping.steps_per_keyframe)
    ...
    mapper.refine()                         # when the stream ends

Every public method takes ``mapper.lock`` (re-entrant) for its own duration, per optimisation
step in :meth:`step` and :meth:`refine`, so a reader thread can render or export between steps.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Optional

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from gsplat.strategy.ops import remove

from ..camera import invert_pose
from ..config import GagsConfig
from ..gaussians import GEOMETRY_KEYS, GaussianMap, rgb_to_sh0
from ..io.ply import write_gaussians_ply
from ..render import Renderer, RenderOutput
from ..types import Frame, Intrinsics, check_rigid
from .keyframes import Keyframe, frame_to_tensors, nearest_close_keyframe, sample_window, view_overlap
from .losses import ssim
from .seeding import seed_gaussians

OVERLAP_RENDER_WIDTH = 64   # px; the keyframe test renders this small
REFINE_DENSIFY_FRACTION = 0.5  # the final pass densifies in its first half only (3DGS: 15k of 30k)
REFINE_MEANS_LR_END = 0.01     # ... and decays the centres' learning rate to this fraction
MCMC_OPACITY_REG = 0.01        # gsplat's simple_trainer regularisers for MCMC
MCMC_SCALE_REG = 0.01


def default_strategy(cfg: GagsConfig):
    """gsplat's own strategy dataclass for ``cfg.mapping.strategy``, set up for streaming: the
    refinement schedule never ends (new parts of the world keep arriving) and the budget is
    ``cfg.mapping.max_gaussians``. Other fields keep gsplat's defaults."""
    m = cfg.mapping
    if m.strategy == "mcmc":
        return MCMCStrategy(cap_max=m.max_gaussians, refine_stop_iter=2 ** 62)
    return DefaultStrategy(refine_stop_iter=2 ** 62)


@torch.no_grad()
def append_gaussians(params: torch.nn.ParameterDict, optimizers: Dict[str, torch.optim.Optimizer],
                     state: dict, new: Dict[str, torch.Tensor], fill: Optional[Dict[str, float]] = None) -> None:
    """Append Gaussians in place, the way gsplat's ``strategy.ops`` edit the map.

    ``new`` maps parameter names to ``[M, ...]`` values; parameters it does not name get
    ``fill[name]`` (per-Gaussian records, :class:`~gags_ros.core.gaussians.GaussianMap`), else zeros
    (language latents, say). Optimizer moments and tensors in ``state`` whose first dimension is
    the Gaussian count are extended with zeros.
    """
    n_old = len(params["means"])
    m = len(new["means"])
    fill = fill or {}
    for name in list(params.keys()):
        p = params[name]
        extra = new.get(name)
        if extra is None:
            extra = torch.full((m, *p.shape[1:]), fill.get(name, 0.0), device=p.device, dtype=p.dtype)
        p_new = torch.nn.Parameter(torch.cat([p.detach(), extra.to(p)]), requires_grad=p.requires_grad)
        params[name] = p_new
        opt = optimizers.get(name)
        if opt is None:
            continue
        st = opt.state.pop(p, None)
        if st:
            for k, v in st.items():
                if k != "step" and torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old:
                    st[k] = torch.cat([v, torch.zeros((m, *v.shape[1:]), device=v.device, dtype=v.dtype)])
            opt.state[p_new] = st
        opt.param_groups[0]["params"] = [p_new]
    for k, v in state.items():
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old:
            state[k] = torch.cat([v, torch.zeros((m, *v.shape[1:]), device=v.device, dtype=v.dtype)])


class Mapper:
    """Online 3D Gaussian mapping: keyframes, seeding, windowed optimisation, densification.

    ``renderer``: any :class:`~gags_ros.core.render.Renderer` for ``device``. ``strategy``: a
    gsplat ``DefaultStrategy`` or ``MCMCStrategy`` to use instead of :func:`default_strategy`.
    """

    def __init__(self, cfg: GagsConfig, renderer: Renderer, device: str | torch.device,
                 strategy: Optional[DefaultStrategy | MCMCStrategy] = None):
        self.cfg = cfg
        self.renderer = renderer
        self.device = torch.device(device)
        m = cfg.mapping
        self.strategy = strategy if strategy is not None else default_strategy(cfg)
        if isinstance(self.strategy, MCMCStrategy) and self.device.type != "cuda":
            raise ValueError("mapping.strategy='mcmc' needs a CUDA device (gsplat's relocation is a CUDA "
                             f"kernel); got device {self.device}: use strategy 'default'")
        self.gaussians = GaussianMap(device=self.device)
        self.keyframes: List[Keyframe] = []
        self.extent = float(m.init_depth_no_depth)  # metres; scene scale for lrs and the strategy
        self._depth_scale: Optional[float] = None
        self.optimizers: Dict[str, torch.optim.Optimizer] = {
            name: torch.optim.Adam([p], lr=self._geometry_lr(name), eps=1e-15)
            for name, p in self.gaussians.params.items()}
        self.strategy.check_sanity(self.gaussians.params, self.optimizers)
        if isinstance(self.strategy, MCMCStrategy):
            self.strategy_state = self.strategy.initialize_state()
        else:
            self.strategy_state = self.strategy.initialize_state(scene_scale=self.extent)
        self.background = torch.tensor(m.background, dtype=torch.float32, device=self.device)
        self.lock = threading.RLock()
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._rng = np.random.default_rng(cfg.seed)
        self._steps = 0
        self._last: dict = {}

    # ---- parameters ------------------------------------------------------------------------------
    def _geometry_lr(self, name: str) -> float:
        m = self.cfg.mapping
        return {"means": m.lr_means * self.extent, "scales": m.lr_scales, "quats": m.lr_quats,
                "opacities": m.lr_opacities, "sh0": m.lr_colors}[name]

    def add_param(self, name: str, init: torch.Tensor, lr: float) -> None:
        """Register a per-Gaussian parameter ``init`` ``[N, F]`` with its own Adam optimizer.

        Seeding, densification and pruning keep it aligned with the Gaussians from then on (new
        Gaussians start at zero).
        """
        with self.lock:
            if name in self.gaussians.params:
                raise ValueError(f"parameter {name!r} already exists")
            if init.shape[0] != len(self.gaussians):
                raise ValueError(f"{name}: init has {init.shape[0]} rows, the map has "
                                 f"{len(self.gaussians)} Gaussians")
            p = torch.nn.Parameter(init.detach().to(self.device, torch.float32).contiguous())
            self.gaussians.params[name] = p
            self.optimizers[name] = torch.optim.Adam([p], lr=lr, eps=1e-15)

    def remove_param(self, name: str) -> None:
        """Drop the per-Gaussian parameter ``name`` of :meth:`add_param` and its optimizer (e.g. the
        language latents, so that a new Distiller starts from fresh ones); geometry cannot be."""
        with self.lock:
            if name in GEOMETRY_KEYS:
                raise ValueError(f"{name!r} is geometry, not an added parameter")
            if name in self.gaussians.params:
                del self.gaussians.params[name]
            self.optimizers.pop(name, None)

    def add_gaussians(self, new: Dict[str, torch.Tensor]) -> int:
        """Append Gaussians given as raw parameters (``{"means": [M, 3], "scales": [M, 3] log m,
        "quats": [M, 4], "opacities": [M] logits, "sh0": [M, 1, 3], ...}``; keys left out get zeros),
        keeping optimizers and the strategy state aligned. Returns the new Gaussian count."""
        with self.lock:
            new = {k: v.to(self.device) for k, v in new.items()}
            append_gaussians(self.gaussians.params, self.optimizers, self._strategy_state_for_ops(), new,
                             self.gaussians.records)
            return len(self.gaussians)

    def add_record(self, name: str, fill: float = 0.0) -> torch.Tensor:
        """Register a per-Gaussian record (:meth:`GaussianMap.add_record`: non-trainable, carried by
        the strategy's densification, pruning and relocation like every parameter) unless present;
        returns its tensor."""
        with self.lock:
            g = self.gaussians
            if name not in g.records:
                g.add_record(name, fill)
            return g.record(name)

    def _strategy_state_for_ops(self) -> dict:
        # gsplat's MCMC keeps its binomial table in the state and hands its ops an empty one.
        return {} if isinstance(self.strategy, MCMCStrategy) else self.strategy_state

    def _update_extent(self) -> None:
        """Scene scale = 1.1 x the largest camera distance from the keyframes' mean centre (as
        gsplat's examples compute it), at least the typical depth of the first keyframe's seeds."""
        centres = np.stack([kf.T_world_cam[:3, 3] for kf in self.keyframes])
        spread = 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
        self.extent = max(spread, self._depth_scale or self.cfg.mapping.init_depth_no_depth)
        self.optimizers["means"].param_groups[0]["lr"] = self._geometry_lr("means")
        if not isinstance(self.strategy, MCMCStrategy):
            self.strategy_state["scene_scale"] = self.extent

    # ---- frames ---------------------------------------------------------------------------------
    def add_frame(self, frame: Frame) -> Optional[int]:
        """Take a frame; return its keyframe index, or None when the keyframe policy skips it.

        A frame becomes a keyframe unless a keyframe is close to it (centre nearer than
        ``keyframe_min_translation`` and rotation below ``keyframe_min_rotation``) and, seen from
        the new pose, the map still shows at least ``keyframe_max_overlap`` of what it shows from
        the closest such keyframe (rendered alpha at low resolution). Raises ``ValueError`` for a
        malformed frame (names it).
        """
        m = self.cfg.mapping
        with self.lock:
            T = check_rigid(frame.T_world_cam, frame.name or "frame pose")
            if self.keyframes:
                j = nearest_close_keyframe(T, [kf.T_world_cam for kf in self.keyframes],
                                           m.keyframe_min_translation, m.keyframe_min_rotation)
                if j is not None and self._overlap(T, frame.intrinsics, self.keyframes[j]) >= m.keyframe_max_overlap:
                    return None
            intr, image, depth, viewmat, K = frame_to_tensors(frame, m.max_image_width, self.device)
            kf = Keyframe(len(self.keyframes), frame, intr, image, depth, viewmat, K)
            self.keyframes.append(kf)
            self._seed(kf)
            self._update_extent()
            return kf.index

    @torch.no_grad()
    def _overlap(self, T_world_cam: np.ndarray, intrinsics: Intrinsics, kf: Keyframe) -> float:
        if len(self.gaussians) == 0:
            return 0.0
        small = lambda k: k.scaled(min(1.0, OVERLAP_RENDER_WIDTH / k.width))  # noqa: E731
        a_new = self._render(T_world_cam, small(intrinsics), "rgb", with_depth=False).alpha
        a_kf = self._render(kf.T_world_cam, small(kf.frame.intrinsics), "rgb", with_depth=False).alpha
        return view_overlap(a_new, a_kf)

    @torch.no_grad()
    def _seed(self, kf: Keyframe) -> int:
        m = self.cfg.mapping
        budget = min(m.init_points_per_keyframe, m.max_gaussians - len(self.gaussians))
        if budget <= 0:
            return 0
        out = self._render(kf.T_world_cam, kf.intrinsics, "rgb", with_depth=True)
        T = torch.from_numpy(kf.T_world_cam).to(self.device, torch.float32)
        seeds = seed_gaussians(kf.image, kf.depth, out.colors[0], out.alpha[0, ..., 0], out.depth[0, ..., 0],
                               kf.K, T, budget, m.init_depth_no_depth, self._gen)
        n = len(seeds["means"])
        if n == 0:
            return 0
        if self._depth_scale is None:
            cam = kf.T_world_cam[:3, 3]
            d = torch.linalg.norm(seeds["means"] - torch.from_numpy(cam).to(seeds["means"]), dim=1)
            self._depth_scale = float(d.median())
        quats = torch.zeros(n, 4, device=self.device)
        quats[:, 0] = 1.0
        new = {"means": seeds["means"], "scales": seeds["scales"].clamp_min(1e-6).log()[:, None].expand(n, 3),
               "quats": quats, "opacities": torch.logit(seeds["opacity"]),
               "sh0": rgb_to_sh0(seeds["rgb"])[:, None, :]}
        self.add_gaussians(new)
        return n

    # ---- optimisation ---------------------------------------------------------------------------
    def step(self, n: int = 1) -> dict:
        """``n`` optimisation steps, each on one keyframe drawn from the window (the
        ``window_recent`` newest plus ``window_random`` older ones drawn anew each step).

        Returns the last step's losses with ``steps`` (run now), ``steps_total``, ``gaussians``.
        """
        m = self.cfg.mapping
        done = 0
        for _ in range(n):
            with self.lock:
                if not self.keyframes or len(self.gaussians) == 0:
                    break
                window = sample_window(len(self.keyframes), m.window_recent, m.window_random, self._rng)
                self._train_step(self.keyframes[window[self._rng.integers(len(window))]], densify=True)
                done += 1
        return self._report(done)

    def refine(self, steps: Optional[int] = None) -> dict:
        """Final pass over all keyframes (``mapping.final_refine_steps`` by default): keyframes drawn
        uniformly, densification in the first half, the centres' learning rate decayed
        exponentially to 1 % (as 3DGS ends its schedule)."""
        steps = self.cfg.mapping.final_refine_steps if steps is None else int(steps)
        done = 0
        for i in range(steps):
            with self.lock:
                if not self.keyframes or len(self.gaussians) == 0:
                    break
                lr0 = self._geometry_lr("means")
                self.optimizers["means"].param_groups[0]["lr"] = lr0 * REFINE_MEANS_LR_END ** (i / steps)
                kf = self.keyframes[self._rng.integers(len(self.keyframes))]
                self._train_step(kf, densify=i < REFINE_DENSIFY_FRACTION * steps)
                done += 1
        with self.lock:
            self.optimizers["means"].param_groups[0]["lr"] = self._geometry_lr("means")
        return self._report(done)

    def _train_step(self, kf: Keyframe, densify: bool) -> None:
        m = self.cfg.mapping
        g = self.gaussians
        params = g.params
        H, W = kf.image.shape[:2]
        out = self.renderer.render(g.means, g.quats, g.scales, g.opacities, g.colors, kf.viewmat[None],
                                   kf.K[None], W, H, background=self.background,
                                   with_depth=kf.depth is not None)
        img = out.colors[0]
        l1 = (img - kf.image).abs().mean()
        s = ssim(img, kf.image)
        loss = (1.0 - m.ssim_weight) * l1 + m.ssim_weight * (1.0 - s)
        losses = {"l1": l1.detach(), "ssim": s.detach()}  # tensors: no GPU sync per step
        if kf.depth is not None:
            valid = kf.depth > 0
            if valid.any():
                ld = (out.depth[0, ..., 0][valid] - kf.depth[valid]).abs().mean()
                loss = loss + m.depth_weight * ld
                losses["depth_l1"] = ld.detach()
        mcmc = isinstance(self.strategy, MCMCStrategy)
        if mcmc:
            loss = loss + MCMC_OPACITY_REG * g.opacities.mean() + MCMC_SCALE_REG * g.scales.mean()
        if densify and not mcmc:
            self.strategy.step_pre_backward(params, self.optimizers, self.strategy_state, self._steps, out.meta)
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if densify:
            # gsplat's split and MCMC noise draw from the global RNG: fork it, seeded from ours.
            seed = int(torch.randint(2 ** 62, (1,), generator=self._gen))
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                if mcmc:
                    self.strategy.step_post_backward(params, self.optimizers, self.strategy_state, self._steps,
                                                     out.meta, lr=self.optimizers["means"].param_groups[0]["lr"])
                else:
                    self.strategy.step_post_backward(params, self.optimizers, self.strategy_state, self._steps,
                                                     out.meta, packed=False)
            self._enforce_budget()
        self._steps += 1
        losses["loss"] = loss.detach()
        self._last = losses

    @torch.no_grad()
    def _enforce_budget(self) -> None:
        excess = len(self.gaussians) - self.cfg.mapping.max_gaussians
        if excess > 0:
            drop = torch.zeros(len(self.gaussians), dtype=torch.bool, device=self.device)
            drop[torch.argsort(self.gaussians.params["opacities"])[:excess]] = True
            remove(self.gaussians.params, self.optimizers, self._strategy_state_for_ops(), drop)

    def _report(self, done: int) -> dict:
        with self.lock:
            return {**{k: float(v) for k, v in self._last.items()}, "steps": done, "steps_total": self._steps,
                    "gaussians": len(self.gaussians), "keyframes": len(self.keyframes)}

    # ---- reading the map ------------------------------------------------------------------------
    def _render(self, T_world_cam: np.ndarray, intrinsics: Intrinsics, channels: str,
                with_depth: bool = True) -> RenderOutput:
        g = self.gaussians
        if channels == "rgb":
            colors, bg = g.colors, self.background
        elif channels in ("features", "rgb+features"):
            if not g.has_features:
                raise ValueError("the map has no 'features' parameter yet")
            f = g.features
            colors, bg = f, torch.zeros(f.shape[1], device=self.device)
            if channels == "rgb+features":
                colors, bg = torch.cat([g.colors, f], 1), torch.cat([self.background, bg])
        else:
            raise ValueError(f"channels={channels!r}: expected 'rgb', 'features' or 'rgb+features'")
        viewmat = torch.from_numpy(invert_pose(check_rigid(T_world_cam))).to(self.device, torch.float32)[None]
        K = torch.from_numpy(intrinsics.K).to(self.device, torch.float32)[None]
        W, H = intrinsics.width, intrinsics.height
        if len(g) == 0:
            zeros = torch.zeros(1, H, W, 1, device=self.device)
            return RenderOutput(bg.expand(1, H, W, -1).clone(), zeros, zeros.clone() if with_depth else None, {})
        return self.renderer.render(g.means, g.quats, g.scales, g.opacities, colors, viewmat, K, W, H,
                                    background=bg, with_depth=with_depth)

    @torch.no_grad()
    def render(self, T_world_cam: np.ndarray, intrinsics: Intrinsics, channels: str = "rgb") -> RenderOutput:
        """Render the map (no gradients) from ``T_world_cam`` ``[4, 4]`` with ``intrinsics``.

        ``channels``: ``"rgb"`` (background from the config), ``"features"`` (the language
        latents, zero background) or ``"rgb+features"``. Outputs have a camera axis of size 1.
        """
        with self.lock:
            return self._render(T_world_cam, intrinsics, channels)

    def stats(self) -> dict:
        """Keyframes, Gaussians, optimisation steps, scene extent (m) and the last step's losses."""
        with self.lock:
            return {"keyframes": len(self.keyframes), "gaussians": len(self.gaussians),
                    "steps": self._steps, "extent": self.extent,
                    "last": {k: float(v) for k, v in self._last.items()}}

    def export_ply(self, path) -> None:
        """Write the map as a standard 3DGS PLY (atomically)."""
        with self.lock:
            p = self.gaussians.state_dict()
            write_gaussians_ply(path, p["means"].numpy(), p["sh0"][:, 0, :].numpy(), p["opacities"].numpy(),
                                p["scales"].numpy(), p["quats"].numpy())
