"""Procedural indoor RGB-D frames with exact depth, written in the NYU sync layout.

A room box (floor, four walls, ceiling) with procedural textures, a few axis-aligned boxes
and spheres, a dim room light and a lamp on the camera (like a robot's headlight; Lambert
shading, inverse-square falloff), and a pinhole camera with NYU-like intrinsics. The lamp makes
brightness fall with distance: a strong monocular cue, so that a tiny model trained from
scratch learns metric depth here in CPU minutes (NYU models learn from far weaker cues).
Depth is exact (vectorized numpy ray casting) and measured along the optical axis (Z), in
metres, like NYU ground truth. Everything is deterministic by seed.

World frame: right-handed, y up, the room spans [0, size] on each axis; yaw 0 looks along +z.
The camera uses the OpenCV convention (x right, y down, z forward).

The dataset writer is ``synthetic.dataset``, the command ``cli.synthetic``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from moa_depth_ros.geometry import NYU_FOCAL

MIN_CLEARANCE = 0.4  # metres kept between the camera and any surface it could sit in
EPS = 1e-6
PATTERNS = ("plain", "checker", "stripes", "noise")
NOISE_GRID = 32  # value-noise lattice size (wraps around)
FRAMES_PER_ROOM = 4  # default: many rooms with a few views each generalize best
LAMP_HALF_DISTANCE = 2.5  # metres; the lamp falls off as 1 / (1 + (r / this)²)
ROOM_LIGHT_HALF_DISTANCE = 5.0  # metres; the same falloff, gentler, for the ceiling light


@dataclass(frozen=True)
class Material:
    """Procedural texture: a pattern mixing two colours plus fine value noise."""

    pattern: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale: float  # metres per pattern period
    grain: float  # amplitude of the fine multiplicative noise
    noise_seed: int


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: Material


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    material: Material


@dataclass(frozen=True)
class Scene:
    """A room [0, size] with six surface materials (x-, x+, floor, ceiling, z-, z+)."""

    size: tuple[float, float, float]
    room_materials: tuple[Material, ...]
    boxes: tuple[Box, ...] = ()
    spheres: tuple[Sphere, ...] = ()
    light: tuple[float, float, float] = (0.0, 0.0, 0.0)
    light_power: float = 0.9
    lamp_power: float = 0.0  # light at the camera; falls to half at LAMP_HALF_DISTANCE
    ambient: float = 0.35


@dataclass(frozen=True)
class CameraPose:
    position: tuple[float, float, float]
    yaw: float  # about world up; 0 looks along +z
    pitch: float = 0.0  # positive looks down
    roll: float = 0.0


def nyu_intrinsics(width: int, height: int) -> dict[str, float]:
    """NYU-like pinhole intrinsics scaled to the image width, principal point centred."""
    focal = NYU_FOCAL * width / 640.0
    return {
        "fx": focal,
        "fy": focal,
        "cx": (width - 1) / 2.0,
        "cy": (height - 1) / 2.0,
        "width": width,
        "height": height,
    }


def camera_rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (OpenCV camera axes) for yaw / pitch-down / roll in radians."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    # Right-handed world with y up: looking along +z, camera x (right) is world −x and
    # camera y (down) is world −y.
    base = np.diag([-1.0, -1.0, 1.0])
    return ry @ rx @ rz @ base


# ---------------------------------------------------------------------------- ray casting


def _camera_rays(intrinsics: dict, rotation: np.ndarray) -> np.ndarray:
    """World-space ray directions (3×N) with unit camera-Z component, so hit t = depth."""
    width, height = int(intrinsics["width"]), int(intrinsics["height"])
    u = (np.arange(width) - intrinsics["cx"]) / intrinsics["fx"]
    v = (np.arange(height) - intrinsics["cy"]) / intrinsics["fy"]
    uu, vv = np.meshgrid(u, v)
    rays = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)])
    directions = rotation @ rays
    # Avoid 0 components: the slab tests divide by them.
    directions[np.abs(directions) < 1e-12] = 1e-12
    return directions


# Arrays below are structure-of-arrays (3×N): per-axis rows keep reductions over the three
# axes as cheap elementwise ops, which is what makes a frame take tens of milliseconds.


def _hit_room(origin: np.ndarray, inv_dirs: np.ndarray, size: np.ndarray):
    """Ray exit from the room box: t and face axis (0 x, 1 y, 2 z) per ray."""
    far_plane = np.where(inv_dirs > 0, size[:, None], 0.0)
    t_axes = (far_plane - origin[:, None]) * inv_dirs
    axis = np.argmin(t_axes, axis=0)
    return np.take_along_axis(t_axes, axis[None], axis=0)[0], axis


def _hit_box(origin: np.ndarray, inv_dirs: np.ndarray, box: Box, depth: np.ndarray):
    """Slab test from outside the box: (indices of rays hitting it before `depth`, t, axis)."""
    t1 = (np.asarray(box.lo)[:, None] - origin[:, None]) * inv_dirs
    t2 = (np.asarray(box.hi)[:, None] - origin[:, None]) * inv_dirs
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    rays = np.flatnonzero((t_near <= t_far) & (t_near > EPS) & (t_near < depth))
    return rays, t_near[rays], np.argmax(near[:, rays], axis=0)


def _hit_sphere(origin: np.ndarray, dirs: np.ndarray, sphere: Sphere, depth: np.ndarray):
    """Nearest ray–sphere hit from outside: (indices of rays hitting it before `depth`, t)."""
    offset = origin - np.asarray(sphere.center)
    a = np.einsum("ij,ij->j", dirs, dirs)
    b = offset @ dirs
    c = offset @ offset - sphere.radius**2
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    rays = np.flatnonzero((disc >= 0) & (t > EPS) & (t < depth))
    return rays, t[rays]


def _value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] on a wrapping random lattice, bilinearly interpolated."""
    grid = np.random.default_rng(seed).random((NOISE_GRID, NOISE_GRID))
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)  # smoothstep hides the lattice
    iu0, iv0 = u0.astype(np.int64) % NOISE_GRID, v0.astype(np.int64) % NOISE_GRID
    iu1, iv1 = (iu0 + 1) % NOISE_GRID, (iv0 + 1) % NOISE_GRID
    top = grid[iv0, iu0] * (1 - fu) + grid[iv0, iu1] * fu
    bottom = grid[iv1, iu0] * (1 - fu) + grid[iv1, iu1] * fu
    return top * (1 - fv) + bottom * fv


