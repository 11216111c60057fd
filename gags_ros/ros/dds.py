"""Fast DDS transport profile for camera-sized messages.

Fast DDS's default 512 KB shared-memory segment loses best-effort images and adds ~13 ms latency
(measured, ../shared/docs/ENVIRONMENT.md). This profile uses a 16 MiB shared-memory segment with
4 MiB messages plus UDPv4 on loopback, builtin transports off: 640x480 rgb8 at 30 Hz then arrives
with ~3 ms median latency and no loss. Nodes started by our launcher or tests get it through
FASTDDS_DEFAULT_PROFILES_FILE unless the user already set that variable.

It also raises the writers' reliability ``max_blocking_time`` from 100 ms to 1 s. rmw_fastrtps sends
a service response only once the service's response writer has matched the client's response
reader, and waits at most that long for the match before dropping the response ("client will not
receive response"). A client that called right after ``wait_for_service`` (``ros2 service call``
does) could lose its first answer when the server learned of its response reader more than 100 ms
after its request (tests/test_ros_cli.py calls the node that way; measured: with this profile the
wait for a client that never matches is 1.0 s, without it 0.1 s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

PROFILE_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>gags_shm</transport_id>
      <type>SHM</type>
      <segment_size>16777216</segment_size>
      <maxMessageSize>4194304</maxMessageSize>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>gags_udp</transport_id>
      <type>UDPv4</type>
      <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>
    </transport_descriptor>
  </transport_descriptors>
  <data_writer profile_name="gags_writers" is_default_profile="true">
    <qos><reliability><max_blocking_time><sec>1</sec><nanosec>0</nanosec></max_blocking_time></reliability></qos>
  </data_writer>
  <participant profile_name="gags_large_messages" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>gags_shm</transport_id>
        <transport_id>gags_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def write_profile(path: str | Path) -> Path:
    """Write the profile to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fastdds", suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write(PROFILE_XML)
    os.replace(tmp, path)
    return path


def ensure_profile_env(env: dict | None = None) -> dict:
    """Set FASTDDS_DEFAULT_PROFILES_FILE in ``env`` (default: os.environ) unless already set.

    Must run before the first rclpy participant is created in this process (or passed to children).
    """
    env = os.environ if env is None else env
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gags_ros"
        target = cache / "fastdds_profile.xml"
        if not target.exists() or target.read_text() != PROFILE_XML:
            write_profile(target)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(target)
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", required=True, metavar="PATH")
    write_profile(ap.parse_args(argv).write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
