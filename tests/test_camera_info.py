"""CameraInfo read as image_geometry reads it (gags_ros.core.camera_info; ROS-free): the pixel
convention converted once, K / P by ros.camera_model, distortion, binning and ROI; and the frame
assembly's driver conventions (depth frame, pose child frames, backward time jumps)."""

import numpy as np
import pytest
import torch

from gags_ros.core import camera as C
from gags_ros.core.camera_info import CameraInfoFields, camera_info_fields, camera_model_from_info
from gags_ros.core.config import RosConfig
from gags_ros.core.frame_sync import FrameAssembler, prepare_frame
from gags_ros.core.types import Intrinsics

K_ROS = (615.0, 0.0, 321.7, 0.0, 612.0, 238.4, 0.0, 0.0, 1.0)  # a RealSense-like colour camera, ROS convention


def info(**kw) -> CameraInfoFields:
    return CameraInfoFields(**{"width": 640, "height": 480, "k": K_ROS, **kw})


def test_principal_point_gets_half_a_pixel_and_publishing_takes_it_off():
    m = camera_model_from_info(info())
    assert m.intrinsics == Intrinsics(615.0, 612.0, 322.2, 238.9, 640, 480) and m.distortion is None
    f = camera_info_fields(m.intrinsics)
    assert f["k"][2] == pytest.approx(321.7) and f["p"][6] == pytest.approx(238.4)
    assert camera_model_from_info(CameraInfoFields(**f)).intrinsics == m.intrinsics


def test_single_view_seeds_lie_on_the_true_surface_through_ros_pixel_centres():
    """A plane seen by a ROS camera (ray of pixel (u, v) through (u - cx) / fx with integer u):
    seeds from exact depth must lie on it within 0.1 mm (half a pixel off: ~1 mm at 2 m)."""
    from gags_ros.core.mapping.seeding import seed_gaussians

    W, Hh = 640, 480
    fx, fy, cx, cy = K_ROS[0], K_ROS[4], K_ROS[2], K_ROS[5]
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(Hh, dtype=np.float64))
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)    # rays, optical frame
    n, c = np.array([0.2, -0.6, -0.77]), -1.6                            # plane n.x = c, 1.3-3 m away
    n /= np.linalg.norm(n)
    z = c / (d @ n)
    assert 1.0 < z.min() and z.max() < 4.0
    intr = camera_model_from_info(info()).intrinsics
    T = C.look_at([0.3, -0.2, 1.1], [2.0, 0.5, 0.4])
    g = torch.Generator().manual_seed(0)
    seeds = seed_gaussians(torch.zeros(Hh, W, 3), torch.tensor(z, dtype=torch.float32), torch.zeros(Hh, W, 3),
                           torch.zeros(Hh, W), torch.zeros(Hh, W), torch.tensor(intr.K, dtype=torch.float32),
                           torch.tensor(T, dtype=torch.float32), 5000, 2.0, g)
    p_world = seeds["means"].double().numpy()
    p_cam = (p_world - T[:3, 3]) @ T[:3, :3]
    err = np.abs(p_cam @ n - c)
    assert np.percentile(err, 99) < 1e-4, np.percentile(err, 99)


def test_binning_and_roi_scale_and_shift_the_matrix():
    m = camera_model_from_info(info(width=1280, height=960, k=(1230.0, 0, 643.9, 0, 1224.0, 477.3, 0, 0, 1),
                                    binning_x=2, binning_y=2))
    i = m.intrinsics
    assert (i.width, i.height) == (640, 480) and i.fx == 615.0 and i.fy == 612.0
    assert i.cx == pytest.approx((643.9 + 0.5) / 2) and i.cy == pytest.approx((477.3 + 0.5) / 2)
    r = camera_model_from_info(info(roi=(80, 60, 480, 360))).intrinsics
    assert (r.width, r.height, r.fx) == (480, 360, 615.0)
    assert r.cx == pytest.approx(322.2 - 80) and r.cy == pytest.approx(238.9 - 60)
    with pytest.raises(ValueError, match="outside the 640x480 image"):
        camera_model_from_info(info(roi=(200, 0, 480, 360)))


