"""One expression vocabulary for every input: the 52 ARKit names and the VRM 1.0 presets.

A session's expression state is a float32 vector indexed by `VOCABULARY`. Names coming
from face-capture tools and files are matched case-insensitively and in the spellings
that tools actually send: ARKit camelCase (`eyeBlinkLeft`), Live Link's capitalised form
(`EyeBlinkLeft`), Apple's raw form (`eyeBlink_L`) and the VRM 0.x preset names
(`a`, `joy`, `blink_l`, ...).
"""

from __future__ import annotations

import re

# The 52 ARKit blendshapes; this order is the layout of our expression vectors (Live Link
# Face sends them in Epic's order, which swaps the Left/Right pairs: see drivers/livelink.py).
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawRight", "jawLeft", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)  # fmt: skip

VRM_PRESETS: tuple[str, ...] = (
    "aa", "ih", "ou", "ee", "oh",
    "blink", "blinkLeft", "blinkRight",
    "happy", "angry", "sad", "relaxed", "surprised",
    "lookUp", "lookDown", "lookLeft", "lookRight",
    "neutral",
)  # fmt: skip

VOCABULARY: tuple[str, ...] = ARKIT_NAMES + VRM_PRESETS
INDEX: dict[str, int] = {name: i for i, name in enumerate(VOCABULARY)}

VISEMES: tuple[str, ...] = ("aa", "ih", "ou", "ee", "oh")
BLINKS: tuple[str, ...] = ("blink", "blinkLeft", "blinkRight")
LOOK_AT: tuple[str, ...] = ("lookUp", "lookDown", "lookLeft", "lookRight")

# VRM 0.x blendShapeMaster presetName -> VRM 1.0 preset.
VRM0_PRESETS: dict[str, str] = {
    "a": "aa", "i": "ih", "u": "ou", "e": "ee", "o": "oh",
    "blink": "blink", "blink_l": "blinkLeft", "blink_r": "blinkRight",
    "joy": "happy", "angry": "angry", "sorrow": "sad", "fun": "relaxed",
    "surprised": "surprised",
    "lookup": "lookUp", "lookdown": "lookDown", "lookleft": "lookLeft", "lookright": "lookRight",
    "neutral": "neutral",
}  # fmt: skip


def _key(name: str) -> str:
    name = name.strip()
    name = re.sub(r"_L$", "Left", name)
    name = re.sub(r"_R$", "Right", name)
    return name.replace("_", "").replace(" ", "").lower()


_BY_KEY: dict[str, str] = {_key(n): n for n in VOCABULARY}
_BY_KEY.update({_key(k): v for k, v in VRM0_PRESETS.items() if len(k) > 1})
_VRM0_SINGLE = {k: v for k, v in VRM0_PRESETS.items() if len(k) == 1}


def canonical_name(name: str, *, vrm0: bool = False) -> str | None:
    """The vocabulary spelling of `name`, or None when it is not a known expression.

    Single letters (`a`, `i`, `u`, `e`, `o`) are VRM 0.x visemes only when `vrm0` is set or
    they arrive as such from a VMC sender; a bare "e" is otherwise too ambiguous to guess.
    """
    if not isinstance(name, str) or not name:
        return None
    lowered = name.strip().lower()
    if lowered in _VRM0_SINGLE:
        return _VRM0_SINGLE[lowered] if vrm0 else None
    return _BY_KEY.get(_key(name))


def index_of(name: str, *, vrm0: bool = False) -> int | None:
    """Position of `name` in VOCABULARY (after canonicalisation), or None."""
    canon = canonical_name(name, vrm0=vrm0)
    return None if canon is None else INDEX[canon]
