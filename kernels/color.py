"""Colour math shared by the shade and composite stages (and the host-side layer prep).

Written once as a factory (`make_color_math(jit)`), compiled for the CPU kernels with
`cpu_device` and for the CUDA kernels with `cuda_device()`; numpy twins serve the host.

Conventions
    sRGB: the IEC 61966-2-1 piecewise transfer function. Kernels use lookup tables (a
    256-entry decode table for u8 texels, a 4096-entry encode table) because `pow` per
    texel is what makes a software shader slow; tables are closure constants (frozen into
    the CPU code, constant memory on CUDA) so no launcher argument carries them.
    YUV: BT.709 (Kr = 0.2126, Kb = 0.0722), limited ("studio") range on 8 bits:
        Y = 16 + 219 Y',  Cb = 128 + 224 (B' - Y') / (2 (1 - Kb)),
        Cr = 128 + 224 (R' - Y') / (2 (1 - Kr))     for gamma-encoded R'G'B' in [0, 1].
    Because the map is affine, blending a premultiplied layer (colour c' = a * c) over a
    YUV background is exact in YUV:  out = bg (1 - a) + offset * a + M c'   where offset is
    (16, 128, 128) and M the 3x3 matrix above; a solid colour at alpha 1 gives exactly the
    YUV of that colour.
    NV12 chroma: each 2x2 block's Cb/Cr is the mean of the four luma sites' values
    (co-sited average). Backgrounds (`rgb_to_nv12`) and the compositor use the same rule.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

KR = 0.2126
KB = 0.0722
KG = 1.0 - KR - KB
CB_SCALE = 224.0 / (2.0 * (1.0 - KB))  # Cb = CB_SCALE * (B' - Y')
CR_SCALE = 224.0 / (2.0 * (1.0 - KR))  # Cr = CR_SCALE * (R' - Y')

ENCODE_LUT_SIZE = 4096


def srgb_to_linear_np(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0,1] -> linear [0,1] (float64 reference)."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb_np(c: np.ndarray) -> np.ndarray:
    """Linear [0,1] -> sRGB-encoded [0,1] (float64 reference); clamps outside [0,1]."""
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055)


SRGB_DECODE_LUT = srgb_to_linear_np(np.arange(256) / 255.0).astype(np.float32)
"""u8 sRGB code -> linear float."""

SRGB_ENCODE_LUT = np.round(
    linear_to_srgb_np(np.arange(ENCODE_LUT_SIZE) / (ENCODE_LUT_SIZE - 1)) * 255.0
).astype(np.uint8)
"""linear quantised to 12 bits -> u8 sRGB code (within 1 code of the exact value)."""


def rgb_to_yuv_np(rgb: np.ndarray) -> np.ndarray:
    """u8 (or 0..255 float) R'G'B' [...,3] -> float64 limited-range Y, Cb, Cr [...,3]."""
    c = np.asarray(rgb, np.float64) / 255.0
    y = KR * c[..., 0] + KG * c[..., 1] + KB * c[..., 2]
    return np.stack(
        [16.0 + 219.0 * y, 128.0 + CB_SCALE * (c[..., 2] - y), 128.0 + CR_SCALE * (c[..., 0] - y)],
        axis=-1,
    )


def rgb_to_nv12_cpu(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Convert an RGB(A) u8 image [h,w,3|4] (sRGB-encoded, even w and h) to NV12 bytes.

    Host helper for backgrounds (run once per scene change, not per frame). Alpha, if
    present, is ignored. Returns (or fills) a flat u8 array: Y plane w*h, then interleaved
    CbCr (w/2 pairs per row, h/2 rows).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an [h,w,3|4] image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if w % 2 or h % 2:
        raise ValueError(f"NV12 needs even width and height, got {w}x{h}")
    yuv = rgb_to_yuv_np(rgb[..., :3])
    if out is None:
        out = np.empty(w * h * 3 // 2, np.uint8)
    elif out.shape != (w * h * 3 // 2,) or out.dtype != np.uint8:
        raise ValueError("out must be a flat u8 array of w*h*3/2 bytes")
    out[: w * h] = np.clip(np.rint(yuv[..., 0]), 0, 255).reshape(-1)
    chroma = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    out[w * h :] = np.clip(np.rint(chroma), 0, 255).reshape(-1)
    return out


def make_color_math(jit) -> SimpleNamespace:
    """Per-pixel colour functions compiled with `jit` (cpu_device or cuda_device())."""
    decode_lut = SRGB_DECODE_LUT
    encode_lut = SRGB_ENCODE_LUT
    enc_max = ENCODE_LUT_SIZE - 1
    kr, kg, kb = KR, KG, KB
    cb_scale, cr_scale = CB_SCALE, CR_SCALE

    @jit
    def srgb_u8_to_linear(code):
        """u8 sRGB code -> linear float (table lookup)."""
        return decode_lut[code]

    @jit
    def linear_to_srgb_u8(c):
        """Linear float -> u8 sRGB code as an int (12-bit table, clamped)."""
        if c <= 0.0:
            return 0
        if c >= 1.0:
            return 255
        return int(encode_lut[int(c * enc_max + 0.5)])

    @jit
    def linstep_range(a, b):
        """(a, 1 / (b - a)) for `linstep`; an empty range (b - a <= 1e-6) gives inverse 0."""
        if b - a <= 1e-6:
            return a, 0.0
        return a, 1.0 / (b - a)

    @jit
    def linstep(a, inv, t):
        """saturate((t - a) / (b - a)) with (a, inv) from `linstep_range(a, b)`; a step at
        `a` when the range is empty (toony = 1)."""
        if inv == 0.0:
            return 1.0 if t >= a else 0.0
        return min(max((t - a) * inv, 0.0), 1.0)

    @jit
    def blend_yuv(y, u, v, r, g, b, a):
        """Premultiplied encoded colour (r,g,b in [0,1]) with alpha a over (y,u,v)."""
        yp = kr * r + kg * g + kb * b
        keep = 1.0 - a
        return (
            y * keep + 16.0 * a + 219.0 * yp,
            u * keep + 128.0 * a + cb_scale * (b - yp),
            v * keep + 128.0 * a + cr_scale * (r - yp),
        )

    return SimpleNamespace(
        srgb_u8_to_linear=srgb_u8_to_linear,
        linear_to_srgb_u8=linear_to_srgb_u8,
        linstep_range=linstep_range,
        linstep=linstep,
        blend_yuv=blend_yuv,
    )