P_RECT = (560.0, 0.0, 322.5, 0.0, 0.0, 561.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0)
D_RAW = (-0.12, 0.03, 4e-4, -3e-4, 0.0)


@pytest.mark.parametrize("mode,topic,matrix", [("rectified", "camera/image_raw", "p"),
                                               ("auto", "/camera/color/image_rect", "p"),
                                               ("auto", "/camera/color/image_raw", "k+d -> p"),
                                               ("raw", "/camera/color/image_rect_color", "k+d -> p")])
def test_which_matrix_describes_the_images(mode, topic, matrix):
    from gags_ros.core.camera_info import is_rectified_topic

    m = camera_model_from_info(info(d=D_RAW, distortion_model="plumb_bob", p=P_RECT), mode, is_rectified_topic(topic))
    assert m.matrix == matrix
    assert (m.intrinsics.fx, m.intrinsics.cx) == (560.0, 323.0)        # P, ROS convention converted
    if matrix == "p":
        assert m.distortion is None and m.source == m.intrinsics
    else:
        assert m.distortion.k1 == -0.12 and m.source.fx == 615.0 and m.source.cx == pytest.approx(322.2)


def test_raw_images_with_a_zero_d_use_k_and_unknown_models_are_refused():
    m = camera_model_from_info(info(d=(0.0,) * 5, distortion_model="plumb_bob", p=P_RECT))
    assert m.matrix == "k" and m.intrinsics.fx == 615.0 and m.distortion is None
    with pytest.raises(ValueError, match="distortion model 'kannala_brandt' is not supported.*rectified"):
        camera_model_from_info(info(d=(0.1, 0, 0, 0), distortion_model="kannala_brandt"))
    with pytest.raises(ValueError, match="stereo rectification rotation"):
        camera_model_from_info(info(d=D_RAW, distortion_model="plumb_bob", r=(0, -1.0, 0, 1.0, 0, 0, 0, 0, 1.0)))
    with pytest.raises(ValueError, match="'rectified' but CameraInfo p="):
        camera_model_from_info(info(), "rectified")


def test_raw_frames_are_undistorted_colour_bilinear_depth_nearest():
    m = camera_model_from_info(info(d=D_RAW, distortion_model="plumb_bob", p=P_RECT))
    a = FrameAssembler(RosConfig(depth_topic="depth", tf_timeout=0.0), clock=lambda: 0.0)
    a.set_camera(m)
    a.tf.set_transform("map", "cam", 1.0, np.eye(4))
    depth = np.full((480, 640), 2.0, np.float32)
    depth[:, 320:] = 3.0                                # an edge: nearest never blends it
    a.add_depth(depth, 1.0, "cam")
    a.offer(np.full((480, 640, 3), 90, np.uint8), 1.0, "cam")
    (f,), rejected = a.poll()
    assert f.image.shape == (480, 640, 3) and "prepare" in f.extra   # deferred to the worker
    f = prepare_frame(f)
    assert not rejected and f.intrinsics == m.intrinsics
    assert set(np.unique(f.depth)) <= {0.0, 2.0, 3.0} and (f.depth == 0).mean() < 0.2
    assert f.image[240, 320].tolist() == [90, 90, 90]
    expected = C.undistort_image(depth, m.source, m.distortion, m.intrinsics, order=0)
    np.testing.assert_array_equal(f.depth, expected)


# ---- frame assembly: driver conventions -----------------------------------------------------------
INTR = Intrinsics(30.0, 30.0, 16.0, 12.0, 32, 24)
IMG = np.zeros((24, 32, 3), np.uint8)


def test_depth_from_another_optical_frame_is_refused_naming_both_and_the_aligned_topic():
    a = FrameAssembler(RosConfig(depth_topic="/camera/depth/image_rect_raw", tf_timeout=0.0), clock=lambda: 0.0)
    a.set_intrinsics(INTR)
    a.tf.set_transform("map", "camera_color_optical_frame", 1.0, np.eye(4))
    a.add_depth(np.ones((24, 32), np.float32), 1.0, "camera_depth_optical_frame")
    a.offer(IMG, 1.0, "camera_color_optical_frame")
    ready, ((_, reason),) = a.poll()
    assert not ready
    assert "is in frame 'camera_depth_optical_frame' but the colour image in 'camera_color_optical_frame'" in reason
    assert "/camera/aligned_depth_to_color/image_raw" in reason and "size" not in reason
    a.add_depth(np.ones((24, 32), np.float32), 2.0, "/camera_color_optical_frame")  # same frame: taken
    a.tf.set_transform("map", "camera_color_optical_frame", 2.0, np.eye(4))
    a.offer(IMG, 2.0, "camera_color_optical_frame")
    ready, rejected = a.poll()
    assert len(ready) == 1 and not rejected


