"""Head and eye pose -> the skinning palette of a batch of sessions sharing one avatar.

The renderer does not pose a full skeleton: a live face-capture stream moves the head and
the eyes, so a palette of `P = 8` slots is enough (slots 5..7 stay identity, for later):

====  ======================  ========================================================
slot  drives                  matrix (world space, rest pose = identity)
====  ======================  ========================================================
0     root, everything else   identity
1     the neck subtree        D_neck
2     the head subtree        D_neck @ D_head
3     the left eye            slot 2 @ D_leftEye
4     the right eye           slot 2 @ D_rightEye
====  ======================  ========================================================

`D_j = T(p_j) R_j T(-p_j)` rotates about joint j's rest *world* position with world-aligned
axes, which is right because assets are stored in world space at rest (see render.asset).
The head pose is split between neck (40%) and head (60%) so the neck bends instead of the
head turning on a stiff stalk; without a neck the head takes all of it, without a head the
neck does. A missing joint keeps its slot equal to its parent slot's matrix.

Angle conventions (degrees, right-handed rotations about world axes, the avatar facing +Z
towards the viewer; the same as VRM 1.0 lookAt, whose yaw is "Z -> X = left"):

- yaw: rotation about +Y. Positive turns the face towards +X, the avatar's own left,
  i.e. the viewer's right; the viewer then sees more of the avatar's right cheek.
- pitch: rotation about +X. Positive moves the face down (nod; +Y tips towards +Z).
- roll: rotation about +Z. Positive tips the top of the head towards -X, the avatar's
  right shoulder.
- the rotation is `R = R_y(yaw) @ R_x(pitch) @ R_z(roll)` (Unity/VRM's YXZ order).
- eyes: yaw positive looks towards the avatar's left (+X), pitch positive looks down,
  both relative to the head (the eye rotation is applied before the head's).

NaN angles count as 0; angles are clamped to head yaw ±60, pitch ±40, roll ±40 and eye yaw
±30, pitch ±25, beyond which meshes tear.

A rig owns scratch buffers, so one rig must not be used from two threads at once.
"""

from __future__ import annotations

import numpy as np

from .asset import AvatarAsset

P = 8
SLOT_REST, SLOT_NECK, SLOT_HEAD, SLOT_LEFT_EYE, SLOT_RIGHT_EYE = range(5)
NECK_SHARE = 0.4  # of the head pose given to the neck when both joints exist

# Clamp ranges for [head yaw, pitch, roll, left eye yaw, pitch, right eye yaw, pitch].
ANGLE_LIMITS = np.array([60, 40, 40, 30, 25, 30, 25], np.float32)

# Humanoid bones in the order of the four rotations the rig builds, and their slots.
_BONES = ("neck", "head", "leftEye", "rightEye")


