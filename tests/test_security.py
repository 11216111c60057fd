"""docs/security.md, tested: map paths confined to save_dir, no code run from any file the package
reads, file and device parameters read-only at run time."""

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.io.mapfile import MapFormatError, load_map, save_map
from gags_ros.core.paths import PathRefused, resolve_map_path

from rosutil import call, start_node, stop
from test_query import planted_map


@pytest.fixture
def maps(tmp_path):
    """A map folder with one map, a file beside it (outside) and a symlink inside pointing out."""
    root = tmp_path / "maps"
    (root / "sub").mkdir(parents=True)
    (root / "a.gags").write_bytes(b"map")
    outside = tmp_path / "profile.sh"
    outside.write_text("echo hi\n")
    (root / "out_link.gags").symlink_to(outside)
    (root / "dir_link").symlink_to(tmp_path)
    return root, outside


BAD = [
    ("../profile.sh", "outside the map folder"),
    ("sub/../../profile.sh", "outside the map folder"),
    ("out_link.gags", "outside the map folder"),            # a symlink inside pointing out
    ("dir_link/profile.sh", "outside the map folder"),       # through a symlinked folder
    ("sub", "is a directory"),
    ("", None),                                              # load: nothing named; save: default name
    ("a\x00.gags", "control characters"),
    ("a\n.gags", "control characters"),
    ("a\r.gags", "control characters"),
]


@pytest.mark.parametrize("name,why", BAD)
@pytest.mark.parametrize("for_write", [True, False])
def test_paths_outside_the_map_folder_are_refused(maps, name, why, for_write):
    root, outside = maps
    if name == "" and for_write:
        p = resolve_map_path(name, str(root), for_write=True)
        assert p.parent == root.resolve() and p.suffix == ".gags"
        return
    with pytest.raises(PathRefused) as e:
        resolve_map_path(name, str(root), for_write=for_write)
    assert why is None or why in str(e.value)
    assert outside.read_text() == "echo hi\n"


def test_absolute_paths(maps, tmp_path):
    root, outside = maps
    with pytest.raises(PathRefused, match="outside the map folder"):
        resolve_map_path(str(outside), str(root), for_write=True)
    with pytest.raises(PathRefused, match="outside the map folder"):
        resolve_map_path("/etc/passwd", str(root), for_write=False)
    with pytest.raises(PathRefused, match="is a directory"):        # the folder itself
        resolve_map_path(str(root), str(root), for_write=True)
    # an absolute path inside the folder is fine, as is a new file in a new subfolder
    assert resolve_map_path(str(root / "a.gags"), str(root), for_write=False) == (root / "a.gags").resolve()
    assert resolve_map_path("new/b.gags", str(root), for_write=True) == (root / "new" / "b.gags").resolve()
    # reading needs an existing regular file
    with pytest.raises(PathRefused, match="no map file"):
        resolve_map_path("missing.gags", str(root), for_write=False)
    fifo = root / "pipe.gags"
    os.mkfifo(fifo)
    with pytest.raises(PathRefused, match="not a regular file"):
        resolve_map_path("pipe.gags", str(root), for_write=True)


def test_allow_any_path_lifts_only_the_confinement(maps):
    root, outside = maps
    assert resolve_map_path("../profile.sh", str(root), for_write=True, allow_any_path=True) == outside.resolve()
    with pytest.raises(PathRefused, match="control characters"):
        resolve_map_path("../a\n", str(root), for_write=True, allow_any_path=True)
    with pytest.raises(PathRefused, match="is a directory"):
        resolve_map_path("..", str(root), for_write=True, allow_any_path=True)


# ---- no code from files -------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates ``marker``: what a crafted model file would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(path: Path, marker: Path, wrap=lambda x: x) -> Path:
    torch.save(wrap(_Payload(marker)), path)
    return path


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """The check that makes the tests below meaningful: plain unpickling creates the marker."""
    marker = tmp_path / "pwned"
    with open(_crafted(tmp_path / "x.pt", marker), "rb") as f:
        assert f.read(2) == b"PK"                      # torch's zip format, as a real checkpoint
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.pt") as z:
        pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    assert marker.exists()


def test_map_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "m.gags", marker, wrap=lambda p: {"format": "gags_ros.map", "version": 1, "x": p})
    with pytest.raises(MapFormatError):
        load_map(path)
    assert not marker.exists()


def test_clipgs_encoder_with_code_is_refused(tmp_path):
    from gags_ros.core.clipgs.encoder import FORMAT, FORMAT_VERSION, load_encoder, load_image_tower

    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "enc.pt", marker,
                    wrap=lambda p: {"format": FORMAT, "version": FORMAT_VERSION, "meta": {"x": p}})
    for loader in (load_encoder, load_image_tower):
        with pytest.raises(ValueError, match="convert"):
            loader(path)
    assert not marker.exists()


def test_old_encoder_files_convert_once_without_running_code(tmp_path):
    """Files written before weights-only loading held numpy scalars in ``meta``: the conversion
    command reads them with only numpy's scalar types allowed, and the result loads weights-only."""
    import numpy as np

    from gags_ros.core.clipgs.encoder import EncoderConfig, ClipGSEncoder, FORMAT, FORMAT_VERSION, convert, load_encoder

    enc = ClipGSEncoder(EncoderConfig(width=32, depth=1, heads=2, embed_dim=8, num_patches=4, patch_size=8,
                                     budget=32, pointnet_width=8))
    old = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "config": enc.cfg.__dict__,
                "state": enc.state_dict(), "meta": {"metrics": {"top1": np.float64(0.9)}, "n": np.int64(3)}}, old)
    with pytest.raises(ValueError, match="convert"):
        load_encoder(old)
    new = convert(old, tmp_path / "new.pt")
    enc2, meta = load_encoder(new)
    assert meta == {"metrics": {"top1": 0.9}, "n": 3}
    for (k, a), (_, b) in zip(enc.state_dict().items(), enc2.state_dict().items()):
        assert torch.equal(a, b), k
    marker = tmp_path / "pwned"
    bad = _crafted(tmp_path / "bad.pt", marker,
                   wrap=lambda p: {"format": FORMAT, "version": FORMAT_VERSION, "meta": {"x": p}})
    with pytest.raises(ValueError, match="not only weights"):
        convert(bad, tmp_path / "bad_new.pt")
    assert not marker.exists() and not (tmp_path / "bad_new.pt").exists()


