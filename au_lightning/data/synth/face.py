"""Procedural frontal face renderer of SynthAU: subject looks, per-frame nuisance, 17 AUs.

The face is built as landmarks and shapes in a canonical image frame (x right, y down, both
fractions of the image side; the face box of height ``face_height`` and width ``face_width``
spans hairline to chin and is centred in the image). Every AU moves or shades the parts FACS
names for it, by an amount proportional to its intensity (0 absent .. 5 maximal). Head pose
(yaw/pitch by a depth-weighted shift of the points, then roll, scale and translation) is
applied to the points, the shapes are filled with PIL at ``_SS`` times the output size and
reduced by area averaging; illumination gradient, blur and sensor noise follow in numpy.

Drawing order: background, hair, neck, ears, face skin, hair cap, skin marks (wrinkles,
furrows, cheek and chin shading), eyes, brows, nose, beard, mouth, fringe, glasses, hand.
Occluders therefore hide AU evidence the way they do in real data (a fringe hides forehead
wrinkles, a beard hides chin texture, a hand hides the mouth).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["SYNTH_AUS", "Nuisance", "SubjectLook", "render_face", "sample_look"]

SYNTH_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)

_SS = 2  # supersampling factor of the drawing canvas
_RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SubjectLook:
    """Everything about a person's appearance that does not change between frames.

    Lengths are fractions: ``face_width``/``face_height`` of the image side; ``eye_spacing``
    (between the eye centres), ``eye_size`` (eye width), ``nose_width`` and ``mouth_width``
    of the face width; ``brow_height`` (eye centre to brow centre line), ``brow_thickness``,
    ``nose_length`` (eye line to nose base), ``lip_thickness`` (upper red margin; the lower is
    1.3 times thicker), ``eye_y`` (eye line below the hairline) and ``philtrum`` (nose base to
    mouth line) of the face height. Colours are RGB 0..255.
    """

    face_width: float
    face_height: float
    eye_spacing: float
    eye_size: float
    brow_height: float
    brow_thickness: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    skin: _RGB
    hair: _RGB
    iris: _RGB
    fringe: float = 0.0  # 0 = none .. ~0.6: fraction of the forehead covered by hair
    glasses: bool = False
    beard: float = 0.0  # 0 = none .. 1: beard opacity over the jaw, chin and upper lip
    lip: _RGB = (176, 98, 96)
    brow_color: _RGB = (70, 52, 40)
    background: _RGB = (128, 128, 128)
    clothing: _RGB = (70, 80, 110)
    glasses_color: _RGB = (35, 30, 30)
    eye_y: float = 0.42  # eye line, fraction of the face height below the hairline
    philtrum: float = 0.105  # nose base to mouth line, fraction of the face height
    jaw: float = 2.3  # superellipse exponent of the lower face: higher = squarer jaw
    brow_arch: float = 0.015  # arch height of the brows, fraction of the face height
    eye_tilt: float = 0.03  # outer eye corner above the inner, fraction of the eye half-width
    age: float = 0.0  # 0..1 depth of the resting wrinkles (forehead, nasolabial, lids)
    blush: float = 0.2  # 0..1 cheek redness
    hair_length: float = 0.6  # lowest point of the back hair, fraction of the face height
    fringe_phase: float = 0.0  # shape of the fringe's strands
    fringe_side: float = 0.0  # -1..1 sweep of the fringe to one side
    glasses_weight: float = 0.012  # frame line width, fraction of the image


@dataclass(frozen=True)
class Nuisance:
    """Per-frame variation that is not an AU.

    ``rotation`` is in-plane roll in degrees (positive = counter-clockwise on screen),
    ``dx``/``dy`` translation in fractions of the image side, ``yaw``/``pitch`` in -1..1 shift
    the face's inner features sideways/vertically in proportion to their depth (compressing
    one side), ``light_angle``/``light_strength`` give a multiplicative illumination gradient
    (1 +- strength across the image), ``noise`` is the Gaussian sensor noise std in 0..255
    units, ``blur`` a Gaussian blur radius in output pixels, ``gaze`` -1..1 moves both irises
    left/right (positive = image right), ``hand`` 0..1 raises a hand over the lower face
    (1 covers the mouth and chin).
    """

    rotation: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    yaw: float = 0.0
    pitch: float = 0.0
    light_angle: float = 0.0
    light_strength: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    gaze: float = 0.0
    hand: float = 0.0


# ---------------------------------------------------------------------------------------------
# sampling subjects

_SKIN = np.array(
    [
        (250, 222, 200),
        (236, 192, 160),
        (214, 166, 128),
        (180, 126, 90),
        (134, 88, 60),
        (88, 56, 40),
    ],
    float,
)
_HAIR = np.array(
    [(22, 18, 16), (52, 36, 26), (96, 64, 40), (196, 160, 104), (148, 72, 38), (150, 146, 142)],
    float,
)
_HAIR_P = np.array([0.3, 0.25, 0.18, 0.1, 0.07, 0.1])
_IRIS = np.array(
    [(84, 52, 30), (44, 30, 22), (70, 112, 160), (78, 116, 78), (122, 94, 50), (110, 120, 128)],
    float,
)
_IRIS_P = np.array([0.35, 0.25, 0.15, 0.08, 0.1, 0.07])
_GLASSES = np.array([(30, 26, 26), (90, 60, 40), (150, 150, 155), (120, 30, 40)], float)


def _rgb(v: np.ndarray) -> _RGB:
    r, g, b = (round(float(x)) for x in np.clip(v, 0, 255))
    return (r, g, b)


def sample_look(rng: np.random.Generator) -> SubjectLook:
    """A random person: geometry, skin/hair/iris colours, ~25% glasses, ~25% fringe, ~20% beard."""
    u = rng.uniform
    pos = u(0, len(_SKIN) - 1)
    i = min(int(pos), len(_SKIN) - 2)
    skin = (_SKIN[i] * (i + 1 - pos) + _SKIN[i + 1] * (pos - i)) * u(0.94, 1.06, 3)
    hair_i = rng.choice(len(_HAIR), p=_HAIR_P)
    hair = _HAIR[hair_i] * u(0.8, 1.2) + u(-8, 8, 3)
    iris = _IRIS[rng.choice(len(_IRIS), p=_IRIS_P)] * u(0.85, 1.15)
    brow = hair * (0.55 if hair_i in (3, 4) else 0.85) if hair_i != 5 else hair * 0.75
    lip = skin * 0.55 + np.array([200, 70, 80]) * 0.45 * u(0.8, 1.05)
    hue, sat, val = u(0, 1), u(0.05, 0.35), u(0.3, 0.85)
    k = np.array([0, 1 / 3, 2 / 3])
    background = val * (1 - sat * np.clip(np.abs(((hue + k) % 1) * 6 - 3) - 1, 0, 1)) * 255
    clothing = rng.uniform(30, 200, 3)
    fringe = float(u(0.2, 0.6)) if u() < 0.25 else 0.0
    glasses = bool(u() < 0.25)
    beard = float(u(0.35, 1.0)) if u() < 0.2 else 0.0
    return SubjectLook(
        face_width=float(u(0.62, 0.72)),
        face_height=float(u(0.80, 0.90)),
        eye_spacing=float(u(0.40, 0.47)),
        eye_size=float(u(0.17, 0.22)),
        brow_height=float(u(0.075, 0.105)),
        brow_thickness=float(u(0.018, 0.034)),
        nose_length=float(u(0.19, 0.24)),
        nose_width=float(u(0.20, 0.28)),
        mouth_width=float(u(0.30, 0.40)),
        lip_thickness=float(u(0.022, 0.038)),
        skin=_rgb(skin),
        hair=_rgb(hair),
        iris=_rgb(iris),
        fringe=fringe,
        glasses=glasses,
        beard=beard,
        lip=_rgb(lip),
        brow_color=_rgb(brow),
        background=_rgb(background),
        clothing=_rgb(clothing),
        glasses_color=_rgb(_GLASSES[rng.integers(len(_GLASSES))]),
        eye_y=float(u(0.40, 0.44)),
        philtrum=float(u(0.09, 0.115)),
        jaw=float(u(1.9, 2.8)),
        brow_arch=float(u(0.004, 0.022)),
        eye_tilt=float(u(-0.05, 0.12)),
        age=float(u() ** 2),
        blush=float(u(0, 0.6)),
        hair_length=float(u(0.3, 1.2)),
        fringe_phase=float(u(0, 2 * np.pi)),
        fringe_side=float(u(-1, 1)),
        glasses_weight=float(u(0.009, 0.018)),
    )


# ---------------------------------------------------------------------------------------------
# geometry helpers (all in canonical image-fraction units)


@cache
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(th), np.sin(th)


@cache
def _lin(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _xy(x, y) -> np.ndarray:
    """(n, 2) points from x and y (arrays or scalars broadcast against them)."""
    out = np.empty((np.size(x) if np.ndim(x) else np.size(y), 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


def _ellipse(x: float, y: float, rx: float, ry: float, n: int = 18, angle: float = 0.0):
    c, s = _circle(n)
    px, py = rx * c, ry * s
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        px, py = px * ca - py * sa, px * sa + py * ca
    return _xy(x + px, y + py)


@cache
def _bernstein(n: int) -> np.ndarray:
    t = _lin(n)
    return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], 1)


def _quad(p0, p1, p2, n: int = 7) -> np.ndarray:
    """Quadratic Bezier curve from p0 to p2 pulled towards p1."""
    return _bernstein(n) @ np.array([p0, p1, p2], dtype=float)


def _band(x: np.ndarray, y_top: np.ndarray, y_bot: np.ndarray) -> np.ndarray:
    """Polygon between two curves sampled at the same x."""
    return np.concatenate([_xy(x, y_top), _xy(x[::-1], y_bot[::-1])])


def _sinp(t: np.ndarray, p: float) -> np.ndarray:
    return np.clip(np.sin(np.pi * t), 0.0, None) ** p


def _clip_disc(cx, cy, r, xs, up, lo, n: int = 12):
    """Disc (cx, cy, r) intersected with the region between curves ``up`` and ``lo``."""
    x = cx + r * np.cos(np.linspace(np.pi, 0, n))
    h = np.sqrt(np.clip(r * r - (x - cx) ** 2, 0, None))
    if xs[0] > xs[-1]:
        xs, up, lo = xs[::-1], up[::-1], lo[::-1]
    top = np.maximum(cy - h, np.interp(x, xs, up))
    bot = np.minimum(cy + h, np.interp(x, xs, lo))
    keep = top < bot
    if keep.sum() < 2:
        return None
    return _band(x[keep], top[keep], bot[keep])


# golden-angle spiral in the unit disc: chin-boss stipple of AU17
_STIPPLE = np.stack(
    [
        np.sqrt((np.arange(18) + 0.5) / 18) * np.cos(np.arange(18) * 2.39996),
        np.sqrt((np.arange(18) + 0.5) / 18) * np.sin(np.arange(18) * 2.39996),
    ],
    1,
)


_U5 = np.linspace(-1.0, 1.0, 5)
_U7 = np.linspace(-1.0, 1.0, 7)
_UL6 = np.linspace(0.2, 0.62, 6)
_ARCH6 = np.sin(np.pi * (_UL6 - 0.2) / 0.42)
_CROW = np.linspace(0.15, 0.75, 4)
_SX7 = np.linspace(-0.55, 0.55, 7)


class _Ops:
    """Display list: shapes in canonical coordinates, posed and drawn together."""

    def __init__(self) -> None:
        self.items: list[tuple[int, np.ndarray, tuple[int, int, int, int], float, float]] = []

    def poly(self, pts, color, alpha: float = 1.0, prot: float = 0.0) -> None:
        a = int(255 * min(alpha, 1.0))
        if a >= 3 and pts is not None and len(pts) >= 3:
            self.items.append((0, pts, (*color, a), 0.0, prot))

    def line(self, pts, color, width: float, alpha: float = 1.0, prot: float = 0.0) -> None:
        a = int(255 * min(alpha, 1.0))
        if a >= 3 and pts is not None and len(pts) >= 2:
            self.items.append((1, pts, (*color, a), width, prot))

    def wrinkle(self, pts, dark, light, alpha, width, offset=(0.0, 0.004), prot=0.0) -> None:
        """A furrow: a dark line darker in its middle, with a lit ridge beside it."""
        if alpha * 255 < 3:
            return
        self.line(pts, dark, width, 0.55 * alpha, prot)
        if len(pts) >= 5:
            self.line(pts[1:-1], dark, width, 0.5 * alpha, prot)
        self.line(pts + np.asarray(offset), light, width, 0.45 * alpha, prot)


def _col(v) -> tuple[int, int, int]:
    r, g, b = (int(x) for x in np.clip(v, 0, 255))
    return (r, g, b)


# ---------------------------------------------------------------------------------------------
# the face


def _check(intensities: Mapping[int, float]) -> dict[int, float]:
    out = dict.fromkeys(SYNTH_AUS, 0.0)
    for au, value in intensities.items():
        if au not in out:
            raise ValueError(f"AU{au} is not rendered by SynthAU (its AUs: {SYNTH_AUS})")
        v = float(value)
        if not 0.0 <= v <= 5.0:
            raise ValueError(f"AU{au} intensity {value} is outside [0, 5]")
        out[int(au)] = v / 5.0
    return out


# half circle of the head outline, from image right (phi = 0) through the chin or crown to the left
_HEAD_COS = np.cos(np.linspace(0, np.pi, 23))
_HEAD_SIN = np.sin(np.linspace(0, np.pi, 23))
_T_WIDEST = 0.42  # widest line of the head, fraction of the face height below the hairline

_Rows = TypeVar("_Rows", float, np.ndarray)


@dataclass(frozen=True, slots=True, eq=False)
class _Face:
    """One frame's face box, colours and the AU-moved landmarks that several regions share.

    Coordinates are canonical image fractions (x right, y down): ``W``/``H`` are the face box
    width and height, ``hw`` its half-width, ``cx`` its centre column and ``top`` its hairline
    row; ``t_*`` values are fractions of ``H`` below the hairline, which ``T`` turns into rows.
    """

    look: SubjectLook
    W: float
    H: float
    hw: float
    cx: float
    top: float
    skin: np.ndarray  # skin RGB as floats, for the shades derived from it
    hair: np.ndarray  # hair RGB as floats
    dark: _RGB  # furrow colour
    light: _RGB  # ridge and highlight colour
    jaw_drop: float  # chin drop of AU26
    t_mouth: float  # mouth line at rest
    t_brow: float  # brow centre line at rest
    eye_line: float  # row of the eye centres
    eye_x: tuple[float, float]  # centre columns of the image-left and image-right eye
    eye_half_width: float
    nose_base: float  # row of the nose base at rest
    nose_half_width: float  # flared by AU9 and AU10
    nose_lift: float  # rise of the nose base and wings by AU9 and AU10
    mouth_line: float  # row of the mouth line at rest
    mouth_half_width: float  # at rest
    corner_dx: float  # distance of the mouth corners from cx, moved by the lip AUs
    corner_y: float  # row of the mouth corners, moved by the lip AUs
    centre: np.ndarray  # (cx, T(0.5)): the centre the skin rims and the beard shrink towards

    def T(self, t: _Rows) -> _Rows:
        """Row of ``t``, a fraction of the face height below the hairline."""
        return self.top + t * self.H

    def jaw(self, p: np.ndarray) -> np.ndarray:
        """Move mandible points down with the jaw (AU26)."""
        if self.jaw_drop == 0:
            return p
        t = (p[:, 1] - self.top) / self.H
        u = (p[:, 0] - self.cx) / self.hw
        w = np.clip((t - (self.t_mouth - 0.05)) / 0.12, 0, 1)
        w = w * w * (3 - 2 * w) * np.clip(1.1 - 0.75 * u * u, 0.15, 1)
        return p + np.stack([np.zeros_like(w), self.jaw_drop * w], 1)


@dataclass(frozen=True, slots=True, eq=False)
class _HeadOutline:
    """The head contour: a jaw half and a crown half meeting at the widest line."""

    jaw_line: np.ndarray  # lower half, image right -> left, lowered by AU26; [11] is the chin
    crown_x: np.ndarray  # column offsets of the crown half from cx, shared by the hair cap
    polygon: np.ndarray  # jaw half then crown half: the whole contour


@dataclass(frozen=True, slots=True, eq=False)
class _Lips:
    """Rows of the lip edges at the columns ``x``, 17 samples from mouth corner to corner."""

    x: np.ndarray
    line: np.ndarray  # where the lips meet when the mouth is closed
    upper_top: np.ndarray  # upper edge of the upper lip
    upper_bottom: np.ndarray  # lower edge of the upper lip
    lower_top: np.ndarray  # upper edge of the lower lip
    lower_bottom: np.ndarray  # lower edge of the lower lip
    lower_thickness: float  # red margin of the lower lip at its middle


def _face_geometry(look: SubjectLook, au: Mapping[int, float]) -> _Face:
    """Shared landmarks: AU26 (jaw drop), AU9, AU10 (nose), AU10-AU24, AU26 (mouth corners)."""
    a9, a10, a12, a14, a15, a17 = au[9], au[10], au[12], au[14], au[15], au[17]
    a20, a23, a24, a26 = au[20], au[23], au[24], au[26]
    W, H = look.face_width, look.face_height
    hw, cx, top = W / 2, 0.5, 0.5 - H / 2
    skin = np.array(look.skin, float)
    t_mouth = look.eye_y + look.nose_length + look.philtrum
    mouth_line = top + t_mouth * H
    mw = look.mouth_width * hw
    corner_dx = mw * (
        1 + 0.16 * a12 - 0.085 * a14 + 0.03 * a15 + 0.22 * a20 - 0.05 * a23 - 0.08 * a24 - 0.1 * a26
    )
    corner_dy = H * (
        -0.044 * a12 - 0.004 * a14 + 0.03 * a15 + 0.006 * a20 + 0.01 * a17 - 0.003 * a10
    )
    return _Face(
        look=look,
        W=W,
        H=H,
        hw=hw,
        cx=cx,
        top=top,
        skin=skin,
        hair=np.array(look.hair, float),
        dark=_col(skin * 0.5),
        light=_col(skin * 1.1 + 22),
        jaw_drop=0.09 * H * a26,
        t_mouth=t_mouth,
        t_brow=look.eye_y - look.brow_height,
        eye_line=top + look.eye_y * H,
        eye_x=(cx - look.eye_spacing * hw, cx + look.eye_spacing * hw),
        eye_half_width=look.eye_size * hw,
        nose_base=top + (look.eye_y + look.nose_length) * H,
        nose_half_width=look.nose_width * hw * (1 + 0.14 * a9 + 0.07 * a10),
        nose_lift=H * (0.022 * a9 + 0.010 * a10),
        mouth_line=mouth_line,
        mouth_half_width=mw,
        corner_dx=corner_dx,
        corner_y=mouth_line + corner_dy,
        centre=np.array([cx, top + 0.5 * H]),
    )


def _head_outline(f: _Face) -> _HeadOutline:
    """Head contour, superellipse halves joined at the widest line: AU26 (jaw and chin drop)."""
    H, hw, cx, T, tm = f.H, f.hw, f.cx, f.T, _T_WIDEST
    cs, sn = _HEAD_COS, _HEAD_SIN
    p = f.look.jaw
    lx = hw * np.sign(cs) * np.abs(cs) ** (2 / p)
    ls = np.abs(sn) ** (2 / p)
    lower = _xy(cx + lx * (1 - 0.22 * ls**1.6), T(tm) + (1 - tm) * H * ls)  # right -> left
    ux = hw * np.sign(cs) * np.abs(cs) ** (2 / 2.2)
    upper = _xy(cx - ux, T(tm) - (tm + 0.45) * H * np.abs(sn) ** (2 / 2.2))  # left -> right
    lower = f.jaw(lower)
    return _HeadOutline(jaw_line=lower, crown_x=ux, polygon=np.concatenate([lower, upper]))


def _lip_shape(f: _Face, au: Mapping[int, float]) -> _Lips:
    """Lip edges: AU10, AU12, AU17, AU20, AU23, AU24, AU25, AU26 (plus the corners' AUs)."""
    a10, a12, a17, a20, a23, a24, a25 = au[10], au[12], au[17], au[20], au[23], au[24], au[25]
    H, corner_y, jaw_d = f.H, f.corner_y, f.jaw_drop
    sig = _lin(17)
    mx = f.cx + f.corner_dx * (2 * sig - 1)
    cyc = H * (-0.016 * a17 - 0.004 * a10 + 0.004 * a12)
    line = corner_y + (f.mouth_line + cyc - corner_y) * (4 * sig * (1 - sig)) ** 0.9
    thin = 1 - 0.4 * a23 - 0.48 * a24 - 0.15 * a20 - 0.1 * a12
    tu = f.look.lip_thickness * H * max(0.2, thin)
    tl = 1.3 * f.look.lip_thickness * H * max(0.2, thin + 0.15 * a17)
    gap = 0.022 * H * a25
    op = _sinp(sig, 0.7)
    op2 = _sinp(sig, 0.3)
    up_lo = line - (0.35 * gap + 0.012 * H * a10) * op
    lo_up = line + (0.65 * gap + jaw_d) * op
    bow = 0.22 * (np.exp(-(((sig - 0.38) / 0.07) ** 2)) + np.exp(-(((sig - 0.62) / 0.07) ** 2)))
    bow -= 0.3 * np.exp(-(((sig - 0.5) / 0.045) ** 2))
    up_hi = up_lo - tu * (_sinp(sig, 0.55) + bow * (1 + 1.5 * a10) * (1 - 0.5 * a20))
    up_hi -= 0.02 * H * a10 * np.exp(-(((sig - 0.5) / 0.2) ** 2))
    lo_lo = line + (0.65 * gap + jaw_d) * op2 + tl * _sinp(sig, 0.6)
    return _Lips(
        x=mx,
        line=line,
        upper_top=up_hi,
        upper_bottom=up_lo,
        lower_top=lo_up,
        lower_bottom=lo_lo,
        lower_thickness=tl,
    )


def _draw_back_hair_and_body(ops: _Ops, f: _Face) -> None:
    """Back hair, neck and clothing behind the head: no AU."""
    look, H, hw, cx, T = f.look, f.H, f.hw, f.cx, f.T
    cs, sn = _HEAD_COS, _HEAD_SIN
    hl = max(look.hair_length, 0.25)
    back = np.concatenate(
        [
            _xy(cx - 1.16 * hw * cs, T(0.3) - 0.85 * H * sn),
            _xy(
                cx + np.array([1.16, 1.12, 0.95, -0.95, -1.12, -1.16]) * hw,
                T(np.array([0.3, hl - 0.08, hl, hl, hl - 0.08, 0.3])),
            ),
        ]
    )
    ops.poly(back, look.hair)
    neck = _xy(cx + np.array([-0.5, 0.5, 0.62, -0.62]) * hw, np.array([T(0.7), T(0.7), 1.05, 1.05]))
    ops.poly(neck, _col(f.skin * 0.82))
    shirt_y = T(1.0) + np.array([0.03, 0.035, 0.06, 0.06, 0.035, 0.03, 0.3, 0.3])
    shirt = _xy(cx + np.array([-2.0, -1.0, -0.62, 0.62, 1.0, 2.0, 2.0, -2.0]) * hw, shirt_y)
    ops.poly(shirt, look.clothing)


def _draw_head(ops: _Ops, f: _Face, head: _HeadOutline) -> None:
    """Chin shadow, ears and face skin with a darker rim: AU26 (the chin drops with the jaw)."""
    W, H, hw, cx, skin, dark = f.W, f.H, f.hw, f.cx, f.skin, f.dark
    chin_y = float(head.jaw_line[11, 1])
    ops.poly(_ellipse(cx, chin_y - 0.01, 0.5 * hw, 0.04), dark, 0.3)
    ey = f.eye_line
    for s in (-1, 1):
        ear_x = cx + s * 0.97 * hw
        ops.poly(_ellipse(ear_x, ey + 0.07 * H, 0.075 * W, 0.11 * H), _col(skin * 0.9))
        ops.poly(_ellipse(ear_x + s * 0.03 * W, ey + 0.07 * H, 0.03 * W, 0.06 * H), dark, 0.35)
    centre, outline = f.centre, head.polygon
    ops.poly(outline, _col(skin * 0.86))
    ops.poly(centre + (outline - centre) * [0.965, 0.975], _col(skin * 0.94))
    ops.poly(centre + (outline - centre) * [0.92, 0.95], _col(skin))


def _draw_hair_cap(ops: _Ops, f: _Face, head: _HeadOutline) -> None:
    """Hair cap down to the hairline: no AU."""
    H, hw, cx, T, tm = f.H, f.hw, f.cx, f.T, _T_WIDEST
    hx = np.array([1.04, 1.0, 0.95, 0.86, 0.7, 0.45, 0.2, 0.0])
    ht = np.array([0.44, 0.34, 0.2, 0.09, 0.025, -0.005, -0.012, -0.01])
    hairline = _xy(cx + np.concatenate([hx, -hx[-2::-1]]) * hw, T(np.concatenate([ht, ht[-2::-1]])))
    crown = _xy(cx - 1.05 * head.crown_x, T(tm) - (tm + 0.5) * H * np.abs(_HEAD_SIN) ** 0.9)
    ops.poly(np.concatenate([crown, hairline]), f.look.hair)


def _draw_forehead(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Forehead lines: AU1 (central), AU2 (lateral), resting lines with age."""
    a1, a2 = au[1], au[2]
    look, H, hw, cx, T, dark, light = f.look, f.H, f.hw, f.cx, f.T, f.dark, f.light
    uu = _U7
    for k in range(3):
        tk = f.t_brow - look.brow_thickness - 0.05 - 0.045 * k
        if tk < 0.03:
            continue
        wave = 0.004 * H * np.sin(3 * uu + k)
        if look.age > 0.05:
            rest = _xy(cx + 0.62 * hw * uu, T(tk) + wave)
            ops.wrinkle(rest, dark, light, 0.22 * look.age * (1 - 0.3 * k), 0.008)
        if a1 > 0:
            y1 = T(tk - 0.025 * a1) - 0.012 * H * (1 - uu**2) + wave
            ops.wrinkle(_xy(cx + 0.32 * hw * uu, y1), dark, light, a1 * (0.7, 0.6, 0.45)[k], 0.009)
        if a2 > 0:
            y2 = T(tk - 0.022 * a2 + 0.002) - 0.018 * H * _ARCH6
            for s in (-1, 1):
                lateral = _xy(cx + s * _UL6 * hw, y2)
                ops.wrinkle(lateral, dark, light, a2 * (0.65, 0.55, 0.4)[k], 0.009)


def _draw_glabella(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Glabella: AU4 (vertical furrows, bunching); nose-root line: AU4, AU9."""
    a4, a9 = au[4], au[9]
    W, H, cx, T, t_brow, dark, light = f.W, f.H, f.cx, f.T, f.t_brow, f.dark, f.light
    if a4 > 0:
        for s in (-1, 1):
            g = _quad(
                (cx + s * 0.05 * W, T(t_brow + 0.03)),
                (cx + s * 0.042 * W, T(t_brow - 0.02)),
                (cx + s * 0.06 * W, T(t_brow - 0.075)),
                5,
            )
            ops.wrinkle(g, dark, light, 0.8 * a4, 0.01, (s * 0.004, 0.0))
        ops.poly(_ellipse(cx, T(t_brow + 0.01), 0.05 * W, 0.025 * H), dark, 0.12 * a4)
    if a4 > 0 or a9 > 0:
        root = _xy(cx + 0.05 * W * _U5, T(f.look.eye_y - 0.01))
        ops.wrinkle(root, dark, light, 0.45 * a4 + 0.3 * a9, 0.008)


def _draw_nose_wrinkles(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Nose bridge and side wrinkles: AU9."""
    a9 = au[9]
    if a9 <= 0:
        return
    W, H, cx, T, t_eye, dark, light = f.W, f.H, f.cx, f.T, f.look.eye_y, f.dark, f.light
    for k in range(3):
        xs = cx + _U5 * (0.05 + 0.012 * k) * W
        ys = T(t_eye + 0.035 + 0.026 * k) - 0.3 * f.nose_lift + 0.4 * H * ((xs - cx) / W) ** 2
        ops.wrinkle(_xy(xs, ys), dark, light, a9 * (0.75, 0.7, 0.55)[k], 0.009, prot=0.15)
    for s in (-1, 1):
        side = _quad(
            (cx + s * 0.065 * W, T(t_eye + 0.06)),
            (cx + s * 0.095 * W, T(t_eye + 0.08)),
            (cx + s * 0.12 * W, T(t_eye + 0.115)),
            5,
        )
        ops.wrinkle(side, dark, light, 0.55 * a9, 0.008, (s * 0.003, 0.003), prot=0.1)


def _draw_cheeks(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Eye sockets, cheeks, lower-lid furrows and crow's feet: AU6, AU12 (and AU10's lift)."""
    a6, a10, a12 = au[6], au[10], au[12]
    look, H, ey, a_eye, dark, light = f.look, f.H, f.eye_line, f.eye_half_width, f.dark, f.light
    blush = _col(f.skin * 0.7 + np.array([230, 90, 90]) * 0.3)
    cheek_lift = H * (0.03 * a6 + 0.02 * a12 + 0.006 * a10)
    hi = 0.3 * a6 + 0.2 * a12
    crow = 0.75 * a6 + 0.12 * look.age
    for s, ex in zip((-1, 1), f.eye_x, strict=True):
        ops.poly(_ellipse(ex, ey - 0.45 * a_eye, 1.15 * a_eye, 0.75 * a_eye), dark, 0.1)
        chx, chy = ex + s * 0.25 * a_eye, ey + 1.9 * a_eye - cheek_lift
        ops.poly(_ellipse(chx, chy, 1.2 * a_eye, 0.75 * a_eye, 16), blush, 0.35 * look.blush)
        if hi > 0:
            for k in range(3):
                scale = 1 - 0.28 * k
                cheek = _ellipse(chx, chy - 0.35 * a_eye, scale * a_eye, scale * 0.55 * a_eye, 14)
                ops.poly(cheek, light, 0.5 * hi)
        fur = _quad(
            (ex - s * 0.7 * a_eye, ey + 0.6 * a_eye),
            (ex + s * 0.1 * a_eye, ey + 1.25 * a_eye - 0.5 * cheek_lift),
            (ex + s * 1.0 * a_eye, ey + 0.75 * a_eye - 0.5 * cheek_lift),
            6,
        )
        ops.wrinkle(fur, dark, light, 0.75 * a6 + 0.18 * look.age, 0.009)
        if a6 > 0:
            under = _quad(
                (chx - 1.0 * a_eye, chy + 0.1 * a_eye),
                (chx, chy + 0.75 * a_eye),
                (chx + 1.0 * a_eye, chy + 0.1 * a_eye),
                6,
            )
            ops.wrinkle(under, dark, light, 0.35 * a6, 0.012, (0.0, -0.005))
        if crow > 0.012:
            oc = np.array([ex + s * 1.12 * a_eye, ey - look.eye_tilt * a_eye])
            for ang in (-0.5, -0.05, 0.4):
                d = np.array([s * math.cos(ang), math.sin(ang)])
                pts = oc + np.outer(_CROW, d) * a_eye * 1.1
                pts[2:, 1] += 0.06 * a_eye * math.copysign(1.0, ang)
                ops.wrinkle(pts, dark, light, crow, 0.008, (0.0, 0.003))


def _draw_nasolabial(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Nasolabial folds: AU12, AU10, AU9, AU6; dimples: AU14; mouth-corner furrows: AU15."""
    a6, a9, a10, a12, a14, a15 = au[6], au[9], au[10], au[12], au[14], au[15]
    look, W, H, cx, dark, light = f.look, f.W, f.H, f.cx, f.dark, f.light
    nw, nb, c_dx, corner_y = f.nose_half_width, f.nose_base, f.corner_dx, f.corner_y
    nl_alpha = min(0.95, 0.1 + 0.22 * look.age + 0.6 * a12 + 0.55 * a10 + 0.3 * a9 + 0.15 * a6)
    for s in (-1, 1):
        p0 = np.array([cx + s * (nw + 0.012 * W), nb - 0.035 * H - 0.8 * f.nose_lift])
        p2 = np.array([cx + s * (c_dx + 0.05 * W), corner_y + 0.035 * H])
        p1 = (p0 + p2) / 2 + [s * (0.05 + 0.03 * a12) * W, -0.01 * H]
        ops.wrinkle(_quad(p0, p1, p2, 7), dark, light, nl_alpha, 0.011, (s * 0.005, -0.002), 0.05)
        if a12 > 0 or a10 > 0:
            for k in range(2):
                scale = 1 - 0.4 * k
                bx_, by_ = p1[0] + s * 0.04 * W, p1[1] - 0.01 * H
                bulge = _ellipse(bx_, by_, scale * 0.05 * W, scale * 0.05 * H, 12)
                ops.poly(bulge, light, 0.15 * a12 + 0.1 * a10)
        if a14 > 0:
            dx_ = cx + s * (c_dx + 0.03 * W)
            dimple = _quad(
                (dx_, corner_y - 0.025 * H),
                (dx_ + s * 0.012 * W, corner_y),
                (dx_ + s * 0.002 * W, corner_y + 0.022 * H),
                5,
            )
            ops.wrinkle(dimple, dark, light, 0.8 * a14, 0.009, (s * 0.004, 0.0))
            pit = _ellipse(dx_ + s * 0.006 * W, corner_y, 0.008 * W, 0.01 * H, 8)
            ops.poly(pit, dark, 0.4 * a14)
        if a15 > 0 or look.age > 0.12:
            down = _quad(
                (cx + s * (c_dx + 0.005 * W), corner_y + 0.01 * H),
                (cx + s * (c_dx + 0.02 * W), corner_y + 0.03 * H),
                (cx + s * (c_dx + 0.02 * W), corner_y + 0.06 * H),
                5,
            )
            alpha = 0.55 * a15 + 0.1 * look.age
            ops.wrinkle(f.jaw(down), dark, light, alpha, 0.009, (s * 0.004, 0.0))


def _draw_chin(ops: _Ops, f: _Face, lips: _Lips, au: Mapping[int, float]) -> None:
    """Lip-pressor bulges: AU24; mentolabial sulcus: AU17, AU15; chin boss and crease: AU17."""
    a15, a17, a24 = au[15], au[17], au[24]
    H, cx, mw, dark, light = f.H, f.cx, f.mouth_half_width, f.dark, f.light
    mx, up_hi, lo_lo = lips.x, lips.upper_top, lips.lower_bottom
    if a24 > 0:
        above = _xy(mx[3:-3], up_hi[3:-3] - 0.012 * H)
        ops.wrinkle(above, light, dark, 0.5 * a24, 0.01, (0, 0.004))
        ops.wrinkle(_xy(mx[3:-3], lo_lo[3:-3] + 0.012 * H), dark, light, 0.45 * a24, 0.01)
    sul_y = float(lo_lo[8]) + (0.03 - 0.008 * a17) * H
    sx = _SX7
    sul = _xy(cx + sx * mw, sul_y - 0.012 * H * sx**2 / 0.3)
    ops.wrinkle(sul, dark, light, 0.2 + 0.5 * a17 + 0.1 * a15, 0.011, (0, 0.005))
    if a17 > 0:
        boss_y = f.T(0.9) + f.jaw_drop - 0.015 * H * a17
        ops.poly(_ellipse(cx, boss_y, 0.5 * mw, 0.05 * H, 16), light, 0.35 * a17)
        for px, py in _STIPPLE:
            pt = (cx + px * 0.6 * mw, boss_y + py * 0.045 * H)
            ops.poly(_ellipse(*pt, 0.005, 0.004, 6), dark, 0.25 * a17)
        crease = _xy(cx + sx * 0.8 * mw, boss_y + 0.055 * H + 0.01 * H * sx**2 / 0.3)
        ops.wrinkle(crease, dark, light, 0.4 * a17, 0.009)


def _draw_eyes(ops: _Ops, f: _Face, au: Mapping[int, float], gaze: float) -> None:
    """Eyes and lids: AU5 (raised lid), AU6, AU7 (narrowed), AU4, AU9 (lowered); gaze."""
    a4, a5, a6, a7, a9 = au[4], au[5], au[6], au[7], au[9]
    look, ey, a_eye, dark, light = f.look, f.eye_line, f.eye_half_width, f.dark, f.light
    esig = _lin(13)
    hu = a_eye * (0.36 + 0.36 * a5 - 0.05 * a7 - 0.05 * a6 - 0.08 * a4)
    hlow = a_eye * (0.3 - 0.15 * a7 - 0.14 * a6 - 0.03 * a9)
    crease_h = a_eye * (0.72 + 0.1 * a5 - 0.14 * a4 - 0.06 * a7 - 0.05 * a9)
    sclera = (236, 232, 226)
    for s, ex in zip((-1, 1), f.eye_x, strict=True):
        xs = ex + s * a_eye * (2 * esig - 1)
        base = ey - look.eye_tilt * a_eye * esig
        up = base - hu * _sinp(esig, 0.85)
        lo = base + hlow * _sinp(esig**0.85, 1.0)
        crease = base - crease_h * _sinp(esig, 0.7)
        ops.poly(_band(xs[1:-1], crease[1:-1], up[1:-1]), dark, 0.14 + 0.06 * look.age)
        ops.poly(_band(xs, up, lo), sclera, prot=-0.05)
        icx = ex + gaze * 0.42 * a_eye
        icy = ey - 0.5 * look.eye_tilt * a_eye + 0.04 * a_eye
        r = 0.4 * a_eye
        ops.poly(_clip_disc(icx, icy, r, xs, up, lo), look.iris, prot=-0.05)
        ops.poly(_clip_disc(icx, icy, 0.5 * r, xs, up, lo, 8), (14, 10, 10), prot=-0.05)
        ops.poly(
            _clip_disc(icx + 0.3 * r, icy - 0.35 * r, 0.17 * r, xs, up, lo, 6), (250,) * 3, 0.85
        )
        shade = _xy(xs[1:-1], up[1:-1] + 0.12 * a_eye * _sinp(esig[1:-1], 1))
        ops.poly(_band(xs[1:-1], up[1:-1], shade[:, 1]), (90, 70, 70), 0.25)
        ops.line(_xy(xs[2:-1], crease[2:-1]), dark, 0.007, 0.45 + 0.15 * look.age)
        lash = np.concatenate([_xy(xs, up), [[xs[-1] + s * 0.18 * a_eye, up[-1] - 0.12 * a_eye]]])
        ops.line(lash, (28, 20, 18), 0.013, 0.95)
        ops.line(_xy(xs[1:], lo[1:]), dark, 0.007, 0.5)
        bag = _xy(xs[2:-1], lo[2:-1] + (0.22 - 0.04 * a7) * a_eye * _sinp(esig[2:-1], 0.5))
        ops.wrinkle(bag, dark, light, 0.4 * a7 + 0.15 * look.age, 0.007)


def _draw_brows(ops: _Ops, f: _Face, au: Mapping[int, float]) -> None:
    """Brows: AU1, AU2, AU4 (and AU9's inner-brow pull, AU6's outer-brow lowering)."""
    a1, a2, a4, a6, a9 = au[1], au[2], au[4], au[6], au[9]
    look, W, H, a_eye = f.look, f.W, f.H, f.eye_half_width
    bsig = _lin(9)
    for s, ex in zip((-1, 1), f.eye_x, strict=True):
        bx = ex + s * a_eye * (-0.95 + 2.3 * bsig)
        yc = f.T(f.t_brow) - look.brow_arch * H * _sinp(bsig**0.75, 1) + 0.01 * H * bsig**2
        dy = H * (
            -0.05 * a1 * (1 - bsig) ** 1.3
            - 0.045 * a2 * bsig**1.2
            + 0.026 * a4 * (1 - 0.5 * bsig)
            + 0.016 * a9 * (1 - bsig) ** 2
            + 0.008 * a6 * bsig
        )
        dx = -s * W * (0.03 * a4 * (1 - bsig) ** 1.5 + 0.008 * a9 * (1 - bsig))
        th = look.brow_thickness * H * (1.05 - 0.55 * bsig**1.3) * (1 + 0.3 * a4 * (1 - bsig))
        ops.poly(_band(bx + dx, yc + dy - th / 2, yc + dy + th / 2), look.brow_color, 0.94, 0.02)


def _draw_nose(ops: _Ops, f: _Face, lips: _Lips) -> None:
    """Nose bridge, tip, wings, nostrils and philtrum: AU9, AU10 (flared and lifted)."""
    W, H, cx, ey, dark, light = f.W, f.H, f.cx, f.eye_line, f.dark, f.light
    nb, nw, n_lift = f.nose_base, f.nose_half_width, f.nose_lift
    for s in (-1, 1):
        bridge = _quad(
            (cx + s * 0.05 * W, ey - 0.01 * H),
            (cx + s * 0.045 * W, ey + 0.1 * H),
            (cx + s * 0.6 * nw, nb - 0.06 * H - 0.5 * n_lift),
            5,
        )
        ops.line(bridge, dark, 0.013, 0.28 if s < 0 else 0.12, 0.15)
    ops.poly(_ellipse(cx, nb - 0.05 * H - 0.6 * n_lift, 0.3 * nw, 0.025 * H, 12), light, 0.4, 0.3)
    ops.poly(_ellipse(cx, nb + 0.004 * H - n_lift, 0.65 * nw, 0.013 * H, 14), dark, 0.35, 0.25)
    for s in (-1, 1):
        ala = _quad(
            (cx + s * 0.55 * nw, nb - 0.055 * H - n_lift),
            (cx + s * 1.2 * nw, nb - 0.035 * H - n_lift),
            (cx + s * 0.75 * nw, nb + 0.003 * H - n_lift),
            7,
        )
        ops.poly(ala, dark, 0.12, 0.15)
        ops.line(ala, dark, 0.011, 0.65, 0.15)
        nost = _ellipse(
            cx + s * 0.37 * nw, nb - 0.005 * H - n_lift, 0.2 * nw, 0.011 * H, 10, s * 0.3
        )
        ops.poly(nost, _col(f.skin * 0.28), 0.9, 0.2)
    philtrum_bottom = float(lips.upper_top[7])
    for s in (-1, 1):
        ridge = _xy(
            np.array([cx + s * 0.02 * W, cx + s * 0.026 * W]), np.array([nb, philtrum_bottom])
        )
        ops.line(ridge, dark, 0.008, 0.12, 0.1)


def _draw_beard(ops: _Ops, f: _Face, head: _HeadOutline) -> None:
    """Beard over the jaw, chin and upper lip: AU26 (it follows the dropped jaw)."""
    look, H, hw, cx, T, centre = f.look, f.H, f.hw, f.cx, f.T, f.centre
    lower = head.jaw_line
    side = lower[lower[:, 1] >= T(0.5)]
    ratio = 1.1 * f.nose_half_width / hw
    inner = _xy(
        cx + np.array([-0.95, -0.75, -ratio, 0, ratio, 0.75, 0.95]) * hw,
        f.nose_base + H * np.array([0.0, 0.03, 0.012, 0.02, 0.012, 0.03, 0.0]),
    )
    inner[[0, -1], 1] = T(0.5)
    region = np.concatenate([side, inner])
    ops.poly(region, _col(f.hair * 0.9), 0.55 * look.beard)
    inner2 = centre + (region - centre) * [0.9, 0.97] + [0, 0.01 * H]
    ops.poly(inner2, _col(f.hair * 0.8), 0.4 * look.beard)


def _draw_mouth(ops: _Ops, f: _Face, lips: _Lips, au: Mapping[int, float]) -> None:
    """Lips, mouth opening and teeth: AU10-AU26 through the lip shape; AU14 darkens the corners."""
    a14 = au[14]
    look, W, H, cx, dark, light = f.look, f.W, f.H, f.cx, f.dark, f.light
    mx, up_hi, up_lo = lips.x, lips.upper_top, lips.upper_bottom
    lo_up, lo_lo, tl = lips.lower_top, lips.lower_bottom, lips.lower_thickness
    lip = np.array(look.lip, float)
    ops.poly(_band(mx, up_hi, up_lo), _col(lip * 0.88), prot=0.1)
    ops.poly(_band(mx, lo_up, lo_lo), look.lip, prot=0.1)
    ops.line(_xy(mx, lips.line), _col(lip * 0.4), 0.008, 0.85, 0.1)
    if float(np.max(lo_up - up_lo)) > 0.001:
        ops.poly(_band(mx, up_lo, lo_up), (52, 16, 20), prot=0.1)
        tsig = slice(4, 13)
        opening = (lo_up - up_lo)[tsig]
        t_top = up_lo[tsig] + 0.004 * H
        t_bot = np.minimum(up_lo[tsig] + 0.026 * H, lo_up[tsig] - 0.006 * H - 0.35 * opening)
        keep = t_bot > t_top + 1e-4
        if keep.sum() >= 2:
            ops.poly(_band(mx[tsig][keep], t_top[keep], t_bot[keep]), (236, 230, 214), 1, 0.1)
        b_top = np.maximum(lo_up[tsig] - 0.016 * H, up_lo[tsig] + 0.03 * H)
        keep = b_top < lo_up[tsig] - 1e-4
        if keep.sum() >= 2:
            ops.poly(_band(mx[tsig][keep], b_top[keep], lo_up[tsig][keep]), (214, 206, 190), 1, 0.1)
    sheen_y = float(lo_up[8] + 0.45 * (lo_lo[8] - lo_up[8]))  # highlight on the lower lip
    ops.poly(_ellipse(cx, sheen_y, 0.3 * f.mouth_half_width, 0.25 * tl), light, 0.25)
    for s in (-1, 1):
        corner = _ellipse(cx + s * f.corner_dx, f.corner_y, 0.012 * W, 0.008 * H, 8)
        ops.poly(corner, dark, 0.35 + 0.3 * a14)


def _draw_fringe(ops: _Ops, f: _Face) -> None:
    """Fringe over the forehead: no AU (it hides AU1, AU2 and AU4 wrinkles)."""
    look, hw, cx, T = f.look, f.hw, f.cx, f.T
    fu = np.linspace(0.95, -0.95, 19)
    depth = look.fringe * (f.t_brow - look.brow_thickness)
    edge = (
        depth * (1 - 0.6 * np.clip(np.abs(fu) - 0.45, 0, None) / 0.5) + 0.04 * look.fringe_side * fu
    )
    edge -= 0.03 * (np.arange(19) % 2) + 0.012 * np.sin(5 * fu + look.fringe_phase)
    hx2 = np.linspace(-0.95, 0.95, 9)
    fr = np.concatenate([_xy(cx + hx2 * hw, T(-0.05) + 0 * hx2), _xy(cx + fu * hw, T(edge))])
    ops.poly(fr, look.hair)
    for k in range(1, 19, 3):
        strand = _xy(
            np.array([cx + fu[k] * 0.8 * hw, cx + fu[k] * hw]), T(np.array([0.0, edge[k]]))
        )
        ops.line(strand, _col(f.hair * 0.6), 0.008, 0.5)


def _draw_glasses(ops: _Ops, f: _Face) -> None:
    """Glasses frames, lenses, glare and temples: no AU (they partly hide the eyes)."""
    look, hw, cx, ey, a_eye = f.look, f.hw, f.cx, f.eye_line, f.eye_half_width
    gc = look.glasses_color
    gw = look.glasses_weight
    c, sn2 = _circle(24)
    for s, ex in zip((-1, 1), f.eye_x, strict=True):
        fx = ex + 1.45 * a_eye * np.sign(c) * np.abs(c) ** 0.6
        fy = ey + 0.12 * a_eye + 0.95 * a_eye * np.sign(sn2) * np.abs(sn2) ** 0.6
        frame = _xy(fx, fy)
        ops.poly(frame, (255, 255, 255), 0.08, 0.2)
        ops.line(np.concatenate([frame, frame[:1]]), gc, gw, 0.95, 0.2)
        glare = _xy(ex + s * a_eye * np.array([0.6, 1.05]), ey - a_eye * np.array([0.2, 0.65]))
        ops.line(glare, (255, 255, 255), 0.012, 0.3, 0.2)
        temple = _xy(
            np.array([ex + s * 1.45 * a_eye, cx + s * 0.99 * hw]),
            np.array([ey - 0.3 * a_eye, ey - 0.2 * a_eye]),
        )
        ops.line(temple, gc, gw, 0.95, 0.1)
    gi = f.eye_x[0] + 1.45 * a_eye
    bridge = _quad(
        (gi, ey - 0.15 * a_eye), (cx, ey - 0.45 * a_eye), (2 * cx - gi, ey - 0.15 * a_eye), 5
    )
    ops.line(bridge, gc, gw, 0.95, 0.25)


def _draw_hand(ops: _Ops, f: _Face, hand: float) -> None:
    """Hand raised over the lower face: no AU (it hides the mouth and chin)."""
    W, H, cx, T, skin = f.W, f.H, f.cx, f.T, f.skin
    h = min(hand, 1.0)
    y_tip = T(1.15) - h * (T(1.15) - (f.nose_base + 0.012 * H))
    hand_c = _col(skin * np.array([1.03, 0.96, 0.93]) + 4)
    ops.poly(_ellipse(cx + 0.14 * W, y_tip + 0.42 * H, 0.3 * W, 0.26 * H, 20, -0.35), hand_c)
    fingers = []
    for k, off in enumerate((0.05, 0.0, 0.015, 0.06)):
        bx_ = cx - 0.12 * W + k * 0.088 * W
        tip = (bx_ - 0.03 * W, y_tip + off * H)
        fingers.append(_xy(np.array([bx_ + 0.02 * W, tip[0]]), np.array([y_tip + 0.3 * H, tip[1]])))
    for finger in fingers:
        ops.line(finger, _col(skin * 0.62), 0.085 * W)
    for finger in fingers:
        ops.line(finger, hand_c, 0.075 * W)
        ops.poly(_ellipse(finger[1, 0], finger[1, 1], 0.037 * W, 0.02 * H, 12), hand_c)
        ops.poly(
            _ellipse(finger[1, 0], finger[1, 1] + 0.01 * H, 0.02 * W, 0.014 * H, 8), f.light, 0.5
        )
    thumb = _xy(
        np.array([cx + 0.3 * W, cx + 0.24 * W]), np.array([y_tip + 0.38 * H, y_tip + 0.2 * H])
    )
    ops.line(thumb, _col(skin * 0.62), 0.09 * W)
    ops.line(thumb, hand_c, 0.08 * W)


def _build(look: SubjectLook, au: dict[int, float], nz: Nuisance) -> _Ops:
    """The display list of one frame, in drawing order (see the module docstring)."""
    face = _face_geometry(look, au)
    head = _head_outline(face)
    lips = _lip_shape(face, au)
    ops = _Ops()
    _draw_back_hair_and_body(ops, face)
    _draw_head(ops, face, head)
    _draw_hair_cap(ops, face, head)
    _draw_forehead(ops, face, au)
    _draw_glabella(ops, face, au)
    _draw_nose_wrinkles(ops, face, au)
    _draw_cheeks(ops, face, au)
    _draw_nasolabial(ops, face, au)
    _draw_chin(ops, face, lips, au)
    _draw_eyes(ops, face, au, nz.gaze)
    _draw_brows(ops, face, au)
    _draw_nose(ops, face, lips)
    if look.beard > 0:
        _draw_beard(ops, face, head)
    _draw_mouth(ops, face, lips, au)
    if look.fringe > 0:
        _draw_fringe(ops, face)
    if look.glasses:
        _draw_glasses(ops, face)
    if nz.hand > 0:
        _draw_hand(ops, face, nz.hand)
    return ops


def _pose(pts: np.ndarray, prot: np.ndarray, look: SubjectLook, nz: Nuisance) -> np.ndarray:
    """Yaw/pitch as a depth-weighted shift, then roll, scale and translation about the centre."""
    x, y = pts[:, 0], pts[:, 1]
    hw, H = look.face_width / 2, look.face_height
    if nz.yaw or nz.pitch:
        u = (x - 0.5) / hw
        v = (y - 0.5 + 0.05 * H) / (0.95 * H)
        z = np.sqrt(np.clip(1 - u * u, 0, None) * np.clip(1 - v * v, 0, None)) + prot
        x = x + nz.yaw * 0.5 * hw * z
        y = y + nz.pitch * 0.5 * (H / 2) * z
    th = math.radians(nz.rotation)
    c, s = math.cos(th) * nz.scale, math.sin(th) * nz.scale
    x0, y0 = x - 0.5, y - 0.5
    return np.stack([0.5 + nz.dx + c * x0 + s * y0, 0.5 + nz.dy - s * x0 + c * y0], 1)


def _rasterise(ops: _Ops, look: SubjectLook, nz: Nuisance, S: int) -> Image.Image:
    items = ops.items
    lens = [len(it[1]) for it in items]
    pts = np.concatenate([it[1] for it in items])
    prot = np.repeat(np.array([it[4] for it in items]), lens)
    flat = (_pose(pts, prot, look, nz) * S).ravel().tolist()
    img = Image.new("RGB", (S, S), look.background)
    draw = ImageDraw.Draw(img, "RGBA")
    px = S * nz.scale
    k = 0
    for (kind, _, color, width, _), n in zip(items, lens, strict=True):
        seg = flat[2 * k : 2 * (k + n)]
        k += n
        if kind == 0:
            draw.polygon(seg, fill=color)
        else:
            draw.line(seg, fill=color, width=max(1, round(width * px)))
    return img


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return g[None, :, None], g[:, None, None]


def render_face(
    look: SubjectLook,
    intensities: Mapping[int, float],
    nuisance: Nuisance = Nuisance(),
    size: int = 112,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render one frame: a ``(size, size, 3)`` uint8 RGB image of ``look`` showing the AUs.

    ``intensities`` maps AU numbers of ``SYNTH_AUS`` to 0..5 (missing AUs are 0); an unknown
    AU or a value outside [0, 5] raises ``ValueError``. Sensor noise is drawn from ``rng``,
    which is required when ``nuisance.noise > 0``; everything else is deterministic, so equal
    inputs and equal ``rng`` states give identical pixels.
    """
    aus = _check(intensities)
    if size < 16:
        raise ValueError(f"size={size} must be at least 16")
    if nuisance.noise < 0 or nuisance.blur < 0:
        raise ValueError(f"noise ({nuisance.noise}) and blur ({nuisance.blur}) must be >= 0")
    if nuisance.noise > 0 and rng is None:
        raise ValueError(f"nuisance.noise={nuisance.noise} needs an rng")
    img = _rasterise(_build(look, aus, nuisance), look, nuisance, size * _SS)
    img = img.reduce(_SS)  # area average of _SS x _SS samples: the antialiasing resolve
    if nuisance.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(nuisance.blur))
    if not (nuisance.light_strength or nuisance.noise):
        return np.array(img)
    arr = np.asarray(img, dtype=np.float32)
    if nuisance.light_strength:
        gx, gy = _grid(size)
        ca, sa = math.cos(nuisance.light_angle), math.sin(nuisance.light_angle)
        arr *= 1 + 2 * nuisance.light_strength * (gx * ca + gy * sa)
    if nuisance.noise > 0:
        assert rng is not None
        noise = rng.standard_normal(arr.shape, dtype=np.float32)
        noise *= nuisance.noise
        arr += noise
    arr += 0.5
    np.clip(arr, 0, 255, out=arr)
    return arr.astype(np.uint8)
