"""gags_ros: open-vocabulary 3D memory for ROS 2 robots (GAGS language Gaussian splatting).

The ROS-free core lives in :mod:`gags_ros.core`; rclpy adapters in :mod:`gags_ros.ros`.
"""

# A colcon install puts the generated interfaces (gags_ros.msg, gags_ros.srv) into the installed
# copy of this package; extending __path__ lets a source checkout earlier on sys.path find them.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
