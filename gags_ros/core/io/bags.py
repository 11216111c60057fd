"""ROS 2 bags (rosbag2: mcap or sqlite3) without ROS's rosbag2, through the pure-Python `rosbags`
library (an optional dependency: ``pip install gags_ros[bags]``).

Messages stay serialized (CDR bytes) both ways: the recorder writes what its raw subscriptions
receive, the player publishes the bytes as they are, so no message type is decoded here. Bag time
is the receive time in nanoseconds (as ``ros2 bag record`` stores it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Tuple

STORAGES = ("mcap", "sqlite3")


def is_bag(source: Path) -> bool:
    """A rosbag2 folder (metadata.yaml) or a single .mcap / .db3 file."""
    source = Path(source)
    return (source / "metadata.yaml").exists() or source.suffix in (".mcap", ".db3")


def topics(path: Path) -> Dict[str, str]:
    """``{topic: msgtype}`` of the bag's connections (a player creates its publishers from this
    before the first message, so subscribers match them in time)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_messages(path: Path) -> Iterator[Tuple[str, str, int, bytes]]:
    """``(topic, msgtype, bag time [ns], CDR bytes)`` of every message, in bag-time order;
    ``msgtype`` as ROS 2 names it (``sensor_msgs/msg/Image``)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        for conn, t_ns, raw in reader.messages():
            yield conn.topic, conn.msgtype, int(t_ns), bytes(raw)


class BagWriter:
    """Write serialized messages into a new rosbag2 ``path`` (a folder; must not exist) in ``storage``
    (mcap or sqlite3). A topic's connection is added at its first message; the message definition
    stored with it (which mcap readers need) comes from the ROS 2 Kilted type store."""

    def __init__(self, path: Path, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._connections: Dict[str, object] = {}
        self.count = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msgtype: str, t_ns: int, raw: bytes) -> None:
        """One message of ``msgtype`` (``pkg/msg/Name``) on ``topic`` received at ``t_ns``."""
        conn = self._connections.get(topic)
        if conn is None:
            if msgtype not in self._typestore.fielddefs:
                raise ValueError(f"{topic}: message type {msgtype} is not a standard ROS 2 type; it cannot be "
                                 "recorded with its definition")
            conn = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
            self._connections[topic] = conn
        self._writer.write(conn, int(t_ns), bytes(raw))
        self.count += 1
