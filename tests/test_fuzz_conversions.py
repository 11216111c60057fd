"""Property-based fuzzing of the message conversions (hypothesis): 2,250 generated Image,
CompressedImage, CameraInfo, depth, TF and PoseStamped messages. Each conversion either returns
what its docstring promises or refuses with InputError (the documented refusal); nothing else
escapes, and nothing accepted breaks a limit of the typed config."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gags_ros.core import config as C
from gags_ros.core.plausibility import fov_deg
from gags_ros.core.tf_buffer import TransformBuffer
from gags_ros.core.types import check_rigid

pytestmark = pytest.mark.ros  # needs the generated message classes

EXAMPLES = settings(max_examples=450, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMITS = C.LimitsConfig()
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "mono16", "32FC1", "yuv422", "RGB8", "", "8UC3"]
def converted(fn, *args):
    """``fn(*args)``, or None when it refuses with InputError (any other exception fails the test)."""
    from gags_ros.ros.conversions import InputError

    try:
        return fn(*args)
    except InputError:
        return None


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.floats(-2.0, 2.0), st.sampled_from([0.0, 1.0, -1.0, 1e-6, 1e6, 1e300]))


@st.composite
def raw_images(draw):
    """Images with any size, step, endianness and data length (often inconsistent on purpose)."""
    from sensor_msgs.msg import Image

    h, w = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    enc = draw(st.sampled_from(ENCODINGS) | st.text(max_size=8))
    step = draw(st.integers(0, 60))
    n = draw(st.one_of(st.just(h * step), st.integers(0, 800)))
    data = draw(st.binary(min_size=n, max_size=n))
    if draw(st.booleans()) and enc == "32FC1":   # real float patterns: NaN, inf, huge, negative depths
        vals = draw(st.lists(floats, min_size=n // 4, max_size=n // 4))
        with np.errstate(over="ignore"):   # 1e300 -> inf in float32, on purpose
            data = np.asarray(vals, np.float64).astype(np.float32).tobytes() + data[4 * (n // 4):]
    return Image(height=h, width=w, encoding=enc, is_bigendian=draw(st.integers(0, 1)), step=step, data=data)


@given(raw_images())
@EXAMPLES
def test_image_from_msg(msg):
    from gags_ros.ros.conversions import image_from_msg

    a = converted(image_from_msg, msg)
    assert a is None or a.dtype == np.uint8 and a.shape == (msg.height, msg.width, 3) and a.flags.c_contiguous


@given(raw_images())
@EXAMPLES
def test_depth_from_msg(msg):
    from gags_ros.ros.conversions import depth_from_msg

    d = converted(depth_from_msg, msg, LIMITS)
    if d is None:
        return
    assert d.dtype == np.float32 and d.shape == (msg.height, msg.width)
    valid = d[d != 0]
    assert valid.size > 0 and np.all(np.isfinite(valid))
    assert valid.min() >= LIMITS.min_depth and valid.max() <= LIMITS.max_depth


@st.composite
def compressed(draw):
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    fmt = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", ""]))
    if draw(st.booleans()):
        h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16"]))
        buf = io.BytesIO()
        PILImage.new(mode, (w, h)).save(buf, format=draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("RGB", "L")
                                        else "PNG")
        data = buf.getvalue()
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data               # truncated files too
    else:
        data = draw(st.binary(max_size=300))
    return CompressedImage(format=fmt, data=data)


@given(compressed())
@EXAMPLES
def test_image_from_compressed(msg):
    from gags_ros.ros.conversions import image_from_compressed

    a = converted(image_from_compressed, msg)
    assert a is None or a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3


@given(st.lists(floats, min_size=9, max_size=9), st.integers(0, 5000), st.integers(0, 5000))
@EXAMPLES
def test_intrinsics_from_msg(k, w, h):
    from sensor_msgs.msg import CameraInfo

    from gags_ros.ros.conversions import intrinsics_from_msg

    intr = converted(intrinsics_from_msg, CameraInfo(k=k, width=w, height=h), LIMITS)
    if intr is None:
        return
    assert intr.fx > 0 and intr.fy > 0 and intr.width == w > 0 and intr.height == h > 0
    for f, size in ((intr.fx, w), (intr.fy, h)):
        assert LIMITS.min_fov <= fov_deg(f, size) <= LIMITS.max_fov


@given(st.lists(floats, min_size=3, max_size=3), st.lists(floats, min_size=4, max_size=4),
       st.booleans())
@EXAMPLES
def test_transform_and_pose_from_msg(t, q, as_pose):
    from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform, Vector3

    from gags_ros.ros.conversions import matrix_from_pose, matrix_from_transform

    quat = Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    if as_pose:
        msg = PoseStamped(pose=Pose(position=Point(x=t[0], y=t[1], z=t[2]), orientation=quat))
        T = converted(matrix_from_pose, msg.pose, LIMITS.quaternion_tolerance)
    else:
        T = converted(matrix_from_transform, Transform(translation=Vector3(x=t[0], y=t[1], z=t[2]), rotation=quat),
                      LIMITS.quaternion_tolerance)
    if T is None:
        return
    assert abs(float(np.dot(q, q)) - 1.0) < LIMITS.quaternion_tolerance    # tf2's rule held
    check_rigid(T)                                                         # finite and rigid
    TransformBuffer().set_transform("map", "cam", 0.0, T)                  # and the buffer takes it
