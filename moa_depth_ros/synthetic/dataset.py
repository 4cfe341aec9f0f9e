"""Synthetic scenes written as a dataset in the NYU sync layout: ``<scene>/rgb_%05d.jpg`` +
``sync_depth_%05d.png`` (uint16 millimetres) and BTS list files, rooms held out for testing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from moa_depth_ros.synthetic.scenes import (
    FRAMES_PER_ROOM,
    nyu_intrinsics,
    random_camera,
    random_scene,
    render_sequence,
    render_view,
)


def write_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Depth in metres → uint16 millimetre PNG (the NYU sync encoding; 0 = invalid)."""
    millimetres = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0)
    if not cv2.imwrite(str(path), np.clip(millimetres, 0, 65535).astype(np.uint16)):
        raise OSError(f"cannot write {path}")


def write_rgb_jpg(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"cannot write {path}")


def _room_views(
    camera_path: str,
    seed: int,
    scene_index: int,
    count: int,
    width: int,
    height: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rgb, depth) views of one room: a smooth camera sequence or independent random poses."""
    if camera_path == "sequence":
        for rgb, depth, _ in render_sequence(seed * 100_003 + scene_index, count, width, height):
            yield rgb, depth
        return
    scene = random_scene(np.random.default_rng([seed, scene_index]))
    for frame in range(count):
        camera = random_camera(scene, np.random.default_rng([seed, scene_index, frame]))
        rgb, depth, _ = render_view(scene, camera, width, height)
        yield rgb, depth


def write_synthetic_dataset(
    out_dir: str | Path,
    num_frames: int,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    num_scenes: int | None = None,
    test_fraction: float = 0.2,
    progress: bool = False,
    camera_path: str = "sequence",
) -> dict:
    """Write `<out>/<scene>/rgb_%05d.jpg` + `sync_depth_%05d.png` and BTS list files.

    Frames are spread over `num_scenes` rooms (default one per FRAMES_PER_ROOM frames: a
    model trained on few rooms learns those rooms, not depth), several views per
    room like NYU scenes: `camera_path="sequence"` takes them from a smoothly moving camera
    (NYU itself is video from a hand-held camera), `"random"` from independent random poses.
    `test_files.txt` holds whole held-out rooms (the last
    `test_fraction` of them) so train and test never share a room; with a single room the
    last frames are held out instead. Returns counts and the list-file paths.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be ≥ 1 px, got {width}x{height}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if num_scenes is not None and num_scenes < 1:
        raise ValueError(f"num_scenes must be ≥ 1, got {num_scenes}")
    if camera_path not in ("sequence", "random"):
        raise ValueError(f"camera_path must be 'sequence' or 'random', got {camera_path!r}")
    if num_scenes is None:
        num_scenes = max(1, num_frames // FRAMES_PER_ROOM)
    num_scenes = max(1, min(num_scenes, num_frames))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    focal = nyu_intrinsics(width, height)["fx"]
    per_scene = np.full(num_scenes, num_frames // num_scenes)
    per_scene[: num_frames % num_scenes] += 1
    num_test_scenes = round(num_scenes * test_fraction) if num_scenes > 1 else 0
    if num_scenes > 1 and test_fraction > 0:
        num_test_scenes = min(max(num_test_scenes, 1), num_scenes - 1)

    from moa_depth_ros.progress import progress_bar

    lines: dict[str, list[str]] = {"train": [], "test": []}
    with progress_bar(
        total=num_frames, desc="synthetic frames", unit="frame", disable=not progress
    ) as bar:
        for scene_index, count in enumerate(per_scene):
            name = f"synthetic_{scene_index:04d}"
            (out / name).mkdir(exist_ok=True)
            held_out = scene_index >= num_scenes - num_test_scenes
            for frame, (rgb, depth) in enumerate(
                _room_views(camera_path, seed, scene_index, int(count), width, height)
            ):
                rgb_name, depth_name = (
                    f"{name}/rgb_{frame:05d}.jpg",
                    f"{name}/sync_depth_{frame:05d}.png",
                )
                write_rgb_jpg(out / rgb_name, rgb)
                write_depth_png(out / depth_name, depth)
                if num_scenes == 1:
                    held_out = frame >= count - round(count * test_fraction)
                lines["test" if held_out else "train"].append(
                    f"/{rgb_name} /{depth_name} {focal:.4f}"
                )
                bar.update()
    files = {}
    for split, split_lines in lines.items():
        files[split] = out / f"{split}_files.txt"
        files[split].write_text("".join(line + "\n" for line in split_lines))
    return {
        "root": out,
        "scenes": num_scenes,
        "train": len(lines["train"]),
        "test": len(lines["test"]),
        "train_list": files["train"],
        "test_list": files["test"],
    }
