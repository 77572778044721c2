"""The parts of the built-in presenter: head, face details, eyes, hair, neck and torso.

Each builder returns a `Part` in world rest space (metres, +Y up, facing +Z). Landmarks
(eye centres, mouth line, jaw hinge) are computed once and shared with the blendshapes so a
face feature and the shapes that move it always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .avatar_mesh import (
    Part,
    catmull_rom,
    fan_triangles,
    gauss,
    grid_triangles,
    raycast_neg_z,
    smoothstep,
    superellipse_ring,
    uv_grid,
    warped_samples,
)

# Head ellipsoid (metres). The head is ~0.23 m from chin to crown, centred near y = 1.555.
HEAD_C = np.array([0.0, 1.555, 0.0])
RX, RY_TOP, RY_BOT, RZ_F, RZ_B = 0.077, 0.114, 0.111, 0.093, 0.100
EYE_X, EYE_Y, EYE_R = 0.032, 1.556, 0.0142
MOUTH_Y, MOUTH_HALF_W = 1.4885, 0.0205
NOSE_TIP_Y = 1.5165
JAW_HINGE = np.array([0.0, 1.535, -0.012])
LIP_KU, LIP_KL, LIP_BLEND = 7, 8, 5  # rows in the upper / lower lip bands and their blend

# Eyelids: elevation (radians, from the eye's horizontal plane) of the lid edge at the middle.
LID_TOP, LID_BOTTOM, LID_CORNER = 1.25, -1.2, -0.04
LID_HALF_AZIMUTH = 1.45
UPPER_OPEN, UPPER_CLOSED = 0.48, -0.33
LOWER_OPEN, LOWER_CLOSED = -0.40, -0.22
UPPER_LID_R, LOWER_LID_R = 1.16, 1.12  # lid radius / eyeball radius


@dataclass
class Landmarks:
    """Points the blendshapes are anchored to (all world rest space, left = +X)."""

    eye_left: np.ndarray  # [3] centre of the left eyeball
    mouth: np.ndarray  # [3] centre of the closed mouth line
    jaw_hinge: np.ndarray  # [3]
    brow_y: float


def _ring_sample(n_half: int, width: float, gain: float) -> np.ndarray:
    """Mirror-symmetric azimuths in [-pi, pi) with extra density facing +Z."""
    pos = warped_samples(n_half + 1, 0.0, np.pi, [(0.0, width, gain)])
    return np.concatenate([-pos[:0:-1], pos[:-1]])


def head_surface(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Head skin point for azimuth `a` (0 faces +Z) and elevation `e`, features included."""
    ca, sa, ce, se = np.cos(a), np.sin(a), np.cos(e), np.sin(e)
    ry = np.where(e > 0, RY_TOP, RY_BOT)
    y = HEAD_C[1] + ry * se
    x = RX * ce * sa
    z = np.where(ca > 0, RZ_F, RZ_B) * ce * ca
    low = smoothstep(0.1, -0.9, se)
    front = smoothstep(-0.3, 0.7, ca)
    x = x * (1.0 - 0.24 * low * (0.4 + 0.6 * front)) * (1.0 + 0.05 * smoothstep(0.2, 0.9, se))
    back = smoothstep(0.1, -0.8, ca)
    z = z * (1.0 - 0.25 * low * back) * (1.0 - 0.06 * low * front)
    return np.stack([x, y, z + _face_relief(x, y) * smoothstep(0.35, 0.75, ca)], -1)


