"""CPU rasterizer: exact coverage (top-left rule), watertight shared edges, depth order,
culling, near/far planes, the blend layer, clearing, and batches of mixed sessions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernel_fixtures import (
    BLEND,
    EMPTY,
    MASK,
    OPAQUE,
    Mesh,
    Session,
    camera,
    grid_mesh,
    layer,
    pack,
    perspective,
    raster_args,
    sphere_mesh,
    vis_depth,
    vis_ids,
)

from avatarfarm.kernels.raster import RASTER_MARGIN, clear_vis_cpu, raster_cpu

SUB = 256  # sub-pixel units per pixel (8 bits)


def ndc_from_pixels(pts, lw, lh, z=0.0) -> np.ndarray:
    """Clip coordinates (w = 1) of layer-pixel points (y down). Exact for power-of-two sizes
    and coordinates on the 1/256 grid, so the rasterizer sees exactly these points."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    out = np.empty((len(pts), 4), np.float32)
    out[:, 0] = pts[:, 0] / lw * 2.0 - 1.0
    out[:, 1] = 1.0 - pts[:, 1] / lh * 2.0
    out[:, 2] = z
    out[:, 3] = 1.0
    return out


def raster_each(clip, tris, lw, lh, double_sided=True, alpha=OPAQUE):
    """Rasterize every triangle alone, as one session each, in one launch: [T, lh, lw] ids."""
    tris = np.asarray(tris, np.int32).reshape(-1, 3)
    n = len(tris)
    mesh = Mesh(
        positions=np.zeros((len(clip), 3), np.float32),
        tris=tris,
        alpha_mode=[alpha],
        double_sided=[double_sided],
    )
    b = pack([mesh], [Session(0, lw, lh) for _ in range(n)])
    b.s_tbase = np.arange(n, dtype=np.int32)
    b.s_tcount = np.ones(n, np.int32)
    b.s_obase = np.zeros(n, np.int32)
    b.clip = np.asarray(clip, np.float32)
    raster_cpu(*raster_args(b))
    buf = b.vis_blend if alpha != OPAQUE else b.vis_opaque
    return np.stack([vis_ids(layer(b, buf, s)) for s in range(n)]), b


def raster_one_session(clip, tris, lw, lh, tri_mat=None, alpha=(OPAQUE,), double_sided=None):
    """All triangles in one session; returns the batch (vis buffers filled)."""
    double_sided = double_sided or (False,) * len(alpha)
    mesh = Mesh(
        positions=np.zeros((len(clip), 3), np.float32),
        tris=np.asarray(tris, np.int32).reshape(-1, 3),
        tri_mat=None if tri_mat is None else np.asarray(tri_mat, np.int32),
        alpha_mode=list(alpha),
        double_sided=list(double_sided),
    )
    b = pack([mesh], [Session(0, lw, lh)])
    b.clip = np.asarray(clip, np.float32)
    raster_cpu(*raster_args(b))
    return b


