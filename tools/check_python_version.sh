#!/usr/bin/env bash
# Run the tests that need neither torch nor rclpy on another Python (the ROS 2 distributions'
# versions: 3.10 for Humble, 3.12 for Jazzy), in a throwaway venv with only their dependencies.
#   tools/check_python_version.sh python3.10
set -euo pipefail
python=${1:?usage: $0 PYTHON (e.g. python3.10)}
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy opencv-python-headless \
    rosbags pyyaml pytest tqdm matplotlib
"$venv/bin/python" --version
# --noconftest: the suite's conftest imports torch.
PYTHONPATH=$PWD "$venv/bin/python" -m pytest -q --noconftest -p no:cacheprovider \
    test/test_geometry.py test/test_anchoring.py test/test_metrics.py test/bags/test_pairing.py \
    test/test_pictures.py test/bags/test_bag_io.py