def _face_relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Forward (+Z) offsets that carve the face: sockets, brows, nose, cheeks, lips, chin."""
    ax = np.abs(x)
    ey, my, ny = EYE_Y, MOUTH_Y, NOSE_TIP_Y
    socket = -0.0065 * gauss(((ax - EYE_X) / 0.017) ** 2 + ((y - ey) / 0.013) ** 2)
    brow = 0.0025 * gauss(((ax - 0.028) / 0.022) ** 2 + ((y - ey - 0.021) / 0.007) ** 2)
    t = np.clip((ey + 0.012 - y) / (ey + 0.012 - ny), 0.0, 1.0)
    below = np.maximum(ny - y, 0.0)
    ridge = 0.0135 * t**1.4 * gauss((x / (0.0045 + 0.0045 * t)) ** 2) * gauss((below / 0.0045) ** 2)
    tip = 0.0035 * gauss((x / 0.0075) ** 2 + ((y - ny - 0.001) / 0.0065) ** 2)
    wings = 0.0045 * gauss(((ax - 0.0095) / 0.0045) ** 2 + ((y - ny + 0.002) / 0.0045) ** 2)
    cheeks = 0.005 * gauss(((ax - 0.040) / 0.017) ** 2 + ((y - ey + 0.033) / 0.016) ** 2)
    mw = MOUTH_HALF_W
    upper = 0.0038 * gauss((x / (0.95 * mw)) ** 4 + ((y - my - 0.0035) / 0.0042) ** 2)
    lower = 0.0048 * gauss((x / (0.9 * mw)) ** 4 + ((y - my + 0.0048) / 0.0048) ** 2)
    corner = -0.0022 * gauss(((ax - mw) / 0.0045) ** 2 + ((y - my) / 0.005) ** 2)
    chin = 0.0085 * gauss((x / 0.021) ** 2 + ((y - my + 0.032) / 0.016) ** 2)
    return socket + brow + ridge + tip + wings + cheeks + upper + lower + corner + chin


def mouth_line(x: np.ndarray) -> np.ndarray:
    """Height of the closed mouth line at x (a slight resting smile towards the corners)."""
    return MOUTH_Y + 0.0018 * np.minimum((x / MOUTH_HALF_W) ** 2, 1.6)


def _lip_profile(x: np.ndarray, full: float, power: float) -> np.ndarray:
    """Height of a lip band at x: `full` in the middle, closing at the mouth corners."""
    q = np.clip(1.0 - (x / MOUTH_HALF_W) ** 2, 0.0, 1.0)
    return np.maximum(full * q**power, 0.0012)


def build_head() -> tuple[Part, Landmarks]:
    """Head skin with a mouth slit (upper and lower lips split), lip bands and inner lips."""
    nu, nv = 128, 96
    a = _ring_sample(nu // 2, 0.55, 3.2)
    e = warped_samples(nv + 2, -np.pi / 2, np.pi / 2, [(-0.32, 0.42, 3.0)])[1:-1]
    aa, ee = np.meshgrid(a, e)
    y_base = HEAD_C[1] + np.where(ee > 0, RY_TOP, RY_BOT) * np.sin(ee)

    # Lip bands: remap the rows around the mouth so the lip outlines follow grid rows.
    js = int(np.argmin(np.abs(y_base[:, nu // 2] - MOUTH_Y)))
    e_slit = np.arcsin((MOUTH_Y - HEAD_C[1]) / RY_BOT)
    x_slit = head_surface(a, np.full_like(a, e_slit))[:, 0]
    line = mouth_line(x_slit)
    cupid = 0.0009 * gauss(((np.abs(x_slit) - 0.0055) / 0.003) ** 2) - 0.0007 * gauss(
        (x_slit / 0.0022) ** 2
    )
    top = line + _lip_profile(x_slit, 0.0066, 0.45) + cupid * (np.abs(x_slit) < MOUTH_HALF_W)
    bottom = line - _lip_profile(x_slit, 0.0075, 0.6)
    rows = [js - LIP_KL - LIP_BLEND, js - LIP_KL, js, js + LIP_KU, js + LIP_KU + LIP_BLEND]
    frontness = smoothstep(1.2, 0.7, np.abs(a))
    anchors = np.stack([y_base[rows[0]], bottom, line, top, y_base[rows[-1]]])  # [5, nu]
    anchors = y_base[rows] + frontness * (anchors - y_base[rows])
    y = y_base.copy()
    for j in range(rows[0], rows[-1] + 1):
        k = int(np.searchsorted(rows, j, side="right")) - 1
        k = min(k, 3)
        f = (j - rows[k]) / (rows[k + 1] - rows[k])
        y[j] = anchors[k] * (1 - f) + anchors[k + 1] * f
    if np.any(np.diff(y, axis=0) <= 0):
        raise AssertionError("head rows must stay ordered")
    ee = np.arcsin(np.clip((y - HEAD_C[1]) / np.where(y < HEAD_C[1], RY_BOT, RY_TOP), -1, 1))
    pos = head_surface(aa, ee).reshape(-1, 3)
    uv = np.stack([(aa / (2 * np.pi) + 0.5).ravel(), (ee / np.pi + 0.5).ravel()], -1)
    tris = grid_triangles(nu, nv, wrap_u=True)  # du = +azimuth (+X at the front), dv = up

    # Mouth slit: the lower lip gets its own copy of the slit row's inner vertices.
    inner_cols = np.nonzero(np.abs(x_slit) < MOUTH_HALF_W * 0.999)[0]
    inner_cols = inner_cols[np.abs(a[inner_cols]) < 1.0]
    n0 = len(pos)
    remap = np.arange(n0)
    remap[js * nu + inner_cols] = n0 + np.arange(len(inner_cols))
    quads = slice(2 * (js - 1) * nu, 2 * js * nu)  # quads between rows js-1 and js
    tris[quads] = remap[tris[quads]]
    pos = np.concatenate([pos, pos[js * nu + inner_cols]])
    uv = np.concatenate([uv, uv[js * nu + inner_cols]])
    lower = np.zeros(len(pos), bool)
    lower[n0:] = True
    below = np.zeros(len(pos), bool)
    below[: js * nu] = True
    below[n0:] = True

    # Poles.
    bottom_i, top_i = len(pos), len(pos) + 1
    poles = head_surface(np.zeros(2), np.array([-np.pi / 2, np.pi / 2]))
    pos = np.concatenate([pos, poles])
    uv = np.concatenate([uv, [[0.5, 0.0], [0.5, 1.0]]])
    lower = np.concatenate([lower, [False, False]])
    below = np.concatenate([below, [True, False]])
    ring0 = np.arange(nu)
    ringn = (nv - 1) * nu + np.arange(nu)
    tris = np.concatenate(
        [tris, fan_triangles(bottom_i, ring0, flip=True), fan_triangles(top_i, ringn)]
    )

    # Materials: lips follow the remapped bands.
    mats = np.full(len(tris), "skin", dtype=object)
    n_grid = 2 * nu * (nv - 1)
    quad_row = np.arange(n_grid) // (2 * nu)
    quad_col = (np.arange(n_grid) // 2) % nu
    in_mouth = np.abs(x_slit[quad_col]) < MOUTH_HALF_W * 0.98
    in_mouth &= np.abs(x_slit[(quad_col + 1) % nu]) < MOUTH_HALF_W * 0.98
    lip = in_mouth & (quad_row >= js - LIP_KL) & (quad_row < js + LIP_KU)
    mats[:n_grid][lip] = "lips"

    # Inner lips: short strips from each lip edge back into the mouth, so lips have depth.
    edge_cols = np.arange(inner_cols[0] - 1, inner_cols[-1] + 2)
    upper_rim = js * nu + edge_cols
    lower_rim = upper_rim.copy()
    lower_rim[1:-1] = n0 + np.arange(len(inner_cols))
    depth = np.maximum(np.sqrt(np.clip(1 - (pos[upper_rim, 0] / MOUTH_HALF_W) ** 2, 0, 1)), 0.2)
    strips = []
    for edge, direction, flip in (
        (upper_rim, np.array([0.0, 0.55, -1.0]), True),
        (lower_rim, np.array([0.0, -0.55, -1.0]), False),
    ):
        steps = np.array([0.35, 0.7, 1.0])[:, None, None]
        new = pos[edge][None] + steps * 0.0065 * depth[None, :, None] * direction
        start = len(pos)
        pos = np.concatenate([pos, new.reshape(-1, 3)])
        uv = np.concatenate([uv, np.repeat(uv[edge][None], 3, 0).reshape(-1, 2)])
        lower = np.concatenate([lower, np.full(new.shape[0] * new.shape[1], not flip)])
        below = np.concatenate([below, np.full(new.shape[0] * new.shape[1], not flip)])
        index = np.concatenate([edge[None], start + np.arange(new.size // 3).reshape(3, -1)])
        local = grid_triangles(len(edge), 4, flip=flip)
        strips.append(index.ravel()[local])
    strip_tris = np.concatenate(strips)
    tris = np.concatenate([tris, strip_tris])
    strip_mats = np.full(len(strip_tris), "lips", dtype=object)
    mats = np.concatenate([mats, strip_mats])

    mouth = np.array([0.0, MOUTH_Y, pos[js * nu + nu // 2, 2]])
    head = Part("head", pos, tris, mats, uv, {"lip_edge_lower": lower, "below_mouth": below})
    eye = np.array([EYE_X, EYE_Y, 0.0])
    surf, _ = raycast_neg_z(np.array([[EYE_X, EYE_Y, 1.0]]), pos, tris)
    eye[2] = surf[0] - 0.32 * EYE_R
    landmarks = Landmarks(
        eye_left=eye,
        mouth=mouth,
        jaw_hinge=JAW_HINGE.copy(),
        brow_y=EYE_Y + 0.021,
    )
    return head, landmarks


def upper_edge(u: np.ndarray, middle: float, corner: float = LID_CORNER) -> np.ndarray:
    """Upper-lid edge elevation across the eye (u in -1..1, +1 is the outer corner)."""
    return corner + (middle - corner) * (1.0 - u**2) + 0.05 * u * (1 - u**2)


def lower_edge(u: np.ndarray, middle: float, corner: float = LID_CORNER) -> np.ndarray:
    """Lower-lid edge elevation across the eye."""
    return corner + (middle - corner) * (1.0 - u**2) ** 1.3


def lid_points(
    center: np.ndarray,
    radius: float,
    u: np.ndarray,
    v: np.ndarray,
    far: float,
    edge: np.ndarray,
    azimuth_shift: float = 0.0,
) -> np.ndarray:
    """Points on a spherical lid: v = 0 at elevation `far` (under the skin), 1 at the edge."""
    alpha = u * LID_HALF_AZIMUTH + azimuth_shift
    beta = far + v * (edge - far)
    d = np.stack([np.cos(beta) * np.sin(alpha), np.sin(beta), np.cos(beta) * np.cos(alpha)], -1)
    return center + radius * d


def build_eye_parts(lm: Landmarks) -> list[Part]:
    """Left eyeball (sclera, iris, pupil, catch light) and left lids; the right side mirrors."""
    c = lm.eye_left
    # Eyeball: pole facing +Z so iris and pupil edges are exact rows.
    theta = np.concatenate(
        [np.linspace(0.05, 0.19, 3), np.linspace(0.23, 0.44, 5), np.linspace(0.49, 0.55, 2),
         np.linspace(0.63, np.pi - 0.12, 13)]
    )  # fmt: skip
    nphi = 36
    phi = np.linspace(0, 2 * np.pi, nphi, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    pos = np.concatenate([d, [[0, 0, 1.0], [0, 0, -1.0]]]) * EYE_R + c
    tris = np.concatenate(
        [
            grid_triangles(nphi, len(theta), wrap_u=True, flip=True),
            fan_triangles(len(d), np.arange(nphi)),
            fan_triangles(len(d) + 1, (len(theta) - 1) * nphi + np.arange(nphi), flip=True),
        ]
    )
    row = np.concatenate(
        [np.repeat(np.arange(len(theta) - 1), 2 * nphi), np.full(nphi, -1), np.full(nphi, 99)]
    )
    mats = np.where(
        row < 2, "pupil", np.where(row < 7, "iris", np.where(row < 9, "iris_rim", "sclera"))
    )
    uv = np.concatenate([uv_grid(nphi, len(theta)), [[0.5, 0.0], [0.5, 1.0]]])
    eyeball = Part("eyeball_l", pos, tris, mats.astype(object), uv)

    # Catch light: a small bright cap just off the eyeball surface, up and outwards.
    hp = np.linspace(-1.0, 1.0, 7)
    hu, hv = np.meshgrid(hp, hp)
    hx = 0.0022 * hu * np.sqrt(1 - 0.5 * hv**2)
    hy = 0.0022 * hv * np.sqrt(1 - 0.5 * hu**2)
    hdir = np.stack([hx.ravel() + 0.0035, hy.ravel() + 0.004, np.zeros(hx.size)], -1)
    hdir[:, 2] = np.sqrt(np.maximum((EYE_R * 1.012) ** 2 - hdir[:, 0] ** 2 - hdir[:, 1] ** 2, 0))
    highlight = Part(
        "highlight_l",
        hdir + c,
        grid_triangles(7, 7),
        np.full(72, "highlight", dtype=object),
        uv_grid(7, 7),
    )

    parts = [eyeball, highlight]
    nu_l, nv_l = 29, 12
    uu, vv = np.meshgrid(np.linspace(-1, 1, nu_l), np.linspace(0, 1, nv_l) ** 0.8)
    u, v = uu.ravel(), vv.ravel()
    for name, radius, far, edge, flip in (
        ("lid_upper_l", UPPER_LID_R, LID_TOP, upper_edge(u, UPPER_OPEN), True),
        ("lid_lower_l", LOWER_LID_R, LID_BOTTOM, lower_edge(u, LOWER_OPEN), False),
    ):
        p = lid_points(c, radius * EYE_R, u, v, far, edge)
        t = grid_triangles(nu_l, nv_l, flip=flip)
        m = np.full(len(t), "skin", dtype=object)
        if name.startswith("lid_upper"):
            row = np.arange(len(t)) // (2 * (nu_l - 1))
            m[row >= nv_l - 2] = "lash"
        parts.append(Part(name, p, t, m, uv_grid(nu_l, nv_l), {"lid_u": u, "lid_v": v}))
    return parts


def build_brow(head: Part, lm: Landmarks) -> Part:
    """Left eyebrow: a tapered raised ribbon lying on the forehead skin."""
    ns, nt = 26, 7
    s, t = np.meshgrid(np.linspace(0, 1, ns), np.linspace(-1, 1, nt))
    x = 0.010 + 0.045 * s
    y = lm.brow_y - 0.001 + 0.0065 * np.sin(np.pi * np.minimum(s * 0.9, 1.0)) - 0.004 * s**2
    half = 0.0033 - 0.0023 * s**1.6
    y = y + t * half
    xy = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], -1)
    z, _ = raycast_neg_z(xy, head.positions, head.triangles)
    lift = 0.0005 + 0.0013 * np.sqrt(np.clip(1 - t.ravel() ** 2, 0, 1)) * (1 - 0.5 * s.ravel())
    pos = np.stack([x.ravel(), y.ravel(), z + lift], -1)
    tris = grid_triangles(ns, nt)
    return Part("brow_l", pos, tris, np.full(len(tris), "brow", dtype=object), uv_grid(ns, nt))


def _ellipsoid(
    name: str,
    center: np.ndarray,
    radii: np.ndarray,
    material: str,
    nu: int = 32,
    nv: int = 18,
    rotation: np.ndarray | None = None,
) -> Part:
    """A closed, outward-facing ellipsoid (optionally rotated) with one material."""
    e = np.linspace(-np.pi / 2, np.pi / 2, nv + 2)[1:-1]
    a = np.linspace(-np.pi, np.pi, nu, endpoint=False)
    aa, ee = np.meshgrid(a, e)
    d = np.stack([np.cos(ee) * np.sin(aa), np.sin(ee), np.cos(ee) * np.cos(aa)], -1).reshape(-1, 3)
    d = np.concatenate([d, [[0, -1.0, 0], [0, 1.0, 0]]]) * radii
    if rotation is not None:
        d = d @ rotation.T
    n = nu * nv
    tris = np.concatenate(
        [
            grid_triangles(nu, nv, wrap_u=True),
            fan_triangles(n, np.arange(nu), flip=True),
            fan_triangles(n + 1, (nv - 1) * nu + np.arange(nu)),
        ]
    )
    uv = np.concatenate([uv_grid(nu, nv), [[0.5, 0.0], [0.5, 1.0]]])
    return Part(name, d + center, tris, np.full(len(tris), material, dtype=object), uv)


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def build_ear() -> Part:
    """Left ear: a flattened ellipsoid with a dished outer face, tilted back slightly."""
    ear = _ellipsoid("ear_l", np.zeros(3), np.array([0.0065, 0.026, 0.016]), "skin", 24, 16)
    p = ear.positions
    dish = 0.0045 * gauss((p[:, 1] / 0.017) ** 2 + (p[:, 2] / 0.010) ** 2) * (p[:, 0] > 0)
    p[:, 0] -= dish
    ear.positions = p @ (_rot_y(0.45) @ _rot_x(-0.15)).T + np.array([0.0735, EYE_Y - 0.012, -0.010])
    return ear


def build_mouth_parts(lm: Landmarks) -> list[Part]:
    """Teeth (upper, lower), tongue and the dark mouth interior behind them."""
    my, mz = lm.mouth[1], lm.mouth[2]
    parts = []
    for name, yc, h, front, ax, bz in (
        ("teeth_upper", my + 0.0038, 0.0058, mz - 0.0048, 0.0205, 0.019),
        ("teeth_lower", my - 0.0052, 0.0036, mz - 0.0105, 0.0175, 0.022),
    ):
        ns, nc = 41, 16
        s = np.linspace(-1, 1, ns)
        phi = s * 1.15
        arch = np.stack([ax * np.sin(phi), np.full(ns, yc), front - bz * (1 - np.cos(phi))], -1)
        normal = np.stack([bz * np.sin(phi), np.zeros(ns), ax * np.cos(phi)], -1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        psi = np.linspace(0, 2 * np.pi, nc, endpoint=False)
        cn, sn = np.cos(psi), np.sin(psi)
        off_n = 0.0017 * np.sign(cn) * np.abs(cn) ** 0.5
        off_y = h * np.sign(sn) * np.abs(sn) ** 0.5
        # Notches between teeth so the rows read as separate teeth.
        teeth = np.abs(((s * 5.5 + 0.5) % 1.0) - 0.5)
        notch = 1.0 - 0.35 * gauss((teeth / 0.08) ** 2)
        pos = (
            arch[:, None]
            + notch[:, None, None] * off_n[None, :, None] * normal[:, None]
            + off_y[None, :, None] * np.array([0, 1.0, 0])
        ).reshape(-1, 3)
        tris = grid_triangles(nc, ns, wrap_u=True, flip=True)
        parts.append(
            Part(name, pos, tris, np.full(len(tris), "teeth", dtype=object), uv_grid(nc, ns))
        )
    tongue = _ellipsoid(
        "tongue",
        np.array([0.0, my - 0.0085, mz - 0.031]),
        np.array([0.016, 0.005, 0.020]),
        "tongue",
        28,
        14,
    )
    groove = gauss((tongue.positions[:, 0] / 0.006) ** 2) * (tongue.positions[:, 1] > my - 0.0085)
    tongue.positions[:, 1] -= 0.0015 * groove
    bag = _ellipsoid(
        "mouth_inner",
        np.array([0.0, my - 0.004, mz - 0.034]),
        np.array([0.024, 0.017, 0.021]),
        "mouth",
        28,
        16,
    )
    return parts + [tongue, bag]


def build_hair() -> Part:
    """A bob with a side-swept fringe: an outer shell with volume folded back into a thick rim."""
    nu, nv, nf = 104, 34, 5
    a = _ring_sample(nu // 2, 1.0, 1.0)
    ab = np.abs(a)
    fringe = 0.31 + 0.08 * np.tanh(2.5 * a) + 0.05 * np.abs(np.sin(a * 9.0))
    side = -0.58 - 0.12 * smoothstep(1.6, np.pi, ab) + 0.05 * np.abs(np.sin(a * 7.0))
    e_end = fringe + (side - fringe) * smoothstep(0.62, 1.12, ab)
    v = np.linspace(0.0, 1.0, nv + 1)[1:] ** 0.9
    vv, _ = np.meshgrid(v, a, indexing="ij")
    ee = np.pi / 2 - vv * (np.pi / 2 - e_end[None])
    aa = np.broadcast_to(a[None], ee.shape)
    e_wide = -0.05
    base = head_surface(aa, np.maximum(ee, e_wide))
    top = smoothstep(-0.2, 0.9, np.sin(np.maximum(ee, e_wide)))
    clumps = 0.0025 * (0.5 + 0.5 * np.cos(aa * 13.0)) * smoothstep(0.5, -0.3, np.sin(ee))
    strands = 0.0012 * np.abs(np.sin(aa * 13.0)) * smoothstep(0.2, 0.9, np.sin(ee))
    # A side parting above the left eye: a groove from the hairline towards the crown.
    parting = 0.005 * gauss(((aa - 0.42) / 0.06) ** 2) * smoothstep(0.3, 0.8, np.sin(ee))
    offset = 0.010 + 0.010 * top + clumps - strands - parting
    radial = base - HEAD_C
    radial[..., 1] *= 0.9
    rn = radial / np.linalg.norm(radial, axis=-1, keepdims=True)
    pos = base + rn * offset[..., None]
    drop = np.maximum(e_wide - ee, 0.0)
    curl = smoothstep(0.75, 1.0, vv)
    flare = (1.0 + 0.12 * drop) * (1.0 - 0.06 * curl)
    pos[..., 0] *= flare
    pos[..., 2] = HEAD_C[2] + (pos[..., 2] - HEAD_C[2]) * flare
    pos[..., 1] = np.where(ee < e_wide, HEAD_C[1] + RY_BOT * np.sin(ee) * 1.02, pos[..., 1])
    # Fold: the rim turns inward and climbs back under the outer shell.
    rim = pos[-1]
    inward = np.stack([-(rim[:, 0]), np.zeros(nu), -(rim[:, 2] - HEAD_C[2])], -1)
    inward /= np.linalg.norm(inward, axis=1, keepdims=True)
    fold = [rim + inward * 0.004 * min(k, 2) / 2 + np.array([0, 0.0045, 0]) * max(k - 1, 0)
            for k in range(1, nf + 1)]  # fmt: skip
    rows = np.concatenate([pos, np.stack(fold)]).reshape(-1, 3)
    crown = rows[:nu].mean(axis=0) + np.array([0.0, 0.002, 0.0])
    pos_all = np.concatenate([rows, crown[None]])
    nrow = nv + nf
    tris = np.concatenate(
        [grid_triangles(nu, nrow, wrap_u=True, flip=True), fan_triangles(len(rows), np.arange(nu))]
    )
    uv = np.concatenate([uv_grid(nu, nrow), [[0.5, 0.0]]])
    return Part("hair", pos_all, tris, np.full(len(tris), "hair", dtype=object), uv)


def build_neck() -> Part:
    """Neck: a slightly tapered tube from inside the torso up into the head."""
    ys = np.linspace(1.37, 1.515, 14)
    nu = 40
    rings = []
    for y in ys:
        w = 0.050 - 0.004 * smoothstep(1.40, 1.50, y)
        ring = superellipse_ring(nu, w, w * 1.08, 2.2)
        rings.append(np.stack([ring[:, 0], np.full(nu, y), ring[:, 1] - 0.014], -1))
    pos = np.concatenate(rings)
    tris = grid_triangles(nu, len(ys), wrap_u=True)
    return Part("neck", pos, tris, np.full(len(tris), "skin", dtype=object), uv_grid(nu, len(ys)))


TORSO_KEYS = np.array(
    [  # y, half width, half depth, centre z, superellipse power
        [1.432, 0.047, 0.051, -0.014, 2.2],
        [1.418, 0.068, 0.062, -0.012, 2.3],
        [1.398, 0.125, 0.080, -0.010, 2.6],
        [1.378, 0.172, 0.090, -0.008, 3.0],
        [1.350, 0.196, 0.100, -0.006, 3.2],
        [1.300, 0.203, 0.108, -0.004, 3.2],
        [1.220, 0.196, 0.115, 0.000, 3.0],
        [1.120, 0.184, 0.112, 0.000, 2.8],
        [1.010, 0.172, 0.105, 0.000, 2.8],
        [0.900, 0.164, 0.100, 0.000, 2.8],
    ]
)


def build_torso() -> Part:
    """Shoulders and chest in a blazer over a light top, with a scoop neckline of skin."""
    nu, nv = 80, 42
    prof = catmull_rom(TORSO_KEYS, np.linspace(0, len(TORSO_KEYS) - 1, nv))
    rings = []
    for y, w, d, cz, p in prof:
        ring = superellipse_ring(nu, w, d, p)
        rings.append(np.stack([ring[:, 0], np.full(nu, y), ring[:, 1] + cz], -1))
    pos = np.concatenate(rings)
    # Chest: a little forward fullness below the collar bones.
    pos[:, 2] += (
        0.012 * smoothstep(0.0, 0.5, pos[:, 2] / 0.1) * gauss(((pos[:, 1] - 1.25) / 0.09) ** 2)
    )
    bottom = np.array([[0.0, prof[-1, 0], 0.0]])
    pos = np.concatenate([pos, bottom])
    tris = np.concatenate(
        [
            grid_triangles(nu, nv, wrap_u=True, flip=True),
            fan_triangles(len(pos) - 1, (nv - 1) * nu + np.arange(nu), flip=False),
        ]
    )
    # Materials follow grid rows and columns so their borders are clean lines.
    n_grid = 2 * nu * (nv - 1)
    row = np.r_[np.arange(n_grid) // (2 * nu), np.full(nu, nv)]
    col = np.r_[(np.arange(n_grid) // 2) % nu, np.zeros(nu, int)]
    angle = np.minimum(col + 0.5, nu - col - 0.5) * (2 * np.pi / nu)  # 0 faces +Z
    mats = np.full(len(tris), "blazer", dtype=object)
    mats[(angle < 0.42) & (row >= 4)] = "top"
    mats[row < 4] = "top"
    mats[row < 2] = "skin"
    uv = np.concatenate([uv_grid(nu, nv), [[0.5, 1.0]]])
    return Part("torso", pos, tris, mats, uv)
