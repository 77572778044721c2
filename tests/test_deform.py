"""CPU deform: morph CSR gather, linear-blend skinning, projection, batches of sessions."""

from __future__ import annotations

import math

import numpy as np
from kernel_fixtures import Mesh, Session, camera, deform_args, pack, sphere_mesh

from avatarfarm.kernels.deform import deform_cpu


def morph_mesh(rng, n_vertices=12, n_targets=3, density=0.6) -> Mesh:
    """A random point cloud with a random sparse morph CSR and random 4-bone skinning."""
    pos = rng.normal(0, 1, (n_vertices, 3)).astype(np.float32)
    nrm = rng.normal(0, 1, (n_vertices, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    offsets, target, dpos, dnrm = [0], [], [], []
    for _ in range(n_vertices):
        ts = [t for t in range(n_targets) if rng.random() < density]
        target += ts
        dpos += list(rng.normal(0, 0.2, (len(ts), 3)))
        dnrm += list(rng.normal(0, 0.2, (len(ts), 3)))
        offsets.append(len(target))
    slot = rng.integers(0, 4, (n_vertices, 4)).astype(np.int32)
    w = rng.random((n_vertices, 4)) * (rng.random((n_vertices, 4)) < 0.7)
    w[:, 0] += 0.1
    w /= w.sum(axis=1, keepdims=True)
    return Mesh(
        positions=pos,
        normals=nrm.astype(np.float32),
        tris=np.zeros((1, 3), np.int32),
        morph_offsets=np.array(offsets, np.int32),
        morph_target=np.array(target, np.int32),
        morph_dpos=np.array(dpos, np.float32).reshape(-1, 3),
        morph_dnrm=np.array(dnrm, np.float32).reshape(-1, 3),
        skin_slot=slot,
        skin_weight=w.astype(np.float32),
    )


def reference_deform(mesh: Mesh, weights, palette, viewproj):
    """The stage's definition, in float64 numpy, for one session."""
    p = mesh.positions.astype(np.float64).copy()
    n = mesh.normals.astype(np.float64).copy()
    for v in range(mesh.n_vertices):
        for k in range(mesh.morph_offsets[v], mesh.morph_offsets[v + 1]):
            p[v] += weights[mesh.morph_target[k]] * mesh.morph_dpos[k]
            n[v] += weights[mesh.morph_target[k]] * mesh.morph_dnrm[k]
    mats = palette[mesh.skin_slot]  # [V,4,3,4]
    w = mesh.skin_weight[..., None, None]
    m = (mats * w).sum(axis=1)  # [V,3,4]
    q = np.einsum("vij,vj->vi", m[:, :, :3], p) + m[:, :, 3]
    nn = np.einsum("vij,vj->vi", m[:, :, :3], n)
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    clip = np.concatenate([q, np.ones((len(q), 1))], 1) @ viewproj.T
    return clip, nn


def rotation(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def one_vertex_mesh(dpos, dnrm, target=1) -> Mesh:
    return Mesh(
        positions=np.array([[0.5, -0.25, 2.0]], np.float32),
        normals=np.array([[0.0, 0.0, 1.0]], np.float32),
        tris=np.zeros((1, 3), np.int32),
        morph_offsets=np.array([0, 1], np.int32),
        morph_target=np.array([target], np.int32),
        morph_dpos=np.array([dpos], np.float32),
        morph_dnrm=np.array([dnrm], np.float32),
    )


def test_weight_one_moves_a_vertex_by_exactly_its_delta():
    mesh = one_vertex_mesh([0.125, -0.5, 0.25], [0.0, 0.0, 0.0])
    b = pack([mesh], [Session(0, 8, 8, weights=np.array([0.0, 1.0, 0.0, 0.0]))])
    deform_cpu(*deform_args(b))
    np.testing.assert_array_equal(b.clip[0], [0.625, -0.75, 2.25, 1.0])
    np.testing.assert_array_equal(b.wnrm[0], [0.0, 0.0, 1.0])


def test_zero_weights_give_the_base_mesh():
    rng = np.random.default_rng(0)
    mesh = morph_mesh(rng)
    mesh.skin_slot = None
    mesh.skin_weight = None
    b = pack([mesh], [Session(0, 8, 8)])
    b.clip[:] = np.nan
    deform_cpu(*deform_args(b))
    np.testing.assert_array_equal(b.clip[:, :3], mesh.positions)
    np.testing.assert_array_equal(b.clip[:, 3], 1.0)
    np.testing.assert_allclose(b.wnrm, mesh.normals, atol=1e-6)
    # Weights on targets a vertex does not reference change nothing either.
    b2 = pack([mesh], [Session(0, 8, 8, weights=np.array([0, 0, 0, 1.0]))])
    deform_cpu(*deform_args(b2))
    np.testing.assert_array_equal(b2.clip, b.clip)


def test_morph_normals_are_renormalised():
    mesh = one_vertex_mesh([0, 0, 0], [1.0, 0.0, -1.0], target=0)
    b = pack([mesh], [Session(0, 8, 8, weights=np.array([1.0]))])
    deform_cpu(*deform_args(b))
    np.testing.assert_allclose(b.wnrm[0], [1.0, 0.0, 0.0], atol=1e-6)


def test_palette_rotation_rotates_positions_and_normals():
    mesh = sphere_mesh(4, 6)
    rot = rotation("y", 90.0)
    palette = np.zeros((1, 3, 4), np.float32)
    palette[0, :, :3] = rot
    palette[0, :, 3] = [0.5, 0.0, -1.0]
    b = pack([mesh], [Session(0, 8, 8, palette=palette)])
    deform_cpu(*deform_args(b))
    np.testing.assert_allclose(b.clip[:, :3], mesh.positions @ rot.T + [0.5, 0, -1], atol=1e-6)
    np.testing.assert_allclose(b.wnrm, mesh.normals @ rot.T, atol=1e-6)
    assert not np.allclose(b.wnrm, mesh.normals, atol=0.1)


def test_skin_weights_blend_two_bones():
    mesh = one_vertex_mesh([0, 0, 0], [0, 0, 0])
    mesh.skin_slot = np.array([[0, 2, 0, 0]], np.int32)
    mesh.skin_weight = np.array([[0.25, 0.75, 0.0, 0.0]], np.float32)
    palette = np.zeros((3, 3, 4), np.float32)
    palette[:, :, :3] = np.eye(3)
    palette[2, :, 3] = [0.0, 4.0, 0.0]  # bone 2 lifts by 4
    palette[2, :, :3] = rotation("x", 90.0)
    b = pack([mesh], [Session(0, 8, 8, palette=palette)])
    deform_cpu(*deform_args(b))
    p = np.array([0.5, -0.25, 2.0])
    expected = 0.25 * p + 0.75 * (rotation("x", 90.0) @ p + [0, 4, 0])
    np.testing.assert_allclose(b.clip[0, :3], expected, atol=1e-6)
    n = 0.25 * np.array([0, 0, 1.0]) + 0.75 * (rotation("x", 90.0) @ [0, 0, 1.0])
    np.testing.assert_allclose(b.wnrm[0], n / np.linalg.norm(n), atol=1e-6)


def test_viewproj_is_applied():
    mesh = sphere_mesh(4, 6)
    vp = camera((1.0, 0.5, 3.0), (0, 0, 0), 64, 48)
    b = pack([mesh], [Session(0, 64, 48, viewproj=vp)])
    deform_cpu(*deform_args(b))
    homog = np.concatenate([mesh.positions, np.ones((mesh.n_vertices, 1))], 1)
    np.testing.assert_allclose(b.clip, homog @ vp.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.wnrm, mesh.normals, atol=1e-6)  # normals stay in world space


def test_random_batch_matches_the_reference_per_session():
    rng = np.random.default_rng(7)
    meshes = [morph_mesh(rng, 9, 3), morph_mesh(rng, 5000, 4, density=0.2)]
    sessions = []
    for i in range(4):
        palette = np.zeros((4, 3, 4), np.float32)
        for j in range(4):
            palette[j, :, :3] = rotation("xyz"[j % 3], rng.uniform(-60, 60))
            palette[j, :, 3] = rng.normal(0, 0.3, 3)
        sessions.append(
            Session(
                mesh=i % 2,
                lw=16 + 8 * i,
                lh=16,
                weights=rng.random(4) * (rng.random(4) < 0.7),
                palette=palette,
                viewproj=camera(rng.normal(0, 1, 3) + [0, 0, 6], (0, 0, 0), 16 + 8 * i, 16),
            )
        )
    b = pack(meshes, sessions)
    deform_cpu(*deform_args(b))
    for s, sess in enumerate(sessions):
        clip, nrm = reference_deform(
            meshes[sess.mesh],
            b.s_weights[s].astype(np.float64),
            b.s_palette[s].astype(np.float64),
            b.s_viewproj[s].astype(np.float64),
        )
        o, v = int(b.s_obase[s]), int(b.s_vcount[s])
        np.testing.assert_allclose(b.clip[o : o + v], clip, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.wnrm[o : o + v], nrm, atol=1e-4)
        # The same session alone in a batch gives bit-identical results.
        alone = pack(meshes, [sess])
        deform_cpu(*deform_args(alone))
        np.testing.assert_array_equal(alone.clip[:v], b.clip[o : o + v])
        np.testing.assert_array_equal(alone.wnrm[:v], b.wnrm[o : o + v])


def test_only_the_batch_rows_are_written():
    rng = np.random.default_rng(1)
    mesh = morph_mesh(rng, 7, 2)
    b = pack([mesh], [Session(0, 8, 8), Session(0, 8, 8)])
    b.clip[:] = -7.0
    b.wnrm[:] = -7.0
    args = list(deform_args(b))
    args[14] = 1  # n_sessions: only the first row this tick
    deform_cpu(*args)
    assert (b.clip[7:] == -7.0).all() and (b.wnrm[7:] == -7.0).all()
    assert (b.clip[:7] != -7.0).all()
