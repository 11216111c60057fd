"""What a user types, run as typed: every `ros2` command of the README's bash blocks against one node
that `ros2 launch gags_ros mapping.launch.py ... replay:=...` started with a replayed simulated room
(the ROS 2 tools of ../shared/ros2-tools, installed by scripts/setup.sh). The README commands are
extracted from the README, so a changed or added command changes what runs here; a command that is
not run must be listed below with the reason.

Checks: `ros2 topic echo --once /gags/status`; `ros2 service call /gags/query ...`; `ros2 param set
/gags_mapping query.threshold 0.6` changes the very next answer (and only it: answers repeat on the
settled map) and setting it back restores it; `ros2 param get` / `describe`; refusals with the
config's reason (range, cross-rule, read-only with why); a rate parameter changes the status rate;
`ros2 service call /gags/export ...` writes a PLY that plyfile reads; `ros2 interface show`;
`ros2 lifecycle get / set` (deactivated, the node answers the same query from the kept map)."""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rosutil import ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROS2 = Path(sys.prefix) / "bin" / "ros2"
assert ROS2.exists(), f"`ros2` is not installed in {sys.prefix}: run scripts/setup.sh with ../shared beside the repo"

# README commands that this module does not run, and why (anything else must be a `ros2` command).
NOT_RUN_HERE = {
    "bash scripts/setup.sh": "CI runs it (scripts/test.sh, .ci/run)",
    ".venv/bin/python -m gags_ros.demo": "tests/test_ros_end_to_end.py runs the demo (gags_ros.demo.run, fewer frames)",
    "bash scripts/test.sh": "CI itself (.ci/run)",
    "cd ~/ros2_ws/src": "workspace set-up of a user's machine: scripts/setup.sh does the same build into its venv",
    "git clone <this repo> gags_ros": "as above",
    "pip install -r gags_ros/requirements.txt": "as above (scripts/setup.sh installs requirements.txt)",
    "cd ~/ros2_ws": "as above",
    "colcon build --packages-select gags_ros": "as above (scripts/setup.sh: colcon build --packages-select gags_ros)",
    "source install/setup.bash": "as above (the venv is the ROS prefix)",
}
FRAMES = 6
RAN = set()   # README commands this module ran (normalised)


