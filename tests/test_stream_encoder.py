"""x264 encoder settings as a decoder sees them, and encoder selection/fallback."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
from stream_support import moving_nv12

from avatarfarm.server.stream import StreamError, VideoSettings, encoder, nvenc, select_encoder

W, H, FPS = 320, 180, 30


def _nal_types(data: bytes) -> set[int]:
    out, i = set(), data.find(b"\x00\x00\x01")
    while i >= 0:
        out.add(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return out


def _encode(enc, frames, force_at=(), rebitrate_at=None, content=moving_nv12):
    packets = []
    for n in range(frames):
        if n == rebitrate_at:
            enc.set_bitrate(2000)
        packets += enc.encode(content(W, H, n), n, n in force_at)
    return packets + enc.flush()


def test_x264_gop_cfr_headers_and_bt709():
    enc = select_encoder("x264", W, H, FPS, VideoSettings(bitrate_kbps=500))
    packets = _encode(enc, 4 * FPS + 1, force_at={45})
    assert [p.pts for p in packets] == list(range(4 * FPS + 1))  # CFR, one AU per frame
    assert all(p.dts == p.pts for p in packets)  # no B-frames: no reordering
    assert [p.pts for p in packets if p.keyframe] == [0, 45, 105]  # 2 s GOP, forced IDR
    for p in packets:
        nals = _nal_types(p.data)
        assert (5 in nals) == p.keyframe  # keyframes are IDRs
        if p.keyframe:
            assert {7, 8} <= nals  # SPS/PPS in-band on every IDR for mid-stream joiners
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = enc.template.codec_context.extradata
    frames = [f for p in packets[:3] for f in decoder.decode(av.Packet(p.data))]
    assert frames and (frames[0].width, frames[0].height) == (W, H)
    f = frames[0]
    assert (f.color_primaries, f.color_trc, f.colorspace, f.color_range) == (1, 1, 1, 1)


def test_x264_bitrate_change_applies_at_a_new_idr():
    rng = np.random.default_rng(1)

    def noise(w, h, n):  # incompressible: the rate controller spends what it is given
        return rng.integers(16, 235, w * h * 3 // 2, dtype=np.uint8)

    enc = select_encoder("x264", W, H, FPS, VideoSettings(bitrate_kbps=300, preset="ultrafast"))
    packets = _encode(enc, 4 * FPS, rebitrate_at=2 * FPS, content=noise)
    assert enc.bitrate_kbps == 2000
    before = sum(len(p.data) for p in packets if 10 <= p.pts < 2 * FPS)
    after = sum(len(p.data) for p in packets if 2 * FPS + 10 <= p.pts)
    assert after > 3 * before
    assert next(p for p in packets if p.pts == 2 * FPS).keyframe


def test_nvenc_bitstream_helpers_on_real_h264(tmp_path):
    """The NVENC path's keyframe detection and flush splitting, fed x264's Annex B."""
    enc = select_encoder("x264", W, H, FPS, VideoSettings(preset="ultrafast", keyint_s=0.5))
    packets = _encode(enc, 40)
    assert [nvenc.is_keyframe("h264", p.data) for p in packets] == [p.keyframe for p in packets]
    blob = b"".join(p.data for p in packets)
    assert nvenc.split_access_units("h264", blob) == [p.data for p in packets]
    probed = nvenc.probe_template("h264", packets[0].data)
    template = probed.streams.video[0]
    assert (template.codec_context.width, template.codec_context.height) == (W, H)
    with av.open(str(tmp_path / "probed.flv"), "w", format="flv") as out:
        stream = out.add_stream_from_template(template)
        for p in packets:
            out.mux(p.to_av(stream))
    with av.open(str(tmp_path / "probed.flv")) as back:
        assert len(list(back.decode(video=0))) == len(packets)


def test_select_encoder_choices_and_fallback(caplog):
    settings = VideoSettings()
    assert select_encoder("none", W, H, FPS, settings) is None
    with pytest.raises(StreamError):
        select_encoder("vp8", W, H, FPS, settings)
    with pytest.raises(StreamError):
        select_encoder("x264", 321, H, FPS, settings)
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        with pytest.raises(StreamError, match="NVENC unavailable"):
            select_encoder("nvenc", W, H, FPS, settings)
        encoder._fallback_logged.clear()
        caplog.set_level(logging.WARNING)
        assert select_encoder("auto", W, H, FPS, settings).name == "x264"
        assert select_encoder("auto", W, H, FPS, settings).name == "x264"
        assert caplog.text.count("no NVENC on this GPU, falling back to x264") == 1


def test_nvenc_encodes_device_frames_with_idr_cadence():
    pytest.importorskip("PyNvVideoCodec", reason="PyNvVideoCodec not installed (cuda extra)")
    cuda = pytest.importorskip("numba.cuda", reason="numba-cuda not installed")
    from avatarfarm.server.stream.nvenc import NvencEncoder

    try:
        enc = NvencEncoder(W, H, FPS, VideoSettings(bitrate_kbps=500))
    except Exception as exc:
        pytest.skip(f"no NVENC-capable GPU here: {exc}")
    packets = []
    for n in range(2 * FPS + 1):
        packets += enc.encode(cuda.to_device(moving_nv12(W, H, n)), n, n == 15)
    packets += enc.flush()
    assert [p.pts for p in packets] == list(range(2 * FPS + 1))
    assert [p.pts for p in packets if p.keyframe][:2] == [0, 15]
    enc.set_bitrate(1000)
    assert enc.bitrate_kbps == 1000
    assert enc.template is not None and enc.template.codec_context.width == W
