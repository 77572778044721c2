"""The built-in presenter: geometry, blendshapes, expressions, skeleton, cache."""

from __future__ import annotations

import numpy as np
import pytest

from avatarfarm.render import avatar_parts as ap
from avatarfarm.render import default_avatar as da
from avatarfarm.render.asset import AvatarAsset, Override, Shading
from avatarfarm.render.vocabulary import ARKIT_NAMES, VRM_PRESETS

EYE_MATERIALS = ("sclera", "iris", "iris_rim", "pupil", "highlight")


@pytest.fixture(scope="module")
def avatar() -> AvatarAsset:
    return da.build_default_avatar()


def _dense(asset: AvatarAsset, name: str) -> np.ndarray:
    """[V,3] position delta of one target, expanded from the CSR layout."""
    t = asset.target_names.index(name)
    vid = np.repeat(np.arange(asset.vertex_count), np.diff(asset.morph_offsets))
    out = np.zeros((asset.vertex_count, 3))
    sel = asset.morph_target == t
    out[vid[sel]] = asset.morph_dpos[sel]
    return out


def _material_ids(asset: AvatarAsset, *names: str) -> np.ndarray:
    return np.array([asset.materials.name.index(n) for n in names])


def _first_hits(origins: np.ndarray, pos: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Index of the first triangle hit by rays from `origins` along -Z (-1 for a miss)."""
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    ox, oy = origins[:, None, 0], origins[:, None, 1]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    den = np.where(np.abs(den) < 1e-18, np.nan, den)
    w0 = ((b[:, 1] - c[:, 1]) * (ox - c[:, 0]) + (c[:, 0] - b[:, 0]) * (oy - c[:, 1])) / den
    w1 = ((c[:, 1] - a[:, 1]) * (ox - c[:, 0]) + (a[:, 0] - c[:, 0]) * (oy - c[:, 1])) / den
    w2 = 1 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = np.where(inside, w0 * a[:, 2] + w1 * b[:, 2] + w2 * c[:, 2], -np.inf)
    best = np.argmax(z, axis=1)
    return np.where(np.isfinite(z[np.arange(len(z)), best]), best, -1)


def _front_view_materials(
    asset: AvatarAsset,
    center: np.ndarray,
    half: tuple[float, float],
    weights: dict[str, float],
    n: int = 21,
) -> np.ndarray:
    """Material seen by each ray of an n x n grid (front view) around `center` after morphing."""
    pos = asset.positions.astype(np.float64).copy()
    for name, w in weights.items():
        pos += w * _dense(asset, name)
    tri = asset.triangles
    lo, hi = center[:2] - half, center[:2] + half
    p0, p1, p2 = (pos[tri[:, k], :2] for k in range(3))
    tri_lo = np.minimum(np.minimum(p0, p1), p2)
    tri_hi = np.maximum(np.maximum(p0, p1), p2)
    near = np.nonzero(np.all((tri_hi >= lo) & (tri_lo <= hi), axis=1))[0]
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    origins = np.stack([gx.ravel(), gy.ravel()], -1)
    hit = _first_hits(origins, pos, tri[near])
    return np.where(hit >= 0, asset.triangle_material[near[hit]], -1)


def test_size_scale_and_validity(avatar: AvatarAsset) -> None:
    avatar.validate()
    assert avatar.triangle_count >= 8000
    assert avatar.format == "builtin"
    lo, hi = avatar.bounds
    assert 1.62 < hi[1] < 1.75  # top of the hair, metres
    assert np.allclose(np.linalg.norm(avatar.normals, axis=1), 1.0, atol=1e-4)
    head_y = avatar.joint_rest_world[2][1, 3]
    eye_y = avatar.joint_rest_world[3][1, 3]
    assert 1.45 < head_y < eye_y < 1.6
    # The nose is the front-most point of the head and faces +Z.
    head_region = avatar.positions[:, 1] > 1.45
    nose = np.argmax(np.where(head_region, avatar.positions[:, 2], -np.inf))
    assert abs(avatar.positions[nose, 0]) < 0.005 and avatar.normals[nose, 2] > 0.8


def test_winding_is_counter_clockwise_from_outside(avatar: AvatarAsset) -> None:
    p = avatar.positions.astype(np.float64)
    t = avatar.triangles
    fn = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
    # Stored vertex normals agree with the winding.
    agree = np.einsum("ij,ij->i", fn, avatar.normals[t].sum(axis=1)) > 0
    assert agree.mean() > 0.995
    # Shells face away from their insides: the torso from its vertical axis, the head skin,
    # hair and eyeballs from their centres.
    centroid = p[t].mean(axis=1)
    head_c = np.array([0.0, 1.555, 0.0])
    for names, inside, share in (
        (("blazer", "top"), centroid * [0, 1, 0], 0.99),
        (("hair",), head_c, 0.85),  # the rim folds back under the shell
        (("skin",), head_c, 0.9),
    ):
        sel = np.isin(avatar.triangle_material, _material_ids(avatar, *names))
        if names == ("skin",):
            sel &= centroid[:, 1] > 1.5
        out = np.einsum(
            "ij,ij->i",
            fn[sel],
            centroid[sel] - inside[sel] if inside.ndim == 2 else centroid[sel] - inside,
        )
        assert (out >= 0).mean() > share, names
    # Eyeballs face away from their centres.
    for joint, name in ((3, "sclera"), (4, "sclera")):
        sel = avatar.triangle_material == _material_ids(avatar, name)[0]
        centre = avatar.joint_rest_world[joint][:3, 3]
        side = np.sign(centre[0])
        sel &= np.sign(p[t[:, 0], 0]) == side
        out = np.einsum("ij,ij->i", fn[sel], p[t[sel]].mean(axis=1) - centre)
        assert (out > 0).mean() > 0.99


def test_targets_and_expressions(avatar: AvatarAsset) -> None:
    assert avatar.target_names == list(ARKIT_NAMES)
    names = [e.name for e in avatar.expressions]
    assert set(ARKIT_NAMES) | set(VRM_PRESETS) == set(names)
    for i, name in enumerate(ARKIT_NAMES):
        e = avatar.expression(name)
        assert e is not None and e.binds == [(i, 1.0)] and not e.is_binary
    index = {n: i for i, n in enumerate(ARKIT_NAMES)}
    aa = dict(avatar.expression("aa").binds)
    assert aa[index["jawOpen"]] == pytest.approx(0.8)
    blink = dict(avatar.expression("blink").binds)
    assert blink == {index["eyeBlinkLeft"]: 1.0, index["eyeBlinkRight"]: 1.0}
    assert avatar.expression("neutral").binds == []
    assert index["eyeWideLeft"] in dict(avatar.expression("surprised").binds)
    assert avatar.expression("happy").override_blink == Override.BLOCK
    assert avatar.expression("aa").override_blink == Override.NONE
    assert all(avatar.expression(n).preset for n in VRM_PRESETS)
    for e in avatar.expressions:
        assert all(0.0 <= w <= 1.0 for _, w in e.binds)


def test_every_target_moves_and_csr_is_sorted(avatar: AvatarAsset) -> None:
    counts = np.bincount(avatar.morph_target, minlength=len(ARKIT_NAMES))
    assert (counts > 0).all()
    for name in ARKIT_NAMES:
        assert np.abs(_dense(avatar, name)).max() > 0.001, name
    offsets = avatar.morph_offsets
    assert (np.diff(offsets) >= 0).all()
    vid = np.repeat(np.arange(avatar.vertex_count), np.diff(offsets))
    key = vid.astype(np.int64) * 64 + avatar.morph_target
    assert (np.diff(key) > 0).all()  # by vertex, then by target, no duplicates
    # Sparse: each target touches only a fraction of the mesh.
    assert counts.max() < avatar.vertex_count * 0.5


def test_jaw_open_moves_only_below_the_mouth(avatar: AvatarAsset) -> None:
    d = _dense(avatar, "jawOpen")
    moved = np.abs(d).max(axis=1) > 1e-6
    eye_y = avatar.joint_rest_world[3][1, 3]
    assert avatar.positions[moved, 1].max() < eye_y - 0.03
    teeth = _material_ids(avatar, "teeth")[0]
    teeth_verts = np.unique(avatar.triangles[avatar.triangle_material == teeth])
    assert (d[teeth_verts, 1] < -0.01).any()  # the lower teeth drop with the jaw
    assert d[:, 1].min() < -0.015  # the chin drops well over a centimetre


def test_jaw_open_shows_teeth(avatar: AvatarAsset) -> None:
    centre = np.array([0.0, ap.MOUTH_Y - 0.006, 0.0])  # just below the closed mouth line
    teeth = _material_ids(avatar, "teeth")[0]
    closed = _front_view_materials(avatar, centre, (0.015, 0.012), {})
    opened = _front_view_materials(avatar, centre, (0.015, 0.012), {"jawOpen": 1.0})
    assert not (closed == teeth).any()
    assert (opened == teeth).sum() >= 5
    assert (opened == _material_ids(avatar, "mouth")[0]).sum() >= 20  # dark interior shows


def test_mouth_interior_stays_inside_the_face(avatar: AvatarAsset) -> None:
    """Teeth, tongue and the mouth cavity never show through the skin around the mouth."""
    inner = _material_ids(avatar, "teeth", "tongue", "mouth")
    above = np.array([0.0, ap.MOUTH_Y + 0.015, 0.0])
    below = np.array([0.0, ap.MOUTH_Y - 0.02, 0.0])
    for name in ("", *ARKIT_NAMES):
        weights = {name: 1.0} if name else {}
        seen = _front_view_materials(avatar, above, (0.03, 0.01), weights, n=9)
        assert not np.isin(seen, inner).any(), name
        for side in (-1, 1):  # beside and below the mouth corners
            beside = np.array([side * 0.034, ap.MOUTH_Y - 0.006, 0.0])
            seen = _front_view_materials(avatar, beside, (0.007, 0.012), weights, n=9)
            assert not np.isin(seen, inner).any(), (name, side)
        if name not in ("jawOpen", "tongueOut"):
            seen = _front_view_materials(avatar, below, (0.03, 0.012), weights, n=9)
            assert not np.isin(seen, inner).any(), name


@pytest.mark.parametrize("side", ["Left", "Right"])
def test_blink_covers_the_eye(avatar: AvatarAsset, side: str) -> None:
    joint = 3 if side == "Left" else 4
    centre = avatar.joint_rest_world[joint][:3, 3].astype(np.float64)
    eye = _material_ids(avatar, *EYE_MATERIALS)
    half = (0.016, 0.012)
    open_view = _front_view_materials(avatar, centre, half, {})
    assert np.isin(open_view, eye).sum() > 40  # the eye is visible when open
    closed = _front_view_materials(avatar, centre, half, {f"eyeBlink{side}": 1.0})
    assert not np.isin(closed, eye).any()
    lid = _material_ids(avatar, "skin", "lash")
    assert np.isin(closed, lid).all()


def test_blink_left_moves_only_the_left_eye(avatar: AvatarAsset) -> None:
    d = _dense(avatar, "eyeBlinkLeft")
    moved = np.abs(d).max(axis=1) > 1e-6
    centre = avatar.joint_rest_world[3][:3, 3]
    assert (avatar.positions[moved, 0] > 0).all()
    assert np.linalg.norm(avatar.positions[moved] - centre, axis=1).max() < 0.03
    assert d[moved, 1].min() < -0.01  # the upper lid travels down over the eye


def _near(asset: AvatarAsset, point: np.ndarray, radius: float) -> np.ndarray:
    return np.linalg.norm(asset.positions - point, axis=1) < radius


def _front_point(asset: AvatarAsset, x: float, y: float) -> np.ndarray:
    """The front-most rest vertex near (x, y)."""
    p = asset.positions
    close = np.hypot(p[:, 0] - x, p[:, 1] - y) < 0.002
    return p[np.argmax(np.where(close, p[:, 2], -np.inf))].astype(np.float64)


def test_smile_lifts_the_left_corner(avatar: AvatarAsset) -> None:
    corner = _front_point(avatar, ap.MOUTH_HALF_W, ap.mouth_line(np.array(ap.MOUTH_HALF_W)))
    near = _near(avatar, corner, 0.004)
    left = _dense(avatar, "mouthSmileLeft")[near].mean(axis=0)
    assert left[1] > 0.003 and left[0] > 0.001
    right_side = _near(avatar, corner * [-1, 1, 1], 0.004)
    assert np.abs(_dense(avatar, "mouthSmileLeft")[right_side]).max() < 0.0005
    assert _dense(avatar, "mouthSmileRight")[right_side].mean(axis=0)[1] > 0.003
    assert _dense(avatar, "mouthFrownLeft")[near].mean(axis=0)[1] < -0.002


def test_brows_and_mouth_shapes_move_the_right_way(avatar: AvatarAsset) -> None:
    brow = _material_ids(avatar, "brow")[0]
    verts = np.unique(avatar.triangles[avatar.triangle_material == brow])
    inner = verts[np.abs(avatar.positions[verts, 0]) < 0.018]
    outer_left = verts[avatar.positions[verts, 0] > 0.045]
    assert _dense(avatar, "browInnerUp")[inner, 1].mean() > 0.004
    assert _dense(avatar, "browOuterUpLeft")[outer_left, 1].mean() > 0.003
    assert _dense(avatar, "browDownLeft")[outer_left, 1].mean() < -0.001
    lip = _front_point(avatar, 0.0, ap.MOUTH_Y + 0.003)
    near = _near(avatar, lip, 0.004)
    assert _dense(avatar, "mouthPucker")[near, 2].mean() > 0.005
    assert _dense(avatar, "mouthLeft")[near, 0].mean() > 0.005
    assert _dense(avatar, "mouthRight")[near, 0].mean() < -0.005
    # mouthClose cancels jawOpen at the lips: no gap between them.
    inner = _material_ids(avatar, "teeth", "tongue", "mouth")
    mouth = np.array([0.0, ap.MOUTH_Y, 0.0])
    closed = _front_view_materials(avatar, mouth, (0.012, 0.006), {"jawOpen": 1, "mouthClose": 1})
    assert not np.isin(closed, inner).any()
    opened = _front_view_materials(avatar, mouth, (0.012, 0.006), {"jawOpen": 1})
    assert np.isin(opened, inner).any()
    tongue = _material_ids(avatar, "tongue")[0]
    tv = np.unique(avatar.triangles[avatar.triangle_material == tongue])
    assert _dense(avatar, "tongueOut")[tv, 2].max() > 0.02


def test_skeleton_and_skin(avatar: AvatarAsset) -> None:
    assert avatar.joint_names == ["root", "neck", "head", "leftEye", "rightEye"]
    assert avatar.joint_parent.tolist() == [-1, 0, 1, 2, 2]
    assert avatar.humanoid == {"neck": 1, "head": 2, "leftEye": 3, "rightEye": 4}
    world = avatar.joint_rest_world
    for j, parent in enumerate(avatar.joint_parent):
        expect = (
            avatar.joint_rest_local[j] if parent < 0 else world[parent] @ avatar.joint_rest_local[j]
        )
        np.testing.assert_allclose(world[j], expect, atol=1e-6)
        np.testing.assert_allclose(world[j][:3, :3], np.eye(3))
    assert world[3][0, 3] > 0 > world[4][0, 3]  # leftEye is on +X
    np.testing.assert_allclose(avatar.skin_weights.sum(axis=1), 1.0, atol=1e-5)
    sclera = _material_ids(avatar, "sclera")[0]
    ev = np.unique(avatar.triangles[avatar.triangle_material == sclera])
    expect = np.where(avatar.positions[ev, 0] > 0, 3, 4)
    assert (avatar.skin_joints[ev, 0] == expect).all() and (avatar.skin_weights[ev, 0] == 1).all()
    hair = _material_ids(avatar, "hair")[0]
    hv = np.unique(avatar.triangles[avatar.triangle_material == hair])
    assert (avatar.skin_weights[hv][avatar.skin_joints[hv] == 2].sum() / len(hv)) == pytest.approx(
        1
    )
    lowest = avatar.positions[:, 1] < 1.1
    assert (
        avatar.skin_weights[lowest][avatar.skin_joints[lowest] == 0].sum() / lowest.sum()
    ) == pytest.approx(1)


def test_materials_are_toon(avatar: AvatarAsset) -> None:
    m = avatar.materials
    for name in ("skin", "hair", "blazer", "top"):
        i = m.name.index(name)
        assert m.shading[i] == Shading.MTOON and 0.8 <= m.shading_toony[i] <= 1.0
        assert not np.allclose(m.base_color[i, :3], m.shade_color[i])
    used = set(np.unique(avatar.triangle_material).tolist())
    assert used == set(range(len(m)))


def test_cameras_frame_face_and_bust(avatar: AvatarAsset) -> None:
    top = float(avatar.bounds[1][1])
    eye_y = float(avatar.joint_rest_world[3][1, 3])
    head, bust = avatar.cameras["head"], avatar.cameras["bust"]
    for cam in (head, bust):
        assert cam.eye[2] > cam.target[2] + 0.3  # in front, looking back at the face
    head_lo, head_hi = head.target[1] - head.height / 2, head.target[1] + head.height / 2
    assert head_lo < 1.44 and head_hi > top  # chin to the top of the hair
    assert head.height < 0.45
    bust_lo, bust_hi = bust.target[1] - bust.height / 2, bust.target[1] + bust.height / 2
    assert bust_lo < 1.25 and bust_hi > top and bust.height < 0.9  # shoulders included
    assert head_lo < eye_y < head_hi


def test_deterministic(avatar: AvatarAsset) -> None:
    again = da.build_default_avatar()
    for key in ("positions", "normals", "uvs", "triangles", "morph_offsets", "morph_target",
                "morph_dpos", "morph_dnormal", "skin_joints", "skin_weights"):  # fmt: skip
        np.testing.assert_array_equal(getattr(avatar, key), getattr(again, key), err_msg=key)


def test_cache_round_trip_and_corruption(
    avatar: AvatarAsset, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVATARFARM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(da, "_MEMO", {})
    builds = []
    monkeypatch.setattr(da, "build_default_avatar", lambda: builds.append(1) or avatar)
    stale = tmp_path / "default_avatar-0000000000000000.npz"
    stale.write_bytes(b"an older generator's build")
    first = da.load_default_avatar()
    assert builds == [1] and da.cache_path().parent == tmp_path and da.cache_path().exists()
    assert not stale.exists()
    assert da.load_default_avatar() is first  # memoised in-process

    monkeypatch.setattr(da, "_MEMO", {})
    cached = da.load_default_avatar()
    assert builds == [1] and cached is not avatar
    for key in da._ARRAYS:
        np.testing.assert_array_equal(getattr(cached, key), getattr(avatar, key), err_msg=key)
    assert cached.target_names == avatar.target_names
    assert [(e.name, e.binds, e.override_blink) for e in cached.expressions] == [
        (e.name, e.binds, e.override_blink) for e in avatar.expressions
    ]
    np.testing.assert_array_equal(cached.materials.base_color, avatar.materials.base_color)
    assert cached.materials.name == avatar.materials.name
    np.testing.assert_array_equal(cached.cameras["bust"].eye, avatar.cameras["bust"].eye)

    for junk in (b"not a zip", b""):
        da.cache_path().write_bytes(junk)
        monkeypatch.setattr(da, "_MEMO", {})
        assert da.load_default_avatar() is avatar
    assert len(builds) == 3
    da._load(da.cache_path()).validate()  # the rebuilt file is good again


def test_generator_key_tracks_the_source() -> None:
    key = da.generator_key()
    assert len(key) == 16 and key == da.generator_key()
    assert key in da.cache_path().name