def test_odometry_of_base_link_is_composed_with_tf_to_the_optical_frame():
    a = FrameAssembler(RosConfig(pose_source="odometry", world_frame="odom", tf_timeout=0.0), clock=lambda: 0.0)
    a.set_intrinsics(INTR)
    T_base_opt = C.make_pose(C.rotation_from_quat([-0.5, 0.5, -0.5, 0.5], order="xyzw"), [0.2, 0.0, 1.0])
    a.tf.set_transform("base_link", "camera_color_optical_frame", 0.0, T_base_opt, static=True)
    T_odom_base = C.make_pose(C.rotation_from_quat([0, 0, np.sin(0.2), np.cos(0.2)], order="xyzw"), [1.0, 2.0, 0.0])
    a.add_pose(T_odom_base, 1.0, "odom", "base_link")
    a.offer(IMG, 1.0, "camera_color_optical_frame")
    (f,), _ = a.poll()
    np.testing.assert_allclose(f.T_world_cam, T_odom_base @ T_base_opt, atol=1e-12)
    a = FrameAssembler(RosConfig(pose_source="odometry", world_frame="odom", tf_timeout=0.0), clock=lambda: 1.0)
    a.set_intrinsics(INTR)
    a.tf.set_transform("base_link", "camera_color_optical_frame", 0.0, T_base_opt, static=True)
    a.add_pose(T_odom_base, 2.0, "odom", "base_footprint")      # a frame with no path to the camera
    a.offer(IMG, 2.0, "camera_color_optical_frame")
    a.clock = lambda: 2.0
    ready, ((_, reason),) = a.poll()
    assert not ready and "'odom' and 'camera_color_optical_frame' are not connected" in reason
    assert "poses on 'camera/pose' are of 'base_footprint'" in reason


def test_a_backward_time_jump_clears_the_stores_once_and_mapping_goes_on():
    jumps = []
    a = FrameAssembler(RosConfig(depth_topic="depth", tf_timeout=0.0), clock=lambda: 0.0,
                       on_time_jump=lambda *j: jumps.append(j))
    a.tf.jump_threshold = 1.0
    a.set_intrinsics(INTR)
    for t in np.arange(100.0, 112.0, 0.5):   # 12 s of stream: the TF history holds 10 s
        assert not a.tf.set_transform("map", "cam", t, np.eye(4))
        a.add_depth(np.ones((24, 32), np.float32), t, "cam")
        a.offer(IMG, t, "cam")
        a.poll()
    assert a.tf.set_transform("map", "cam", 50.0, np.eye(4))   # 60 s back: the edge restarts
    a.add_depth(np.ones((24, 32), np.float32), 50.0, "cam")
    a.offer(IMG, 50.0, "cam")
    ready, rejected = a.poll()
    assert len(ready) == 1 and not rejected
    assert [j[0] for j in jumps] == ["depth", "image"] and jumps[1][1:] == (111.5, 50.0)
    a.tf.set_transform("map", "cam", 50.5, np.eye(4))
    a.add_depth(np.ones((24, 32), np.float32), 50.5, "cam")
    a.offer(IMG, 50.5, "cam")
    assert len(a.poll()[0]) == 1 and len(jumps) == 2


