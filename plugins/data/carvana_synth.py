"""A seeded procedural stand-in for Carvana: a car-like body with thin antennas and mirrors on a
textured studio background, with its binary mask; no torch and no files (numpy only).

Every synthetic *car* is one identity (paint, proportions, roof, wheels, antenna, mirrors) seen in
``views`` poses around a turntable, as Carvana photographs each car 16 times: view ``k`` looks at the
car from the angle ``2πk/views``, so its apparent length is ``L|cos θ| + W|sin θ|`` and the profile
faces left or right with the sign of ``cos θ``. Views of one car are not independent examples, so
the dataset reports one cluster per car (intervals resample whole cars).

What makes it hard (so that compression visibly hurts the model trained on it):

* thin structures in the mask: a 1-pixel antenna on most cars, mirrors on stalks;
* a background with the same kinds of things that are *not* the car: a tiled floor with stripes,
  smooth value noise, thin cables that look like antennas, blobs in paint-like colours, and
  sometimes a backdrop close to the car's own paint;
* lighting: a global gradient, a shadow under the car, dark windows and wheels, pixel noise.

Reproducible across machines: geometry and textures use only IEEE arithmetic and ``sqrt`` (exactly
rounded everywhere), random numbers only ``Generator.random`` (PCG64 bit streams, platform
independent), and the few angles go through ``math.cos``/``math.sin`` rounded to 9 decimals. Images
are returned as uint8 (H x W x 3) and masks as uint8 (H x W, 1 = car); the datasets digest the
arrays into their fingerprints, so any difference would change the cell ids rather than hide.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["render_car_views", "render_split", "SPLIT_STREAMS"]

#: independent random streams per split: the same seed never draws a test car into the train split
SPLIT_STREAMS = {"train": 1, "test": 2, "calibration": 3}


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(rng.random())


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Roughly normal noise (mean 0, std 1) as the sum of 4 uniforms: no transcendental functions."""
    return (rng.random((4, *shape)).sum(axis=0) - 2.0) * math.sqrt(3.0)


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly interpolated (arithmetic only)."""
    gy, gx = cells
    grid = rng.random((gy + 1, gx + 1))
    y = np.arange(height)[:, None] * (gy / height)
    x = np.arange(width)[None, :] * (gx / width)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _segment_distance(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance (pixels) from each pixel centre to the segment a-b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.sqrt((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2)


def _rounded_box(px: np.ndarray, py: np.ndarray, cx: float, cy: float, hw: float, hh: float, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a box of half sizes hw, hh with corner radius r."""
    qx = np.abs(px - cx) - (hw - r)
    qy = np.abs(py - cy) - (hh - r)
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _ellipse(px: np.ndarray, py: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance (pixels) to an ellipse (exact on its axes)."""
    k = np.sqrt(((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2)
    return (k - 1.0) * min(rx, ry)


def _polygon(px: np.ndarray, py: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance bound (pixels) to a convex polygon (either orientation): the largest signed
    distance to its edges' lines, exact near the edges."""
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    sign = 1.0 if area > 0 else -1.0
    d = np.full(px.shape, -np.inf)
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        ex, ey = x1 - x0, y1 - y0
        n = math.sqrt(ex * ex + ey * ey)
        d = np.maximum(d, sign * ((px - x0) * ey - (py - y0) * ex) / n)
    return d


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _paint(rng: np.random.Generator) -> np.ndarray:
    """A car colour: mostly greys, whites, blacks and a few saturated paints (in [0, 1])."""
    kind = rng.random()
    if kind < 0.45:  # grey scale, like most cars
        v = _uniform(rng, 0.08, 0.92)
        return np.array([v, v, v]) + (rng.random(3) - 0.5) * 0.06
    base = rng.random(3) * 0.55 + 0.15
    base[int(rng.random() * 3)] = _uniform(rng, 0.6, 0.95)
    return base


def _car(rng: np.random.Generator) -> dict[str, float | np.ndarray | bool]:
    """One car's identity, in units of the image height."""
    return {
        "paint": np.clip(_paint(rng), 0.0, 1.0),
        "length": _uniform(rng, 0.95, 1.2),
        "width": _uniform(rng, 0.42, 0.52),
        "body": _uniform(rng, 0.16, 0.23),
        "cabin": _uniform(rng, 0.10, 0.15),
        "cabin_front": _uniform(rng, 0.25, 0.45),  # where the roof starts and ends along the body (fractions)
        "cabin_back": _uniform(rng, 0.55, 0.8),
        "slope": _uniform(rng, 0.25, 0.6),  # how much the windscreen leans
        "wheel": _uniform(rng, 0.06, 0.08),
        "antenna": bool(rng.random() < 0.75),
        "antenna_at": _uniform(rng, 0.1, 0.9),  # along the roof
        "antenna_len": _uniform(rng, 0.1, 0.2),
        "antenna_lean": _uniform(rng, 0.15, 0.6),  # run over rise
        "mirrors": bool(rng.random() < 0.85),
    }


def _background(rng: np.random.Generator, height: int, width: int, paint: np.ndarray) -> tuple[np.ndarray, float]:
    """(H x W x 3 background in [0, 1], the floor's horizon row as a fraction of the height)."""
    horizon = _uniform(rng, 0.5, 0.68)
    near_paint = rng.random() < 0.3  # a backdrop close to the car's colour: the hardest case
    wall = paint + (rng.random(3) - 0.5) * 0.2 if near_paint else rng.random(3) * 0.7 + 0.15
    floor = rng.random(3) * 0.6 + 0.2
    rows = (np.arange(height) + 0.5)[:, None] / height
    cols = (np.arange(width) + 0.5)[None, :] / height
    img = np.where((rows < horizon)[..., None], wall, floor) * np.ones((height, width, 1))
    # tiles: stripes on the floor that converge towards the horizon (triangle waves, no sin)
    depth = np.maximum(rows - horizon, 1e-3)
    freq = _uniform(rng, 3.0, 7.0)
    u = (cols - 0.75 * width / height) / depth * (0.05 * freq)
    stripes = np.abs(2.0 * (u - np.floor(u)) - 1.0)
    rung = np.abs(2.0 * ((1.0 / depth) * 0.15 - np.floor((1.0 / depth) * 0.15)) - 1.0)
    tiles = np.where(rows >= horizon, (stripes < 0.12) | (rung < 0.08), False)
    img = img * np.where(tiles, _uniform(rng, 0.6, 0.85), 1.0)[..., None]
    # smooth value noise and wall texture
    img = img * (0.75 + 0.5 * _value_noise(rng, height, width, (4, 6)))[..., None]
    img = img + 0.12 * (_value_noise(rng, height, width, (12, 18)) - 0.5)[..., None]
    py, px = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    # distractors: blobs in paint-like colours, and thin cables that look like antennas
    for _ in range(int(rng.random() * 3)):
        colour = paint + (rng.random(3) - 0.5) * 0.3 if rng.random() < 0.5 else rng.random(3)
        sdf = _ellipse(
            px,
            py,
            _uniform(rng, 0, width),
            _uniform(rng, 0, height * horizon),
            _uniform(rng, 2, 0.12 * width),
            _uniform(rng, 2, 0.1 * height),
        )
        a = _coverage(sdf)[..., None]
        img = img * (1 - a) + colour * a
    for _ in range(int(rng.random() * 4)):
        a0 = (_uniform(rng, 0, width), _uniform(rng, 0, height))
        a1 = (a0[0] + _uniform(rng, -0.4, 0.4) * width, a0[1] + _uniform(rng, -0.5, 0.5) * height)
        a = _coverage(_segment_distance(px, py, a0, a1) - 0.5)[..., None]
        img = img * (1 - a) + _uniform(rng, 0.0, 0.3) * a
    return img, horizon


def _draw_car(
    rng: np.random.Generator,
    img: np.ndarray,
    car: dict[str, float | np.ndarray | bool],
    view: int,
    views: int,
    horizon: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one view of ``car`` onto ``img``; (the image, the boolean mask)."""
    height, width = img.shape[:2]
    theta = 2.0 * math.pi * view / views
    c, s = round(math.cos(theta), 9), round(math.sin(theta), 9)
    h = float(height)
    scale = h * _uniform(rng, 0.92, 1.05)
    length = float(car["length"]) * abs(c) + float(car["width"]) * abs(s)
    half = 0.5 * length * scale
    facing = 1.0 if c >= 0 else -1.0  # which way the bonnet points (x)
    cx = 0.5 * width + _uniform(rng, -0.08, 0.08) * width
    ground = h * _uniform(rng, max(horizon + 0.12, 0.78), 0.9)
    wheel = float(car["wheel"]) * scale
    body_h = float(car["body"]) * scale
    cabin_h = float(car["cabin"]) * scale
    body_bottom = ground - 1.15 * wheel
    body_top = body_bottom - body_h
    py, px = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    paint = np.asarray(car["paint"])

    # shadow on the floor under the car
    shadow = _ellipse(px, py, cx, ground, half * 1.08, max(0.06 * h, 2.0))
    img = img * (1.0 - 0.45 * _coverage(shadow * 0.5))[..., None]

    body = _rounded_box(px, py, cx, 0.5 * (body_top + body_bottom), half, 0.5 * body_h, min(0.45 * body_h, half))
    # the cabin: a trapezoid on the body; its roof is shorter than its base (windscreen and rear window lean)
    side = abs(c)  # near the front or rear views the cabin spans most of the width
    f0, f1 = float(car["cabin_front"]), float(car["cabin_back"])
    lo = -half + (half * 2) * (f0 * side + 0.12 * (1 - side))
    hi = -half + (half * 2) * (f1 * side + 0.88 * (1 - side))
    lean = float(car["slope"]) * cabin_h * side + 0.08 * cabin_h
    if facing < 0:
        lo, hi = -hi, -lo
    roof = body_top - cabin_h
    base_l, base_r = cx + lo, cx + hi
    top_l = base_l + (lean if facing > 0 else 0.5 * lean)
    top_r = base_r - (0.5 * lean if facing > 0 else lean)
    cabin = _polygon(px, py, [(base_l, body_top + 1.0), (top_l, roof), (top_r, roof), (base_r, body_top + 1.0)])
    windows = _polygon(
        px,
        py,
        [
            (base_l + 0.35 * lean + 1.0, body_top - 0.5),
            (top_l + 1.0, roof + 0.2 * cabin_h),
            (top_r - 1.0, roof + 0.2 * cabin_h),
            (base_r - 0.35 * lean - 1.0, body_top - 0.5),
        ],
    )
    spread = 0.62 * half
    wheels = np.minimum(
        _ellipse(px, py, cx - spread, ground - wheel, wheel * (0.35 + 0.65 * side), wheel),
        _ellipse(px, py, cx + spread, ground - wheel, wheel * (0.35 + 0.65 * side), wheel),
    )
    hubs = np.minimum(
        _ellipse(px, py, cx - spread, ground - wheel, 0.45 * wheel * (0.35 + 0.65 * side), 0.45 * wheel),
        _ellipse(px, py, cx + spread, ground - wheel, 0.45 * wheel * (0.35 + 0.65 * side), 0.45 * wheel),
    )
    shape = np.minimum(np.minimum(body, cabin), wheels)
    thin = np.full(shape.shape, np.inf)
    if car["mirrors"]:
        # a mirror at the foot of the windscreen, on a 1-pixel stalk; both sides when seen head on
        sides = [facing] if side > 0.7 else [-1.0, 1.0]
        for sgn in sides:
            foot = (base_r if sgn > 0 else base_l) if side <= 0.7 else (base_r if facing > 0 else base_l)
            tip = (foot + sgn * 0.035 * scale, body_top - 0.035 * scale)
            thin = np.minimum(thin, _segment_distance(px, py, (foot, body_top - 0.01 * scale), tip) - 0.55)
            shape = np.minimum(shape, _ellipse(px, py, tip[0], tip[1], 0.022 * scale, 0.014 * scale))
    if car["antenna"]:
        at = top_l + (top_r - top_l) * float(car["antenna_at"])
        rise = float(car["antenna_len"]) * scale
        run = -facing * rise * float(car["antenna_lean"]) * (0.3 + 0.7 * side)
        thin = np.minimum(thin, _segment_distance(px, py, (at, roof + 0.5), (at + run, roof - rise)) - 0.55)
    # paint with vertical shading and a highlight along the body, darker windows and tyres
    shade = 1.15 - 0.45 * np.clip((py - roof) / max(ground - roof, 1.0), 0.0, 1.0)
    colour = paint[None, None, :] * shade[..., None]
    highlight = _coverage(_ellipse(px, py, cx - 0.2 * facing * half, body_top + 0.3 * body_h, 0.5 * half, 0.12 * body_h) * 0.5)
    colour = colour + 0.25 * highlight[..., None]
    glass = np.array([0.12, 0.14, 0.18]) + 0.15 * float(rng.random())
    colour = np.where((_coverage(windows) > 0.5)[..., None], glass + 0.1 * (1 - shade)[..., None], colour)
    tyre = np.where((_coverage(hubs) > 0.5)[..., None], 0.55, 0.07)
    colour = np.where((_coverage(wheels) > 0.5)[..., None] & (body > 0)[..., None], tyre, colour)
    a = _coverage(shape)[..., None]
    img = img * (1 - a) + colour * a
    a = _coverage(thin)[..., None] * 0.85
    img = img * (1 - a) + (0.1 * paint + 0.05) * a
    mask = (shape < 0.0) | (thin < 0.0)
    return img, mask


def render_car_views(
    seed: int, stream: int, car_index: int, views: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """All ``views`` views of one synthetic car: (views x H x W x 3 uint8 images, views x H x W uint8 masks)."""
    rng = np.random.default_rng([seed, stream, car_index])
    car = _car(rng)
    images = np.empty((views, height, width, 3), np.uint8)
    masks = np.empty((views, height, width), np.uint8)
    for v in range(views):
        img, horizon = _background(rng, height, width, np.asarray(car["paint"]))
        img, mask = _draw_car(rng, img, car, v, views, horizon)
        # lighting: a global gradient, then sensor noise
        gy, gx = _uniform(rng, -0.3, 0.3), _uniform(rng, -0.3, 0.3)
        rows = np.arange(height)[:, None] / height - 0.5
        cols = np.arange(width)[None, :] / width - 0.5
        img = img * (1.0 + gy * rows + gx * cols)[..., None] * _uniform(rng, 0.8, 1.15)
        img = img + 0.025 * _noise(rng, img.shape)
        images[v] = np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)
        masks[v] = mask
    return images, masks


def render_split(
    seed: int, split: str, cars: int, views: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N x H x W x 3 uint8 images, N x H x W uint8 masks, N car ids) for ``cars`` cars of a split,
    car by car, each car's views in turntable order."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    parts = [render_car_views(seed, SPLIT_STREAMS[split], k, views, height, width) for k in range(cars)]
    images = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    return images, masks, np.repeat(np.arange(cars, dtype=np.int64), views)
