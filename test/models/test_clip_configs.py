"""The product registers its own open_clip configs; the tests' tiny ones only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (
    "import open_clip, moa_depth_ros.models.clip_backbone\n"
    "print(sorted(m for m in open_clip.list_models() if m.startswith(('ViT-T', 'RN-T'))))\n"
)


def _registered(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_test_configs_are_registered_only_through_the_environment_variable() -> None:
    base = {k: v for k, v in os.environ.items() if k != "MOA_DEPTH_OPEN_CLIP_CONFIGS"}
    base["PYTHONPATH"] = str(REPO)
    assert _registered(base) == "['ViT-T-16-demo']"
    folder = str(Path(__file__).resolve().parents[1] / "open_clip_configs")
    with_tests = _registered({**base, "MOA_DEPTH_OPEN_CLIP_CONFIGS": folder})
    assert with_tests == "['RN-T-test', 'ViT-T-16-demo', 'ViT-T-16-test', 'ViT-T-32-test']"
