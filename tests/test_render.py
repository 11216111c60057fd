"""The pure-PyTorch renderer against closed-form expectations (CPU, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gags_ros.core.render import RenderOutput, make_renderer
from gags_ros.core.render._torch import TorchRenderer, quat_to_rotmat

W, H = 48, 40
K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 42.0, 20.0], [0.0, 0.0, 1.0]])


def identity_cam(C: int = 1, dtype=torch.float32):
    return torch.eye(4, dtype=dtype).expand(C, 4, 4).clone(), K.to(dtype).expand(C, 3, 3).clone()


def unit_quat(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)


def test_single_gaussian_matches_analytic_2d_gaussian():
    mean = np.array([0.12, -0.07, 2.0])
    q = unit_quat(1, seed=3, dtype=torch.float64)
    s = np.array([0.05, 0.12, 0.02])
    o, rgb = 0.8, np.array([0.9, 0.3, 0.1])
    viewmats, Ks = identity_cam(dtype=torch.float64)
    out = TorchRenderer().render(
        torch.tensor(mean)[None], q, torch.tensor(s)[None], torch.tensor([o], dtype=torch.float64),
        torch.tensor(rgb)[None], viewmats, Ks, W, H)

    # Closed form in float64: EWA projection plus the 0.3 px^2 low-pass.
    R = quat_to_rotmat(q)[0].numpy()
    Sigma = R @ np.diag(s ** 2) @ R.T
    fx, fy, cx, cy = 40.0, 42.0, 24.0, 20.0
    x, y, z = mean
    mu = np.array([fx * x / z + cx, fy * y / z + cy])
    J = np.array([[fx / z, 0, -fx * x / z ** 2], [0, fy / z, -fy * y / z ** 2]])
    cov2d = J @ Sigma @ J.T + 0.3 * np.eye(2)
    P = np.linalg.inv(cov2d)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([u - mu[0], v - mu[1]], axis=-1)
    a = np.minimum(0.999, o * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, P, d)))
    a = np.where(a >= 1 / 255, a, 0.0)

    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), a, atol=1e-9)
    np.testing.assert_allclose(out.colors[0].numpy(), a[..., None] * rgb, atol=1e-9)
    inside = a > 0
    np.testing.assert_allclose(out.depth[0, ..., 0].numpy()[inside], z, rtol=1e-9)
    np.testing.assert_allclose(out.meta["means2d"][0, 0].detach().numpy(), mu, rtol=1e-12)
    conic = out.meta["conics"][0, 0].numpy()
    np.testing.assert_allclose(conic, [P[0, 0], P[0, 1], P[1, 1]], rtol=1e-9)
    # The box half-size is where o*exp(-sigma) falls to 1/255 along each axis.
    ext = math.sqrt(2 * math.log(o * 255))
    assert out.meta["radii"][0, 0].tolist() == [math.ceil(ext * math.sqrt(cov2d[0, 0])),
                                                 math.ceil(ext * math.sqrt(cov2d[1, 1]))]


def _two_gaussians(order):
    """A red Gaussian at 2 m in front of a blue one at 4 m, both on the optical axis."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])
    scales = torch.tensor([[0.2, 0.2, 0.2], [0.4, 0.4, 0.4]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    opac = torch.tensor([0.8, 0.7])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1)
    idx = torch.tensor(order)
    return means[idx], quats[idx], scales[idx], opac[idx], colors[idx]


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_front_to_back_compositing_is_sorted_by_depth(order):
    viewmats, Ks = identity_cam()
    bg = torch.tensor([0.0, 1.0, 0.0])
    out = TorchRenderer().render(*_two_gaussians(order), viewmats, Ks, W, H, background=bg)
    # Centre pixel (24, 20) has its centre 0.5 px off the projected means in x and y.
    def g(o, s, z):
        var = (40 * s / z) ** 2 + 0.3, (42 * s / z) ** 2 + 0.3
        return o * math.exp(-0.5 * (0.25 / var[0] + 0.25 / var[1]))
    a1, a2 = g(0.8, 0.2, 2.0), g(0.7, 0.4, 4.0)
    w1, w2 = a1, a2 * (1 - a1)
    px = out.colors[0, 20, 24]
    assert px[0].item() == pytest.approx(w1, abs=1e-6)
    assert px[2].item() == pytest.approx(w2, abs=1e-6)
    assert px[1].item() == pytest.approx(1 - w1 - w2, abs=1e-6)  # background behind both
    assert out.alpha[0, 20, 24, 0].item() == pytest.approx(w1 + w2, abs=1e-6)
    assert out.depth[0, 20, 24, 0].item() == pytest.approx((2 * w1 + 4 * w2) / (w1 + w2), abs=1e-5)


def test_opaque_front_gaussian_stops_the_pixel():
    """A pixel stops before the Gaussian that would leave transmittance <= 1e-4 (gsplat's rule)."""
    viewmats, Ks = identity_cam()
    n = 4
    means = torch.tensor([[0.0, 0.0, 1.0 + i] for i in range(n)])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    scales = torch.full((n, 3), 1.0)  # covers the whole image almost uniformly
    opac = torch.full((n,), 0.995)
    colors = torch.eye(n)[:, :4]
    out = TorchRenderer().render(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    c = out.colors[0, 20, 24]
    a = [o * math.exp(-0.5 * 0.25 / ((f * 1.0 / z) ** 2 + 0.3) - 0.5 * 0.25 / ((g * 1.0 / z) ** 2 + 0.3))
         for o, z, f, g in [(0.995, 1.0, 40, 42), (0.995, 2.0, 40, 42)]]
    # T after two ~0.995 layers is ~2.5e-5 <= 1e-4, so only the first is composited.
    assert (1 - a[0]) * (1 - a[1]) <= 1e-4
    assert c[0].item() == pytest.approx(a[0], abs=1e-6)
    assert c[1:].abs().max().item() == 0.0


def test_depth_of_a_plane_and_near_far_culling():
    g = torch.Generator().manual_seed(1)
    n = 400
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 4.0
    means = torch.cat([xy, torch.full((n, 1), 3.0)], dim=1)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    scales = torch.full((n, 3), 0.12)
    opac = torch.full((n,), 0.9)
    colors = torch.rand(n, 3, generator=g)
    viewmats, Ks = identity_cam()
    r = TorchRenderer()
    out = r.render(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    covered = out.alpha[0, ..., 0] > 0.5
    assert covered.float().mean() > 0.9
    torch.testing.assert_close(out.depth[0, ..., 0][covered], torch.full_like(out.depth[0, ..., 0][covered], 3.0))
    # The whole plane lies beyond `far` or before `near`: nothing is drawn and radii are 0.
    for kw in (dict(far=2.5), dict(near=3.5)):
        o = r.render(means, quats, scales, opac, colors, viewmats, Ks, W, H, **kw)
        assert o.alpha.max().item() == 0.0 and o.depth.abs().max().item() == 0.0
        assert (o.meta["radii"] == 0).all()
    # Behind the camera: culled too.
    o = r.render(means * torch.tensor([1.0, 1.0, -1.0]), quats, scales, opac, colors, viewmats, Ks, W, H)
    assert o.alpha.max().item() == 0.0


def random_scene(n: int, seed: int, channels: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 2.0, 2.0 + 2.0 * torch.rand(n, 1, generator=g)], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.02 + 0.15 * torch.rand(n, 3, generator=g)
    opac = 0.1 + 0.85 * torch.rand(n, generator=g)
    colors = torch.rand(n, channels, generator=g)
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)]


def test_sixteen_channels_match_three_channel_renders_and_background():
    means, quats, scales, opac, feats = random_scene(60, seed=2, channels=16)
    viewmats, Ks = identity_cam()
    r = TorchRenderer()
    bg = torch.linspace(0, 1, 16)
    out = r.render(means, quats, scales, opac, feats, viewmats, Ks, W, H, background=bg)
    assert out.colors.shape == (1, H, W, 16) and out.alpha.shape == (1, H, W, 1)
    for lo in (0, 5, 13):
        part = r.render(means, quats, scales, opac, feats[:, lo:lo + 3], viewmats, Ks, W, H,
                        background=bg[lo:lo + 3])
        torch.testing.assert_close(out.colors[..., lo:lo + 3], part.colors, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out.alpha, part.alpha)
        torch.testing.assert_close(out.depth, part.depth)


def test_row_bands_and_camera_batching_do_not_change_the_image():
    means, quats, scales, opac, colors = random_scene(80, seed=4)
    T2 = torch.eye(4)
    T2[:3, :3] = quat_to_rotmat(torch.tensor([0.99, 0.05, -0.08, 0.02]))
    T2[:3, 3] = torch.tensor([0.2, -0.1, 0.3])
    viewmats = torch.stack([torch.eye(4), T2])
    Ks = K.expand(2, 3, 3)
    a = TorchRenderer().render(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    b = TorchRenderer(max_pairs=2000).render(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.depth, b.depth, atol=1e-5, rtol=1e-5)
    for c in range(2):
        one = TorchRenderer().render(means, quats, scales, opac, colors, viewmats[c:c + 1], Ks[c:c + 1], W, H)
        torch.testing.assert_close(a.colors[c:c + 1], one.colors)


def test_empty_map_renders_background():
    viewmats, Ks = identity_cam()
    z = torch.zeros(0, 3)
    out = TorchRenderer().render(z, torch.zeros(0, 4), z, torch.zeros(0), z, viewmats, Ks, W, H,
                                 background=torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(out.colors, torch.tensor([0.2, 0.4, 0.6]).expand(1, H, W, 3))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0


def test_gradients_match_finite_differences():
    """Autograd through projection, sorting and compositing vs central differences (float64)."""
    means, quats, scales, opac, colors = random_scene(5, seed=7, dtype=torch.float64)
    viewmats, Ks = identity_cam(dtype=torch.float64)
    r = TorchRenderer()
    w = torch.rand(1, 16, 20, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Ks = Ks.clone()
    Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 0, 0], Ks[:, 1, 1] = 10.0, 8.0, 14.0, 14.0

    def f(m, lq, ls, lo, c):
        out = r.render(m, lq, ls.exp(), torch.sigmoid(lo), c, viewmats, Ks, 20, 16)
        img = torch.cat([out.colors, out.alpha, out.depth], dim=-1)
        return (img * w).sum()

    inputs = (means, quats, scales.log(), torch.logit(opac), colors)
    inputs = tuple(t.clone().requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_backward_is_bitwise_deterministic():
    """Same inputs, same gradients, bit for bit (the mapper promises determinism on CPU)."""
    grads = []
    for _ in range(2):
        ps = [t.requires_grad_(True) for t in random_scene(400, seed=8)]
        out = TorchRenderer().render(*ps, *identity_cam(), W, H)
        (out.colors.square().sum() + out.depth.sum()).backward()
        grads.append([p.grad for p in ps])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_meta_feeds_gsplat_default_strategy_on_cpu():
    from gsplat import DefaultStrategy

    means, quats, scales, opac, colors = random_scene(50, seed=5)
    params = torch.nn.ParameterDict({
        "means": means, "quats": quats, "scales": scales.log(), "opacities": torch.logit(opac),
        "colors": colors})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=0.0,
                               grow_scale3d=1.0)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats, Ks = identity_cam()
    out = TorchRenderer().render(params["means"], params["quats"], params["scales"].exp(),
                                 torch.sigmoid(params["opacities"]), params["colors"], viewmats, Ks, W, H)
    assert out.meta["means2d"].shape == (1, 50, 2) and out.meta["radii"].shape == (1, 50, 2)
    strategy.step_pre_backward(params, optimizers, state, 1, out.meta)
    out.colors.sum().backward()
    visible = (out.meta["radii"][0] > 0).all(-1)
    assert out.meta["means2d"].grad[0, visible].abs().sum() > 0
    strategy.step_post_backward(params, optimizers, state, 1, out.meta, packed=False)
    # Every visible Gaussian had a gradient above 0 and counts as small: it was duplicated.
    assert len(params["means"]) == 50 + int(visible.sum())


def test_factory():
    assert make_renderer("torch", "cpu").name == "torch"
    assert make_renderer("auto", "cpu").name == "torch"
    with pytest.raises(ValueError, match="CUDA"):
        make_renderer("gsplat", "cpu")
    with pytest.raises(ValueError, match="unknown renderer"):
        make_renderer("opengl", "cpu")
    assert isinstance(make_renderer("auto", "cpu").render(
        *random_scene(3, 0), *identity_cam(), W, H), RenderOutput)