def _albedo(material: Material, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB reflectance (3×n) of a material at texture coordinates in metres."""
    su, sv = u / material.scale, v / material.scale
    if material.pattern == "checker":
        mix = (np.floor(su) + np.floor(sv)) % 2
    elif material.pattern == "stripes":
        mix = np.floor(su) % 2
    elif material.pattern == "noise":
        mix = _value_noise(su * 4.0, sv * 4.0, material.noise_seed)
    else:
        mix = np.zeros(len(u))
    a, b = np.asarray(material.color_a)[:, None], np.asarray(material.color_b)[:, None]
    grain = 1.0 + material.grain * (_value_noise(u * 40.0, v * 40.0, material.noise_seed + 1) - 0.5)
    return (a + (b - a) * mix) * grain


def render_view(
    scene: Scene, camera: CameraPose, width: int = 320, height: int = 240
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Ray-cast one view: (rgb uint8 H×W×3, depth float32 H×W metres along Z, intrinsics)."""
    intrinsics = nyu_intrinsics(width, height)
    origin = np.asarray(camera.position, dtype=np.float64)
    dirs = _camera_rays(intrinsics, camera_rotation(camera.yaw, camera.pitch, camera.roll))
    inv_dirs = 1.0 / dirs

    depth, face_axis = _hit_room(origin, inv_dirs, np.asarray(scene.size))
    # Room surfaces 0..5 = x-, x+, floor, ceiling, z-, z+; then one id per box and sphere.
    rays = np.arange(depth.size)
    material_id = 2 * face_axis + (dirs[face_axis, rays] > 0)
    materials = list(scene.room_materials)
    for box in scene.boxes:
        hit, t, axis = _hit_box(origin, inv_dirs, box, depth)
        depth[hit], face_axis[hit], material_id[hit] = t, axis, len(materials)
        materials.append(box.material)
    first_sphere = len(materials)
    for sphere in scene.spheres:
        hit, t = _hit_sphere(origin, dirs, sphere, depth)
        depth[hit], material_id[hit] = t, len(materials)
        materials.append(sphere.material)

    points = origin[:, None] + dirs * depth
    # Planar faces: the normal opposes the ray along the face axis (inward for the room,
    # outward for boxes); texture coordinates are the two in-plane world coordinates.
    normal = np.zeros_like(dirs)
    normal[face_axis, rays] = -np.sign(dirs[face_axis, rays])
    u = np.where(face_axis == 0, points[2], points[0])
    v = np.where(face_axis == 1, points[2], points[1])
    for index, sphere in enumerate(scene.spheres, start=first_sphere):
        on = np.flatnonzero(material_id == index)
        rel = (points[:, on] - np.asarray(sphere.center)[:, None]) / sphere.radius
        normal[:, on] = rel
        # Longitude/latitude scaled by the radius so patterns keep a similar density.
        u[on] = np.arctan2(rel[2], rel[0]) * sphere.radius
        v[on] = np.arcsin(np.clip(rel[1], -1, 1)) * sphere.radius

    albedo = np.empty_like(points)
    for index, material in enumerate(materials):
        on = np.flatnonzero(material_id == index)
        if on.size:
            albedo[:, on] = _albedo(material, u[on], v[on])

    shade = np.full(depth.size, scene.ambient)
    for light, power, half_distance in (
        (np.asarray(scene.light), scene.light_power, ROOM_LIGHT_HALF_DISTANCE),
        (origin, scene.lamp_power, LAMP_HALF_DISTANCE),
    ):
        to_light = light[:, None] - points
        distance = np.sqrt(np.einsum("ij,ij->j", to_light, to_light))
        lambert = np.maximum(np.einsum("ij,ij->j", normal, to_light) / distance, 0.0)
        # Inverse-square falloff, softened near the light so it never blows up.
        shade += power * lambert / (1.0 + (distance / half_distance) ** 2)
    rgb = np.clip(albedo * shade, 0.0, 1.0) * 255.0 + 0.5
    rgb = np.ascontiguousarray(rgb.astype(np.uint8).T.reshape(height, width, 3))
    return rgb, depth.reshape(height, width).astype(np.float32), intrinsics


# ------------------------------------------------------------------------- scene sampling


def _random_material(rng: np.random.Generator, pale: bool = False) -> Material:
    base = rng.uniform(0.55, 0.95, size=3) if pale else rng.uniform(0.3, 0.85, size=3)
    other = np.clip(base * rng.uniform(0.4, 1.3) + rng.uniform(-0.15, 0.15, size=3), 0.02, 1.0)
    return Material(
        pattern=str(rng.choice(PATTERNS)),
        color_a=tuple(float(c) for c in base),
        color_b=tuple(float(c) for c in other),
        scale=float(rng.uniform(0.15, 0.8)),
        grain=float(rng.uniform(0.05, 0.3)),
        noise_seed=int(rng.integers(0, 2**31)),
    )


def random_scene(rng: np.random.Generator) -> Scene:
    size = np.array([rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0), rng.uniform(4.0, 8.0)])
    ceiling = replace(_random_material(rng, pale=True), pattern="plain")
    walls = [_random_material(rng, pale=rng.random() < 0.6) for _ in range(4)]
    room_materials = (walls[0], walls[1], _random_material(rng), ceiling, walls[2], walls[3])
    boxes = []
    for _ in range(int(rng.integers(2, 7))):
        footprint = rng.uniform([0.3, 0.3], [1.5, 1.2])
        if rng.random() < 0.25:
            # Wall-mounted shelf or picture: thin box against a side wall, off the floor.
            x0 = 0.0 if rng.random() < 0.5 else size[0] - 0.08
            y0 = rng.uniform(0.9, size[1] - 0.7)
            z0 = rng.uniform(0.0, size[2] - footprint[1])
            lo, hi = (x0, y0, z0), (x0 + 0.08, y0 + rng.uniform(0.2, 0.6), z0 + footprint[1])
        else:
            against_wall = rng.random() < 0.5
            x0 = rng.uniform(0.0, size[0] - footprint[0])
            z0 = size[2] - footprint[1] if against_wall else rng.uniform(0, size[2] - footprint[1])
            lo = (x0, 0.0, z0)
            hi = (x0 + footprint[0], rng.uniform(0.4, 2.0), z0 + footprint[1])
        boxes.append(Box(tuple(map(float, lo)), tuple(map(float, hi)), _random_material(rng)))
    spheres = []
    for _ in range(int(rng.integers(0, 3))):
        radius = rng.uniform(0.15, 0.4)
        center = (
            rng.uniform(radius, size[0] - radius),
            radius,
            rng.uniform(radius, size[2] - radius),
        )
        spheres.append(Sphere(tuple(map(float, center)), float(radius), _random_material(rng)))
    light = (size[0] * rng.uniform(0.3, 0.7), size[1] - 0.4, size[2] * rng.uniform(0.3, 0.7))
    return Scene(
        size=tuple(float(s) for s in size),
        room_materials=room_materials,
        boxes=tuple(boxes),
        spheres=tuple(spheres),
        light=tuple(float(c) for c in light),
        light_power=float(rng.uniform(0.08, 0.16)),
        lamp_power=float(rng.uniform(1.0, 1.4)),
        ambient=float(rng.uniform(0.02, 0.06)),
    )


