"""Rendering of one synthetic robot-camera frame: terrain, sky, rocks, foreign objects, camera effects.

See :mod:`flowclas_ros.synthetic.synthetic_scenes` for what the frames show and how
datasets are written.
"""

from __future__ import annotations

import cv2
import numpy as np

from flowclas_ros.data.outliers.perlin import fractal_noise, perlin_mask
from flowclas_ros.synthetic.scene_config import PALETTES, Scene, SceneConfig
from flowclas_ros.synthetic.scene_objects import ANOMALY_RENDERERS, render_rock
from flowclas_ros.synthetic.scene_textures import TEX_SIZE, TextureBank, wrap_coords
from flowclas_ros.synthetic.sprite import Sprite, jitter_color


class _Frame:
    """Working state for one frame: camera geometry, canvas, object ownership."""

    def __init__(self, rng: np.random.Generator, cfg: SceneConfig, bank: TextureBank) -> None:
        self.rng, self.cfg, self.bank = rng, cfg, bank
        self.h, self.w = h, w = cfg.size
        self.palette = PALETTES[rng.integers(len(PALETTES))]
        self.focal = w * rng.uniform(0.85, 1.25)
        self.horizon = h * rng.uniform(0.12, 0.45) if rng.random() < 0.8 else -h * rng.uniform(0.05, 0.8)
        roll = np.deg2rad(rng.uniform(-6, 6))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        self.xr = (xx - cx) * np.cos(roll) + (yy - cy) * np.sin(roll)
        self.dy = -(xx - cx) * np.sin(roll) + (yy - cy) * np.cos(roll) + cy - self.horizon
        self.xx, self.yy = xx, yy
        dyc = np.maximum(self.dy, 0.35)
        self.depth = self.focal / dyc  # ground distance in camera heights
        self.gx = self.xr / dyc  # lateral ground coordinate
        elev = np.deg2rad(rng.uniform(12, 70))
        azim = rng.uniform(-np.pi, np.pi)
        self.elevation = elev
        self.sun_ground = np.array([np.sin(azim), -np.cos(azim)]) * np.cos(elev)  # towards sun in (gx, depth)
        self.light = np.array([np.sin(azim) * np.cos(elev), -np.sin(elev), -np.cos(azim) * np.cos(elev)])
        self.ambient = self.palette.ambient * rng.uniform(0.8, 1.2)
        self.ground_col = jitter_color(rng, self.palette.ground, 0.05)
        self.ground_alt = jitter_color(rng, self.palette.ground_alt, 0.05)
        self.haze_col = np.asarray(self.palette.sky_horizon, np.float32) * rng.uniform(0.9, 1.05)
        self.haze = self.palette.haze * rng.uniform(0.6, 1.3)
        self.owner = np.zeros((h, w), np.int16)  # 0 = scene, k = foreign object k
        self.canvas = np.zeros((h, w, 3), np.float32)

    # -- terrain -------------------------------------------------------------

    def _sample_detail(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        level = np.clip(np.log2(np.maximum(footprint, 1e-3)), 0, len(self.bank.levels) - 1)
        mu, mv = wrap_coords(u, TEX_SIZE), wrap_coords(v, TEX_SIZE)
        out = np.zeros((*u.shape, 4), np.float32)
        for i, tex in enumerate(self.bank.levels):
            weight = np.clip(1 - np.abs(level - i), 0, 1)
            if weight.max() > 0:
                out += weight[:, :, None] * cv2.remap(
                    tex, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
                )
        return out

    def ground(self) -> None:
        rng, h = self.rng, self.h
        bottom = max(h - self.horizon, 1.0)
        tex_per_unit = rng.uniform(0.6, 1.6) * bottom / h * 224  # texture px per ground unit
        phi = rng.uniform(0, 2 * np.pi)
        gu = self.gx * np.cos(phi) - self.depth * np.sin(phi)
        gv = self.gx * np.sin(phi) + self.depth * np.cos(phi)
        dyc = np.maximum(self.dy, 0.35)
        footprint = tex_per_unit / dyc * np.sqrt(self.focal / dyc)
        off = rng.uniform(0, 4 * TEX_SIZE, 2)
        detail = self._sample_detail(gu * tex_per_unit + off[0], gv * tex_per_unit + off[1], footprint)
        weights = rng.dirichlet(np.full(4, 0.8)).astype(np.float32)
        norm = float(np.sqrt(weights @ self.bank.covariance @ weights))
        lum = 1.0 + rng.uniform(0.12, 0.3) * (detail @ weights) / norm
        low_scale = rng.uniform(6, 20)
        low = cv2.remap(
            self.bank.low,
            wrap_coords(gu * low_scale + off[0], 256),
            wrap_coords(gv * low_scale + off[1], 256),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_WRAP,
        )
        patch = np.clip(0.5 + rng.uniform(0.3, 0.9) * low[:, :, 0], 0, 1)
        albedo = self.ground_col + patch[:, :, None] * (self.ground_alt - self.ground_col)
        lum *= 1.0 + 0.1 * low[:, :, 1]
        lum *= self._craters()
        lum *= self._tracks()
        sun = self.ambient + (1 - self.ambient) * np.sin(self.elevation)
        rgb = albedo * np.clip(lum, 0.2, 2.0)[:, :, None] * sun
        self.canvas[:] = self._haze(rgb, self.dy)

    def _craters(self) -> np.ndarray:
        rng, h, w = self.rng, self.h, self.w
        shade = np.ones((h, w), np.float32)
        n = int(rng.integers(0, 7 if self.palette.name == "lunar" else 4))
        top = max(int(self.horizon) + 2, 0)
        for _ in range(n):
            y, x = int(rng.integers(min(top + 4, h - 1), h)), int(rng.integers(0, w))
            if self.dy[y, x] <= 2:
                continue
            gxc, dc = self.gx[y, x], self.depth[y, x]
            radius = w * np.exp(rng.uniform(np.log(0.03), np.log(0.2))) / self.dy[y, x]
            rho = np.sqrt((self.gx - gxc) ** 2 + (self.depth - dc) ** 2) / radius
            near = rho < 1.8
            if not near.any():
                continue
            r = rho[near]
            bowl, rim, rim_w = rng.uniform(0.15, 0.35), rng.uniform(0.04, 0.12), 0.22
            rim_term = rim * np.exp(-(((r - 1) / rim_w) ** 2))
            dh = np.where(r < 1, 2 * bowl * r, 0.0) - rim_term * 2 * (r - 1) / rim_w**2
            rs = np.maximum(r, 1e-3) * radius
            grad_x = dh * (self.gx[near] - gxc) / rs
            grad_z = dh * (self.depth[near] - dc) / rs
            # Lambert of the slope relative to flat ground, light from sun_ground / elevation.
            num = -grad_x * self.sun_ground[0] - grad_z * self.sun_ground[1] + np.sin(self.elevation)
            rel = num / np.sqrt(1 + grad_x**2 + grad_z**2) / np.sin(self.elevation)
            floor = np.where(r < 1, 1 - 0.08 * (1 - r), 1.0)
            shade[near] *= np.clip(rel, 0.25, 1.8) * floor
        return shade

    def _tracks(self) -> np.ndarray:
        rng = self.rng
        if rng.random() > 0.35:
            return np.ones((self.h, self.w), np.float32)
        heading = np.deg2rad(rng.uniform(-35, 35))
        along = self.gx * np.sin(heading) + self.depth * np.cos(heading)
        lat = self.gx * np.cos(heading) - self.depth * np.sin(heading)
        centre = rng.uniform(-1.2, 1.2) + rng.normal(0, 0.01) * along**2
        gauge, width = rng.uniform(0.5, 0.8), rng.uniform(0.08, 0.15)
        px_size = 1.0 / np.maximum(self.dy, 0.35)  # ground units per pixel
        period = rng.uniform(0.08, 0.18)
        tread_px = period * np.maximum(self.dy, 0.35) ** 2 / self.focal  # tread period in image rows
        tread_amp = rng.uniform(0.05, 0.15) * np.clip((tread_px - 2) / 3, 0, 1)
        tread = 0.5 + 0.5 * np.cos(2 * np.pi * along / period)
        darken = rng.uniform(0.05, 0.15)
        shade = np.ones((self.h, self.w), np.float32)
        for side in (-0.5, 0.5):
            dist = np.abs(lat - (centre + side * gauge))
            inside = np.clip((width / 2 - dist) / px_size + 0.5, 0, 1) * (self.dy > 0)
            shade *= 1 - inside * (darken + tread_amp * tread)
        return shade

    def _haze(self, rgb: np.ndarray, dy) -> np.ndarray:
        amount = self.haze * np.exp(-np.maximum(dy, 0) / (0.12 * self.h))
        amount = np.asarray(amount, np.float32)
        if amount.ndim == 2:
            amount = amount[:, :, None]
        return rgb * (1 - amount) + self.haze_col * amount

    def sky(self) -> None:
        rng, h, w = self.rng, self.h, self.w
        if self.horizon <= 0:
            return
        t = np.clip(-self.dy / (0.8 * h), 0, 1)[:, :, None] ** 0.7
        sky_rgb = np.asarray(self.palette.sky_horizon) + t * (
            np.asarray(self.palette.sky_zenith) - np.asarray(self.palette.sky_horizon)
        )
        xs = np.linspace(0, 1, 257)
        ridge_noise = fractal_noise((1, 257), (1, rng.uniform(1.5, 5)), rng, octaves=3, persistence=0.4)[0]
        ridge = np.clip(ridge_noise + rng.uniform(0.0, 1.0), 0, None) * h * rng.uniform(0.0, 0.04)
        ridge_px = np.interp((self.xr + w / 2) / w, xs, ridge).astype(np.float32)
        hills = (self.dy <= 0) & (self.dy > -ridge_px)
        hill_rgb = self._haze(self.ground_col * rng.uniform(0.6, 1.0) * np.ones((h, w, 3), np.float32), 0.0)
        hill_rgb = hill_rgb * (1 - 0.3 * self.haze) + 0.3 * self.haze * self.haze_col
        sky_mask = self.dy <= 0
        self.canvas[sky_mask] = sky_rgb[sky_mask]
        self.canvas[hills] = hill_rgb[hills]

    # -- objects -------------------------------------------------------------

    def ratio(self, row: float) -> float:
        return float(np.clip((row - self.horizon) / self.focal, 0.1, 1.0))

    def place(self, sprite: Sprite, x_left: float, base_y: float, owner_id: int) -> int:
        """Casts the sprite's shadow, composites it with its base at ``base_y``; returns visible pixels."""
        top = int(round(base_y - sprite.base_row))
        left = int(round(x_left))
        self._shadow(sprite, left, top, base_y)
        sh, sw = sprite.alpha.shape
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + sh, self.h), min(left + sw, self.w)
        if y0 >= y1 or x0 >= x1:
            return 0
        a = sprite.alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        rgb = sprite.rgb[y0 - top : y1 - top, x0 - left : x1 - left]
        rgb = self._haze(rgb, base_y - self.horizon)  # sprites carry their own shading
        region = self.canvas[y0:y1, x0:x1]
        region[:] = region * (1 - a) + rgb * a
        self.owner[y0:y1, x0:x1][a[:, :, 0] >= 0.5] = owner_id
        return int((a[:, :, 0] >= 0.5).sum())

    def _shadow(self, sprite: Sprite, left: int, top: int, base_y: float) -> None:
        tan_e = np.tan(self.elevation)
        length = sprite.height_px / max(tan_e, 0.15)  # in "pixels at this row"
        away = -self.sun_ground / max(np.linalg.norm(self.sun_ground), 1e-6)  # (gx, depth) direction
        ratio = self.ratio(base_y)
        disp_x, disp_y = away[0] * length, -away[1] * length * ratio  # depth away = up in the image
        by = sprite.base_row
        if sprite.standing:
            # Object point at height t = by - y lands at its base point + (t / height) * displacement.
            height = max(sprite.height_px, 1.0)
            kx, ky = disp_x / height, disp_y / height
            min_ky = 0.1 * ratio  # keep the shear invertible when the sun is exactly sideways
            if abs(ky) < min_ky:
                ky = min_ky if ky >= 0 else -min_ky
            m = np.array([[1.0, -kx, left + kx * by], [0.0, -ky, top + by + ky * by]])
            rows = int(np.ceil(by))
        else:  # lying flat: the silhouette shifted away from the sun
            m = np.array([[1.0, 0.0, left + disp_x], [0.0, 1.0, top + disp_y]])
            rows = sprite.alpha.shape[0]
        strength = (1 - self.ambient) * self.rng.uniform(0.55, 0.8)
        corners = np.array(
            [[0, 0, 1], [sprite.alpha.shape[1], 0, 1], [0, rows, 1], [sprite.alpha.shape[1], rows, 1]]
        )
        pts = corners @ m.T
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        if x0 >= x1 or y0 >= y1:
            return
        m_local = m.copy()
        m_local[:, 2] -= (x0, y0)
        shadow = cv2.warpAffine(
            sprite.alpha[:rows], m_local.astype(np.float32), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR
        )
        self.canvas[y0:y1, x0:x1] *= (1 - strength * shadow)[:, :, None]

    def rocks(self) -> list[tuple[float, Sprite, float]]:
        rng, h, w = self.rng, self.h, self.w
        count = int(
            rng.choice(
                [rng.integers(3, 15), rng.integers(15, 45), rng.integers(45, 100)], p=[0.3, 0.45, 0.25]
            )
        )
        top = max(self.horizon + 1, 0)
        out = []
        grey = rng.uniform(0.0, 0.4)
        for _ in range(count):
            y = rng.uniform(top, h * 1.08)
            dy = y - self.horizon
            if dy <= 1:
                continue
            size = min(0.025 * (1 - rng.random()) ** (-1 / 1.6), 0.9)  # ground units, power law
            radius = min(size * dy / 2, 0.3 * w)
            if radius < 0.7:
                continue
            col = self.ground_col * rng.uniform(0.55, 1.15) * rng.uniform(0.93, 1.07, 3)
            col = np.clip(col * (1 - grey) + grey * col.mean(), 0, 1)
            sprite = render_rock(rng, radius, col, self.light, self.ambient, self.bank.rock_detail)
            x = rng.uniform(-0.1 * w, 1.1 * w) - sprite.alpha.shape[1] / 2
            out.append((y, sprite, x))
        return out

    def anomalies(self, count: int) -> list[tuple[float, Sprite, float, str]]:
        rng, h, w, cfg = self.rng, self.h, self.w, self.cfg
        out = []
        ground_top = max(self.horizon, 0.0)
        lo, hi = np.log(cfg.anomaly_area[0]), np.log(cfg.anomaly_area[1])
        for _ in range(count):
            kind = str(rng.choice(cfg.anomaly_kinds))
            target = float(np.exp(rng.uniform(lo, hi))) * h * w
            span = h - ground_top
            # Larger objects sit nearer the camera (lower rows), as perspective demands.
            near = np.clip(np.sqrt(target / (0.08 * h * w)), 0.0, 1.0)
            base_y = ground_top + span * rng.uniform(0.2 + 0.5 * near, 1.0)
            ratio = self.ratio(base_y)
            sprite = self._weathered(self._sized(kind, target, ratio))
            sh, sw = sprite.alpha.shape
            base_y = float(
                np.clip(base_y, ground_top + sprite.base_row * 0.7, h - (sh - sprite.base_row) - 1)
            )
            base_y = float(np.clip(base_y, sprite.base_row, h - 1))
            x = rng.uniform(0, max(w - sw, 1))
            out.append((base_y, sprite, x, kind))
        return out

    def _weathered(self, sprite: Sprite) -> Sprite:
        """Dust coating and partial burial: real debris is rarely pristine (makes detection harder)."""
        rng = self.rng
        if rng.random() < self.cfg.weathering:
            dust = rng.uniform(0.1, 0.4)
            dusty = self.ground_col * (self.ambient + (1 - self.ambient) * np.sin(self.elevation))
            sprite.rgb = sprite.rgb * (1 - dust) + dusty * dust
        if rng.random() < self.cfg.weathering:
            cover = perlin_mask(sprite.alpha.shape, rng, fraction=rng.uniform(0.15, 0.4), res_range=(1, 3))
            soft = cv2.GaussianBlur(cover.astype(np.float32), (0, 0), 0.7)
            sprite.alpha = sprite.alpha * (1 - soft)
        return sprite

    def _sized(self, kind: str, target_px: float, ratio: float) -> Sprite:
        render = ANOMALY_RENDERERS[kind]
        size = np.sqrt(target_px) * 1.5
        sprite = None
        for _ in range(3):
            state = self.rng.bit_generator.state
            sprite = render(self.rng, size, ratio, self.light, self.ambient)
            area = float((sprite.alpha >= 0.5).sum())
            factor = np.sqrt(target_px / max(area, 1.0))
            if abs(factor - 1) < 0.08:
                break
            self.rng.bit_generator.state = state  # same shape, new size
            size *= factor
        return sprite

    def finish(self) -> np.ndarray:
        rng, h, w = self.rng, self.h, self.w
        img = self.canvas * rng.uniform(0.8, 1.2) * rng.uniform(0.95, 1.05, 3)
        r2 = ((self.xx - w / 2) ** 2 + (self.yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        img *= (1 - rng.uniform(0, 0.35) * r2)[:, :, None]
        if rng.random() < 0.4:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
        sigma = rng.uniform(0.004, 0.02)
        img += rng.normal(0, sigma, (h, w, 1)).astype(np.float32) + rng.normal(
            0, sigma / 3, (h, w, 3)
        ).astype(np.float32)
        return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, bank: TextureBank, cfg: SceneConfig, n_anomalies: int) -> Scene:
    """Renders one frame with ``n_anomalies`` foreign objects (0 for a normal frame).

    Args:
        rng: The frame's random source (everything about the frame comes from it).
        bank: Shared textures.
        cfg: Generator settings.
        n_anomalies: Number of foreign objects to place.

    Returns:
        The frame, its mask and object list.
    """
    frame = _Frame(rng, cfg, bank)
    frame.ground()
    frame.sky()
    items = [(y, sprite, x, 0, "") for y, sprite, x in frame.rocks()]
    for k, (y, sprite, x, kind) in enumerate(frame.anomalies(n_anomalies), start=1):
        items.append((y, sprite, x, k, kind))
    items.sort(key=lambda item: item[0])  # far (small row) to near
    kinds = {}
    for y, sprite, x, owner, kind in items:
        frame.place(sprite, x, y, owner)
        if owner:
            kinds[owner] = kind
    image = frame.finish()
    counts = np.bincount(frame.owner.ravel(), minlength=len(kinds) + 1)
    area = cfg.size[0] * cfg.size[1]
    # Objects hidden behind nearer rocks or soil are not listed.
    objects = [
        {"id": k, "kind": kinds[k], "area": round(float(counts[k]) / area, 5)} for k in kinds if counts[k]
    ]
    mask = (frame.owner > 0).astype(np.uint8)
    if cfg.ignore_band > 0 and mask.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cfg.ignore_band + 1,) * 2)
        band = (cv2.dilate(mask, kernel) > 0) & (cv2.erode(mask, kernel) == 0)
        mask[band] = 255
    return Scene(image=image, mask=mask, objects=objects, palette=frame.palette.name, instances=frame.owner)
