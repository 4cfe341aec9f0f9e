"""ament_python package definition for moa_depth_ros.

Python dependencies are declared once, in requirements/*.txt (read by the
Makefile); a ROS 2 workspace gets rclpy and the messages from the distro.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "moa_depth_ros"
TRAINING = "moa_depth_train"  # the training package, installed beside the ROS package

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", TRAINING, f"{TRAINING}.*"]),
    package_data={
        PACKAGE: ["models/open_clip_configs/*.json"],
        TRAINING: ["configs/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,  # configs and open_clip JSONs are read as files
    maintainer="moa_depth_ros maintainers",
    maintainer_email="maintainers@moa-depth-ros.invalid",
    description="Metric monocular depth and point clouds from CLIP-based depth models.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"depth_node = {PACKAGE}.node.__main__:main",
            f"moa-depth-bag = {PACKAGE}.cli.bag:main",
            f"moa-depth-train = {TRAINING}.cli.train:main",
            f"moa-depth-evaluate = {TRAINING}.cli.evaluate:main",
            f"moa-depth-import-space-clip = {TRAINING}.cli.import_space_clip:main",
            f"moa-depth-prepare = {TRAINING}.cli.prepare:main",
            f"moa-depth-synthetic = {PACKAGE}.cli.synthetic:main",
            f"moa-depth-checkpoint = {PACKAGE}.cli.checkpoint:main",
            f"moa-depth-export = {PACKAGE}.cli.export:main",
        ],
    },
)
