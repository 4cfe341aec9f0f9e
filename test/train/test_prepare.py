"""moa-depth-prepare against a local HTTP server on 127.0.0.1 and tiny .mat fixtures."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from test_datasets import mat_fixture

from moa_depth_train.cli.prepare import main
from moa_depth_train.datasets import make_dataset
from moa_depth_train.nyu_mat import NyuLabeledMatDataset
from moa_depth_train.prepare import BTS_LISTS

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Server:
    """Serves ``files`` with Range support; the first full GET of a name listed in ``cut``
    is cut off half way (a dropped connection)."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset()):
        self.files, self.cut, self.requests = files, set(cut), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if name in outer.cut and start == 0:
                    outer.cut.discard(name)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    lists = {name: "".join(f"s/rgb_{i:05d}.jpg s/sync_depth_{i:05d}.png 518.8579\n"
                           for i in range(info.lines)).encode()
             for name, info in BTS_LISTS.items()}  # fmt: skip
    serving = _Server({"big.bin": PAYLOAD, **lists}, cut={"big.bin"})
    yield serving
    serving.close()


def test_download_resumes_after_a_dropped_connection_and_verifies(server, tmp_path, capsys):
    out = tmp_path / "big.bin"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    args = ["download", f"{server.url}/big.bin", "--out", str(out), "--sha256", digest]
    assert main([*args, "--no-progress"]) == 2  # cut off half way
    err = capsys.readouterr().err
    assert "bytes kept in" in err and len(err.strip().splitlines()) == 1
    part = out.with_name("big.bin.part")
    assert 0 < part.stat().st_size < len(PAYLOAD)
    assert main([*args, "--no-progress"]) == 0
    assert out.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("big.bin", f"bytes={len(PAYLOAD) // 2}-")  # resumed
    assert f"sha256 {digest}" in capsys.readouterr().out


def test_download_rejects_a_wrong_checksum_and_names_unreachable_hosts(server, tmp_path, capsys):
    out = tmp_path / "x.bin"
    wrong = ["download", f"{server.url}/big.bin", "--out", str(out), "--sha256", "0" * 64]
    main([*wrong, "--no-progress"])  # first try is cut off
    assert main([*wrong, "--no-progress"]) == 2
    assert "does not match the expected" in capsys.readouterr().err and not out.exists()
    assert not out.with_name("x.bin.part").exists()
    missing = ["download", f"{server.url}/nope.bin", "--out", str(out), "--no-progress"]
    assert main(missing) == 2 and "HTTP 404" in capsys.readouterr().err
    closed = ["download", "http://127.0.0.1:9/x", "--out", str(out), "--no-progress"]
    assert main(closed) == 2
    err = capsys.readouterr().err
    assert "cannot download http://127.0.0.1:9/x" in err and len(err.strip().splitlines()) == 1


def test_nyu_lists_are_fetched_and_their_line_counts_checked(server, tmp_path, capsys):
    assert main(["nyu-lists", "--out", str(tmp_path), "--base-url", server.url,
                 "--no-progress"]) == 0  # fmt: skip
    assert "24231 lines" in capsys.readouterr().out
    server.files["nyudepthv2_test_files_with_gt.txt"] = b"a b 1\n"
    (tmp_path / "nyudepthv2_test_files_with_gt.txt").unlink()
    assert main(["nyu-lists", "--out", str(tmp_path), "--base-url", server.url,
                 "--no-progress"]) == 2  # fmt: skip
    assert "1 lines, expected 654" in capsys.readouterr().err


def _add_scene_types(mat: Path, scenes: list[str]) -> None:
    """MATLAB stores sceneTypes as a 1×N cell: object references to uint16 char arrays."""
    with h5py.File(mat, "r+") as f:
        group = f.create_group("#refs#")
        refs = []
        for i, scene in enumerate(scenes):
            chars = group.create_dataset(
                f"s{i}", data=np.array([[ord(c)] for c in scene], np.uint16)
            )
            refs.append(chars.ref)
        f.create_dataset("sceneTypes", data=np.array([refs], dtype=h5py.ref_dtype))


def test_nyu_extract_writes_what_the_standard_script_writes(tmp_path, capsys):
    mat, images, depths = mat_fixture(tmp_path, 480, 640, count=4, test_ndxs=(2, 4))
    _add_scene_types(mat, ["kitchen", "bathroom", "kitchen", "office"])
    out = tmp_path / "official_splits"
    assert main(["nyu-extract", "--mat", str(mat), "--splits", str(tmp_path / "splits.mat"),
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert "wrote 2 train and 2 test frames" in capsys.readouterr().out
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.*"))
    assert written == [
        "test/bathroom/rgb_00001.jpg", "test/bathroom/sync_depth_00001.png",
        "test/office/rgb_00003.jpg", "test/office/sync_depth_00003.png",
        "train/kitchen/rgb_00000.jpg", "train/kitchen/rgb_00002.jpg",
        "train/kitchen/sync_depth_00000.png", "train/kitchen/sync_depth_00002.png",
    ]  # fmt: skip
    depth_mm = cv2.imread(str(out / "test/office/sync_depth_00003.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(
        depth_mm, (depths[3].astype(np.float32) * 1000.0).astype(np.uint16)
    )
    rgb = cv2.imread(str(out / "test/office/rgb_00003.jpg"))[..., ::-1]
    # The black border the script writes (JPEG rings a little next to the image).
    assert rgb[:6].mean() < 3 and rgb[:, 634:].mean() < 3
    # JPEG (chroma subsampling) blurs the fixture's stripes; a swapped channel or axis is ~60 off.
    assert np.abs(rgb[7:474, 7:632].astype(int) - images[3, 7:474, 7:632]).mean() < 8
    # The extracted tree and the .mat read directly give the same ground truth.
    from_tree = make_dataset(out, split="test")
    from_mat = NyuLabeledMatDataset(mat)
    for i in range(2):
        np.testing.assert_allclose(from_tree[i]["depth"], from_mat[i]["depth"], atol=1e-6)


def test_nyu_verify_reports_missing_files(tmp_path, capsys):
    root = tmp_path / "sync"
    (root / "s").mkdir(parents=True)
    for name in ("rgb_00000.jpg", "sync_depth_00000.png", "rgb_00001.jpg"):
        (root / "s" / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(
        "/s/rgb_00000.jpg /s/sync_depth_00000.png 518.8579\n"
        "/s/rgb_00001.jpg /s/sync_depth_00001.png 518.8579\n"
    )
    assert main(["nyu-verify", "--root", str(root), "--list", str(listing)]) == 1
    err = capsys.readouterr().err
    assert "1 of the 4 files listed" in err and "sync_depth_00001.png" in err
    (root / "s" / "sync_depth_00001.png").write_bytes(b"x")
    assert main(["nyu-verify", "--root", str(root), "--list", str(listing)]) == 0
    assert "all 2 pairs" in capsys.readouterr().out