def reference_coverage(px_pts, lw, lh) -> np.ndarray:
    """Pixel centres inside a triangle given by snapped sub-pixel points, decided exactly;
    a centre on an edge belongs to the triangle when moving it by (+e, +e^2) for a tiny e
    enters the triangle (the top-left rule, stated independently of the rasterizer)."""
    X = [round(x * SUB) for x, _ in px_pts]
    Y = [round(y * SUB) for _, y in px_pts]
    area = (X[1] - X[0]) * (Y[2] - Y[0]) - (Y[1] - Y[0]) * (X[2] - X[0])
    if area == 0:
        return np.zeros((lh, lw), bool)
    if area < 0:
        X[1], X[2], Y[1], Y[2] = X[2], X[1], Y[2], Y[1]
    cx = (np.arange(lw, dtype=np.int64) * SUB + SUB // 2)[None, :]
    cy = (np.arange(lh, dtype=np.int64) * SUB + SUB // 2)[:, None]
    inside = np.ones((lh, lw), bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        dx, dy = X[b] - X[a], Y[b] - Y[a]
        e = dx * (cy - Y[a]) - dy * (cx - X[a])
        ex, ey = -dy, dx  # derivative of e along +x and +y
        on_edge_owned = (e == 0) & ((ex > 0) | ((ex == 0) & (ey > 0)))
        inside &= (e > 0) | on_edge_owned
    return inside


def test_hand_made_triangles_follow_top_left_rule():
    lw = lh = 8
    # Three triangles with vertices on pixel centres, so whole rows/columns of centres lie
    # exactly on their edges. Upper-left half of a square: top and left edges are owned,
    # the diagonal (a bottom-right edge here) is not.
    pts = [(1.5, 1.5), (5.5, 1.5), (1.5, 5.5), (5.5, 5.5)]
    clip = ndc_from_pixels(pts, lw, lh)
    ids, _ = raster_each(clip, [[0, 1, 2], [2, 3, 1], [0, 1, 3]], lw, lh)
    y, x = np.mgrid[0:lh, 0:lw]
    upper_left = (x >= 1) & (y >= 1) & (x + y <= 5)
    lower_right = (x <= 4) & (y <= 4) & (x + y >= 6)
    upper_right = (y >= 1) & (x <= 4) & (x >= y)
    np.testing.assert_array_equal(ids[0] == 0, upper_left)
    np.testing.assert_array_equal(ids[1] == 0, lower_right)
    np.testing.assert_array_equal(ids[2] == 0, upper_right)
    assert upper_left.sum() == 10 and lower_right.sum() == 6 and upper_right.sum() == 10
    # The two halves of the square tile it exactly.
    np.testing.assert_array_equal(
        (ids[0] == 0) + (ids[1] == 0), (x >= 1) & (x <= 4) & (y >= 1) & (y <= 4)
    )


def test_random_triangles_cover_exactly_the_reference_pixels():
    rng = np.random.default_rng(1)
    lw, lh = 32, 16
    n = 150
    # Half-pixel grid points: many pixel centres land exactly on vertices and edges.
    pts = rng.integers(-8, 2 * lw + 8, (n * 3, 2)) / 2.0
    pts[:, 1] = np.clip(pts[:, 1], -4, lh + 4)
    clip = ndc_from_pixels(pts, lw, lh)
    ids, _ = raster_each(clip, np.arange(n * 3).reshape(n, 3), lw, lh)
    for t in range(n):
        ref = reference_coverage(pts[3 * t : 3 * t + 3], lw, lh)
        np.testing.assert_array_equal(
            ids[t] == 0, ref, err_msg=f"triangle {t}: {pts[3 * t : 3 * t + 3]}"
        )


def cross2(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def test_shared_edges_never_crack_nor_overlap():
    rng = np.random.default_rng(2)
    lw = lh = 16
    pts, tris = [], []
    while len(pts) < 4 * 200:
        # shared edge p-r and the two far vertices on a half-pixel grid, so that many
        # pixel centres fall exactly on the shared edge
        p, r, s1, s2 = rng.integers(-4, 2 * lw + 4, (4, 2)) / 2.0
        side1, side2 = np.sign(cross2(r - p, s1 - p)), np.sign(cross2(r - p, s2 - p))
        if side1 == 0 or side2 == 0 or side1 == side2:
            continue  # keep two triangles on opposite sides of their shared edge
        base = len(pts)
        pts += [p, r, s1, s2]
        tris += [[base, base + 1, base + 2], [base + 1, base, base + 3]]
    pts = np.array(pts)
    n_quads = len(pts) // 4
    clip = ndc_from_pixels(pts, lw, lh)
    ids, _ = raster_each(clip, tris, lw, lh)
    count = (ids == 0).reshape(n_quads, 2, lh, lw).sum(axis=1)
    assert count.max() <= 1, "two triangles sharing an edge covered the same pixel"
    y, x = np.mgrid[0:lh, 0:lw]
    c = np.stack([(x + 0.5), (y + 0.5)], -1)
    on_edges = 0
    for q in range(n_quads):
        p, r = pts[4 * q], pts[4 * q + 1]
        on_line = cross2(r - p, c - p) == 0
        t = ((c - p) @ (r - p)) / ((r - p) @ (r - p))
        inner = on_line & (t > 0) & (t < 1)
        on_edges += inner.sum()
        # A centre strictly inside the shared edge belongs to exactly one of the two.
        assert (count[q][inner] == 1).all(), f"crack on the shared edge of quad {q}"
        # Everything strictly inside either triangle is covered (no interior holes).
        for k in (2, 3):
            ref = reference_coverage(pts[[4 * q, 4 * q + 1, 4 * q + k]], lw, lh)
            assert (count[q][ref] == 1).all()
    assert on_edges > 50  # the test did exercise centres lying on shared edges


def test_jittered_mesh_covers_every_pixel_exactly_once():
    lw, lh = 32, 32
    for seed in range(3):
        mesh = grid_mesh(5, 4, size=(2.6, 2.6), jitter=0.4, seed=seed)
        clip = np.concatenate([mesh.positions, np.ones((mesh.n_vertices, 1), np.float32)], 1)
        ids, _ = raster_each(clip, mesh.tris, lw, lh, double_sided=False)
        count = (ids == 0).sum(axis=0)
        np.testing.assert_array_equal(count, np.ones((lh, lw), int))


def test_nearer_triangle_wins_in_either_order():
    lw = lh = 16
    near = ndc_from_pixels([(2, 2), (14, 2), (2, 14)], lw, lh, z=-0.2)
    far = ndc_from_pixels([(1, 1), (15, 1), (1, 15)], lw, lh, z=0.3)
    for clip, near_id in ((np.concatenate([near, far]), 0), (np.concatenate([far, near]), 1)):
        # Reverse the winding so both are front faces (CCW in NDC).
        b = raster_one_session(clip, [[0, 2, 1], [3, 5, 4]], lw, lh)
        ids = vis_ids(layer(b, b.vis_opaque, 0))
        depth = vis_depth(layer(b, b.vis_opaque, 0))
        assert ids[5, 5] == near_id and ids[1, 1] == 1 - near_id
        assert depth[5, 5] == pytest.approx(0.4) and depth[1, 1] == pytest.approx(0.65)
        assert (b.vis_blend == EMPTY).all()


def test_depth_is_interpolated_linearly_in_screen_space():
    lw = lh = 32
    pts = [(0.0, 0.0), (32.0, 0.0), (0.0, 32.0)]
    clip = ndc_from_pixels(pts, lw, lh)
    clip[:, 2] = [-0.5, 0.5, 0.1]
    b = raster_one_session(clip, [[0, 2, 1]], lw, lh)
    depth = vis_depth(layer(b, b.vis_opaque, 0))
    y, x = np.mgrid[0:lh, 0:lw]
    u, v = (x + 0.5) / 32.0, (y + 0.5) / 32.0
    expected = 0.5 * ((1 - u - v) * -0.5 + u * 0.5 + v * 0.1) + 0.5
    inside = np.isfinite(depth)
    assert inside.sum() == (u + v < 1).sum()
    np.testing.assert_allclose(depth[inside], expected[inside], atol=1e-6)


def test_back_faces_are_culled_unless_double_sided():
    lw = lh = 8
    clip = ndc_from_pixels([(1, 1), (7, 1), (1, 7)], lw, lh)  # clockwise in NDC: back face
    for tris, mats, visible in (
        ([[0, 1, 2]], (False,), False),
        ([[0, 2, 1]], (False,), True),
        ([[0, 1, 2]], (True,), True),
        ([[0, 2, 1]], (True,), True),
    ):
        b = raster_one_session(clip, tris, lw, lh, double_sided=mats)
        covered = (b.vis_opaque != EMPTY).sum()
        assert (covered > 0) == visible, (tris, mats)
        if visible:
            assert covered == 15  # 5+4+...+1 centres, the same pixels whichever the winding


def test_blend_layer_keeps_nearest_translucent_fragment_in_front_of_opaque():
    lw = lh = 16
    full = [(0, 0), (16, 0), (0, 16), (16, 16)]
    opaque = ndc_from_pixels(full, lw, lh, z=0.0)
    front = ndc_from_pixels(full, lw, lh, z=-0.5)
    front2 = ndc_from_pixels(full, lw, lh, z=-0.6)
    behind = ndc_from_pixels(full, lw, lh, z=0.5)
    clip = np.concatenate([opaque, front, behind, front2])
    quad = np.array([[0, 2, 1], [1, 2, 3]])
    # triangles: 0,1 opaque quad; 2,3 BLEND in front; 4,5 MASK behind; 6 MASK nearest (half)
    tris = np.concatenate([quad, quad + 4, quad + 8, (quad + 12)[:1]])
    mats = [0, 0, 1, 1, 2, 2, 2]
    b = raster_one_session(
        clip, tris, lw, lh, tri_mat=mats, alpha=(OPAQUE, BLEND, MASK), double_sided=(False,) * 3
    )
    op = vis_ids(layer(b, b.vis_opaque, 0))
    bl = vis_ids(layer(b, b.vis_blend, 0))
    assert np.isin(op, [0, 1]).all()
    y, x = np.mgrid[0:lh, 0:lw]
    in_tri6 = (x + y) < 15  # upper-left half (the diagonal's centres go to the other half)
    assert (bl[in_tri6] == 6).all()
    assert np.isin(bl[~in_tri6], [2, 3]).all()
    # Translucent triangles behind the opaque quad are dropped entirely.
    b2 = raster_one_session(
        clip, np.concatenate([quad, quad + 8]), lw, lh, tri_mat=[0, 0, 1, 1], alpha=(OPAQUE, MASK)
    )
    assert (b2.vis_blend == EMPTY).all() and (b2.vis_opaque != EMPTY).all()
    # ... and so are coplanar ones: the blend layer keeps only what is strictly in front.
    b3 = raster_one_session(
        clip, np.concatenate([quad, quad]), lw, lh, tri_mat=[0, 0, 1, 1], alpha=(OPAQUE, MASK)
    )
    assert (b3.vis_blend == EMPTY).all() and (b3.vis_opaque != EMPTY).all()


def test_fragments_beyond_the_far_plane_are_dropped():
    lw, lh = 32, 8
    clip = ndc_from_pixels([(0, 0), (32, 0), (0, 8), (32, 8)], lw, lh)
    clip[:, 2] = [0.5, 1.5, 0.5, 1.5]  # z_ndc from 0.5 (left) to 1.5 (right)
    b = raster_one_session(clip, [[0, 2, 1], [1, 2, 3]], lw, lh)
    depth = vis_depth(layer(b, b.vis_opaque, 0))
    x = np.arange(lw) + 0.5
    expected_visible = 0.5 + x / 32.0 <= 1.0
    np.testing.assert_array_equal(np.isfinite(depth), np.broadcast_to(expected_visible, (lh, lw)))
    assert depth[np.isfinite(depth)].max() <= 1.0


def ray_reference(world_tris, view, fov, lw, lh, near, far):
    """Coverage by casting a ray through each pixel centre (eye space, float64)."""
    tan = math.tan(math.radians(fov) / 2)
    y, x = np.mgrid[0:lh, 0:lw]
    dx = ((x + 0.5) / lw * 2 - 1) * tan * lw / lh
    dy = (1 - (y + 0.5) / lh * 2) * tan
    d = np.stack([dx, dy, -np.ones_like(dx)], -1)
    cover = np.zeros((len(world_tris), lh, lw), bool)
    for i, tri in enumerate(world_tris):
        e = (view @ np.concatenate([tri, np.ones((3, 1))], 1).T).T[:, :3]
        n = np.cross(e[1] - e[0], e[2] - e[0])
        denom = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (e[0] @ n) / denom
        hit = d * t[..., None]
        ok = (t > 0) & (-hit[..., 2] >= near) & (-hit[..., 2] <= far)
        inside = np.ones_like(ok)
        for a, b in ((0, 1), (1, 2), (2, 0)):
            inside &= np.cross(e[b] - e[a], hit - e[a]) @ n > 0
        cover[i] = ok & inside
    return cover


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation (no wrap-around at the borders)."""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion; outside the layer counts as inside (the layer edge is not a boundary)."""
    h, w = mask.shape
    padded = np.pad(mask, 1, mode="edge")
    out = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def test_triangles_crossing_the_near_plane_are_clipped_not_smeared():
    lw, lh, fov, near, far = 32, 24, 60.0, 0.1, 50.0
    view = np.eye(4)
    proj = perspective(fov, lw / lh, near, far)
    rng = np.random.default_rng(3)
    world = [
        # a floor triangle running from in front of the camera to behind it
        np.array([[-1.0, -0.5, -3.0], [1.0, -0.5, -3.0], [0.0, -0.5, 2.0]]),
        # one vertex in front, two behind; two in front, one behind (both windings)
        np.array([[0.2, 0.1, -2.0], [-0.6, 0.3, 1.0], [0.5, -0.4, 0.5]]),
        np.array([[0.2, 0.1, -2.0], [-0.6, 0.3, -1.5], [0.5, -0.4, 0.5]]),
        # a vertex exactly on the camera plane (w = 0) and one at the eye itself
        np.array([[0.0, 0.0, 0.0], [0.4, -0.3, -1.0], [-0.4, -0.3, -1.0]]),
        np.array([[0.3, 0.2, 0.0], [0.4, -0.3, -1.0], [-0.4, -0.3, -1.0]]),
        # entirely behind the camera
        np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
    ]
    world += [rng.uniform(-2, 2, (3, 3)) - [0, 0, 0.5] for _ in range(40)]
    pos = np.concatenate(world)
    clip = (proj @ view @ np.concatenate([pos, np.ones((len(pos), 1))], 1).T).T.astype(np.float32)
    ids, b = raster_each(clip, np.arange(len(pos)).reshape(-1, 3), lw, lh)
    ref = ray_reference(world, view, fov, lw, lh, near, far)
    for i in range(len(world)):
        got = ids[i] == 0
        assert not (got & ~dilate(ref[i])).any(), f"triangle {i} covers pixels outside it"
        assert not (erode(ref[i]) & ~got).any(), f"triangle {i} misses pixels inside it"
    assert not (ids[5] == 0).any()
    depth = vis_depth(b.vis_opaque)
    assert (depth[np.isfinite(depth)] >= 0).all() and (depth[np.isfinite(depth)] <= 1).all()


def test_mesh_crossing_the_near_plane_stays_watertight():
    lw, lh = 32, 32
    mesh = grid_mesh(4, 4, size=(3.0, 3.0), jitter=0.3, seed=5)
    # A floor below the eye that passes under and behind the camera.
    pos = np.stack([mesh.positions[:, 0], -0.3 + 0 * mesh.positions[:, 0], mesh.positions[:, 1]], 1)
    proj = perspective(70.0, 1.0, 0.2, 20.0)
    clip = (proj @ np.concatenate([pos, np.ones((len(pos), 1))], 1).T).T.astype(np.float32)
    ids, _ = raster_each(clip, mesh.tris, lw, lh)
    count = (ids == 0).sum(axis=0)
    assert count.max() == 1
    ref = ray_reference([pos[t] for t in mesh.tris], np.eye(4), 70.0, lw, lh, 0.2, 20.0).any(axis=0)
    assert (count[erode(ref)] == 1).all()
    assert not (count.astype(bool) & ~dilate(ref)).any()


def test_clear_touches_only_the_sessions_layers():
    sentinel = np.uint64(1234)
    vo = np.full(8 * 8 + 4 * 4 + 10, sentinel, np.uint64)
    vb = vo.copy()
    s_lw = np.array([8, 4], np.int32)
    s_lh = np.array([8, 4], np.int32)
    s_lbase = np.array([0, 64 + 10], np.int64)
    clear_vis_cpu(s_lw, s_lh, s_lbase, 2, vo, vb)
    for buf in (vo, vb):
        assert (buf[:64] == EMPTY).all() and (buf[74:] == EMPTY).all()
        assert (buf[64:74] == sentinel).all()


def test_batch_of_different_sessions_equals_each_rendered_alone():
    from kernel_fixtures import run_deform_raster_cpu

    sphere = sphere_mesh(8, 12, radius=0.8)
    grid = grid_mesh(6, 3, size=(1.5, 1.0), z=0.1, jitter=0.3)
    grid.tri_mat = np.arange(grid.n_tris, dtype=np.int32) % 2
    grid.alpha_mode = [OPAQUE, BLEND]
    grid.double_sided = [False, True]
    meshes = [sphere, grid]
    sessions = [
        Session(0, 40, 24, viewproj=camera((0.3, 0.2, 3.0), (0, 0, 0), 40, 24)),
        Session(1, 24, 32, viewproj=camera((-0.5, 0.1, 2.0), (0, 0, 0), 24, 32)),
        Session(0, 16, 16, viewproj=camera((0.0, 0.0, 1.2), (0, 0, 0), 16, 16, fov=70)),
    ]
    batch = pack(meshes, sessions)
    run_deform_raster_cpu(batch)
    for s, sess in enumerate(sessions):
        alone = pack(meshes, [sess])
        run_deform_raster_cpu(alone)
        o, v = int(batch.s_obase[s]), int(batch.s_vcount[s])
        np.testing.assert_array_equal(batch.clip[o : o + v], alone.clip[:v])
        for name in ("vis_opaque", "vis_blend"):
            np.testing.assert_array_equal(
                layer(batch, getattr(batch, name), s), layer(alone, getattr(alone, name), 0)
            )
        assert (layer(batch, batch.vis_opaque, s) != EMPTY).any()
    assert (layer(batch, batch.vis_blend, 1) != EMPTY).any()


def test_sphere_silhouette_and_front_faces():
    mesh = sphere_mesh(16, 24, radius=1.0)
    b = pack([mesh], [Session(0, 48, 48, viewproj=camera((0, 0, 4.0), (0, 0, 0), 48, 48))])
    from kernel_fixtures import run_deform_raster_cpu

    run_deform_raster_cpu(b)
    ids = vis_ids(layer(b, b.vis_opaque, 0))
    covered = ids >= 0
    # Radius on screen: 1/sqrt(4^2-1) / tan(15 deg) of the half-height.
    r_px = 24 * math.tan(math.asin(1 / 4.0)) / math.tan(math.radians(15))
    y, x = np.mgrid[0:48, 0:48]
    rr = np.hypot(x + 0.5 - 24, y + 0.5 - 24)
    assert covered[rr < r_px - 1.5].all() and not covered[rr > r_px + 0.5].any()
    # Only front faces are visible (normals towards the camera).
    p = mesh.positions[mesh.tris[ids[covered]]].mean(axis=1)
    assert (p[:, 2] > 0).all()


@pytest.mark.parametrize("alpha", [MASK, BLEND])
def test_translucent_only_mesh_goes_to_the_blend_layer(alpha):
    lw = lh = 8
    clip = ndc_from_pixels([(0, 0), (8, 0), (0, 8)], lw, lh)
    ids, b = raster_each(clip, [[0, 2, 1]], lw, lh, double_sided=False, alpha=alpha)
    assert (b.vis_opaque == EMPTY).all()
    assert (ids[0] == 0).sum() == 28


def test_result_does_not_depend_on_the_cpu_row_bands_or_workers():
    from avatarfarm.kernels.damage import full_layers
    from avatarfarm.kernels.raster import _raster_cpu_kernel

    mesh = sphere_mesh(10, 14, radius=0.9)
    mesh.tri_mat = (np.arange(mesh.n_tris) % 2).astype(np.int32)
    mesh.alpha_mode = [OPAQUE, MASK]
    mesh.double_sided = [False, True]
    vp = camera((0.4, 0.3, 2.5), (0, 0, 0), 40, 37)
    b = pack([mesh], [Session(0, 40, 37, viewproj=vp), Session(0, 23, 30, viewproj=vp)])
    from kernel_fixtures import run_deform_raster_cpu

    run_deform_raster_cpu(b)
    claims = np.zeros(8, np.int64)
    for band, workers in ((1, 1), (5, 2), (16, 3), (37, 8)):
        vo = np.zeros_like(b.vis_opaque)
        vb = np.zeros_like(b.vis_blend)
        n_bands = -(-37 // band)
        dirty = full_layers(b.s_lw, b.s_lh, 2)
        args = (band, n_bands, True, vo, vb, dirty, claims, workers)
        _raster_cpu_kernel(*raster_args(b)[:12], *args)
        np.testing.assert_array_equal(vo, b.vis_opaque)
        np.testing.assert_array_equal(vb, b.vis_blend)
    assert (b.vis_blend != EMPTY).sum() > 20


def test_a_dirty_rect_limits_raster_to_it_and_its_margin():
    """Inside the shade rect plus RASTER_MARGIN the words equal a whole-layer raster;
    outside it (and in a session with an empty rect) nothing is touched."""
    from kernel_fixtures import run_deform_raster_cpu

    mesh = sphere_mesh(10, 14, radius=0.9)
    vp = camera((0.4, 0.3, 2.5), (0, 0, 0), 40, 37)
    b = pack([mesh], [Session(0, 40, 37, viewproj=vp), Session(0, 23, 30, viewproj=vp)])
    run_deform_raster_cpu(b)
    dirty = np.array([[10, 8, 30, 20], [0, 0, 0, 0]], np.int32)
    vo = np.zeros_like(b.vis_opaque)
    vb = np.zeros_like(b.vis_blend)
    raster_cpu(*raster_args(b)[:12], vo, vb, True, dirty)
    lw, lh = 40, 37
    region = np.zeros((lh, lw), bool)
    m = RASTER_MARGIN
    region[8 - m : 20 + m, 10 - m : 30 + m] = True
    full = b.vis_opaque[: lw * lh].reshape(lh, lw)
    got = vo[: lw * lh].reshape(lh, lw)
    np.testing.assert_array_equal(got[region], full[region])
    assert (got[~region] == 0).all() and (vo[lw * lh :] == 0).all()
    assert (full[region] != EMPTY).sum() > 50  # the region holds part of the sphere
