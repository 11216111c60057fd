"""gags_ros.core.io.bags without ROS: what BagWriter writes (mcap, sqlite3) reads back byte for byte,
in time order, with each topic's type; a type without a standard definition is refused by name."""

import pytest

from gags_ros.core.io.bags import BagWriter, is_bag, read_messages


@pytest.mark.parametrize("storage,suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_round_trip(tmp_path, storage, suffix):
    bag = tmp_path / "bag"
    written = [("/camera/image_raw", "sensor_msgs/msg/Image", 2_000, b"\x00\x01image"),
               ("/tf", "tf2_msgs/msg/TFMessage", 1_000, b"\x00\x01tf"),
               ("/camera/image_raw", "sensor_msgs/msg/Image", 3_000, b"\x00\x01image2")]
    with BagWriter(bag, storage) as w:
        for m in written:
            w.write(*m)
    assert w.count == 3 and is_bag(bag) and any(bag.glob(f"*{suffix}"))
    assert list(read_messages(bag)) == sorted(written, key=lambda m: m[2])


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="storage must be one of mcap, sqlite3"):
        BagWriter(tmp_path / "a", "bag")
    with BagWriter(tmp_path / "b", "mcap") as w, pytest.raises(ValueError, match="gags_ros/msg/MappingStatus"):
        w.write("/gags/status", "gags_ros/msg/MappingStatus", 1, b"")
    assert not is_bag(tmp_path / "a")
