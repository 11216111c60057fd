"""ROS-free core of gags_ros: frames in, Gaussian map and language field out, queries answered.

Nothing in this package imports rclpy.
"""

from .config import ConfigError, GagsConfig, load_yaml, validate
from .types import Frame, Intrinsics, PoseError

__all__ = ["ConfigError", "Frame", "GagsConfig", "Intrinsics", "PoseError", "load_yaml", "validate"]
