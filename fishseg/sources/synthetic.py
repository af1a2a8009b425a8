"""A deterministic synthetic stand-in for the Kaggle fish archive, in its exact layout.

Each species gets ``photos_per_species`` base "photos" (a fish lying on a blue, glossy,
speckled surface, with glare, a soft shadow and a date stamp, like the real pictures),
and each photo gets ``copies_per_photo`` augmented copies (flips, 90-degree rotations
resized back to the frame, free rotations with black corners), as the archive was built.
Copies are numbered in a shuffled order so that file names do not reveal the groups.

Every photo draws from its own ``numpy.random.Generator`` seeded by
(seed, species, photo), so a photo does not depend on the counts or on other species,
and the same arguments always give byte-identical files.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fishseg.errors import FishsegError
from fishseg.fsutil import encode_png
from fishseg.sources.layout import SPECIES, image_dir, mask_dir

log = logging.getLogger(__name__)

# Seed-sequence tags that keep the independent random streams apart.
_TAG_PHOTO = 0
_TAG_COPIES = 1
_TAG_NAMES = 2

# The dihedral transforms besides the identity; "+" applies left to right.
_DIHEDRAL = ("hflip", "vflip", "rot90", "rot180", "rot270", "rot90+hflip", "rot90+vflip")

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class SyntheticRecord:
    """One written image/mask pair and where it came from."""

    species: str  # archive folder name
    name: str  # file name, the same for image and mask
    photo: int  # index of the base photo within its species: the near-duplicate group
    transform: str  # "identity", "hflip", "rot90", "rot90+hflip", "rot17", ...


@dataclass(frozen=True)
class _Style:
    """How one species looks; ranges are sampled per photo."""

    length: tuple[float, float]  # total length (tail included) / frame width
    depth: tuple[float, float]  # body depth / body length
    peak: tuple[float, float]  # where along the body (0 tail, 1 snout) it is deepest
    head: float  # exponent of the head taper: < 1 blunt, > 1 pointed
    back: RGB
    belly: RGB
    fin: RGB
    tail: str  # "forked", "truncate", "fan"
    tail_len: float  # caudal fin length / body length
    dorsal: tuple[float, float, float]  # start, end (along body), height / depth
    bend: float  # max |curvature| * body length
    pattern: str
    sheen: float  # strength of the silvery reflective band
    tint: float  # how much of the surface colour shows through (translucency, mirror)


_STYLES: dict[str, _Style] = {
    "Black Sea Sprat": _Style(
        (0.7, 0.9), (0.15, 0.19), (0.5, 0.6), 0.9,
        (70, 95, 105), (205, 210, 210), (170, 175, 180), "forked", 0.2,
        (0.42, 0.55, 0.35), 0.35, "sprat", 0.55, 0.3,
    ),
    "Gilt-Head Bream": _Style(
        (0.72, 0.9), (0.4, 0.46), (0.5, 0.6), 0.8,
        (95, 105, 110), (190, 190, 180), (120, 115, 110), "forked", 0.27,
        (0.15, 0.75, 0.3), 0.1, "gilthead", 0.35, 0.15,
    ),
    "Hourse Mackerel": _Style(
        (0.75, 0.92), (0.22, 0.26), (0.5, 0.6), 1.0,
        (65, 95, 105), (200, 205, 200), (150, 150, 130), "forked", 0.24,
        (0.3, 0.65, 0.25), 0.2, "mackerel", 0.45, 0.2,
    ),
    "Red Mullet": _Style(
        (0.7, 0.88), (0.24, 0.28), (0.55, 0.68), 0.6,
        (205, 95, 85), (235, 190, 170), (220, 140, 110), "forked", 0.2,
        (0.4, 0.6, 0.4), 0.2, "mullet", 0.2, 0.08,
    ),
    "Red Sea Bream": _Style(
        (0.72, 0.9), (0.38, 0.44), (0.5, 0.62), 0.85,
        (215, 105, 115), (240, 195, 185), (225, 130, 120), "forked", 0.25,
        (0.15, 0.75, 0.3), 0.12, "redbream", 0.25, 0.08,
    ),
    "Sea Bass": _Style(
        (0.75, 0.92), (0.25, 0.29), (0.5, 0.62), 1.1,
        (85, 95, 100), (210, 212, 208), (130, 130, 125), "truncate", 0.2,
        (0.25, 0.7, 0.3), 0.15, "seabass", 0.5, 0.22,
    ),
    "Shrimp": _Style(
        (0.8, 1.0), (0.2, 0.24), (0.75, 0.85), 0.5,
        (175, 130, 135), (215, 180, 175), (150, 105, 110), "fan", 0.16,
        (0.0, 0.0, 0.0), 1.9, "shrimp", 0.05, 0.3,
    ),
    "Striped Red Mullet": _Style(
        (0.7, 0.88), (0.23, 0.27), (0.55, 0.68), 0.6,
        (200, 80, 80), (235, 195, 175), (215, 130, 100), "forked", 0.2,
        (0.4, 0.6, 0.4), 0.2, "striped", 0.2, 0.08,
    ),
    "Trout": _Style(
        (0.75, 0.92), (0.22, 0.26), (0.5, 0.6), 1.0,
        (110, 110, 75), (215, 200, 185), (140, 130, 100), "truncate", 0.18,
        (0.38, 0.52, 0.35), 0.2, "trout", 0.3, 0.1,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, species: str, tag: int, *rest: int) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process.
    return np.random.default_rng([seed, zlib.crc32(species.encode("utf-8")), tag, *rest])


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean noise with about ``cells`` features across the longer side, in [-1, 1]."""
    gh = max(2, round(cells * h / max(h, w)) + 1)
    gw = max(2, round(cells * w / max(h, w)) + 1)
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _lerp(a: np.ndarray | RGB, b: np.ndarray | RGB, t: np.ndarray | float) -> np.ndarray:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a + (b - a) * t


