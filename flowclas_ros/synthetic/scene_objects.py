"""The synthetic scenes' objects: rocks (normal) and foreign objects (anomalies).

Every renderer returns a :class:`~flowclas_ros.synthetic.sprite.Sprite`; the drawing
kit, shading and conventions (``ratio``, ``light``) are in :mod:`.sprite`.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from flowclas_ros.data.outliers.shapes import random_polygon
from flowclas_ros.synthetic.sprite import (
    Raster,
    Sprite,
    fit_frame,
    flat_shade,
    ground_transform,
    jitter_color,
    lambert,
    sheen,
)

# ---------------------------------------------------------------------------
# Rocks (normal scene content)


def render_rock(
    rng: np.random.Generator,
    radius: float,
    color: np.ndarray,
    light: np.ndarray,
    ambient: float,
    detail: np.ndarray,
) -> Sprite:
    """A shaded rock: a lumpy ellipsoid with surface texture, partly buried.

    Args:
        rng: Random source.
        radius: Half width in pixels.
        color: Base albedo (3,).
        light: Unit vector towards the sun, camera coordinates.
        ambient: Ambient light fraction.
        detail: (H, W) float32 zero-mean texture to take a random crop from.
    """
    rx = max(radius, 0.6)
    ry = rx * rng.uniform(0.45, 0.95)
    bury = rng.uniform(0.15, 0.85)
    top = ry * 1.4 + 1.5  # lumps can push the outline past the nominal radius
    h = int(np.ceil(top + ry * bury)) + 2
    w = int(np.ceil(2.8 * rx)) + 3
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = xx - (w - 1) / 2, yy - top
    theta = np.arctan2(py / ry, px / rx)
    lumps = np.ones_like(theta)
    for k in range(2, 6):
        lumps += rng.normal(0, 0.16 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    nx, ny = px / (rx * lumps), py / (ry * lumps)
    q = np.sqrt(nx * nx + ny * ny)
    alpha = np.clip((1 - q) * min(rx, ry) + 0.5, 0, 1)
    contact = ry * bury + ry * 0.08 * np.sin(px / rx * rng.uniform(2, 5) + rng.uniform(0, 2 * np.pi))
    alpha *= np.clip(contact - py + 0.5, 0, 1)  # buried lower part: uneven contact line
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    # Camera-frame normal (x, y, -z): the visible side faces the camera.
    lam = np.clip(nx * light[0] + ny * light[1] - nz * light[2], 0, 1)
    shade = ambient + (1 - ambient) * lam
    oy = int(rng.integers(0, detail.shape[0] - h)) if detail.shape[0] > h else 0
    ox = int(rng.integers(0, detail.shape[1] - w)) if detail.shape[1] > w else 0
    tex = detail[oy : oy + h, ox : ox + w]
    if tex.shape != (h, w):
        tex = cv2.resize(detail, (w, h))
    rgb = color[None, None, :] * (shade * (1 + 0.22 * tex))[:, :, None]
    return Sprite(
        rgb=rgb.astype(np.float32),
        alpha=alpha.astype(np.float32),
        base_row=top + ry * bury,
        height_px=ry * 1.6,
        standing=True,
    )


# ---------------------------------------------------------------------------
# Foreign objects (ground-truth anomalies)

BOX_COLORS = (
    (0.92, 0.42, 0.06),
    (0.92, 0.78, 0.10),
    (0.12, 0.30, 0.80),
    (0.78, 0.12, 0.10),
    (0.88, 0.88, 0.85),
    (0.20, 0.58, 0.25),
    (0.45, 0.47, 0.36),
)
GRIP_COLORS = (
    (0.85, 0.12, 0.10),
    (0.95, 0.80, 0.10),
    (0.10, 0.30, 0.85),
    (0.08, 0.08, 0.08),
    (0.95, 0.45, 0.05),
)
CABLE_COLORS = (
    (0.95, 0.45, 0.05),
    (0.06, 0.06, 0.06),
    (0.80, 0.10, 0.10),
    (0.10, 0.25, 0.80),
    (0.92, 0.92, 0.90),
    (0.90, 0.80, 0.10),
)
FOIL_COLORS = ((0.85, 0.64, 0.22), (0.80, 0.80, 0.82), (0.74, 0.44, 0.26))
CANISTER_COLORS = (
    (0.90, 0.90, 0.88),
    (0.80, 0.12, 0.10),
    (0.15, 0.30, 0.75),
    (0.72, 0.74, 0.78),
    (0.92, 0.78, 0.12),
)


def render_box(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """A painted crate or case: a cuboid with shaded faces, dark edges and a label stripe."""
    wx, dz, hy = size, size * rng.uniform(0.5, 1.0), size * rng.uniform(0.35, 0.8)
    yaw = rng.uniform(0, np.pi / 2)
    height_scale = np.sqrt(max(1 - ratio * ratio, 0.05))
    corners = np.array([[x, y, z] for x in (-wx / 2, wx / 2) for y in (0.0, hy) for z in (-dz / 2, dz / 2)])
    c, s = np.cos(yaw), np.sin(yaw)
    rx = corners[:, 0] * c - corners[:, 2] * s
    rz = corners[:, 0] * s + corners[:, 2] * c
    proj = np.stack([rx, -corners[:, 1] * height_scale - rz * ratio], axis=1).astype(np.float32)
    (proj,), h, w = fit_frame([proj])
    color = jitter_color(rng, BOX_COLORS[rng.integers(len(BOX_COLORS))])
    raster = Raster(h, w)
    # Faces as corner indices (index = 4*ix + 2*iy + iz) with their outward normal before yaw.
    faces = {
        "front": ([0, 4, 6, 2], (0, 0, -1)),
        "back": ([1, 5, 7, 3], (0, 0, 1)),
        "left": ([0, 1, 3, 2], (-1, 0, 0)),
        "right": ([4, 5, 7, 6], (1, 0, 0)),
    }
    visible = []
    for idx, (nx, _, nz) in faces.values():
        wnx, wnz = nx * c - nz * s, nx * s + nz * c
        if wnz < 0:  # faces the camera
            shade = lambert(np.array([wnx, 0.0, wnz]), light, ambient)
            raster.poly(proj[idx], color * shade)
            visible.append((idx, shade))
    top = [2, 3, 7, 6]
    raster.poly(proj[top], color * lambert(np.array([0.0, -1.0, 0.0]), light, ambient))
    if visible and rng.random() < 0.7:
        idx, shade = max(visible, key=lambda v: v[1])
        a, b, cc, d = (proj[i] for i in idx)  # bottom-left, bottom-right, top-right, top-left order
        t0, t1 = rng.uniform(0.3, 0.5), rng.uniform(0.55, 0.75)
        band = np.array([a + (d - a) * t0, b + (cc - b) * t0, b + (cc - b) * t1, a + (d - a) * t1])
        stripe = (0.1, 0.1, 0.1) if color.mean() > 0.5 else (0.9, 0.9, 0.88)
        raster.poly(band, np.asarray(stripe) * shade)
    edge = color * 0.35
    for idx, _ in visible:
        raster.line(np.vstack([proj[idx], proj[idx][:1]]), edge, 0.6)
    raster.line(np.vstack([proj[top], proj[top][:1]]), edge, 0.6)
    return raster.finish(base_row=float(proj[:, 1].max()), height_px=hy * height_scale, standing=True)


def render_tool(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """A hand tool lying on the ground: wrench, hammer or screwdriver."""
    length = size
    metal = jitter_color(rng, (0.68, 0.70, 0.74), 0.08)
    grip = jitter_color(rng, GRIP_COLORS[rng.integers(len(GRIP_COLORS))])
    kind = rng.choice(["wrench", "hammer", "screwdriver"])
    angle = rng.uniform(0, 2 * np.pi)
    parts: list[tuple[np.ndarray, np.ndarray]] = []

    def rect(x0, x1, y0, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32) * length

    def circle(cx, cy, r):
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).astype(np.float32) * length

    if kind == "wrench":
        parts += [(rect(-0.42, 0.42, -0.045, 0.045), metal), (circle(-0.42, 0, 0.11), metal)]
        parts += [(circle(0.42, 0, 0.12), metal), (rect(0.40, 0.56, -0.05, 0.05), np.zeros(3))]  # jaw gap
        if rng.random() < 0.5:
            parts.insert(1, (rect(-0.30, 0.10, -0.055, 0.055), grip))
    elif kind == "hammer":
        parts += [(rect(-0.5, 0.32, -0.04, 0.04), grip), (rect(-0.5, -0.15, -0.05, 0.05), grip * 0.8)]
        parts += [(rect(0.26, 0.42, -0.17, 0.17), metal)]
    else:
        parts += [(rect(-0.5, -0.12, -0.07, 0.07), grip), (rect(-0.12, 0.5, -0.018, 0.018), metal)]
    shade = flat_shade(light, ambient)
    pts = [ground_transform(p, angle, ratio) for p, _ in parts]
    pts, h, w = fit_frame(pts)
    raster = Raster(h, w)
    for p, (_, col) in zip(pts, parts):
        if not col.any():
            raster.poly(p, (0, 0, 0), alpha=0.0)  # cut-out (wrench jaw)
        else:
            raster.poly(p, col * shade)
    sheen(raster, rng, rng.uniform(0.25, 0.6))
    return raster.finish(base_row=float(np.concatenate(pts)[:, 1].max()), height_px=0.06 * length)


def render_cable(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """A loose cable: a smooth random curve with insulation colour, highlight and a connector."""
    n = 36
    step = size / n
    turn = rng.uniform(-0.25, 0.25) if rng.random() < 0.35 else 0.0
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turn + rng.normal(0, 0.18, n))
    xy = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * step, axis=0)
    xy -= xy.mean(axis=0)
    line = ground_transform(xy, 0.0, ratio)
    thickness = max(2.0, size * rng.uniform(0.025, 0.045))
    end_dir = line[-1] - line[-4]
    end_dir /= np.linalg.norm(end_dir) + 1e-6
    plug = np.stack([line[-1], line[-1] + end_dir * thickness * 2.2])
    (line, plug), h, w = fit_frame([line, plug], pad=thickness + 2)
    color = jitter_color(rng, CABLE_COLORS[rng.integers(len(CABLE_COLORS))])
    shade = flat_shade(light, ambient)
    raster = Raster(h, w)
    raster.line(line, color * shade, thickness)
    raster.line(
        line + np.array([0, -thickness * 0.22], np.float32),
        np.clip(color * shade + 0.25, 0, 1),
        thickness * 0.3,
    )
    raster.line(plug, np.array([0.6, 0.6, 0.62]) * shade, thickness * 1.5)
    return raster.finish(base_row=float(line[:, 1].max() + thickness / 2), height_px=thickness)


def render_foil(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """Crumpled insulation foil (MLI) debris: faceted, strongly specular gold/silver/copper."""
    outline = random_polygon(rng, (7, 14), irregularity=0.8)
    outline = outline * np.array([size / 2, size / 2 * rng.uniform(0.5, 1.0)], np.float32)
    (pts,), h, w = fit_frame([ground_transform(outline, rng.uniform(0, 2 * np.pi), ratio)])
    raster = Raster(h, w)
    raster.poly(pts, (1.0, 1.0, 1.0))
    gx, gy = raster.grid()
    n_seeds = int(rng.integers(10, 28))
    seeds = np.stack([rng.uniform(0, w, n_seeds), rng.uniform(0, h, n_seeds)], axis=1).astype(np.float32)
    d2 = (gx[:, :, None] - seeds[:, 0]) ** 2 + ((gy[:, :, None] - seeds[:, 1]) / max(ratio, 0.3)) ** 2
    facet = np.argmin(d2, axis=2)
    gain = np.exp(rng.normal(0.0, 0.45, n_seeds)) * flat_shade(light, ambient)
    gain[rng.random(n_seeds) < 0.18] = 1.7  # specular glints
    crease = np.ones_like(gx)
    crease[:, 1:][facet[:, 1:] != facet[:, :-1]] = 0.55
    crease[1:, :][facet[1:, :] != facet[:-1, :]] = 0.55
    base = jitter_color(rng, FOIL_COLORS[rng.integers(len(FOIL_COLORS))])
    raster.rgb = (base[None, None, :] * (gain[facet] * crease)[:, :, None]).astype(np.float32)
    return raster.finish(base_row=float(pts[:, 1].max()), height_px=0.08 * size)


def render_canister(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """A bottle or canister lying on its side: a shaded capsule with a cap band."""
    radius = size * rng.uniform(0.12, 0.2)
    angle = rng.uniform(0, np.pi)
    axis = np.array([np.cos(angle), -np.sin(angle) * ratio], np.float32)
    half = axis * size / 2
    (ends,), h, w = fit_frame([np.stack([-half, half])], pad=radius + 2)
    raster = Raster(h, w)
    gx, gy = raster.grid()
    p0, p1 = ends
    seg = p1 - p0
    t = np.clip(((gx - p0[0]) * seg[0] + (gy - p0[1]) * seg[1]) / max(float(seg @ seg), 1e-6), 0, 1)
    dx, dy = gx - (p0[0] + t * seg[0]), gy - (p0[1] + t * seg[1])
    dist = np.sqrt(dx * dx + dy * dy)
    unit = seg / (np.linalg.norm(seg) + 1e-6)
    across = np.clip((dx * -unit[1] + dy * unit[0]) / radius, -1, 1)
    # Surface normal of the cylinder in camera coordinates, (x, y) across the axis, z towards camera.
    nx, ny = -unit[1] * across, unit[0] * across
    nz = np.sqrt(np.clip(1 - across * across, 0, 1))
    lam = np.clip(nx * light[0] + ny * light[1] - nz * light[2], 0, 1)
    spec = np.clip(nz * 0.5 + lam * 0.5, 0, 1) ** 24
    body = jitter_color(rng, CANISTER_COLORS[rng.integers(len(CANISTER_COLORS))])
    cap = jitter_color(rng, (0.15, 0.15, 0.16) if rng.random() < 0.5 else (0.7, 0.7, 0.72))
    color = np.where((t < rng.uniform(0.1, 0.2))[:, :, None], cap, body)
    raster.rgb = (color * (ambient + (1 - ambient) * lam)[:, :, None] + 0.6 * spec[:, :, None]).astype(
        np.float32
    )
    raster.alpha = (dist <= radius).astype(np.float32)
    return raster.finish(base_row=float(ends[:, 1].max() + radius), height_px=2 * radius)


def render_panel(
    rng: np.random.Generator, size: float, ratio: float, light: np.ndarray, ambient: float
) -> Sprite:
    """A broken solar-panel fragment: dark blue cells, silver grid, one jagged corner."""
    a, b = size / 2, size / 2 * rng.uniform(0.5, 0.8)
    jag = rng.uniform(0.3, 0.7, 2)
    outline = np.array(
        [
            [-a, -b],
            [a, -b],
            [a, b * (1 - 2 * jag[0])],
            [a * (1 - 2 * jag[1]), b * 0.3],
            [a * (1 - 2 * jag[1]) - a * 0.2, b],
            [-a, b],
        ],
        np.float32,
    )
    angle = rng.uniform(0, 2 * np.pi)
    n_cells = int(rng.integers(3, 7))
    lines = []
    for v in np.linspace(-1, 1, n_cells + 1):
        lines.append(np.array([[v * a, -b], [v * a, b]], np.float32))
        lines.append(np.array([[-a, v * b], [a, v * b]], np.float32))
    shapes = [ground_transform(p, angle, ratio) for p in [outline, *lines]]
    shapes, h, w = fit_frame(shapes)
    shade = flat_shade(light, ambient)
    cell = jitter_color(rng, (0.08, 0.12, 0.34), 0.15)
    raster = Raster(h, w)
    raster.poly(shapes[0], cell * shade)
    inside = raster.alpha.copy()
    for ln in shapes[1:]:
        raster.line(ln, np.array([0.72, 0.72, 0.76]) * shade, max(0.6, size * 0.015))
    raster.line(
        np.vstack([shapes[0], shapes[0][:1]]), np.array([0.75, 0.75, 0.78]) * shade, max(0.8, size * 0.025)
    )
    raster.alpha = np.maximum(raster.alpha * inside, inside)
    sheen(raster, rng, rng.uniform(0.1, 0.35))
    return raster.finish(base_row=float(shapes[0][:, 1].max()), height_px=0.03 * size)


ANOMALY_RENDERERS: dict[str, Callable[..., Sprite]] = {
    "box": render_box,
    "tool": render_tool,
    "cable": render_cable,
    "foil": render_foil,
    "canister": render_canister,
    "panel": render_panel,
}
"""Foreign-object kinds used as ground-truth anomalies, name -> renderer(rng, size, ratio, light, ambient)."""
