"""The two renderers agree on random scenes (values and gradients), and the mapper runs on CUDA with
gsplat and both of its strategies. Run on the device machine: ``pytest -m gpu``.

Tolerances (float32 on both sides; gsplat multiplies transmittances one by one, ours sums
log-transmittances in float64, and both sum gradients in different orders):
- box half-sizes (radii): equal but for <= 0.5 % off by one px (ceil of float32 values);
- colours, 16-channel features and alpha: max abs difference <= 1e-4;
- expected depth where alpha > 0.05: max abs difference <= 1e-3 m (scene depths 2-4 m);
- gradients of means, quats, scales, opacities, colours and of the 2D means (densification's
  input): relative L2 error ``|g_torch - g_gsplat| / |g_gsplat|`` <= 1e-3 each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags_ros.core.render._gsplat import GsplatRenderer
from gags_ros.core.render._torch import TorchRenderer, quat_to_rotmat

pytestmark = pytest.mark.gpu

W, H = 96, 72


def scene(seed: int, n: int, channels: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 2.4, 2.0 + 2.0 * torch.rand(n, 1, generator=g)], 1)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.exp(torch.empty(n, 3).uniform_(np.log(0.01), np.log(0.2), generator=g))
    opac = 0.05 + 0.9 * torch.rand(n, generator=g)
    colors = torch.rand(n, channels, generator=g)
    # Two cameras: the identity and one moved and turned a little.
    T = torch.eye(4)
    T[:3, :3] = quat_to_rotmat(torch.nn.functional.normalize(torch.tensor([1.0, 0.05, -0.1, 0.03]), dim=0))
    T[:3, 3] = torch.tensor([0.3, -0.2, 0.4])
    viewmats = torch.stack([torch.eye(4), T])
    K = torch.tensor([[80.0, 0.0, 48.0], [0.0, 82.0, 36.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    return [t.to(device) for t in (means, quats, scales, opac, colors, viewmats, K)]


def render_with_grads(renderer, inputs, weights):
    means, quats, scales, opac, colors, viewmats, Ks = inputs
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    bg = torch.linspace(0.0, 1.0, colors.shape[1], device=means.device)
    out = renderer.render(*leaves, viewmats, Ks, W, H, background=bg, with_depth=True)
    out.meta["means2d"].retain_grad()
    wc, wa, wd = weights
    loss = (out.colors * wc).sum() + (out.alpha * wa).sum() + (out.depth * out.alpha * wd).sum()
    loss.backward()
    grads = {k: t.grad for k, t in zip(("means", "quats", "scales", "opacities", "colors"), leaves)}
    grads["means2d"] = out.meta["means2d"].grad
    return out, grads


@pytest.mark.parametrize("seed,n,channels", [(0, 300, 3), (1, 2000, 3), (2, 800, 16)])
def test_torch_renderer_matches_gsplat(seed, n, channels):
    dev = torch.device("cuda")
    inputs = scene(seed, n, channels, dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    weights = (torch.rand(2, H, W, channels, device=dev, generator=g),
               torch.rand(2, H, W, 1, device=dev, generator=g), torch.rand(2, H, W, 1, device=dev, generator=g))
    ref, g_ref = render_with_grads(GsplatRenderer(), inputs, weights)
    out, g_out = render_with_grads(TorchRenderer(), inputs, weights)

    # Box sizes are ceil()ed from float32 covariances computed in different orders: allow a few
    # off-by-one boxes, nothing more.
    dr = (out.meta["radii"].long() - ref.meta["radii"].long()).abs()
    assert dr.max() <= 1 and (dr > 0).float().mean() <= 0.005
    assert (out.meta["radii"] > 0).any()
    errs = {
        "colors": (out.colors - ref.colors).abs().max().item(),
        "alpha": (out.alpha - ref.alpha).abs().max().item(),
        "depth": (out.depth - ref.depth).abs()[ref.alpha > 0.05].max().item(),
    }
    rel = {k: ((g_out[k] - g_ref[k]).norm() / g_ref[k].norm()).item() for k in g_ref}
    print(f"seed {seed} N={n} D={channels}: value errors {errs}; gradient relative errors {rel}")
    assert errs["colors"] <= 1e-4 and errs["alpha"] <= 1e-4 and errs["depth"] <= 1e-3
    for k, e in rel.items():
        assert e <= 1e-3, (k, e)


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_mapper_on_cuda_with_gsplat(strategy):
    from gags_ros.core.camera import look_at
    from gags_ros.core.config import GagsConfig
    from gags_ros.core.mapping import Mapper
    from gags_ros.core.types import Frame, Intrinsics

    dev = torch.device("cuda")
    means, quats, scales, opac, colors, _, _ = scene(3, 500, 3, dev)
    means = means - torch.tensor([0.0, 0.0, 3.0], device=dev)
    intr = Intrinsics(80.0, 80.0, 48.0, 36.0, W, H)
    cfg = GagsConfig()
    cfg.mapping.strategy = strategy
    cfg.mapping.init_depth_no_depth = 3.0
    cfg.mapping.max_gaussians = 5000
    m = Mapper(cfg, GsplatRenderer(), dev)
    for a in np.linspace(0, np.pi, 6):
        T = look_at([3 * np.cos(a), 3 * np.sin(a), 0.5], [0, 0, 0])
        vm = torch.from_numpy(np.linalg.inv(T)).float().to(dev)[None]
        img = GsplatRenderer().render(means, quats, scales, opac, colors, vm,
                                      torch.from_numpy(intr.K).float().to(dev)[None], W, H).colors[0]
        m.add_frame(Frame((img.clamp(0, 1) * 255).byte().cpu().numpy(), T, intr))
        out = m.step(120)
    assert np.isfinite(out["loss"]) and out["steps_total"] == 6 * 120
    assert 0 < len(m.gaussians) <= cfg.mapping.max_gaussians
    assert m.gaussians.means.device.type == "cuda"