def _clearance(scene: Scene, point: np.ndarray) -> float:
    """Distance from a point to the nearest object (negative inside one)."""
    best = np.inf
    for box in scene.boxes:
        outside = np.maximum(np.asarray(box.lo) - point, point - np.asarray(box.hi))
        best = min(best, float(np.linalg.norm(np.maximum(outside, 0.0))) + min(outside.max(), 0))
    for sphere in scene.spheres:
        best = min(best, float(np.linalg.norm(point - np.asarray(sphere.center))) - sphere.radius)
    return best


def _forward_room_distance(scene: Scene, position: np.ndarray, yaw: float) -> float:
    forward = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    forward[np.abs(forward) < 1e-12] = 1e-12
    far = np.where(forward > 0, np.asarray(scene.size), 0.0)
    return float(((far - position) / forward).min())


def random_camera(scene: Scene, rng: np.random.Generator, tries: int = 200) -> CameraPose:
    """A pose away from objects, looking into the room (≥ 2 m to the wall ahead), like NYU.

    After `tries` draws the look-ahead condition is dropped (crowded room); never the
    clearance, so the camera is never inside or against an object.
    """
    size = np.asarray(scene.size)
    for attempt in range(2 * tries):
        position = np.array(
            [
                rng.uniform(MIN_CLEARANCE, size[0] - MIN_CLEARANCE),
                rng.uniform(1.0, min(1.8, size[1] - MIN_CLEARANCE)),
                rng.uniform(MIN_CLEARANCE, size[2] - MIN_CLEARANCE),
            ]
        )
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        pitch, roll = float(rng.uniform(-0.15, 0.3)), float(rng.normal(0.0, 0.03))
        if _clearance(scene, position) > MIN_CLEARANCE and (
            attempt >= tries or _forward_room_distance(scene, position, yaw) > 2.0
        ):
            return CameraPose(tuple(float(p) for p in position), yaw, pitch, roll)
    raise RuntimeError(f"no camera pose with {MIN_CLEARANCE} m clearance in room {scene.size}")


