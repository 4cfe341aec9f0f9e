# One-command setup, tests, lint, benchmarks. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := requirements/base.txt requirements/train.txt requirements/ros.txt requirements/dev.txt
STAMP := $(VENV)/.installed
# Everything runs offline: no hub downloads in tests or benchmarks.
export HF_HUB_OFFLINE := 1
export PYTHONPATH := $(CURDIR)

.PHONY: setup test lint bench clean demo

setup: $(STAMP)

# Re-installs only when a requirements file or setup.py changed (no-op otherwise).
$(STAMP): $(REQUIREMENTS) setup.py setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(REQUIREMENTS)) 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import torch, open_clip, safetensors, cv2, rclpy, sensor_msgs.msg, rosbags, h5py"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

# vermin: no call newer than Python 3.10 (ROS 2 Humble); ruff's target-version says the same.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check moa_depth_ros moa_depth_train bench test tools launch
	$(BIN)/vermin -q -t=3.10- --violations --no-tips --eval-annotations moa_depth_ros moa_depth_train bench test tools launch

bench: $(STAMP)
	$(BIN)/python -m bench

# Synthetic data -> short training -> demo bag -> the real node -> recording -> report (demo_out/).
demo: $(STAMP)
	$(BIN)/python tools/demo.py

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
