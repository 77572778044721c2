"""Geometry helpers for the built-in avatar: parametric grids, lofts, normals and ray casts.

Everything is plain vectorized numpy so the generator stays deterministic and fast; loops only
run over parts, rows of a profile or chunks of rays, never over vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite ramp 0 -> 1 between the edges (edges may be reversed for a falling ramp)."""
    t = np.clip((np.asarray(x, np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gauss(d2: np.ndarray) -> np.ndarray:
    """Gaussian falloff of a squared, already normalised distance."""
    return np.exp(-d2)


def warped_samples(
    n: int, lo: float, hi: float, peaks: list[tuple[float, float, float]]
) -> np.ndarray:
    """`n` samples over [lo, hi] whose density is 1 + sum(gain * gauss((x - at) / width)).

    Dense sampling where the face needs detail (mouth, eyes) keeps the triangle budget small.
    """
    xs = np.linspace(lo, hi, 4097)
    density = np.ones_like(xs)
    for at, width, gain in peaks:
        density += gain * np.exp(-(((xs - at) / width) ** 2))
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) * 0.5 * np.diff(xs))])
    cdf /= cdf[-1]
    return np.interp(np.linspace(0.0, 1.0, n), cdf, xs)


def grid_triangles(nu: int, nv: int, *, wrap_u: bool = False, flip: bool = False) -> np.ndarray:
    """Two triangles per quad of an nu x nv vertex grid indexed `v * nu + u`.

    Counter-clockwise when the surface normal is d(pos)/du x d(pos)/dv; `flip` reverses it.
    """
    cols = nu if wrap_u else nu - 1
    i = np.arange(cols)
    j = np.arange(nv - 1)
    ii, jj = np.meshgrid(i, j)
    a = jj * nu + ii
    b = jj * nu + (ii + 1) % nu
    c = b + nu
    d = a + nu
    t1 = np.stack([a, b, c], -1).reshape(-1, 3)
    t2 = np.stack([a, c, d], -1).reshape(-1, 3)
    tris = np.stack([t1, t2], 1).reshape(-1, 3)
    return tris[:, ::-1].copy() if flip else tris


def fan_triangles(
    center: int, ring: np.ndarray, *, closed: bool = True, flip: bool = False
) -> np.ndarray:
    """Triangles joining one vertex to a ring; CCW when the ring turns CCW seen from outside."""
    nxt = np.roll(ring, -1) if closed else ring[1:]
    cur = ring if closed else ring[:-1]
    tris = np.stack([np.full_like(cur, center), cur, nxt], -1)
    return tris[:, ::-1].copy() if flip else tris


def vertex_normals(pos: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (vertices without area get +Y)."""
    p0, p1, p2 = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    fn = np.cross(p1 - p0, p2 - p0)
    acc = np.zeros_like(pos, dtype=np.float64)
    for k in range(3):
        np.add.at(acc, tris[:, k], fn)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.where(length > 1e-20, acc / np.maximum(length, 1e-30), [0.0, 1.0, 0.0])
    return out


def raycast_neg_z(
    origins: np.ndarray, pos: np.ndarray, tris: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays from `origins` along -Z; returns (hit z or -inf, triangle index or -1).

    Works in the XY plane (a 2D point-in-triangle test), which is exact for axis-aligned rays.
    """
    hit_z = np.full(len(origins), -np.inf)
    hit_t = np.full(len(origins), -1, np.int64)
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    lo = np.minimum(np.minimum(a, b), c)[:, :2]
    hi = np.maximum(np.maximum(a, b), c)[:, :2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-18
    for start in range(0, len(origins), 256):
        o = origins[start : start + 256, None, :2]
        inside_box = np.all((o >= lo[None] - 1e-12) & (o <= hi[None] + 1e-12), axis=2) & ok[None]
        ri, ti = np.nonzero(inside_box)
        if len(ri) == 0:
            continue
        px = origins[start + ri, 0] - a[ti, 0]
        py = origins[start + ri, 1] - a[ti, 1]
        u = (px * (c[ti, 1] - a[ti, 1]) - (c[ti, 0] - a[ti, 0]) * py) / det[ti]
        v = ((b[ti, 0] - a[ti, 0]) * py - px * (b[ti, 1] - a[ti, 1])) / det[ti]
        good = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9)
        z = a[ti, 2] + u * (b[ti, 2] - a[ti, 2]) + v * (c[ti, 2] - a[ti, 2])
        z = np.where(good, z, -np.inf)
        ri_global = start + ri
        order = np.lexsort((z, ri_global))
        last = np.r_[ri_global[order][1:] != ri_global[order][:-1], True]
        sel = order[last]
        better = z[sel] > hit_z[ri_global[sel]]
        hit_z[ri_global[sel][better]] = z[sel][better]
        hit_t[ri_global[sel][better]] = ti[sel][better]
    return hit_z, hit_t


@dataclass
class Part:
    """One piece of the avatar before it is merged into the flat asset arrays."""

    name: str
    positions: np.ndarray  # [n,3] float64 world rest
    triangles: np.ndarray  # [t,3] local indices
    materials: np.ndarray  # [t] material names (str array)
    uvs: np.ndarray | None = None  # [n,2]
    attrs: dict[str, np.ndarray] = field(default_factory=dict)  # per-vertex extras

    def mirrored(self, name: str) -> Part:
        """The same part reflected through x = 0, winding flipped so it still faces out."""
        pos = self.positions * np.array([-1.0, 1.0, 1.0])
        return Part(
            name=name,
            positions=pos,
            triangles=self.triangles[:, ::-1].copy(),
            materials=self.materials.copy(),
            uvs=None if self.uvs is None else self.uvs.copy(),
            attrs={k: v.copy() for k, v in self.attrs.items()},
        )


def uv_grid(nu: int, nv: int) -> np.ndarray:
    """Parametric (u, v) in [0,1] for an nu x nv grid, used as TEXCOORD_0."""
    u, v = np.meshgrid(np.linspace(0.0, 1.0, nu), np.linspace(0.0, 1.0, nv))
    return np.stack([u.ravel(), v.ravel()], -1)


def superellipse_ring(n: int, half_w: float, half_d: float, power: float) -> np.ndarray:
    """[n,2] (x, z) points of |x/w|^p + |z/d|^p = 1, counter-clockwise seen from +Y."""
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    s, c = np.sin(theta), np.cos(theta)
    x = half_w * np.sign(s) * np.abs(s) ** (2.0 / power)
    z = half_d * np.sign(c) * np.abs(c) ** (2.0 / power)
    return np.stack([x, z], -1)


def catmull_rom(keys: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Smooth curve through key rows (uniform parameter 0..len-1) evaluated at `samples`."""
    k = np.asarray(keys, np.float64)
    pad = np.concatenate([k[:1] * 2 - k[1:2], k, k[-1:] * 2 - k[-2:-1]])
    i = np.clip(np.floor(samples).astype(int), 0, len(k) - 2)
    t = (samples - i)[:, None]
    p0, p1, p2, p3 = pad[i], pad[i + 1], pad[i + 2], pad[i + 3]
    return 0.5 * (
        2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )  # fmt: skip
