"""The Gaussian map: one ParameterDict that gsplat's strategies, the mapper, the language field,
the query engine and the save files all share.

Parameter names and shapes (N Gaussians, F latent channels):

    means      [N, 3]     world position, metres
    scales     [N, 3]     log of the standard deviations along the local axes, log(metres)
    quats      [N, 4]     rotation quaternion (w, x, y, z), not necessarily normalised
    opacities  [N]        logit of opacity
    sh0        [N, 1, 3]  degree-0 spherical-harmonic colour coefficient (RGB = 0.5 + C0 * sh0)
    features   [N, F]     language latents (present once the language field is enabled)

Keeping the latents in the same dict means densify/prune operations of the mapper carry them along.

Per-Gaussian records. Anything else that must stay attached to its Gaussian (the minimum-depth
record of GaS, a coverage count, ...) is a *record*: a non-trainable entry of the same ParameterDict
(``requires_grad=False``, no optimizer), registered by name in ``records`` with the value new
Gaussians start from. Why in the dict rather than beside it: gsplat's strategy operations
(``gsplat.strategy.ops`` 1.5.3: ``duplicate``, ``split``, ``remove``, ``relocate``, ``sample_add``)
rewrite *every* entry of the params dict with the same index arithmetic and skip the optimizer for
entries that do not require gradients, so a record there follows its Gaussian through every op,
including ones gsplat adds later, with no bookkeeping of ours (a record kept beside the dict would
have to re-derive each op's permutation, which is how the old min-depth record went wrong: split
keeps ``p[rest]`` and appends the children). What each op does to a record (gsplat's semantics):
duplicate and split give the children their parent's value; remove drops it; MCMC relocation gives a
relocated Gaussian its source's value and ``sample_add`` appends copies of the sources'. Records are
run-time state: :meth:`GaussianMap.state_dict` (save files) leaves them out.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

SH_C0 = 0.28209479177387814  # Y_0^0, so rgb = 0.5 + SH_C0 * sh0 (the 3DGS / gsplat convention)
GEOMETRY_KEYS = ("means", "scales", "quats", "opacities", "sh0")


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` quaternions (w, x, y, z), normalised here, to ``[..., 3, 3]`` rotations."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return R.reshape(quats.shape[:-1] + (3, 3))


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` RGB in [0, 1] to the SH DC coefficient."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """SH DC coefficient to RGB (unclamped)."""
    return sh0 * SH_C0 + 0.5


class GaussianMap:
    """A set of 3D Gaussians. ``params`` is a ``torch.nn.ParameterDict`` (see module doc for keys).

    ``records``: ``{name: fill}`` of the entries of ``params`` that are per-Gaussian records (module
    doc): non-trainable, ``fill`` is the value new Gaussians get.
    """

    def __init__(self, params: Optional[Dict[str, torch.Tensor]] = None, device: str | torch.device = "cpu",
                 records: Optional[Dict[str, float]] = None):
        self.device = torch.device(device)
        self.records: Dict[str, float] = dict(records or {})
        if params is None:
            params = {
                "means": torch.zeros(0, 3),
                "scales": torch.zeros(0, 3),
                "quats": torch.zeros(0, 4),
                "opacities": torch.zeros(0),
                "sh0": torch.zeros(0, 1, 3),
            }
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.detach().to(self.device, torch.float32).contiguous(),
                                   requires_grad=k not in self.records)
             for k, v in params.items()})

    def add_record(self, name: str, fill: float = 0.0, init: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Register the per-Gaussian record ``name``: ``init`` ``[N, ...]`` (default: ``fill`` for every
        Gaussian, shape ``[N]``); Gaussians added later start at ``fill``. Returns its tensor."""
        if name in self.params:
            raise ValueError(f"{name!r} already exists in the map")
        if init is None:
            init = torch.full((len(self),), float(fill))
        if init.shape[0] != len(self):
            raise ValueError(f"record {name!r}: init has {init.shape[0]} rows, the map has {len(self)} Gaussians")
        self.params[name] = torch.nn.Parameter(init.detach().to(self.device, torch.float32).contiguous(),
                                               requires_grad=False)
        self.records[name] = float(fill)
        return self.params[name].data

    def record(self, name: str) -> torch.Tensor:
        """The current ``[N, ...]`` tensor of record ``name`` (strategy ops replace it: look it up by
        name each time, never keep it across a densification step)."""
        if name not in self.records:
            raise KeyError(f"no per-Gaussian record {name!r} (records: {sorted(self.records)})")
        return self.params[name].data

    @staticmethod
    def from_points(points: torch.Tensor, rgb: torch.Tensor, scale: torch.Tensor | float,
                    opacity: float = 0.1, device: str | torch.device = "cpu") -> "GaussianMap":
        """Isotropic Gaussians at ``points`` ``[N, 3]`` (m) with colours ``rgb`` ``[N, 3]`` in [0, 1]
        and standard deviation ``scale`` (m, scalar or ``[N]``)."""
        n = points.shape[0]
        scale = torch.as_tensor(scale, dtype=torch.float32).expand(n).clamp_min(1e-6)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        op = torch.full((n,), float(opacity)).clamp(1e-4, 1 - 1e-4)
        return GaussianMap({
            "means": points.float(),
            "scales": scale.log()[:, None].repeat(1, 3),
            "quats": quats,
            "opacities": torch.logit(op),
            "sh0": rgb_to_sh0(rgb.float().clamp(0, 1))[:, None, :],
        }, device=device)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def has_features(self) -> bool:
        return "features" in self.params

    @property
    def features(self) -> torch.Tensor:
        """``[N, F]`` language latents (the distiller's parameter; KeyError when the map has none)."""
        if "features" not in self.params:
            raise KeyError("this map has no language latents (language.enabled off, or not distilled yet)")
        return self.params["features"]

    def set_features(self, values: torch.Tensor, trainable: bool = True) -> None:
        """Replace the language latents by ``values`` ``[N, F]`` (copied in place when the shape
        matches, so an optimiser holding the parameter keeps it; a new parameter otherwise)."""
        if values.shape[0] != len(self):
            raise ValueError(f"features for {values.shape[0]} Gaussians, the map has {len(self)}")
        cur = self.params["features"] if "features" in self.params else None
        if cur is not None and cur.shape == values.shape:
            with torch.no_grad():
                cur.data.copy_(values.to(cur.device, cur.dtype))
        else:
            dev = self.params["means"].device
            self.params["features"] = torch.nn.Parameter(values.detach().float().to(dev).contiguous(),
                                                         requires_grad=trainable)

    # Activated views (no copies of the graph beyond the activation itself).
    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    @property
    def quats(self) -> torch.Tensor:
        """``[N, 4]`` unit quaternions (w, x, y, z)."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def scales(self) -> torch.Tensor:
        """``[N, 3]`` standard deviations, metres."""
        return torch.exp(self.params["scales"])

    @property
    def opacities(self) -> torch.Tensor:
        """``[N]`` opacity in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def colors(self) -> torch.Tensor:
        """``[N, 3]`` RGB (unclamped; the renderer composites it as is)."""
        return sh0_to_rgb(self.params["sh0"][:, 0, :])

    def to(self, device: str | torch.device) -> "GaussianMap":
        return GaussianMap({k: v.data for k, v in self.params.items()}, device=device, records=self.records)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Detached CPU copies of every parameter (for save files); records are left out."""
        return {k: v.detach().cpu().clone() for k, v in self.params.items() if k not in self.records}

    @staticmethod
    def from_state_dict(state: Dict[str, torch.Tensor], device: str | torch.device = "cpu") -> "GaussianMap":
        missing = [k for k in GEOMETRY_KEYS if k not in state]
        if missing:
            raise ValueError(f"Gaussian state lacks {missing}")
        return GaussianMap(state, device=device)