def test_sam_checkpoint_with_code_is_refused(tmp_path):
    from gags_ros.core.teachers.sam import load_sam

    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "sam_vit_b.pth", marker, wrap=lambda p: {"image_encoder.x": p})
    with pytest.raises(pickle.UnpicklingError):
        load_sam("vit_b", str(path), "cpu")
    assert not marker.exists()


def test_clip_weights_with_code_are_refused(tmp_path):
    from gags_ros.core.teachers.clip import load_clip

    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "clip.pt", marker, wrap=lambda p: {"state_dict": {"x": p}})
    with pytest.raises(pickle.UnpicklingError):
        load_clip("ViT-B-16", str(path), "cpu")
    assert not marker.exists()


def test_no_unsafe_loads_in_the_package():
    """Every torch.load in gags_ros is weights-only (the issue's grep, kept true)."""
    root = Path(__file__).resolve().parent.parent / "gags_ros"
    offenders = []
    for f in root.rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "weights_only=False" in line or "allow_pickle=True" in line or \
                    ("torch.load(" in line and "weights_only=True" not in line):
                offenders.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, offenders


# ---- the node ---------------------------------------------------------------------------------
def _map_state(path: Path) -> dict:
    g, _, _, _ = load_map(path)
    return {k: v.detach().clone() for k, v in g.params.items()}


@pytest.mark.ros
def test_node_confines_save_and_load_and_keeps_file_parameters_read_only(ros_env, rclpy_context, tmp_path):
    from rclpy.node import Node

    from gags_ros.srv import LoadMap, SaveMap

    root = tmp_path / "maps"
    root.mkdir()
    g = planted_map(seed=1)[0]              # geometry only: loading a language field needs CLIP weights
    save_map(root / "lab.gags", g, None, C.GagsConfig())
    original = _map_state(root / "lab.gags")
    outside = tmp_path / "profile.sh"
    outside.write_text("echo hi\n")
    (root / "link.gags").symlink_to(outside)
    evil = tmp_path / "evil.gags"                     # a valid map, but outside the folder
    save_map(evil, planted_map(seed=5)[0], None, C.GagsConfig())

    log = tmp_path / "node.log"
    proc = start_node("gags_ros.ros.mapping_node", ["-p", "device:=cpu", "-p", f"save_dir:={root}",
                                                     "-p", "language.enabled:=false"], ros_env,
                      log=log)
    node = Node("security_client", context=rclpy_context)
    try:
        save = node.create_client(SaveMap, "gags/save_map")
        assert save.wait_for_service(timeout_sec=60), "the node did not come up"
        env = dict(ros_env, AMENT_PREFIX_PATH=os.environ.get("VIRTUAL_ENV", str(Path(os.sys.executable).parent.parent)))
        ros2 = str(Path(os.sys.executable).parent / "ros2")
        for name, value in [("save_dir", "/tmp"), ("allow_any_path", "true"), ("device", "cuda"),
                            ("teacher.sam_checkpoint", "/tmp/x.pth"), ("clipgs.encoder_path", "/tmp/e.pt"),
                            ("ros.map_file_mode", "0777")]:
            out = subprocess.run([ros2, "param", "set", "--no-daemon", "--spin-time", "5", "/gags_mapping",
                                  name, value], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert "Setting parameter failed" in out.stdout + out.stderr and "read-only" in out.stdout + out.stderr, \
                (name, out.stdout, out.stderr)
        load = node.create_client(LoadMap, "gags/load_map")
        res = call(node, load, LoadMap.Request(path="lab.gags"), timeout=60)
        assert res.success and res.gaussians == len(original["means"]), res.message
        before = sorted(p.name for p in tmp_path.rglob("*"))
        # (a NUL cannot reach the node: ROS strings end at the first NUL, so "a\x00b" arrives as "a";
        # resolve_map_path refuses it all the same, tested above)
        for bad in ["../profile.sh", str(outside), "link.gags", "sub/../../x.gags", str(tmp_path),
                    "a\tb.gags", "a\nb.gags"]:
            res = call(node, save, SaveMap.Request(path=bad))
            assert not res.success, (bad, res.message)
            assert ("outside the map folder" in res.message or "directory" in res.message
                    or "control characters" in res.message), (bad, res.message)
        for bad in ["../evil.gags", str(evil), "link.gags", "", "a\nb"]:
            res = call(node, load, LoadMap.Request(path=bad))
            assert not res.success, (bad, res.message)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a refused request wrote a file"
        assert outside.read_text() == "echo hi\n"
        # the map is the one loaded from lab.gags, not evil.gags
        res = call(node, save, SaveMap.Request(path="after.gags"))
        assert res.success and Path(res.path) == (root / "after.gags").resolve(), res.message
        after = _map_state(root / "after.gags")
        assert set(after) >= {"means", "quats", "scales", "opacities"}
        assert all(torch.equal(after[k], original[k]) for k in after)

        assert proc.poll() is None
    finally:
        node.destroy_node()
        stop(proc)
        print(log.read_text())
