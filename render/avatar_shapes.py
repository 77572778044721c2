"""The 52 ARKit blendshapes of the built-in avatar as smooth displacement fields.

Each shape is a function of the rest positions and a few per-vertex tags (which part a
vertex belongs to, whether it is on the lower-jaw side of the mouth slit, where it sits on
an eyelid). Left/right pairs are one function with `side` = +1 (avatar's left, +X) or -1.
Eyelids are re-evaluated on their spherical parametrisation so a blink ends exactly closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import avatar_parts as ap
from .avatar_mesh import gauss, smoothstep
from .vocabulary import ARKIT_NAMES

JAW_OPEN_RAD = 0.30


@dataclass
class Rig:
    """Rest geometry plus the tags the shape functions select on."""

    positions: np.ndarray  # [V,3] float64
    normals: np.ndarray  # [V,3]
    part: np.ndarray  # [V] int, index into part_names
    part_names: list[str]
    lip_edge_lower: np.ndarray  # [V] bool: the lower lip's edge at the mouth slit
    below_mouth: np.ndarray  # [V] bool: skin on the lower-jaw side of the mouth slit
    lid_u: np.ndarray  # [V] lid parameter across the eye (NaN off the lids)
    lid_v: np.ndarray  # [V] lid parameter from under the skin (0) to the edge (1)
    lm: ap.Landmarks

    def mask(self, *names: str) -> np.ndarray:
        ids = [self.part_names.index(n) for n in names if n in self.part_names]
        return np.isin(self.part, ids)


def _lip_open(x: np.ndarray) -> np.ndarray:
    """How far the lower lip can part at x: 1 in the middle, 0 at the corners."""
    return np.sqrt(np.clip(1.0 - (x / ap.MOUTH_HALF_W) ** 2, 0.0, 1.0))


def _side_weight(x: np.ndarray, side: float) -> np.ndarray:
    """Soft half-face selector: 1 on the `side` half, 0.5 on the midline, 0 on the other."""
    return smoothstep(-0.006, 0.006, side * x)


class Shapes:
    """Computes each ARKit target as a dense [V,3] displacement."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        p = rig.positions
        self.x, self.y, self.z = p[:, 0], p[:, 1], p[:, 2]
        self.face = rig.mask("head", "brow_l", "brow_r")
        self.front = self.face & (self.z > rig.lm.mouth[2] - 0.045)
        self.line = ap.mouth_line(self.x)
        self.below = self.face & rig.below_mouth
        self.d_below = np.where(rig.lip_edge_lower, 0.0, np.maximum(self.line - self.y, 0.0))
        self.upper = self.face & ~self.below
        self.jaw = self._jaw_weight()

    def _jaw_weight(self) -> np.ndarray:
        """How rigidly each vertex follows the lower jaw (0..1)."""
        rig, x, y, z = self.rig, self.x, self.y, self.z
        lip = _lip_open(x) ** 0.8
        reach = 0.002 + 0.028 * np.minimum(np.abs(x) / ap.MOUTH_HALF_W, 2.2) ** 2
        below = lip + (1 - lip) * smoothstep(0.0, 1.0, self.d_below / reach)
        fade = smoothstep(rig.lm.jaw_hinge[2] + 0.02, rig.lm.jaw_hinge[2] + 0.06, z)
        w = np.where(self.below, below * fade, 0.0)
        w[rig.mask("teeth_lower")] = 1.0
        w[rig.mask("tongue")] = 0.6  # lags the jaw so it shows in an open mouth
        bag = rig.mask("mouth_inner")
        w[bag] = smoothstep(rig.lm.mouth[1] - 0.004, rig.lm.mouth[1] - 0.016, y[bag])
        return w

    # ---- building blocks -------------------------------------------------------------

    def _lips(self, wx: float = 1.3, wy: float = 0.011) -> np.ndarray:
        x, y = self.x, self.y
        return self.face * gauss((x / (ap.MOUTH_HALF_W * wx)) ** 2 + ((y - self.line) / wy) ** 2)

    def _corner(self, side: float, rx: float = 0.015, ry: float = 0.013) -> np.ndarray:
        x, y = self.x, self.y
        cx = side * ap.MOUTH_HALF_W
        return self.front * gauss(((x - cx) / rx) ** 2 + ((y - ap.MOUTH_Y) / ry) ** 2)

    def _rotate_jaw(self, angle: np.ndarray) -> np.ndarray:
        h = self.rig.lm.jaw_hinge
        q = self.rig.positions - h
        c, s = np.cos(angle), np.sin(angle)
        out = np.zeros_like(q)
        out[:, 1] = q[:, 1] * c - q[:, 2] * s - q[:, 1]
        out[:, 2] = q[:, 1] * s + q[:, 2] * c - q[:, 2]
        return out

    def _lids(
        self,
        side: float,
        upper: float | None = None,
        lower: float | None = None,
        shift: float = 0.0,
    ) -> np.ndarray:
        """Move one eye's lids to new middle-edge elevations (and an azimuth shift)."""
        rig = self.rig
        out = np.zeros_like(rig.positions)
        tag = "l" if side > 0 else "r"
        center = rig.lm.eye_left
        lids = (
            ("upper", ap.UPPER_LID_R, ap.LID_TOP, ap.upper_edge, ap.UPPER_OPEN, upper),
            ("lower", ap.LOWER_LID_R, ap.LID_BOTTOM, ap.lower_edge, ap.LOWER_OPEN, lower),
        )
        for which, radius, far, edge_fn, rest, new in lids:
            name = f"lid_{which}_{tag}"
            m = rig.mask(name)
            u, v = rig.lid_u[m], rig.lid_v[m]
            target = rest if new is None else new
            p = ap.lid_points(center, radius * ap.EYE_R, u, v, far, edge_fn(u, target), shift)
            p[:, 0] *= side
            out[m] = p - rig.positions[m]
        return out

    def _eyeball_turn(self, side: float, pitch: float, yaw: float) -> np.ndarray:
        """Small rotation of one eyeball about its centre (left-eye frame, mirrored)."""
        rig = self.rig
        tag = "l" if side > 0 else "r"
        m = rig.mask(f"eyeball_{tag}", f"highlight_{tag}")
        c = rig.lm.eye_left * np.array([side, 1.0, 1.0])
        q = (rig.positions[m] - c) * np.array([side, 1.0, 1.0])
        cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r = (q @ (ry @ rx).T) * np.array([side, 1.0, 1.0])
        out = np.zeros_like(rig.positions)
        out[m] = r + c - rig.positions[m]
        return out

    def _vec(self, w: np.ndarray, d: tuple[float, float, float]) -> np.ndarray:
        return w[:, None] * np.asarray(d)[None]

    def _slide(self, delta: np.ndarray) -> np.ndarray:
        """Make skin displacements tangent to the face, so skin moved sideways stays on the
        surface instead of sinking behind it (which would show the teeth through the cheek)."""
        n = self.rig.normals
        nz = np.where(np.abs(n[:, 2]) > 0.3, n[:, 2], np.copysign(0.3, n[:, 2]))
        dz = -(delta[:, 0] * n[:, 0] + delta[:, 1] * n[:, 1]) / nz
        out = delta.copy()
        out[:, 2] += np.where(self.face, dz, 0.0)
        return out

    # ---- targets --------------------------------------------------------------------

    def eye_blink(self, side: float) -> np.ndarray:
        return self._lids(side, ap.UPPER_CLOSED, ap.LOWER_CLOSED)

    def eye_wide(self, side: float) -> np.ndarray:
        return self._lids(side, ap.UPPER_OPEN + 0.26, ap.LOWER_OPEN - 0.08)

    def eye_squint(self, side: float) -> np.ndarray:
        cheek = self._cheek(side, 0.4)
        return self._lids(side, ap.UPPER_OPEN - 0.12, ap.LOWER_OPEN + 0.17) + cheek

    def eye_look(self, side: float, up: float, inward: float) -> np.ndarray:
        lids = self._lids(
            side,
            ap.UPPER_OPEN + (0.12 if up > 0 else 0.18 * up),
            ap.LOWER_OPEN + 0.06 * up,
            shift=-0.07 * inward,
        )
        return lids + self._eyeball_turn(side, -0.08 * up, -0.08 * inward)

    def jaw_open(self) -> np.ndarray:
        return self._rotate_jaw(JAW_OPEN_RAD * self.jaw)

    def jaw_side(self, side: float) -> np.ndarray:
        # Teeth and tongue shift less than the chin so the arch ends stay inside the cheeks.
        w = self.jaw * np.where(self.rig.mask("teeth_lower", "tongue"), 0.5, 1.0)
        return self._slide(self._vec(w, (0.008 * side, 0.0, 0.0)))

    def jaw_forward(self) -> np.ndarray:
        return self._vec(self.jaw, (0.0, 0.0, 0.006))

    def mouth_close(self) -> np.ndarray:
        mw = ap.MOUTH_HALF_W
        across = smoothstep(1.8 * mw, 1.0 * mw, np.abs(self.x))
        lips = self.face * across * gauss(((self.y - self.line) / 0.012) ** 2)
        out = -self.jaw_open() * (lips * self.below)[:, None]
        out[:, 1] -= 0.002 * lips * self.upper * _lip_open(self.x)
        return out

    def mouth_funnel(self) -> np.ndarray:
        lips = self._lips()
        opening = _lip_open(self.x) * self._lips(1.0, 0.007)
        out = self._vec(lips, (0.0, 0.0, 0.006))
        out[:, 0] -= 0.28 * self.x * lips
        out[:, 1] += 0.0035 * opening * np.where(self.below, -1.3, 1.0)
        return out

    def mouth_pucker(self) -> np.ndarray:
        lips = self._lips()
        out = self._vec(lips, (0.0, 0.0, 0.009))
        out[:, 0] -= 0.42 * self.x * lips
        out[:, 1] += 0.0012 * self._lips(1.0, 0.006) * np.where(self.below, 1.0, -1.0)
        return out

    def mouth_shift(self, side: float) -> np.ndarray:
        return self._slide(self._vec(self._lips(1.7, 0.016), (0.009 * side, 0.0, 0.0)))

    def mouth_smile(self, side: float) -> np.ndarray:
        c = self._corner(side)
        # The lips curve up towards the corner on this side (a "U"), the corner lifts most.
        curve = (
            self._lips(1.3, 0.012) * _side_weight(self.x, side) * (self.x / ap.MOUTH_HALF_W) ** 2
        )
        lift = self._vec(c, (0.0045 * side, 0.0065, -0.002))
        return lift + self._vec(curve, (0.0, 0.003, 0.0)) + self._cheek(side, 0.5)

    def mouth_frown(self, side: float) -> np.ndarray:
        c = self._corner(side, 0.013, 0.014)
        return self._vec(c, (0.001 * side, -0.005, 0.0))

    def mouth_dimple(self, side: float) -> np.ndarray:
        return self._vec(self._corner(side, 0.012, 0.012), (0.003 * side, 0.0, -0.003))

    def mouth_stretch(self, side: float) -> np.ndarray:
        lips = self._lips(1.2, 0.012) * _side_weight(self.x, side)
        c = self._corner(side, 0.02, 0.015)
        return self._vec(
            np.maximum(c, lips * np.abs(self.x) / ap.MOUTH_HALF_W), (0.006 * side, -0.002, -0.001)
        )

    def mouth_roll(self, lower: bool) -> np.ndarray:
        region = self.below if lower else self.upper
        w = self._lips(1.15, 0.008) * region * _lip_open(self.x) ** 0.5
        return self._vec(w, (0.0, 0.002 if lower else -0.002, -0.004))

    def mouth_shrug(self, lower: bool) -> np.ndarray:
        if lower:
            w = self.below * self.front * gauss((self.x / 0.03) ** 2 + (self.d_below / 0.03) ** 2)
            return self._vec(w, (0.0, 0.004, 0.002))
        w = self._lips(1.2, 0.01) * self.upper
        return self._vec(w, (0.0, 0.0025, 0.001))

    def mouth_press(self, side: float) -> np.ndarray:
        w = self._lips(1.2, 0.008) * _side_weight(self.x, side)
        out = self._vec(w, (0.0, 0.0, -0.001))
        out[:, 1] += 0.0013 * w * np.where(self.below, 1.0, -1.0)
        return out

    def mouth_lower_down(self, side: float) -> np.ndarray:
        w = self.below * self._lips(1.2, 0.012) * _side_weight(self.x, side)
        return self._vec(w * _lip_open(self.x) ** 0.5, (0.0, -0.005, 0.0005))

    def mouth_upper_up(self, side: float) -> np.ndarray:
        w = self.upper * self._lips(1.2, 0.012) * _side_weight(self.x, side)
        return self._vec(w * _lip_open(self.x) ** 0.5, (0.0, 0.004, 0.0005))

    def _brow_field(self, cx: float, rx: float) -> np.ndarray:
        by = self.rig.lm.brow_y
        return self.face * gauss(((self.x - cx) / rx) ** 2 + ((self.y - by) / 0.013) ** 2)

    def brow_down(self, side: float) -> np.ndarray:
        w = self._brow_field(side * 0.030, 0.022)
        inner = self._brow_field(side * 0.014, 0.012)
        return self._vec(w, (0.0, -0.0045, 0.0)) + self._vec(inner, (-0.0015 * side, 0.0, 0.0))

    def brow_inner_up(self) -> np.ndarray:
        w = self._brow_field(0.014, 0.012) + self._brow_field(-0.014, 0.012)
        return self._vec(np.minimum(w, 1.0), (0.0, 0.006, 0.0))

    def brow_outer_up(self, side: float) -> np.ndarray:
        return self._vec(self._brow_field(side * 0.048, 0.014), (0.0, 0.005, 0.0))

    def cheek_puff(self) -> np.ndarray:
        x, y = self.x, self.y
        w = self.front * gauss(
            ((np.abs(x) - 0.038) / 0.02) ** 2 + ((y - ap.MOUTH_Y - 0.012) / 0.02) ** 2
        )
        return 0.007 * w[:, None] * self.rig.normals

    def _cheek(self, side: float, amount: float) -> np.ndarray:
        x, y = self.x, self.y
        w = self.front * gauss(
            ((x - side * 0.036) / 0.016) ** 2 + ((y - ap.EYE_Y + 0.026) / 0.012) ** 2
        )
        return self._vec(w * amount, (0.0, 0.003, 0.001))

    def cheek_squint(self, side: float) -> np.ndarray:
        return self._cheek(side, 1.0) + self._lids(side, None, ap.LOWER_OPEN + 0.08)

    def nose_sneer(self, side: float) -> np.ndarray:
        x, y = self.x, self.y
        ny = ap.NOSE_TIP_Y
        w = self.front * gauss(((x - side * 0.010) / 0.009) ** 2 + ((y - ny - 0.006) / 0.011) ** 2)
        lip = self.upper * self._lips(1.2, 0.01) * _side_weight(x, side) * 0.3
        return self._vec(w + lip, (0.0, 0.003, 0.0005))

    def tongue_out(self) -> np.ndarray:
        rig = self.rig
        m = rig.mask("tongue")
        out = np.zeros_like(rig.positions)
        zc = rig.positions[m, 2].mean()
        f = smoothstep(zc - 0.02, zc + 0.02, rig.positions[m, 2])
        out[m, 2] = 0.030 * (0.35 + 0.65 * f)
        out[m, 1] = 0.003 * f
        out += self._vec(self.below * self._lips(1.0, 0.006) * _lip_open(self.x), (0, -0.003, 0))
        return out

    def table(self) -> dict[str, Callable[[], np.ndarray]]:
        """ARKit name -> function computing that target."""
        t: dict[str, Callable[[], np.ndarray]] = {}
        for side, sfx in ((1.0, "Left"), (-1.0, "Right")):
            s = side
            t[f"eyeBlink{sfx}"] = lambda s=s: self.eye_blink(s)
            t[f"eyeLookDown{sfx}"] = lambda s=s: self.eye_look(s, -1.0, 0.0)
            t[f"eyeLookIn{sfx}"] = lambda s=s: self.eye_look(s, 0.0, 1.0)
            t[f"eyeLookOut{sfx}"] = lambda s=s: self.eye_look(s, 0.0, -1.0)
            t[f"eyeLookUp{sfx}"] = lambda s=s: self.eye_look(s, 1.0, 0.0)
            t[f"eyeSquint{sfx}"] = lambda s=s: self.eye_squint(s)
            t[f"eyeWide{sfx}"] = lambda s=s: self.eye_wide(s)
            t[f"jaw{sfx}"] = lambda s=s: self.jaw_side(s)
            t[f"mouth{sfx}"] = lambda s=s: self.mouth_shift(s)
            t[f"mouthSmile{sfx}"] = lambda s=s: self.mouth_smile(s)
            t[f"mouthFrown{sfx}"] = lambda s=s: self.mouth_frown(s)
            t[f"mouthDimple{sfx}"] = lambda s=s: self.mouth_dimple(s)
            t[f"mouthStretch{sfx}"] = lambda s=s: self.mouth_stretch(s)
            t[f"mouthPress{sfx}"] = lambda s=s: self.mouth_press(s)
            t[f"mouthLowerDown{sfx}"] = lambda s=s: self.mouth_lower_down(s)
            t[f"mouthUpperUp{sfx}"] = lambda s=s: self.mouth_upper_up(s)
            t[f"browDown{sfx}"] = lambda s=s: self.brow_down(s)
            t[f"browOuterUp{sfx}"] = lambda s=s: self.brow_outer_up(s)
            t[f"cheekSquint{sfx}"] = lambda s=s: self.cheek_squint(s)
            t[f"noseSneer{sfx}"] = lambda s=s: self.nose_sneer(s)
        t["jawForward"] = self.jaw_forward
        t["jawOpen"] = self.jaw_open
        t["mouthClose"] = self.mouth_close
        t["mouthFunnel"] = self.mouth_funnel
        t["mouthPucker"] = self.mouth_pucker
        t["mouthRollLower"] = lambda: self.mouth_roll(True)
        t["mouthRollUpper"] = lambda: self.mouth_roll(False)
        t["mouthShrugLower"] = lambda: self.mouth_shrug(True)
        t["mouthShrugUpper"] = lambda: self.mouth_shrug(False)
        t["browInnerUp"] = self.brow_inner_up
        t["cheekPuff"] = self.cheek_puff
        t["tongueOut"] = self.tongue_out
        missing = set(ARKIT_NAMES) - set(t)
        if missing:
            raise AssertionError(f"shapes missing: {sorted(missing)}")
        return t