def render_frame(
    seed: int, width: int = 320, height: int = 240
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One random room seen from one random pose: (rgb uint8, depth float32 m, intrinsics)."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    return render_view(scene, random_camera(scene, rng), width, height)


def _sequence_cameras(scene: Scene, num_frames: int, rng: np.random.Generator) -> list[CameraPose]:
    """A smooth loop around the room centre, looking ahead with a slow pan and nod."""
    size = np.asarray(scene.size)
    radius = np.maximum(size[[0, 2]] / 2.0 - 1.0, 0.2) * rng.uniform(0.4, 0.8)
    phase, pan = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.6)
    cameras = []
    for i in range(num_frames):
        angle = phase + 2 * math.pi * i / max(num_frames, 1)
        position = (
            size[0] / 2 + radius[0] * math.cos(angle),
            1.4 + 0.05 * math.sin(3 * angle),
            size[2] / 2 + radius[1] * math.sin(angle),
        )
        # Tangent of the ellipse (direction of travel), turned towards the room centre by a
        # slowly varying pan so the view keeps some depth.
        heading = math.atan2(-radius[0] * math.sin(angle), radius[1] * math.cos(angle))
        cameras.append(
            CameraPose(
                position=tuple(float(p) for p in position),
                yaw=heading - pan * (1 + 0.5 * math.sin(2 * angle)),
                pitch=0.1 + 0.05 * math.sin(2 * angle),
                roll=0.02 * math.sin(angle),
            )
        )
    return cameras


def render_sequence(
    seed: int, num_frames: int, width: int = 320, height: int = 240
) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Frames from a smoothly moving camera in one room (objects on its path are removed)."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    cameras = _sequence_cameras(scene, num_frames, rng)
    path = [np.asarray(c.position) for c in cameras]

    def off_path(boxes: tuple[Box, ...], spheres: tuple[Sphere, ...]) -> bool:
        alone = replace(scene, boxes=boxes, spheres=spheres)
        return all(_clearance(alone, point) > MIN_CLEARANCE for point in path)

    scene = replace(
        scene,
        boxes=tuple(b for b in scene.boxes if off_path((b,), ())),
        spheres=tuple(s for s in scene.spheres if off_path((), (s,))),
    )
    for camera in cameras:
        yield render_view(scene, camera, width, height)
