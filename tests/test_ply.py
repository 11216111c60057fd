"""The standard 3DGS PLY layout: round trip, header, atomic write, reader errors."""

from __future__ import annotations

import numpy as np
import pytest

from gags_ros.core.io.ply import gaussian_properties, read_gaussians_ply, read_ply_vertices, write_gaussians_ply


def _gaussians(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return dict(means=rng.normal(size=(n, 3)), sh0=rng.normal(size=(n, 3)), opacities=rng.normal(size=n),
                scales=rng.normal(size=(n, 3)) - 3, quats=rng.normal(size=(n, 4)))


def test_round_trip_and_header(tmp_path):
    g = _gaussians()
    p = tmp_path / "map.ply"
    write_gaussians_ply(p, **g, extra={"label": np.arange(7.0)})
    head = p.read_bytes().split(b"end_header\n")[0].decode().splitlines()
    assert head[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 7"]
    assert [h.split()[-1] for h in head[3:]] == gaussian_properties() + ["label"]
    assert all(h.startswith("property float ") for h in head[3:])
    assert p.stat().st_size == len("\n".join(head)) + len("\nend_header\n") + 7 * 4 * (17 + 1)
    back = read_gaussians_ply(p)
    for k, v in g.items():
        np.testing.assert_allclose(back[k], v.astype(np.float32))
    np.testing.assert_array_equal(back["label"], np.arange(7.0, dtype=np.float32))
    assert [f.name for f in tmp_path.iterdir()] == ["map.ply"]  # no temporary left behind


def test_sh_rest_and_empty_map(tmp_path):
    g = _gaussians(3)
    rest = np.arange(3 * 45, dtype=np.float32).reshape(3, 45)
    write_gaussians_ply(tmp_path / "a.ply", **g, sh_rest=rest)
    back = read_gaussians_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(back["sh_rest"], rest)
    write_gaussians_ply(tmp_path / "e.ply", **_gaussians(0))
    assert read_gaussians_ply(tmp_path / "e.ply")["means"].shape == (0, 3)


def test_big_endian_and_other_elements(tmp_path):
    names = gaussian_properties()
    vals = np.arange(2 * len(names), dtype=">f4").reshape(2, -1)
    header = ("ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement camera 1\nproperty uchar id\n"
              "element vertex 2\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n")
    p = tmp_path / "be.ply"
    p.write_bytes(header.encode() + b"\x05" + vals.tobytes())
    v = read_ply_vertices(p)
    assert v["x"].tolist() == [0.0, float(len(names))]
    assert read_gaussians_ply(p)["quats"][1, 3] == vals[1, -1]


def test_reader_errors(tmp_path):
    p = tmp_path / "x.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    with pytest.raises(ValueError, match="binary only"):
        read_ply_vertices(p)
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nend_header\n\0\0")
    with pytest.raises(ValueError, match="truncated"):
        read_ply_vertices(p)
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0")
    with pytest.raises(ValueError, match="not a 3DGS PLY"):
        read_gaussians_ply(p)