def readme_commands() -> list:
    """Commands of the README's ```bash blocks: continuation lines joined, `&&` chains split,
    comments dropped, whitespace normalised."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for cmd in line.split("&&"):
                cmd = " ".join(cmd.split())
                if cmd and not cmd.startswith("#"):
                    out.append(cmd)
    return out


def readme_command(prefix: str) -> str:
    """The one README command starting with ``prefix`` (the test fails when it is gone)."""
    found = {c for c in readme_commands() if c.startswith(prefix)}
    assert len(found) == 1, f"expected one README command starting {prefix!r}, found {sorted(found)}"
    return found.pop()


class Cli:
    """The launched node and the environment that ``ros2`` commands run in."""

    def __init__(self, env, proc, save_dir, status):
        self.env, self.proc, self.save_dir, self.status = env, proc, save_dir, status
        self.log = []

    def run(self, command: str, timeout: float = 90.0, readme: bool = True) -> str:
        """Run ``command`` (a shell-quoted string, as typed) and return what it printed (stdout, then
        stderr: `ros2 param set` reports a refusal there); fails on a non-zero exit or a timeout."""
        args = shlex.split(command)
        assert args[0] == "ros2"
        out = subprocess.run([str(ROS2)] + args[1:], env=self.env, capture_output=True, text=True,
                             timeout=timeout, cwd=ROOT)
        self.log.append(f"$ {command}\n{out.stdout}{out.stderr}")
        assert out.returncode == 0, self.log[-1]
        if readme:
            RAN.add(" ".join(command.split()))
        return out.stdout + out.stderr

    def query(self, command: str):
        """The targets of a Query answer as printed by `ros2 service call`: [(score, gaussian_count)]."""
        out = self.run(command)
        assert "success=True" in out, out
        return [(float(s), int(c)) for s, c in re.findall(r"QueryTarget\(label='[^']*', score=([-\d.e]+), .*?"
                                                            r"gaussian_count=(\d+)\)", out)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory, ros_env):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from gags_ros.core import config as C
    from gags_ros.sim.dataset import generate
    from gags_ros.demo import DEMO_PARAMS
    from gags_ros.msg import MappingStatus

    tmp = tmp_path_factory.mktemp("cli")
    scene = generate(tmp / "scene", seed=0, preset="small")
    cfg = C.GagsConfig()
    # The demo's CPU map, settled soon after the stream (answers then repeat exactly), every target
    # shown (min_confidence / min_score 0: this module is about the CLI, not the calibration).
    for k, v in {**DEMO_PARAMS, "device": "cpu", "teacher.sim_dataset": str(scene), "save_dir": str(tmp / "maps"),
                 "mapping.final_refine_steps": 20, "query.min_confidence": 0.0, "query.min_score": 0.0}.items():
        C.set_value(cfg, k, v)
    params = tmp / "params.yaml"
    params.write_text(C.ros_params_yaml(cfg))
    env = dict(ros_env, AMENT_PREFIX_PATH=sys.prefix, PATH=f"{sys.prefix}/bin{os.pathsep}{os.environ['PATH']}")
    replay = f"{scene} --rate 4 --max-frames {FRAMES} --split train --wait-subscribers 120"
    launch = readme_command("ros2 launch ")
    command = shlex.split(launch) + [f"params_file:={params}", "device:=cpu", f"replay:={replay}"]
    log = open(tmp / "launch.log", "w")
    proc = subprocess.Popen([str(ROS2)] + command[1:], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    RAN.add(launch)

    rclpy.init()
    node = Node("cli_test_listener")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    status, clouds = [], []
    node.create_subscription(MappingStatus, "gags/status", status.append, 10)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(PointCloud2, "gags/map", clouds.append, latched)
    c = Cli(env, proc, tmp / "maps", status)
    c.clouds = clouds
    c.spin = lambda seconds: _spin(ex, seconds)
    try:
        # Settled: the replay node has streamed its frames and exited, and the node has then finished
        # its refinement (a node idle between two frames would map again under the queries).
        deadline = time.monotonic() + 600
        replayed_at = None
        while not (replayed_at is not None and status and status[-1].state == "idle"
                   and status[-1].header.stamp.sec + 1e-9 * status[-1].header.stamp.nanosec > replayed_at
                   and status[-1].teacher_keyframes >= 1):
            text = (tmp / "launch.log").read_text()
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, f"not settled: {status[-1:]}\n{text}"
            if replayed_at is None and re.search(r"\[replay_node-2\]: process has finished cleanly", text):
                replayed_at = time.time()
            ex.spin_once(timeout_sec=0.5)
        # The ros2 CLI's graph daemon, started and caught up with the node once, as a user's would be
        # after their first command; the commands below then find the node at once.
        subprocess.run([str(ROS2), "daemon", "start"], env=env, capture_output=True, timeout=60, check=True)
        while "/gags_mapping" not in subprocess.run([str(ROS2), "node", "list"], env=env, capture_output=True,
                                                    text=True, timeout=60).stdout:
            assert time.monotonic() < deadline, "the ros2 daemon does not see /gags_mapping"
            time.sleep(0.5)
        yield c
    finally:
        import signal

        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        subprocess.run([str(ROS2), "daemon", "stop"], env=env, capture_output=True, timeout=60)
        node.destroy_node()
        rclpy.try_shutdown()
        print("\n".join(c.log))


def _spin(ex, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=max(0.0, min(0.1, end - time.monotonic())))


def test_interface_show_prints_the_definitions(cli):
    for srv in ("ExportMap", "Query"):
        out = cli.run(f"ros2 interface show gags_ros/srv/{srv}", readme=srv == "ExportMap")
        want = [line.rstrip() for line in (ROOT / "srv" / f"{srv}.srv").read_text().splitlines() if line.strip()]
        # the file as written; nested types (std_msgs/Header, QueryTarget) are expanded below their
        # field, indented
        got = [line.rstrip() for line in out.splitlines() if line.strip() and not line.startswith(("\t", " "))]
        assert got == want, out


def test_topic_echo_once_gives_the_status(cli):
    import yaml

    out = cli.run(readme_command("ros2 topic echo --once /gags/status"))
    status = yaml.safe_load(out.split("\n---")[0])
    assert status["state"] == "idle" and status["keyframes"] >= 1 and status["gaussians"] > 1000, out
    assert 1 <= status["frames_received"] <= FRAMES and status["teacher_keyframes"] >= 1, out


def test_threshold_set_from_the_cli_changes_the_next_answer(cli):
    query = readme_command("ros2 service call /gags/query ")
    first = cli.query(query)
    assert first, "no target: nothing to compare"
    assert cli.query(query) == first, "the settled map answers the same query the same way"
    out = cli.run(readme_command("ros2 param set /gags_mapping query.threshold "))
    assert "Set parameter successful" in out, out
    assert "Double value is: 0.6" in cli.run(readme_command("ros2 param get /gags_mapping query.threshold"))
    lowered = cli.query(query)
    assert lowered and lowered != first, (first, lowered)
    assert "Set parameter successful" in cli.run("ros2 param set /gags_mapping query.threshold 0.8", readme=False)
    assert cli.query(query) == first
    out = cli.run(readme_command("ros2 param describe /gags_mapping query.threshold"))
    assert "Min value: 0.0" in out and "Max value: 1.0" in out and "min-max normalised relevancy" in out, out


def test_map_cloud_keeps_its_layout_before_and_after_queries(cli):
    """gags/map has one PointCloud2 layout from the first cloud on (relevancy -1 = unknown before any
    query), which sensor_msgs_py decodes as we do; after the queries above it carries relevancy."""
    from sensor_msgs_py import point_cloud2

    from gags_ros.ros.conversions import pointcloud2_from_msg

    cli.spin(3.0)     # the cloud the last query triggered, and a periodic one
    names = ["x", "y", "z", "rgb", "relevancy", "coverage"]
    assert len(cli.clouds) >= 2, len(cli.clouds)
    for msg in (cli.clouds[0], cli.clouds[-1]):
        theirs = point_cloud2.read_points(msg, skip_nans=False)
        ours = pointcloud2_from_msg(msg)
        assert list(theirs.dtype.names) == names and len(theirs) == msg.width > 1000
        for name in names:
            np.testing.assert_array_equal(theirs[name].view(np.uint32), ours[name].view(np.uint32))
    assert (point_cloud2.read_points(cli.clouds[0], field_names=["relevancy"])["relevancy"] == -1).all(), \
        "the first cloud came before any query"
    rel = point_cloud2.read_points(cli.clouds[-1], field_names=["relevancy"])["relevancy"]
    assert ((rel == -1) | ((rel >= 0) & (rel <= 1))).all() and (rel >= 0).any()


@pytest.mark.parametrize("name, value, reason", [
    ("query.threshold", "2.5", "query.threshold=2.5: out of range [0.0, 1.0]"),
    ("query.drop_neighbours", "99", "query.drop_neighbours=99: must not exceed query.keep_neighbours=20"),
    ("query.targets", "blob", "query.targets='blob': must be one of ['cluster', 'peak', 'mass']"),
    ("save_dir", "/tmp", "save_dir is read-only on a running node: it names a file, folder, device"),
    ("ros.image_topic", "/other/image", "ros.image_topic is read-only on a running node: topics, QoS and queues "
                                        "are set up once, at start (remap a topic"),
    ("mapping.max_gaussians", "5000", "mapping.max_gaussians is read-only on a running node: the models, map "
                                      "layout or memory it shapes are built once, at start"),
])
def test_refusals_carry_the_reason(cli, name, value, reason):
    out = cli.run(f"ros2 param set /gags_mapping {name} {value}", readme=False)
    assert f"Setting parameter failed: {reason}" in out, out


def test_rate_parameter_takes_effect_at_once(cli):
    def rate(seconds=4.0):
        cli.spin(1.0)            # a period already under way ends first
        n = len(cli.status)
        cli.spin(seconds)
        return (len(cli.status) - n) / seconds

    before = rate()
    command = readme_command("ros2 param set /gags_mapping ros.status_period ")
    assert "Set parameter successful" in cli.run(command)
    period = float(command.split()[-1])
    after = rate()
    cli.run("ros2 param set /gags_mapping ros.status_period 1.0", readme=False)
    assert 0.5 <= before <= 1.3 and 0.75 / period <= after <= 1.3 / period, (before, after)


def test_export_from_the_cli(cli):
    import plyfile

    from gags_ros.core.io.export import read_vocabulary

    command = readme_command("ros2 service call /gags/export ")
    out = cli.run(command)
    assert "success=True" in out, out
    path = Path(re.search(r"path='([^']+)'", out.split("response:")[1])[1])
    assert path == (cli.save_dir / "room.ply").resolve(), out
    ply = plyfile.PlyData.read(str(path))
    v = ply["vertex"].data
    labelled = int(re.search(r"labelled=(\d+)", out)[1])
    assert len(v) == int(re.search(r"gaussians=(\d+)", out)[1]) == cli.status[-1].gaussians
    assert read_vocabulary(ply.comments) == ["chair", "table", "mug"]
    assert labelled > 0 and (v["label"] >= 0).sum() == labelled and set(np.unique(v["label"])) <= {-1, 0, 1, 2}
    assert ((v["score"] >= 0) == (v["label"] >= 0)).all() and v["score"].max() <= 1.0
    refused = cli.run('ros2 service call /gags/export gags_ros/srv/ExportMap "{path: \'../outside.ply\'}"',
                      readme=False)
    assert "success=False" in refused and "outside the map folder" in refused, refused


def test_lifecycle_deactivate_keeps_answering_then_activate(cli):
    """The README's lifecycle commands: the launched node is active (autostart); deactivated it still
    answers the same query from the kept map; activated again it maps."""
    assert cli.run(readme_command("ros2 lifecycle get /gags_mapping")).startswith("active [3]")
    query = readme_command("ros2 service call /gags/query ")
    before = cli.query(query)
    assert "Transitioning successful" in cli.run(readme_command("ros2 lifecycle set /gags_mapping deactivate"))
    assert cli.run("ros2 lifecycle get /gags_mapping", readme=False).startswith("inactive [2]")
    cli.spin(2.5)
    assert cli.status[-1].state == "inactive", cli.status[-1]
    assert cli.query(query) == before     # the settled map, kept and queried while inactive
    assert "Transitioning successful" in cli.run(readme_command("ros2 lifecycle set /gags_mapping activate"))
    assert cli.run("ros2 lifecycle get /gags_mapping", readme=False).startswith("active [3]")
    cli.spin(2.5)
    assert cli.status[-1].state != "inactive", cli.status[-1]


def test_every_readme_command_is_run_or_listed(cli):
    """Runs last (pytest keeps file order): the README's commands against what this module ran."""
    missing = [c for c in readme_commands()
               if c not in RAN and not any(c.startswith(k) for k in NOT_RUN_HERE)]
    assert not missing, f"README commands neither run by tests/test_ros_cli.py nor listed in NOT_RUN_HERE: {missing}"
    stale = [k for k in NOT_RUN_HERE if not any(c.startswith(k) for c in readme_commands())]
    assert not stale, f"NOT_RUN_HERE lists commands the README no longer has: {stale}"