class PoseRig:
    """One avatar's palette slots, per-vertex slot skinning, and per-tick palette builder."""

    def __init__(self, asset: AvatarAsset) -> None:
        bones = [asset.humanoid.get(b) for b in _BONES]
        j = len(asset.joint_names)

        # Each joint takes the slot of its nearest posed ancestor-or-self (0 if none).
        own = np.zeros(j, np.int32)
        for slot, joint in enumerate(bones, start=SLOT_NECK):
            if joint is not None:
                own[joint] = slot
        joint_slot = np.zeros(j, np.int32)
        for i in range(j):
            parent = int(asset.joint_parent[i])
            joint_slot[i] = own[i] or (joint_slot[parent] if parent >= 0 else SLOT_REST)
        self.joint_slot = joint_slot

        # Merge the vertex's influences that land on one slot, strongest first.
        v = asset.vertex_count
        slots = joint_slot[asset.skin_joints] if v else np.zeros((0, 4), np.int32)
        flat = (np.arange(v)[:, None] * P + slots).ravel()
        merged = np.bincount(
            flat, weights=asset.skin_weights.astype(np.float64).ravel(), minlength=v * P
        ).reshape(v, P)
        order = np.argsort(-merged, axis=1, kind="stable")[:, :4]
        weight = np.take_along_axis(merged, order, axis=1)
        self.skin_slot = np.where(weight > 0, order, SLOT_REST).astype(np.int32)
        self.skin_weight = weight.astype(np.float32)

        # Rotation k (neck, head, leftEye, rightEye) angles = clean_degrees @ share, radians.
        has_neck, has_head = bones[0] is not None, bones[1] is not None
        neck_share = (NECK_SHARE if has_head else 1.0) if has_neck else 0.0
        head_share = (1.0 - neck_share) if has_head else 0.0
        share = np.zeros((7, 4, 3), np.float32)
        for axis in range(3):
            share[axis, 0, axis] = neck_share
            share[axis, 1, axis] = head_share
        for eye, k in ((0, 2), (1, 3)):
            if bones[k] is not None:
                share[3 + 2 * eye, k, 0] = 1.0  # yaw
                share[4 + 2 * eye, k, 1] = 1.0  # pitch
        self._share = (share * np.float32(np.pi / 180)).reshape(7, 12)

        pivots = np.zeros((4, 3), np.float32)
        for k, joint in enumerate(bones):
            if joint is not None:
                pivots[k] = asset.joint_rest_world[joint, :3, 3]
        self.pivots = pivots
        self._pivot_col = pivots[:, :, None]
        self._cap = 0
        self._grow(64)

    def _grow(self, s: int) -> None:
        """(Re)allocate per-session scratch for at least `s` rows, doubling to amortise."""
        if s <= self._cap:
            return
        cap = max(s, 2 * self._cap)
        self._deg = np.zeros((cap, 7), np.float32)
        self._nan = np.zeros((cap, 7), bool)
        # Limits as full rows: broadcasting a [7] operand would make numpy buffer.
        self._hi = np.tile(ANGLE_LIMITS, (cap, 1))
        self._lo = -self._hi
        self._rad = np.zeros((cap, 12), np.float32)
        self._cos = np.zeros((cap, 12), np.float32)
        self._sin = np.zeros((cap, 12), np.float32)
        self._t = np.zeros((2, cap, 4), np.float32)
        # Homogeneous 4x4 per rotation (neck, head, leftEye, rightEye); last row constant.
        self._d = np.zeros((cap, 4, 4, 4), np.float32)
        self._d[:, :, 3, 3] = 1.0
        # Composites: slot 2, slot 3, slot 4.
        self._g = np.zeros((cap, 3, 4, 4), np.float32)
        self._cap = cap

    def palette(
        self, head: np.ndarray, eyes: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """World-space 3x4 palette [S, 8, 3, 4] for head [S, 3] and eyes [S, 4] (degrees)."""
        s = head.shape[0]
        if head.shape != (s, 3) or eyes.shape != (s, 4):
            raise ValueError(f"head must be [S, 3] and eyes [S, 4], got {head.shape} {eyes.shape}")
        if out is None:
            out = np.empty((s, P, 3, 4), np.float32)
        elif out.shape != (s, P, 3, 4) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 [{s}, {P}, 3, 4], got {out.dtype} {out.shape}")
        self._grow(s)

        deg = self._deg[:s]
        deg[:, :3] = head
        deg[:, 3:] = eyes
        nan = self._nan[:s]
        np.isnan(deg, out=nan)
        np.copyto(deg, 0.0, where=nan)
        np.minimum(deg, self._hi[:s], out=deg)
        np.maximum(deg, self._lo[:s], out=deg)
        rad = self._rad[:s]
        np.matmul(deg, self._share, out=rad)
        np.cos(rad, out=self._cos[:s])
        np.sin(rad, out=self._sin[:s])
        c = self._cos[:s].reshape(s, 4, 3)
        sn = self._sin[:s].reshape(s, 4, 3)
        self._rotations(c, sn, self._d[:s])

        d = self._d[:s]
        # Translation p - R p: rotate about the pivot.
        t = d[:, :, :3, 3:]
        np.matmul(d[:, :, :3, :3], self._pivot_col, out=t)
        np.subtract(self._pivot_col, t, out=t)

        g = self._g[:s]
        np.matmul(d[:, 0], d[:, 1], out=g[:, 0])
        np.matmul(g[:, :1], d[:, 2:], out=g[:, 1:])

        out[:, SLOT_REST] = _IDENTITY
        out[:, SLOT_NECK] = d[:, 0, :3]
        out[:, SLOT_HEAD : SLOT_RIGHT_EYE + 1] = g[:, :, :3]
        out[:, SLOT_RIGHT_EYE + 1 :] = _IDENTITY
        return out

    def _rotations(self, c: np.ndarray, sn: np.ndarray, d: np.ndarray) -> None:
        """Write R_y(yaw) @ R_x(pitch) @ R_z(roll) into d[..., :3, :3], closed form."""
        cy, cp, cr = c[..., 0], c[..., 1], c[..., 2]
        sy, sp, sr = sn[..., 0], sn[..., 1], sn[..., 2]
        s = c.shape[0]
        u, w = self._t[0, :s], self._t[1, :s]
        np.multiply(sy, sp, out=u)  # sy sp
        np.multiply(cy, sp, out=w)  # cy sp
        r = d[..., :3, :3]
        tmp = r[..., 1, 1]  # used as scratch before its own value is written
        _mad(cy, cr, u, sr, r[..., 0, 0], tmp, +1)  # cy cr + sy sp sr
        _mad(u, cr, cy, sr, r[..., 0, 1], tmp, -1)  # sy sp cr - cy sr
        _mad(w, sr, sy, cr, r[..., 2, 0], tmp, -1)  # cy sp sr - sy cr
        _mad(sy, sr, w, cr, r[..., 2, 1], tmp, +1)  # sy sr + cy sp cr
        np.multiply(sy, cp, out=r[..., 0, 2])
        np.multiply(cp, sr, out=r[..., 1, 0])
        np.multiply(cp, cr, out=r[..., 1, 1])
        np.negative(sp, out=r[..., 1, 2])
        np.multiply(cy, cp, out=r[..., 2, 2])


_IDENTITY = np.eye(3, 4, dtype=np.float32)


def _mad(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    out: np.ndarray,
    tmp: np.ndarray,
    sign: int,
) -> None:
    """out = a*b + sign*c*d without temporaries (tmp must not alias the inputs)."""
    np.multiply(a, b, out=out)
    np.multiply(c, d, out=tmp)
    (np.add if sign > 0 else np.subtract)(out, tmp, out=out)
