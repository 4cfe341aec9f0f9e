"""An hf_depth hub id is downloaded once, when online, and then read from the cache offline.

The hub is a local HTTP server on 127.0.0.1 (``HF_ENDPOINT``) serving a tiny model directory the
way huggingface.co serves a repository (``/<repo>/resolve/<revision>/<file>`` with ETag and
X-Repo-Commit headers, 404 + X-Error-Code for a missing file); nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from model_helpers.hf_models import build_family

from moa_depth_ros.models.checkpoint import read_metadata

REPO = Path(__file__).resolve().parents[2]
HUB_ID = "test-org/tiny-depth-anything"


class _Hub:
    """Serves one repository from ``directory``; records the paths asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: bool) -> None:
                hub.requests.append(self.path)
                prefix = f"/{HUB_ID}/resolve/"
                path = self.path.split("?")[0]
                name = path[len(prefix) :].split("/", 1)[-1] if path.startswith(prefix) else ""
                file = directory / name
                if not name or not file.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if name else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self._reply(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._reply(body=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[_Hub]:
    model, processor = build_family("depth_anything_metric")
    directory = tmp_path / "repository"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    served = _Hub(directory)
    yield served
    served.close()


def _checkpoint(out: Path, hf_home: Path, endpoint: str, offline: bool, hub_id: str = HUB_ID):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home),
           "HF_HUB_OFFLINE": "1" if offline else "0", "PYTHONPATH": str(REPO)}  # fmt: skip
    command = [sys.executable, "-m", "moa_depth_ros.cli.checkpoint", "--type", "hf_depth",
               "--set", f"pretrained={hub_id}", "--out", str(out)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_hub_id_is_downloaded_once_then_read_offline(hub: _Hub, tmp_path: Path) -> None:
    hf_home = tmp_path / "hf_home"
    online = _checkpoint(tmp_path / "online.safetensors", hf_home, hub.endpoint, offline=False)
    assert online.returncode == 0, online.stderr
    assert f"/{HUB_ID}/resolve/main/model.safetensors" in hub.requests
    hub.close()  # the hub is gone: what follows must come from the cache
    offline = _checkpoint(tmp_path / "offline.safetensors", hf_home, hub.endpoint, offline=True)
    assert offline.returncode == 0, offline.stderr
    first = read_metadata(tmp_path / "online.safetensors")
    again = read_metadata(tmp_path / "offline.safetensors")
    assert first["tensor_sha256"] == again["tensor_sha256"]  # the same weights
    assert first["model_config"]["hf_config"] == again["model_config"]["hf_config"]
    # An id that was never downloaded, offline: one line, and nothing written.
    missing = _checkpoint(tmp_path / "missing.safetensors", hf_home, hub.endpoint, offline=True,
                          hub_id="test-org/never-downloaded")  # fmt: skip
    assert missing.returncode == 2
    err = missing.stderr.strip().splitlines()
    assert err == [
        "moa-depth-checkpoint: error: test-org/never-downloaded: not a local directory, and the "
        "Hugging Face hub id cannot be downloaded offline (HF_HUB_OFFLINE=1 or no network); pass "
        "a local model directory"
    ]
    assert not (tmp_path / "missing.safetensors").exists()
