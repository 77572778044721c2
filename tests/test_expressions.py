"""ExpressionRig: inputs -> expressions -> morph weights, VRM 1.0 overrides, ARKit fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatarfarm.render.asset import AssetError, AvatarAsset, Expression, Materials, Override
from avatarfarm.render.expressions import ExpressionRig, inputs_from_dict
from avatarfarm.render.vocabulary import INDEX, VOCABULARY, canonical_name

K = len(VOCABULARY)

TARGETS = ["mouthA", "mouthI", "eyeCloseL", "eyeCloseR", "smile", "lookL", "jaw", "wag"]
T = {name: i for i, name in enumerate(TARGETS)}


def make_asset(expressions: list[Expression], default: list[float] | None = None) -> AvatarAsset:
    """A minimal avatar (one vertex) that carries only what the expression rig reads."""
    m = len(TARGETS)
    return AvatarAsset(
        name="tiny",
        format="builtin",
        positions=np.zeros((1, 3), np.float32),
        normals=np.array([[0, 0, 1]], np.float32),
        uvs=np.zeros((1, 2), np.float32),
        triangles=np.zeros((0, 3), np.int32),
        triangle_material=np.zeros(0, np.int32),
        target_names=list(TARGETS),
        target_mesh=np.zeros(m, np.int32),
        default_weights=np.array(default or [0.0] * m, np.float32),
        morph_offsets=np.zeros(2, np.int32),
        morph_target=np.zeros(0, np.int32),
        morph_dpos=np.zeros((0, 3), np.float32),
        morph_dnormal=np.zeros((0, 3), np.float32),
        skin_joints=np.zeros((1, 4), np.int32),
        skin_weights=np.array([[1, 0, 0, 0]], np.float32),
        joint_names=["root"],
        joint_parent=np.array([-1], np.int32),
        joint_rest_local=np.eye(4, dtype=np.float32)[None],
        joint_rest_world=np.eye(4, dtype=np.float32)[None],
        materials=Materials.empty(),
        textures=[],
        expressions=expressions,
        humanoid={},
        cameras={},
    )


def preset(name: str, *binds: tuple[str, float], **kw) -> Expression:
    return Expression(name, [(T[t], w) for t, w in binds], preset=True, **kw)


def vrm_like(**happy_kw) -> list[Expression]:
    """Presets only, as a VRM file has them (happy's overrides configurable)."""
    return [
        preset("aa", ("mouthA", 1.0)),
        preset("ih", ("mouthI", 1.0), ("mouthA", 0.25)),
        preset("blink", ("eyeCloseL", 1.0), ("eyeCloseR", 1.0)),
        preset("blinkLeft", ("eyeCloseL", 1.0)),
        preset("blinkRight", ("eyeCloseR", 1.0)),
        preset("happy", ("smile", 1.0), ("eyeCloseL", 0.5), **happy_kw),
        preset("lookLeft", ("lookL", 1.0)),
        Expression("wag", [(T["wag"], 1.0)]),
    ]


def row(**values: float) -> np.ndarray:
    x = np.zeros((1, K), np.float32)
    for name, v in values.items():
        x[0, INDEX[name]] = v
    return x


def weights(rig: ExpressionRig, **values: float) -> dict[str, float]:
    out = rig.evaluate(row(**values))[0]
    return {name: float(out[i]) for i, name in enumerate(TARGETS)}


def test_weight_one_yields_bind_weights():
    rig = ExpressionRig(make_asset(vrm_like()))
    w = weights(rig, ih=1.0)
    assert w["mouthI"] == 1.0 and w["mouthA"] == pytest.approx(0.25)
    assert sum(w.values()) == pytest.approx(1.25)
    assert rig.expression_names == [e.name for e in vrm_like()]
    assert rig.custom_names == ["wag"]


def test_default_weights_are_added_and_targets_clamped():
    rig = ExpressionRig(make_asset(vrm_like(), default=[0.5] + [0.0] * (len(TARGETS) - 1)))
    assert weights(rig)["mouthA"] == pytest.approx(0.5)
    assert weights(rig, aa=0.3)["mouthA"] == pytest.approx(0.8)
    assert weights(rig, aa=1.0, ih=1.0)["mouthA"] == 1.0  # 0.5 + 1 + 0.25, clamped


def test_inputs_are_clamped_and_nan_is_zero():
    rig = ExpressionRig(make_asset(vrm_like()))
    assert weights(rig, aa=7.0)["mouthA"] == 1.0
    assert weights(rig, aa=-3.0)["mouthA"] == 0.0
    assert weights(rig, aa=np.nan)["mouthA"] == 0.0
    assert weights(rig, aa=np.inf)["mouthA"] == 1.0
    x = row(aa=np.nan)
    rig.evaluate(x)
    assert np.isnan(x[0, INDEX["aa"]]), "the caller's inputs must not be modified"


def test_is_binary():
    exprs = vrm_like()
    exprs[0].is_binary = True
    rig = ExpressionRig(make_asset(exprs))
    assert weights(rig, aa=0.5)["mouthA"] == 0.0
    assert weights(rig, aa=0.51)["mouthA"] == 1.0


def test_block_override_zeroes_blink_group():
    rig = ExpressionRig(make_asset(vrm_like(override_blink=Override.BLOCK)))
    w = weights(rig, happy=0.01, blink=1.0, blinkRight=1.0)
    assert w["eyeCloseR"] == 0.0
    assert w["eyeCloseL"] == pytest.approx(0.005)  # happy's own bind only
    assert weights(rig, happy=0.0, blink=1.0)["eyeCloseR"] == 1.0


def test_blend_override_scales_blink_group():
    rig = ExpressionRig(make_asset(vrm_like(override_blink=Override.BLEND)))
    assert weights(rig, happy=0.3, blinkRight=1.0)["eyeCloseR"] == pytest.approx(0.7)
    assert weights(rig, happy=1.0, blinkRight=1.0)["eyeCloseR"] == 0.0
    # Mouth and lookAt are not touched by overrideBlink.
    w = weights(rig, happy=1.0, aa=1.0, lookLeft=1.0)
    assert w["mouthA"] == 1.0 and w["lookL"] == 1.0


def test_several_overriders_add_up_and_block_wins():
    exprs = vrm_like(override_blink=Override.BLEND)
    exprs.append(preset("sad", override_blink=Override.BLEND))
    exprs.append(preset("angry", override_blink=Override.BLOCK))
    rig = ExpressionRig(make_asset(exprs))
    assert weights(rig, happy=0.2, sad=0.3, blinkRight=1.0)["eyeCloseR"] == pytest.approx(0.5)
    assert weights(rig, happy=0.6, sad=0.7, blinkRight=1.0)["eyeCloseR"] == 0.0  # saturated
    assert weights(rig, happy=0.1, angry=0.01, blinkRight=1.0)["eyeCloseR"] == 0.0


def test_override_of_own_group_is_ignored():
    exprs = vrm_like()
    exprs[3].override_blink = Override.BLOCK  # blinkLeft blocking blinks: invalid
    exprs[3].override_mouth = Override.BLOCK  # ... but blocking the mouth is fine
    rig = ExpressionRig(make_asset(exprs))
    w = weights(rig, blinkLeft=1.0, blinkRight=1.0, aa=1.0)
    assert w["eyeCloseR"] == 1.0 and w["mouthA"] == 0.0


def test_override_uses_binary_output_and_suppresses_binary_members():
    exprs = vrm_like(override_blink=Override.BLEND, is_binary=True)
    exprs[4].is_binary = True  # blinkRight
    rig = ExpressionRig(make_asset(exprs))
    # happy 0.4 is binary 0: no effect on blink at all.
    assert weights(rig, happy=0.4, blink=0.8)["eyeCloseR"] == pytest.approx(0.8)
    assert weights(rig, happy=0.6, blink=0.8)["eyeCloseR"] == 0.0
    # A binary member hit by any effect is fully suppressed.
    exprs = vrm_like(override_blink=Override.BLEND)
    exprs[4].is_binary = True
    rig = ExpressionRig(make_asset(exprs))
    assert weights(rig, happy=0.01, blinkRight=1.0)["eyeCloseR"] == 0.0
    assert weights(rig, happy=0.0, blinkRight=1.0)["eyeCloseR"] == 1.0


def test_custom_expressions_take_a_separate_input():
    rig = ExpressionRig(make_asset(vrm_like()))
    assert weights(rig)["wag"] == 0.0
    out = rig.evaluate(row(), custom=np.array([[0.4]], np.float32))
    assert out[0, T["wag"]] == pytest.approx(0.4)
    # Without `custom` the next call forgets it (scratch is reused between calls).
    assert rig.evaluate(row())[0, T["wag"]] == 0.0
    with pytest.raises(ValueError, match="custom"):
        rig.evaluate(row(), custom=np.zeros((1, 3), np.float32))


def test_arkit_fallback_drives_presets():
    rig = ExpressionRig(make_asset(vrm_like()))
    assert weights(rig, jawOpen=1.0)["mouthA"] == 1.0
    w = weights(rig, eyeBlinkLeft=0.8)
    assert w["eyeCloseL"] == pytest.approx(0.8) and w["eyeCloseR"] == 0.0
    assert weights(rig, mouthSmileLeft=1.0, mouthSmileRight=0.5)["smile"] == pytest.approx(0.75)
    # lookLeft: both eyes turn to the avatar's left.
    assert weights(rig, eyeLookOutLeft=0.6, eyeLookInRight=0.4)["lookL"] == pytest.approx(0.5)
    assert weights(rig, eyeLookInLeft=1.0, eyeLookOutRight=1.0)["lookL"] == 0.0
    # Direct preset input and fallback: the larger wins.
    assert weights(rig, jawOpen=0.3, aa=0.6)["mouthA"] == pytest.approx(0.6)
    assert weights(rig, jawOpen=0.9, aa=0.6)["mouthA"] == pytest.approx(0.9)
    assert set(rig.fallback) == {"aa", "blinkLeft", "blinkRight", "happy", "lookLeft"}


def test_arkit_fallback_blink_only_avatar_uses_min():
    exprs = [e for e in vrm_like() if e.name not in ("blinkLeft", "blinkRight")]
    rig = ExpressionRig(make_asset(exprs))
    assert weights(rig, eyeBlinkLeft=1.0)["eyeCloseL"] == 0.0  # a wink closes nothing
    assert weights(rig, eyeBlinkLeft=1.0, eyeBlinkRight=0.7)["eyeCloseR"] == pytest.approx(0.7)


def test_arkit_fallback_sad_needs_brow_and_frown():
    rig = ExpressionRig(make_asset([preset("sad", ("smile", 1.0))]))
    assert weights(rig, browInnerUp=1.0)["smile"] == 0.0
    w = weights(rig, browInnerUp=0.9, mouthFrownLeft=0.6, mouthFrownRight=0.4)
    assert w["smile"] == pytest.approx(0.5)


def test_arkit_fallback_off_when_avatar_has_the_arkit_shape():
    exprs = vrm_like()
    exprs.append(Expression("JawOpen", [(T["jaw"], 1.0)]))  # a "perfect sync" custom name
    rig = ExpressionRig(make_asset(exprs))
    w = weights(rig, jawOpen=1.0)
    assert w["jaw"] == 1.0 and w["mouthA"] == 0.0
    assert "aa" not in rig.fallback and "JawOpen" not in rig.custom_names


def reference(asset: AvatarAsset, x: np.ndarray) -> np.ndarray:
    """Straightforward per-row VRM 1.0 evaluation (no fallback), written from the spec."""
    x = np.where(np.isnan(x), 0.0, np.clip(x, 0.0, 1.0))
    groups = {
        "blink": ("blink", "blinkLeft", "blinkRight"),
        "mouth": ("aa", "ih", "ou", "ee", "oh"),
        "lookAt": ("lookUp", "lookDown", "lookLeft", "lookRight"),
    }
    w = {}
    for e in asset.expressions:
        v = x[INDEX[e.name]] if e.name in INDEX else 0.0
        w[e.name] = float(v > 0.5) if e.is_binary else float(v)
    result = dict(w)
    for group, members in groups.items():
        amount = 0.0
        for e in asset.expressions:
            mode = {
                "blink": e.override_blink,
                "mouth": e.override_mouth,
                "lookAt": e.override_look_at,
            }[group]
            if e.name in members:
                continue
            if mode == Override.BLOCK and w[e.name] > 0:
                amount += 1.0
            elif mode == Override.BLEND:
                amount += w[e.name]
        factor = 1.0 - min(amount, 1.0)
        for e in asset.expressions:
            if e.name in members:
                binary_hit = e.is_binary and factor < 1.0
                result[e.name] = 0.0 if binary_hit else w[e.name] * factor
    out = np.array(asset.default_weights, np.float64)
    for e in asset.expressions:
        for t, bw in e.binds:
            out[t] += result[e.name] * bw
    return np.clip(out, 0.0, 1.0)


def test_batch_equals_rows_and_reference():
    exprs = vrm_like(override_blink=Override.BLEND, override_mouth=Override.BLOCK)
    exprs.append(preset("surprised", ("mouthA", 0.5), override_look_at=Override.BLEND))
    exprs[2].is_binary = True
    asset = make_asset(exprs, default=[0.1] * len(TARGETS))
    rig = ExpressionRig(asset)
    rng = np.random.default_rng(7)
    s = 1000
    x = rng.uniform(-0.3, 1.3, (s, K)).astype(np.float32)
    x[rng.random((s, K)) < 0.3] = 0.0  # overriders often off
    x[rng.random((s, K)) < 0.01] = np.nan
    # `out` as a strided slice of a wider batch array, like s_weights[a:b, :M].
    batch = np.full((s + 3, 12), -1.0, np.float32)
    view = batch[2 : 2 + s, : len(TARGETS)]
    assert rig.evaluate(x, out=view) is view
    assert np.all(batch[:, len(TARGETS) :] == -1.0) and np.all(batch[:2] == -1.0)
    # Fallback off for the reference: zero the ARKit columns in the row-wise comparison.
    xp = x.copy()
    xp[:, : INDEX["aa"]] = 0.0
    batched = rig.evaluate(xp)
    for i in range(0, s, 37):
        np.testing.assert_allclose(rig.evaluate(xp[i : i + 1])[0], batched[i], atol=1e-6)
        np.testing.assert_allclose(batched[i], reference(asset, xp[i]), atol=1e-5)
    for i in range(s):
        np.testing.assert_allclose(rig.evaluate(x[i : i + 1])[0], view[i], atol=1e-6)


def test_scratch_grows_and_shrinks_back():
    rig = ExpressionRig(make_asset(vrm_like()))
    x = np.zeros((300, K), np.float32)
    x[:, INDEX["aa"]] = np.linspace(0, 1, 300)
    np.testing.assert_allclose(rig.evaluate(x)[:, T["mouthA"]], x[:, INDEX["aa"]], atol=1e-6)
    assert rig.evaluate(x[:2]).shape == (2, len(TARGETS))
    assert rig.evaluate(np.zeros((0, K), np.float32)).shape == (0, len(TARGETS))


def test_bad_shapes_and_bad_binds_raise():
    rig = ExpressionRig(make_asset(vrm_like()))
    with pytest.raises(ValueError, match="inputs"):
        rig.evaluate(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="out"):
        rig.evaluate(np.zeros((2, K), np.float32), out=np.zeros((2, 3), np.float32))
    with pytest.raises(AssetError, match="bogus"):
        ExpressionRig(make_asset([Expression("bogus", [(99, 1.0)])]))


def test_inputs_from_dict():
    vec, unknown = inputs_from_dict(
        {"EyeBlinkLeft": 0.5, "jawOpen": 1.0, "eyeBlink_R": 0.25, "Joy": 0.75, "nope": 1, "a": 1}
    )
    assert vec[INDEX["eyeBlinkLeft"]] == 0.5 and vec[INDEX["eyeBlinkRight"]] == 0.25
    assert vec[INDEX["jawOpen"]] == 1.0 and vec[INDEX["happy"]] == 0.75
    assert unknown == ["nope", "a"]
    assert vec.shape == (K,) and vec.dtype == np.float32 and vec.sum() == pytest.approx(2.5)
    vec, unknown = inputs_from_dict({"a": 1.0, "blinkLeft": "x"}, vrm0=True)
    assert vec[INDEX["aa"]] == 1.0 and unknown == ["blinkLeft"]


def test_godette(shared_assets: Path):
    gltf = pytest.importorskip("avatarfarm.render.gltf", reason="render/gltf.py not written yet")
    asset = gltf.load_avatar(shared_assets / "vrm/Godette/Godette_vrm_v4.vrm")
    rig = ExpressionRig(asset)
    names = [canonical_name(n) for n in rig.expression_names]
    assert {"aa", "blink", "blinkLeft", "happy", "lookLeft"} <= set(names)
    aa = asset.expressions[names.index("aa")]
    w = rig.evaluate(row(aa=1.0))[0]
    expected = np.clip(asset.default_weights.astype(np.float64), 0, 1)
    for t, bw in aa.binds:
        expected[t] = min(1.0, expected[t] + bw)
    np.testing.assert_allclose(w, expected, atol=1e-6)
    # Godette has no ARKit shapes: a Live Link stream animates her presets.
    np.testing.assert_allclose(rig.evaluate(row(jawOpen=1.0))[0], w, atol=1e-6)
    assert {"aa", "blinkLeft", "blinkRight", "happy"} <= set(rig.fallback)