def test_depth_of_another_optical_frame_is_registered_nearest_surface_first():
    from gags_ros.core.camera_info import register_depth

    src = Intrinsics(385.0, 385.0, 320.7, 241.6, 640, 480)     # depth sensor
    dst = Intrinsics(615.0, 612.0, 322.2, 238.9, 640, 480)     # colour camera
    T_dst_src = C.make_pose(C.rotation_from_quat([0, 0.01, 0, 1], order="xyzw"), [-0.015, 0.0, 0.0])
    u, v = np.meshgrid(np.arange(640) + 0.5, np.arange(480) + 0.5)
    n, c = np.array([0.1, -0.5, -0.86]), -1.8                  # a plane n.x = c in the depth frame
    n /= np.linalg.norm(n)
    rays = np.stack([(u - src.cx) / src.fx, (v - src.cy) / src.fy, np.ones_like(u)], -1)
    z = (c / (rays @ n)).astype(np.float32)
    z[200:260, 300:360] = 1.0                                   # a nearer patch occludes part of it
    out = register_depth(z, src, T_dst_src, dst)
    assert (out > 0).mean() > 0.9           # a coarser depth camera leaves no holes
    rows, cols = np.nonzero(out > 0)
    d = out[rows, cols].astype(np.float64)
    p = np.stack([(cols + 0.5 - dst.cx) / dst.fx * d, (rows + 0.5 - dst.cy) / dst.fy * d, d], 1)
    p_src = (p - T_dst_src[:3, 3]) @ T_dst_src[:3, :3]          # back in the depth frame
    on_plane = np.abs(p_src @ n - c)
    near = np.abs(p_src[:, 2] - 1.0) < 0.01
    assert near.sum() > 500 and np.percentile(on_plane[~near], 90) < 1e-5   # m: exact on smooth surfaces
    # where the patch lands, the plane behind it never wins
    patch = out[int(dst.cy) - 10:int(dst.cy) + 10, int(dst.cx) - 5:int(dst.cx) + 5]
    assert np.all((patch == 0) | (np.abs(patch - 1.0) < 0.01)) and (patch > 0).any()


def test_the_assembler_registers_depth_given_its_camera_and_tf():
    from gags_ros.core.camera_info import CameraModel

    a = FrameAssembler(RosConfig(depth_topic="depth", depth_camera_info_topic="depth_info", tf_timeout=0.0),
                       clock=lambda: 0.0)
    a.set_intrinsics(INTR)
    a.tf.set_transform("map", "color", 1.0, np.eye(4))
    a.tf.set_transform("color", "depth_frame", 0.0, np.eye(4), static=True)
    a.add_depth(np.full((12, 16), 2.0, np.float32), 1.0, "depth_frame")
    a.offer(IMG, 1.0, "color")
    assert a.poll() == ([], []) and a.waiting == 1              # the depth CameraInfo may still come
    a.clock = lambda: 1.0                                       # ... until tf_timeout
    ready, rejected = a.poll()
    assert not ready and "no depth CameraInfo received yet on 'depth_info'" in rejected[0][1]
    a.set_depth_camera(CameraModel.pinhole(Intrinsics(15.0, 15.0, 8.0, 6.0, 16, 12)))
    a.tf.set_transform("map", "color", 2.0, np.eye(4))
    a.add_depth(np.full((12, 16), 2.0, np.float32), 2.0, "depth_frame")
    a.offer(IMG, 2.0, "color")
    (f,), rejected = a.poll()
    f = prepare_frame(f)
    assert not rejected and f.depth.shape == (24, 32) and set(np.unique(f.depth)) <= {0.0, 2.0}
    assert np.all(f.depth == 2.0)           # each depth pixel's footprint covers 2x2 colour pixels: no holes


def test_after_a_time_jump_an_image_ahead_of_its_tf_and_depth_still_waits_for_them():
    a = FrameAssembler(RosConfig(depth_topic="depth", tf_timeout=0.0), clock=lambda: 0.0)
    a.tf.jump_threshold = 1.0
    a.set_intrinsics(INTR)
    for t in (100.0, 100.5):
        a.tf.set_transform("map", "cam", t, np.eye(4))
        a.add_depth(np.ones((24, 32), np.float32), t, "cam")
        a.offer(IMG, t, "cam")
        a.poll()
    a.offer(IMG, 40.0, "cam")                  # topics race: the image of the new time comes first
    assert a.poll() == ([], [])                # it waits instead of "older than the TF history"
    a.tf.set_transform("map", "cam", 40.0, np.eye(4))
    a.add_depth(np.ones((24, 32), np.float32), 40.0, "cam")
    ready, rejected = a.poll()
    assert len(ready) == 1 and not rejected
