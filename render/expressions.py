"""Session input vectors -> an avatar's expressions -> its morph target weights, batched.

`ExpressionRig(asset)` compiles once per avatar; `evaluate` then runs for every session of
that avatar in one set of numpy calls (no Python loop over sessions, no allocation once its
scratch has grown to the largest batch seen). Per tick, for inputs `x [S, len(VOCABULARY)]`:

1. Clean: NaN -> 0, then clamp to [0, 1] (VRM 1.0: "the implementation should clamp").
2. Expression weights: an avatar expression whose name is (canonically) a vocabulary name
   reads that input column; other (custom) expressions read the optional `custom` input,
   in `rig.custom_names` order, and stay at 0 without it. Where the ARKit fallback below
   also drives an expression, the larger of the two wins.
3. isBinary: > 0.5 -> 1, else 0.
4. VRM 1.0 procedural overrides, as the spec's blend pseudo-code and three-vrm do: each
   expression contributes an amount to a group (blink / mouth / lookAt) -- `block`: 1 when
   its weight > 0, `blend`: its weight -- and the group's members are multiplied by
   `1 - saturate(sum of amounts)`. So several blenders add up, and any active blocker
   wins. Overrides are computed from the binarised weights; a binary member that receives
   any suppression is set to 0 (the spec's "override and isBinary" section). An override
   aimed at the expression's own group (blink overriding blink) is ignored, as the spec
   says. Custom expressions may override (the spec leaves it to the application) but are
   never overridden: they are not members of any group.
5. Targets: `weights @ binds + asset.default_weights`, clamped to [0, 1].

ARKit fallback. A VRM avatar usually has only the presets, while face-capture tools send
the 52 ARKit shapes. Each rule below drives its preset from ARKit inputs, and is active
only when the avatar has that preset and has *none* of the rule's ARKit source names as its
own expressions (an avatar that has `jawOpen` animates it directly; driving `aa` too would
open the mouth twice). Left/right are the avatar's own: ARKit names the subject's eyes,
VRM the avatar's, and lookLeft means the avatar looks towards its left (+X).

==========  ==============================================================================
preset      value from the (cleaned) ARKit inputs
==========  ==============================================================================
aa          jawOpen
oh          mouthFunnel
ou          mouthPucker
ee          mean(mouthStretchLeft, mouthStretchRight); stretched lips are the "eh" shape
ih          not driven: no ARKit shape isolates it, and a smile is already `happy`
blinkLeft   eyeBlinkLeft
blinkRight  eyeBlinkRight
blink       min(eyeBlinkLeft, eyeBlinkRight), only when the avatar lacks blinkLeft or
            blinkRight (min: a wink must not half-close both eyes)
happy       mean(mouthSmileLeft, mouthSmileRight)
angry       mean(browDownLeft, browDownRight)
sad         min(browInnerUp, mean(mouthFrownLeft, mouthFrownRight)); raised inner brows
            alone are surprise or worry, with a frown they read as sad
surprised   mean(eyeWideLeft, eyeWideRight, browOuterUpLeft, browOuterUpRight)
relaxed     not driven
lookUp      mean(eyeLookUpLeft, eyeLookUpRight)
lookDown    mean(eyeLookDownLeft, eyeLookDownRight)
lookLeft    mean(eyeLookOutLeft, eyeLookInRight): both eyes turn to the avatar's left
lookRight   mean(eyeLookInLeft, eyeLookOutRight)
==========  ==============================================================================

No reverse mapping: an avatar with ARKit shapes and presets (the built-in one) gets its
presets only from preset inputs, as its own expressions define them.

A rig owns scratch buffers, so one rig must not be evaluated from two threads at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .asset import AssetError, AvatarAsset, Override
from .vocabulary import BLINKS, INDEX, LOOK_AT, VISEMES, VOCABULARY, canonical_name

# preset -> (sources averaged, second sources averaged); value = min of the two means.
# An empty second tuple means "the first mean alone".
FALLBACK_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aa": (("jawOpen",), ()),
    "oh": (("mouthFunnel",), ()),
    "ou": (("mouthPucker",), ()),
    "ee": (("mouthStretchLeft", "mouthStretchRight"), ()),
    "blinkLeft": (("eyeBlinkLeft",), ()),
    "blinkRight": (("eyeBlinkRight",), ()),
    "blink": (("eyeBlinkLeft",), ("eyeBlinkRight",)),
    "happy": (("mouthSmileLeft", "mouthSmileRight"), ()),
    "angry": (("browDownLeft", "browDownRight"), ()),
    "sad": (("browInnerUp",), ("mouthFrownLeft", "mouthFrownRight")),
    "surprised": (("eyeWideLeft", "eyeWideRight", "browOuterUpLeft", "browOuterUpRight"), ()),
    "lookUp": (("eyeLookUpLeft", "eyeLookUpRight"), ()),
    "lookDown": (("eyeLookDownLeft", "eyeLookDownRight"), ()),
    "lookLeft": (("eyeLookOutLeft", "eyeLookInRight"), ()),
    "lookRight": (("eyeLookInLeft", "eyeLookOutRight"), ()),
}

# Override groups in the column order of the rig's override matrices.
_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blink", BLINKS),
    ("mouth", VISEMES),
    ("lookAt", LOOK_AT),
)

K = len(VOCABULARY)


def inputs_from_dict(
    values: Mapping[str, float], *, vrm0: bool = False
) -> tuple[np.ndarray, list[str]]:
    """A vocabulary-ordered input row from tool-named values, and the names not understood.

    Unknown names (and non-numeric values) are returned rather than raised so that a driver
    can count them without dropping the rest of the message.
    """
    row = np.zeros(K, np.float32)
    unknown: list[str] = []
    for name, value in values.items():
        canon = canonical_name(name, vrm0=vrm0)
        try:
            number = float(value)
        except (TypeError, ValueError):
            canon = None
        if canon is None:
            unknown.append(name)
        else:
            row[INDEX[canon]] = number
    return row, unknown


class ExpressionRig:
    """One avatar's compiled mapping from session inputs to morph target weights.

    Internally row `n` (after the avatar's n expressions) is a constant-1 "expression" whose
    binds are the default weights, so one matmul adds them; source column `K + C` is that 1.
    """

    def __init__(self, asset: AvatarAsset) -> None:
        exprs = asset.expressions
        m = len(asset.target_names)
        self.expression_names: list[str] = [e.name for e in exprs]
        vocab = [canonical_name(e.name) for e in exprs]
        self.custom_names: list[str] = [
            e.name for e, v in zip(exprs, vocab, strict=True) if v is None
        ]
        n = len(exprs)
        c = len(self.custom_names)
        g = len(_GROUPS)

        # Source column of each expression: its vocabulary input or its custom input.
        direct = np.full(n + 1, K + c, np.intp)
        custom_i = 0
        for i, v in enumerate(vocab):
            if v is None:
                direct[i] = K + custom_i
                custom_i += 1
            else:
                direct[i] = INDEX[v]
        self._direct = direct

        # ARKit fallback, in expression space: fb = min(src @ fb_a, src @ fb_b).
        own = {v for v in vocab if v is not None}
        has_both_sides = "blinkLeft" in own and "blinkRight" in own
        self.fallback: dict[str, tuple[str, ...]] = {}
        fb_a = np.zeros((K + c + 1, n + 1), np.float32)
        fb_b = np.zeros((K + c + 1, n + 1), np.float32)
        for i, v in enumerate(vocab):
            rule = FALLBACK_RULES.get(v or "")
            if rule is None or (v == "blink" and has_both_sides):
                continue
            first, second = rule
            if own.intersection(first + second):
                continue
            for col, sources in ((fb_a, first), (fb_b, second or first)):
                for name in sources:
                    col[INDEX[name], i] = 1.0 / len(sources)
            self.fallback[v] = first + second
        self._fallback_ab = (fb_a, fb_b) if self.fallback else None

        self._binary = np.array([e.is_binary for e in exprs] + [False], bool)

        # Override amounts per group: block uses (w > 0), blend uses w.
        block = np.zeros((n + 1, g), np.float32)
        blend = np.zeros((n + 1, g), np.float32)
        member = np.full(n + 1, g, np.intp)  # g = "no group": factor column of ones
        for i, (e, v) in enumerate(zip(exprs, vocab, strict=True)):
            modes = (e.override_blink, e.override_mouth, e.override_look_at)
            for k, ((_, names), mode) in enumerate(zip(_GROUPS, modes, strict=True)):
                if v in names:
                    member[i] = k
                    continue  # an override of one's own group is invalid
                if mode == Override.BLOCK:
                    block[i, k] = 1.0
                elif mode == Override.BLEND:
                    blend[i, k] = 1.0
        self._has_override = bool(block.any() or blend.any())
        self._block, self._blend, self._member = block, blend, member
        self._binary_member = self._binary & (member < g)

        binds = np.zeros((n + 1, m), np.float32)
        for i, e in enumerate(exprs):
            for target, weight in e.binds:
                if not 0 <= target < m:
                    raise AssetError(
                        f"{asset.name}: expression {e.name!r} binds morph target {target}, "
                        f"but the avatar has {m}"
                    )
                binds[i, target] += weight
        binds[n] = np.asarray(asset.default_weights, np.float32).reshape(m)
        self._binds = binds
        self._cap = 0
        self._grow(64)

    @property
    def target_count(self) -> int:
        return int(self._binds.shape[1])

    def _grow(self, s: int) -> None:
        """(Re)allocate per-session scratch for at least `s` rows, doubling to amortise."""
        if s <= self._cap:
            return
        cap = max(s, 2 * self._cap)
        n1 = len(self.expression_names) + 1
        c = len(self.custom_names)
        self._src = np.zeros((cap, K + c + 1), np.float32)
        self._src[:, K + c] = 1.0
        self._w = np.zeros((cap, n1), np.float32)
        self._tmp = np.zeros((cap, n1), np.float32)
        self._tmp2 = np.zeros((cap, n1), np.float32)
        self._mask = np.zeros((cap, n1), bool)
        # Last column: the factor of non-members, always 1.
        self._factors = np.ones((cap, len(_GROUPS) + 1), np.float32)
        self._amount2 = np.zeros((cap, len(_GROUPS)), np.float32)
        self._targets = np.zeros((cap, self.target_count), np.float32)
        self._cap = cap

    def evaluate(
        self,
        inputs: np.ndarray,
        out: np.ndarray | None = None,
        custom: np.ndarray | None = None,
    ) -> np.ndarray:
        """Morph target weights [S, M] for vocabulary inputs [S, K] (and custom [S, C]).

        `out` may be a strided view (e.g. `s_weights[a:b, :M]` of the batch); the result
        is written there and returned. Pass float32 inputs to avoid a casting buffer.
        """
        if inputs.ndim != 2 or inputs.shape[1] != K:
            raise ValueError(f"inputs must be [S, {K}] in VOCABULARY order, got {inputs.shape}")
        s = inputs.shape[0]
        m = self.target_count
        c = len(self.custom_names)
        if out is None:
            out = np.empty((s, m), np.float32)
        elif out.shape != (s, m) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 [{s}, {m}], got {out.dtype} {out.shape}")
        if custom is not None and custom.shape != (s, c):
            raise ValueError(f"custom must be [{s}, {c}] in custom_names order")
        self._grow(s)

        src = self._src[:s]
        np.copyto(src[:, :K], inputs)
        if custom is None:
            src[:, K : K + c] = 0.0
        else:
            np.copyto(src[:, K : K + c], custom)
        # fmax/fmin return the non-NaN operand: NaN -> 0 and the clamp in two calls.
        np.fmax(src, 0.0, out=src)
        np.fmin(src, 1.0, out=src)

        w = self._w[:s]
        np.take(src, self._direct, axis=1, out=w, mode="clip")
        if self._fallback_ab is not None:
            fa, fb = self._tmp[:s], self._tmp2[:s]
            np.matmul(src, self._fallback_ab[0], out=fa)
            np.matmul(src, self._fallback_ab[1], out=fb)
            np.minimum(fa, fb, out=fa)
            np.maximum(w, fa, out=w)

        mask = self._mask[:s]
        np.greater(w, 0.5, out=mask)
        np.copyto(w, mask, where=self._binary)

        if self._has_override:
            self._apply_overrides(w, s)

        targets = self._targets[:s]
        np.matmul(w, self._binds, out=targets)
        np.clip(targets, 0.0, 1.0, out=targets)
        np.copyto(out, targets)
        return out

    def _apply_overrides(self, w: np.ndarray, s: int) -> None:
        """Scale blink/mouth/lookAt members by 1 - saturate(sum of override amounts)."""
        g = len(_GROUPS)
        amount = self._amount2[:s]
        blocked = self._tmp[:s]
        np.greater(w, 0.0, out=blocked)
        np.matmul(blocked, self._block, out=amount)
        factors = self._factors[:s]
        np.matmul(w, self._blend, out=factors[:, :g])
        np.add(factors[:, :g], amount, out=factors[:, :g])
        np.fmin(factors[:, :g], 1.0, out=factors[:, :g])
        np.subtract(1.0, factors[:, :g], out=factors[:, :g])
        factor = self._tmp2[:s]
        np.take(factors, self._member, axis=1, out=factor, mode="clip")
        # A binary member is fully suppressed by any effect at all.
        mask = self._mask[:s]
        np.less(factor, 1.0, out=mask)
        np.logical_and(mask, self._binary_member, out=mask)
        np.copyto(factor, 0.0, where=mask)
        np.multiply(w, factor, out=w)