def _jitter(rng: np.random.Generator, colour: RGB, amount: float) -> np.ndarray:
    c = np.asarray(colour, np.float32) * rng.uniform(1 - amount, 1 + amount)
    return np.clip(c + rng.normal(0, 255 * amount / 2, 3), 0, 255).astype(np.float32)


# --------------------------------------------------------------------------- scene


def _surface(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A blue, speckled, unevenly lit plastic surface (float32 RGB, 0..255)."""
    base = np.array([rng.uniform(20, 85), rng.uniform(80, 150), rng.uniform(165, 235)], np.float32)
    light = 1.0 + 0.18 * _smooth_noise(rng, h, w, 3)
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    light += gx * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    light += gy * np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    texture = rng.uniform(0.03, 0.08) * _smooth_noise(rng, h, w, rng.integers(25, 60))
    grain = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(0.03, 0.07))
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8)
    surf = base * (light + texture + grain)[..., None]
    # Speckles: small dark and light flecks, as on the real trays.
    n = int(h * w * rng.uniform(0.004, 0.012))
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    fleck = np.zeros((h, w), np.float32)
    fleck[ys, xs] = rng.choice(np.array([-1.0, 1.0], np.float32), n) * rng.uniform(40, 110, n).astype(
        np.float32
    )
    fleck = cv2.GaussianBlur(fleck, (0, 0), max(0.6, min(h, w) / 500))
    return surf + fleck[..., None]


def _glare(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Specular highlights in [0, 1]: a few soft blobs and streaks, some very bright."""
    s = 4  # draw at quarter resolution: the glare is soft, and this keeps it fast
    gh, gw = max(8, h // s), max(8, w // s)
    layer = np.zeros((gh, gw), np.float32)
    for _ in range(rng.integers(2, 7)):
        cx, cy = rng.uniform(-0.1, 1.1) * gw, rng.uniform(-0.1, 1.1) * gh
        ax = rng.uniform(0.03, 0.3) * gw
        ay = ax * rng.uniform(0.06, 0.6)  # elongated: reflections of tube lights
        blob = np.zeros_like(layer)
        cv2.ellipse(
            blob, (int(cx), int(cy)), (max(2, int(ax)), max(2, int(ay))),
            float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
        )  # fmt: skip
        # Each blob its own softness: some crisp reflections, some diffuse halos.
        blob = cv2.GaussianBlur(blob, (0, 0), max(1.0, ay * rng.uniform(0.15, 0.7)))
        layer = np.maximum(layer, blob * rng.uniform(0.5, 1.0))
    # Break the shapes up: real reflections are patchy, with hot cores.
    layer *= np.clip(0.8 + 0.5 * _smooth_noise(rng, gh, gw, 10), 0, 1.3)
    blobs = cv2.resize(layer, (w, h), interpolation=cv2.INTER_LINEAR)
    # A broad sheen so that glare also lifts whole regions, not only spots.
    sheen = np.clip(_smooth_noise(rng, h, w, 2) * rng.uniform(0.2, 0.45), 0, None)
    return np.clip(1.6 * blobs + sheen, 0, 1)


def _stamp(rng: np.random.Generator, img: np.ndarray) -> None:
    """A camera date stamp in yellow/orange in one corner (drawn in place)."""
    h, w = img.shape[:2]
    y, m, d = int(rng.integers(2016, 2020)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    text = [f"{y} {m:02d} {d:02d}", f"'{y % 100} {m} {d}", f"{d:02d}.{m:02d}.{y}"][rng.integers(0, 3)]
    scale = min(w, h) / 400 * rng.uniform(0.9, 1.3)
    thick = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    mx, my = int(w * 0.03), int(h * 0.04)
    corner = rng.choice(4, p=[0.55, 0.15, 0.15, 0.15])  # mostly bottom right, like the camera
    x = w - tw - mx if corner in (0, 2) else mx
    y0 = h - my if corner in (0, 1) else my + th
    colour = np.array([255.0, rng.uniform(130, 200), rng.uniform(0, 60)], np.float32)
    # putText draws on uint8 only: draw a coverage layer and blend the colour with it.
    alpha = np.zeros((h, w), np.uint8)
    cv2.putText(alpha, text, (x, y0), font, scale, 255, thick, cv2.LINE_AA)
    # Blend only around the text: the rest of the frame is untouched.
    ys = slice(max(0, y0 - th - 2 * thick), min(h, y0 + 3 * thick + th // 2))
    xs = slice(max(0, x - 2 * thick), min(w, x + tw + 2 * thick))
    a = alpha[ys, xs].astype(np.float32)[..., None] / 255
    img[ys, xs] += (colour - img[ys, xs]) * a


# --------------------------------------------------------------------------- fish


class _Frame:
    """Maps fish-local coordinates (s along the body, v across it) to the image.

    The body axis may be bent into a circular arc of curvature ``k`` (shrimp curl,
    fish lie a little bent); then it is scaled, rotated and translated.
    """

    def __init__(self, k: float, angle: float, scale: float, cx: float, cy: float) -> None:
        self.k, self.scale, self.cx, self.cy = k, scale, cx, cy
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def to_image(self, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        if abs(self.k) < 1e-6:
            x, y = s, v
        else:
            r = 1.0 / self.k
            x = (r - v) * np.sin(s / r)
            y = r - (r - v) * np.cos(s / r)
        x, y = x * self.scale, y * self.scale
        # Image y points down; local v points to the back (up).
        xi = self.cx + x * self.cos + y * self.sin
        yi = self.cy + x * self.sin - y * self.cos
        return np.stack([xi, yi], axis=-1)

    def to_local(self, xi: np.ndarray, yi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = xi - self.cx, yi - self.cy
        x = (dx * self.cos + dy * self.sin) / self.scale
        y = (dx * self.sin - dy * self.cos) / self.scale
        if abs(self.k) < 1e-6:
            return x, y
        r = 1.0 / self.k
        ry = r - y
        rho = np.sqrt(x * x + ry * ry)
        if r < 0:  # the arc's centre lies on the other side: flip the orientation
            rho, x, ry = -rho, -x, -ry
        return r * np.arctan2(x, ry), r - rho


@dataclass
class _Body:
    """Fish geometry in local units: body from s=0 (tail root) to s=1 (snout)."""

    up: np.ndarray  # upper half-depth at _T
    down: np.ndarray  # lower half-depth at _T
    polys: list[np.ndarray]  # outline polygons (s, v) in local units: body, tail, fins
    fin_polys: list[np.ndarray]  # those of them drawn in fin colour
    dorsal: float = 1.0  # +1 if the back is on the +v side, -1 if the fish lies mirrored


_T = np.linspace(0.0, 1.0, 121)


def _profile(rng: np.random.Generator, st: _Style) -> tuple[np.ndarray, np.ndarray, float]:
    depth = rng.uniform(*st.depth)
    peak = rng.uniform(*st.peak)
    a = peak / (1 - peak) * st.head  # puts the maximum of t^a (1-t)^head at `peak`
    prof = _T**a * (1 - _T) ** st.head
    prof /= prof.max()
    ped = rng.uniform(0.12, 0.2) if st.tail != "fan" else rng.uniform(0.35, 0.45)
    prof = np.maximum(prof, ped * (1 - _T) ** 2)  # keeps the tail root (peduncle) thick
    back = rng.uniform(0.5, 0.58)  # the back is a bit higher than the belly is deep
    return prof * depth * back, prof * depth * (1 - back), depth


def _outline(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    return np.concatenate([np.stack([_T, up], 1), np.stack([_T[::-1], -down[::-1]], 1)])


def _build_body(rng: np.random.Generator, st: _Style) -> _Body:
    up, down, depth = _profile(rng, st)
    polys = [_outline(up, down)]
    fins: list[np.ndarray] = []
    ped_u, ped_d = up[0], down[0]
    tl = st.tail_len * rng.uniform(0.85, 1.15)
    if st.tail == "forked":
        spread = tl * rng.uniform(0.75, 1.0)
        notch = tl * rng.uniform(0.35, 0.6)
        tail = [(0.02, ped_u), (-tl, spread), (-tl * 0.85, spread * 0.85), (-notch, 0.0),
                (-tl * 0.85, -spread * 0.85), (-tl, -spread), (0.02, -ped_d)]  # fmt: skip
    elif st.tail == "truncate":
        spread = tl * rng.uniform(0.6, 0.8)
        bulge = tl * rng.uniform(-0.08, 0.05)
        tail = [(0.02, ped_u), (-tl, spread), (-tl - bulge, 0.0), (-tl, -spread), (0.02, -ped_d)]
    else:  # shrimp tail fan: a spread of flaps
        spread = tl * rng.uniform(0.55, 0.75)
        tail = [(0.02, ped_u), (-tl * 0.8, spread), (-tl, spread * 0.4), (-tl * 0.9, 0.0),
                (-tl, -spread * 0.4), (-tl * 0.8, -spread), (0.02, -ped_d)]  # fmt: skip
    tail_poly = np.array(tail, np.float64)
    polys.append(tail_poly)
    fins.append(tail_poly)
    d0, d1, dh = st.dorsal
    if dh > 0:
        # Dorsal fin along the back.
        i0, i1 = int(d0 * (len(_T) - 1)), int(d1 * (len(_T) - 1))
        h = dh * depth * rng.uniform(0.8, 1.2)
        base = np.stack([_T[i0 : i1 + 1], up[i0 : i1 + 1] - 0.01], 1)
        tip = np.array(
            [[_T[i1] - 0.1 * (d1 - d0), up[i1] + 0.3 * h], [_T[i0] + 0.35 * (d1 - d0), up[i0] + h]]
        )
        fin = np.concatenate([base, tip])
        polys.append(fin)
        fins.append(fin)
        # Anal fin and pelvic fin below.
        for a0, a1, hh in ((0.18, 0.38, 0.6), (0.5, 0.6, 0.5)):
            j0, j1 = int(a0 * (len(_T) - 1)), int(a1 * (len(_T) - 1))
            fh = hh * h
            fin = np.array(
                [[_T[j0], -down[j0] + 0.01], [_T[j1], -down[j1] + 0.01],
                 [_T[j1] - 0.2 * (a1 - a0), -down[j1] - fh], [_T[j0], -down[j0] - 0.5 * fh]]
            )  # fmt: skip
            polys.append(fin)
            fins.append(fin)
    else:  # shrimp: little swimming legs under the abdomen and a pointed rostrum
        for t0 in np.linspace(0.3, 0.6, 5):
            j = int(t0 * (len(_T) - 1))
            leg = np.array([[t0 - 0.02, -down[j] + 0.01], [t0 + 0.02, -down[j] + 0.01],
                            [t0 - 0.02, -down[j] - 0.35 * depth], [t0 - 0.05, -down[j] - 0.3 * depth]])  # fmt: skip
            polys.append(leg)
            fins.append(leg)
        ro = np.array([[0.93, up[-8] * 0.6], [1.12, up[-8] * 0.9], [0.98, -0.005]])
        polys.append(ro)
    return _Body(up, down, polys, fins)


def _fish(
    rng: np.random.Generator, st: _Style, surface: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice], np.ndarray]:
    """Draw one fish: its colours (float32 RGB) in a box (slices) and its mask (uint8 0/255)."""
    h, w = surface.shape[:2]
    body = _build_body(rng, st)
    mirror = rng.random() < 0.5  # lying on its left or right side
    k = rng.uniform(-st.bend, st.bend)
    if st.pattern == "shrimp":
        # Shrimp always curl, belly (legs) inwards: the arc's centre on the belly side.
        k = rng.uniform(0.6, 1.0) * st.bend * (1 if mirror else -1)
    angle = math.radians(rng.uniform(-30, 30))
    if rng.random() < 0.5:
        angle += math.pi  # head left or right
    total = 1.0 + max(st.tail_len, 0.05) * 1.1
    length_px = rng.uniform(*st.length) * w / total  # pixels per local unit
    # Centre the whole fish (tail included) on the origin before placing it.
    frame = _Frame(k, angle, length_px, 0.0, 0.0)
    if mirror:
        body.polys = [p * [1, -1] for p in body.polys]
        body.fin_polys = [p * [1, -1] for p in body.fin_polys]
        body.up, body.down = body.down, body.up
        body.dorsal = -1.0
    shift = np.array([0.5 - (total - 1.0) / 2, 0.0])
    body.polys = [p - shift for p in body.polys]
    body.fin_polys = [p - shift for p in body.fin_polys]
    pts = np.concatenate([frame.to_image(p[:, 0], p[:, 1]) for p in body.polys])
    lo, hi = pts.min(0), pts.max(0)
    fit = min(1.0, 0.92 * w / (hi[0] - lo[0]), 0.9 * h / (hi[1] - lo[1]))
    frame.scale *= fit
    lo, hi = lo * fit, hi * fit
    # Anywhere that keeps the whole fish inside the central 92% x 90% of the frame.
    slack = np.maximum(np.array([0.92 * w, 0.9 * h]) - (hi - lo), 0.0)
    cx = 0.04 * w - lo[0] + rng.uniform(0, 1) * slack[0]
    cy = 0.05 * h - lo[1] + rng.uniform(0, 1) * slack[1]
    frame.cx, frame.cy = cx, cy

    # Fill the polygons one by one: a multi-polygon fillPoly leaves holes where they overlap.
    mask = np.zeros((h, w), np.uint8)
    fins = np.zeros((h, w), np.uint8)
    sub = 16  # 4 bits of sub-pixel precision keep thin shapes smooth
    for p in body.polys:
        q = np.round(frame.to_image(p[:, 0], p[:, 1]) * sub).astype(np.int32)
        cv2.fillPoly(mask, [q], 255, cv2.LINE_8, shift=4)
    for p in body.fin_polys:
        q = np.round(frame.to_image(p[:, 0], p[:, 1]) * sub).astype(np.int32)
        cv2.fillPoly(fins, [q], 255, cv2.LINE_8, shift=4)

    colour, box = _colour_fish(rng, st, body, frame, shift, surface, mask, fins)
    return colour, box, mask


def _colour_fish(
    rng: np.random.Generator,
    st: _Style,
    body: _Body,
    frame: _Frame,
    shift: np.ndarray,
    surface: np.ndarray,
    mask: np.ndarray,
    fins: np.ndarray,
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Colour the fish per pixel from its local coordinates, within its bounding box.

    Returns the colours (float32 RGB) of that box and the box as slices of the frame.
    """
    x0, y0, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return np.zeros((0, 0, 3), np.float32), (slice(0, 0), slice(0, 0))
    box = (slice(y0, y0 + bh), slice(x0, x0 + bw))
    yy, xx = np.mgrid[box].astype(np.float32)
    s, v = frame.to_local(xx, yy)
    t = np.clip(s + shift[0], 0.0, 1.0)
    up = np.interp(t, _T, body.up)
    down = np.interp(t, _T, body.down)
    vn = np.where(v >= 0, v / np.maximum(up, 1e-3), v / np.maximum(down, 1e-3))
    vn = np.clip(vn, -1.2, 1.2).astype(np.float32)
    t = t.astype(np.float32)
    vd = vn * body.dorsal  # +1 at the back, -1 at the belly

    col = _skin(rng, st, s, v, vd)
    col = _pattern(rng, st.pattern, col, t, vd, body)
    _shade_head(rng, st.pattern, col, t, vn, vd, body)
    # Fins are thin and translucent: mix with the surface below.
    fin_c = _jitter(rng, st.fin, 0.1)
    fin_here = fins[box] > 0
    surf = surface[box]
    rays = 1 + 0.12 * np.sin((s + 0.5 * v) * 2 * np.pi * rng.uniform(35, 60)).astype(np.float32)
    fin_col = fin_c * rays[fin_here][:, None]
    col[fin_here] = _lerp(fin_col, surf[fin_here], rng.uniform(0.2, 0.45))
    # Reflective skin / translucent shell: the surface colour shows through.
    col = _lerp(col, surf, st.tint * rng.uniform(0.6, 1.4))
    return col, box


def _skin(rng: np.random.Generator, st: _Style, s: np.ndarray, v: np.ndarray, vd: np.ndarray) -> np.ndarray:
    """Back-to-belly gradient, scales and the silvery band."""
    back = _jitter(rng, st.back, 0.12)
    belly = _jitter(rng, st.belly, 0.06)
    g = np.clip((vd + 1) / 2, 0, 1) ** rng.uniform(0.8, 1.6)
    col = _lerp(belly, back, g[..., None])
    # Scales: a fine, stretched-along-the-body ripple plus grain.
    freq = rng.uniform(30, 60)
    ripple = np.sin(s * freq * 2 * np.pi).astype(np.float32) * np.sin(v * freq * 2 * np.pi).astype(np.float32)
    grain = rng.standard_normal(s.shape, dtype=np.float32)
    col *= (1 + 0.04 * ripple + 0.04 * grain)[..., None]
    # Silvery band: a bright mirror stripe just above the middle.
    band = np.exp(-(((vd - rng.uniform(-0.1, 0.3)) / 0.25) ** 2)).astype(np.float32)
    col += (st.sheen * rng.uniform(0.6, 1.2) * 90 * band)[..., None]
    return col


def _pattern(
    rng: np.random.Generator, pat: str, col: np.ndarray, t: np.ndarray, vd: np.ndarray, body: _Body
) -> np.ndarray:
    """The species' markings: lines, stripes, spots, bars, segments."""
    if pat == "mackerel":
        line = 0.25 + 0.3 * np.clip((t - 0.45) / 0.35, 0, 1)
        on = np.abs(vd - line) < 0.07
        col[on] = col[on] * 0.55
    elif pat == "striped":
        for c in rng.uniform(-0.2, 0.15) + np.array([0.0, 0.3, 0.6]):
            on = np.abs(vd - c) < 0.07
            col[on] = _lerp(col[on], (240, 200, 60), 0.75)
    elif pat == "mullet":
        on = np.abs(vd - 0.1) < 0.18
        col[on] = _lerp(col[on], (230, 170, 120), 0.3)
    elif pat == "redbream":
        spots = rng.random(t.shape) < 0.004
        spots &= vd > -0.2
        spots = cv2.dilate(spots.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
        col[spots] = (110, 160, 230)
    elif pat == "gilthead":
        bar = (t > 0.84) & (t < 0.9) & (vd > 0.2)
        col[bar] = _lerp(col[bar], (225, 185, 60), 0.7)
        patch = (t > 0.72) & (t < 0.78) & (vd > 0.1) & (vd < 0.6)
        col[patch] *= 0.45
        lines = (np.sin(vd * 28) > 0.8) & (t < 0.75)
        col[lines] *= 0.85
    elif pat == "seabass":
        patch = (t > 0.74) & (t < 0.78) & (vd > 0.2) & (vd < 0.55)
        col[patch] *= 0.5
    elif pat == "trout":
        col = _trout_spots(rng, col, t, vd, body)
    elif pat == "shrimp":
        seg = ((t * 9 + rng.uniform(0, 1)) % 1.0 < 0.12) & (t < 0.65)
        col[seg] = col[seg] * 0.7
        gut = np.abs(vd - 0.75) < 0.07
        col[gut] = col[gut] * 0.6
    elif pat == "sprat":
        on = np.abs(vd - 0.35) < 0.06
        col[on] = _lerp(col[on], (150, 160, 180), 0.5)
    return col


def _trout_spots(
    rng: np.random.Generator, col: np.ndarray, t: np.ndarray, vd: np.ndarray, body: _Body
) -> np.ndarray:
    band2 = np.exp(-((vd / 0.2) ** 2))
    col = _lerp(col, (220, 140, 140), (0.45 * band2)[..., None])
    n = int(rng.integers(25, 60))
    for _ in range(n):
        ts, vs = rng.uniform(0.05, 0.9), rng.uniform(-0.3, 0.95)
        r = rng.uniform(0.008, 0.016)
        d = ((t - ts) / r) ** 2 + ((vd - vs) * float(body.up.max() + body.down.max()) / 2 / r) ** 2
        col[d < 1] *= 0.25
    return col


def _shade_head(
    rng: np.random.Generator,
    pat: str,
    col: np.ndarray,
    t: np.ndarray,
    vn: np.ndarray,
    vd: np.ndarray,
    body: _Body,
) -> None:
    """Darken towards the outline (a rounded body), then the gill cover edge and the eye, in place."""
    col *= (1 - 0.28 * np.clip(np.abs(vn), 0, 1) ** 4)[..., None]
    if pat != "shrimp":
        gill = np.abs(t - (0.8 + 0.04 * vd**2 - rng.uniform(0, 0.03))) < 0.008
        col[gill & (np.abs(vd) < 0.85)] *= 0.6
    eye_t, eye_v = 0.93 if pat != "shrimp" else 0.9, 0.35
    r_eye = 0.028 if pat != "shrimp" else 0.03
    half = float(body.up.max() + body.down.max()) / 2
    de = ((t - eye_t) / r_eye) ** 2 + ((vd - eye_v) * half / r_eye) ** 2
    iris = (200, 170, 90) if pat in ("gilthead", "redbream", "mackerel") else (190, 190, 185)
    col[de < 1] = iris
    col[de < 0.35] = (15, 15, 20)


# --------------------------------------------------------------------------- photo


def render_photo(
    species: str, photo: int, *, width: int, height: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One base photo: RGB uint8 (height, width, 3) and its mask uint8 (0/255)."""
    st = _STYLES[species]
    rng = _rng(seed, species, _TAG_PHOTO, photo)
    h, w = height, width
    surface = _surface(rng, h, w)
    colour, box, mask = _fish(rng, st, surface)
    # Soft shadow beside the fish (darkens the surface only, so it is not part of the mask).
    sx, sy = rng.uniform(-0.04, 0.04, 2) * min(w, h) + 0.02 * min(w, h)
    m = np.float32([[1, 0, sx], [0, 1, sy]])
    shadow = cv2.warpAffine(mask, m, (w, h)).astype(np.float32) / 255
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, rng.uniform(0.01, 0.03) * min(w, h)))
    img = surface * (1 - rng.uniform(0.3, 0.55) * shadow)[..., None]
    np.copyto(img[box], colour, where=mask[box][..., None] > 0)
    # Light falls on fish and surface alike: one illumination field and one glare layer,
    # img * light blended towards white by the glare, in two full-frame passes.
    light = 1.0 + 0.12 * _smooth_noise(rng, h, w, 2)
    glare = _glare(rng, h, w) * np.float32(rng.uniform(0.7, 1.0))
    white = np.array([245, 248, 255], np.float32)
    img *= (light * (1 - glare))[..., None]
    img += glare[..., None] * white
    np.clip(img, 0, 255, out=img)
    _stamp(rng, img)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)  # lens softness: no razor-sharp cut-outs
    img += (rng.standard_normal((h, w), dtype=np.float32) * np.float32(2.0))[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- copies


def _pick_transforms(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct transforms: the identity first, then flips and rotations."""
    out = ["identity"]
    dihedral = [_DIHEDRAL[i] for i in rng.permutation(len(_DIHEDRAL))]
    angles: set[int] = set()
    while len(out) < n:
        if dihedral and rng.random() < 0.6:
            out.append(dihedral.pop())
            continue
        a = int(rng.integers(8, 83)) * int(rng.choice([-1, 1]))
        if a not in angles:
            angles.add(a)
            out.append(f"rot{a}")
    return out


def apply_transform(img: np.ndarray, mask: np.ndarray, transform: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply a named transform to an image and its mask alike; the size is kept."""
    h, w = mask.shape
    for step in transform.split("+"):
        if step == "identity":
            continue
        if step == "hflip":
            img, mask = img[:, ::-1], mask[:, ::-1]
        elif step == "vflip":
            img, mask = img[::-1], mask[::-1]
        elif step in ("rot90", "rot180", "rot270"):
            k = int(step[3:]) // 90
            img, mask = np.rot90(img, k), np.rot90(mask, k)
            if mask.shape != (h, w):  # the archive resized rotated copies back to 590x445
                img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
                mask = cv2.resize(np.ascontiguousarray(mask), (w, h), interpolation=cv2.INTER_NEAREST)
        elif step.startswith("rot"):
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(step[3:]), 1.0)
            img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
            mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        else:
            raise FishsegError(f"unknown synthetic transform {step!r} in {transform!r}")
    return np.ascontiguousarray(img), np.ascontiguousarray(mask)


def _numbering(rng: np.random.Generator, photos: int, copies: int) -> list[int]:
    """File numbers (0-based) for item p*copies+c, with no two copies of a photo adjacent.

    A random sequence of photo ids without equal neighbours, built greedily: at each
    step only photos that keep the rest arrangeable are candidates.
    """
    n = photos * copies
    left = np.full(photos, copies)
    seq: list[int] = []
    prev = -1
    for step in range(n):
        rest = n - step - 1
        cands = []
        for q in np.flatnonzero(left):
            if q == prev and photos > 1:
                continue
            after = left.copy()
            after[q] -= 1
            if photos == 1 or (after.max() <= (rest + 1) // 2 and after[q] <= rest // 2):
                cands.append(q)
        if not cands:  # only when a single photo is left: nothing to interleave with
            cands = list(np.flatnonzero(left))
        weights = left[cands] / left[cands].sum()
        q = int(rng.choice(cands, p=weights))
        seq.append(q)
        left[q] -= 1
        prev = q
    # Assign each photo's positions to its copies in a random order.
    numbers = [0] * n
    positions: list[list[int]] = [[] for _ in range(photos)]
    for pos, q in enumerate(seq):
        positions[q].append(pos)
    for q in range(photos):
        order = rng.permutation(copies)
        for c, pos in zip(order, positions[q], strict=True):
            numbers[q * copies + int(c)] = pos
    return numbers


# --------------------------------------------------------------------------- entry


def generate(
    out_dir: Path,
    *,
    photos_per_species: int,
    copies_per_photo: int,
    width: int = 590,
    height: int = 445,
    seed: int = 0,
    species: Sequence[str] = SPECIES,
    progress: bool = True,
) -> list[SyntheticRecord]:
    """Write a synthetic dataset in the archive's layout under ``out_dir``.

    Per species, ``photos_per_species * copies_per_photo`` image/mask pairs named
    ``00001.png``...; returns one record per pair, in writing order.
    """
    if photos_per_species < 1 or copies_per_photo < 1:
        raise FishsegError("synthetic data needs photos_per_species >= 1 and copies_per_photo >= 1")
    if width < 32 or height < 32:
        raise FishsegError(f"synthetic images must be at least 32x32 pixels, got {width}x{height}")
    if seed < 0:
        raise FishsegError(f"synthetic seed must be >= 0, got {seed}")
    unknown = [s for s in species if s not in _STYLES]
    if unknown:
        raise FishsegError(f"no synthetic style for species {unknown}; known: {list(_STYLES)}")

    out_dir = Path(out_dir)
    records: list[SyntheticRecord] = []
    total = len(species) * photos_per_species
    log.info(
        "generating synthetic data: %d species x %d photos x %d copies at %dx%d (seed %d) into %s",
        len(species), photos_per_species, copies_per_photo, width, height, seed, out_dir,
    )  # fmt: skip
    with tqdm(total=total, desc="synthetic", unit="photo", disable=not progress) as bar:
        for sp in species:
            img_dir, msk_dir = image_dir(out_dir, sp), mask_dir(out_dir, sp)
            img_dir.mkdir(parents=True, exist_ok=True)
            msk_dir.mkdir(parents=True, exist_ok=True)
            numbers = _numbering(_rng(seed, sp, _TAG_NAMES), photos_per_species, copies_per_photo)
            for p in range(photos_per_species):
                img, mask = render_photo(sp, p, width=width, height=height, seed=seed)
                transforms = _pick_transforms(_rng(seed, sp, _TAG_COPIES, p), copies_per_photo)
                for c, tf in enumerate(transforms):
                    name = f"{numbers[p * copies_per_photo + c] + 1:05d}.png"
                    ti, tm = apply_transform(img, mask, tf)
                    # Plain writes: the whole folder is renamed into place once complete.
                    (img_dir / name).write_bytes(encode_png(ti))
                    (msk_dir / name).write_bytes(encode_png(tm))
                    records.append(SyntheticRecord(sp, name, p, tf))
                bar.update(1)
    log.info("wrote %d synthetic pairs", len(records))
    return records
