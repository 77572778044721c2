"""HLS preview and recordings on disk, path safety, and engine-side backpressure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
from stream_support import feed, wait_for

from avatarfarm.server.stream import StreamError, StreamPipeline, VideoSettings
from avatarfarm.server.stream.outputs import Backoff, Destination
from avatarfarm.server.stream.pipeline import MAX_OUTPUTS
from avatarfarm.server.stream.targets import HLS_WINDOW, parse_target, safe_recording_path

W, H, FPS = 320, 180, 30
FAST = VideoSettings(bitrate_kbps=400, preset="ultrafast")


def test_hls_preview_rolls_a_bounded_window(tmp_path):
    pipe = StreamPipeline("h1", W, H, FPS, FAST, ["hls:"], hls_root=tmp_path)
    playlist = Path(pipe.output_path(1))
    try:
        feed(pipe, 20 * FPS, paced=False)  # 20 s of stream = 10 segments of 2 s
        assert wait_for(lambda: pipe.stats()["outputs"][1]["queued"] == 0, 10)
        lines = playlist.read_text().splitlines()
        segments = [line for line in lines if line.endswith(".ts")]
        on_disk = sorted(playlist.parent.glob("*.ts"))
        assert lines[0] == "#EXTM3U" and len(segments) == HLS_WINDOW
        assert "#EXT-X-TARGETDURATION:2" in lines
        assert len(on_disk) <= HLS_WINDOW + 2  # window + delete threshold + the open one
        assert "seg_000000.ts" not in {p.name for p in on_disk}  # old segments deleted
        with av.open(str(playlist.parent / segments[-1])) as seg:
            frames = list(seg.decode(video=0))
            assert len(frames) == 2 * FPS and frames[0].key_frame
            assert seg.streams.audio[0].codec_context.sample_rate == 48000
    finally:
        pipe.close(5)
    assert not playlist.parent.exists()  # the preview folder goes with the output


def _decode_video(path: Path) -> tuple[list[av.VideoFrame], list[float]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return frames, [float(f.pts * f.time_base) for f in frames]


def test_recording_is_fragmented_mp4_with_cfr_video_and_aac(tmp_path):
    pipe = StreamPipeline("r1", W, H, FPS, FAST, ["record:day1/show.mp4"], recordings_root=tmp_path)
    feed(pipe, 3 * FPS, paced=False)
    pipe.close(5)
    assert pipe.stats()["outputs"][1]["state"] == "closed"
    path = tmp_path / "day1" / "show.mp4"
    frames, times = _decode_video(path)
    assert len(frames) == 3 * FPS
    assert np.allclose(np.diff(times), 1 / FPS, atol=1e-3)
    with av.open(str(path)) as c:
        audio = c.streams.audio[0].codec_context
        assert (audio.name, audio.sample_rate, audio.channels) == ("aac", 48000, 2)
    assert b"moof" in path.read_bytes()[:200_000]  # fragmented: playable without a trailer
    latency = pipe.stats()["encode_latency"]
    assert sum(latency["buckets"]) == pipe.stats()["frames_encoded"] == 3 * FPS
    assert 0.0 < latency["sum_seconds"] / (3 * FPS) < 1.0  # hand-off to packets, per frame


def test_recording_survives_a_killed_writer(tmp_path):
    """The writer process dies without closing: the fragments written so far still play."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from stream_support import feed, wait_for
        from avatarfarm.server.stream import StreamPipeline, VideoSettings
        pipe = StreamPipeline("crash", {W}, {H}, {FPS}, VideoSettings(preset="ultrafast"),
                              ["record:crash.mp4"], recordings_root=Path({str(tmp_path)!r}))
        feed(pipe, {5 * FPS}, paced=False)
        wait_for(lambda: pipe.stats()["outputs"][1]["queued"] == 0, 10)
        print("written", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait(10)
    frames, _ = _decode_video(tmp_path / "crash.mp4")
    assert len(frames) >= 4 * FPS  # every completed GOP (fragment) survives


@pytest.mark.parametrize(
    "name", ["../escape.mp4", "/etc/x.mp4", "a/../../x.mp4", "x.txt", "", "a\\..\\x.mp4"]
)
def test_recording_names_cannot_escape_the_folder(tmp_path, name):
    with pytest.raises(StreamError):
        safe_recording_path(tmp_path, name)


def test_recording_symlink_out_of_the_folder_is_rejected(tmp_path):
    root, outside = tmp_path / "rec", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(StreamError):
        safe_recording_path(root, "link/x.mp4")
    pipe = StreamPipeline("r2", W, H, FPS, FAST, recordings_root=root)
    try:
        with pytest.raises(StreamError):
            pipe.add_output("record:../x.mp4")
        with pytest.raises(StreamError):
            pipe.add_output("ftp://example.com/x")
    finally:
        pipe.close(2)
    assert list(outside.iterdir()) == []


def test_submit_never_waits_and_counts_drops():
    """Frames arrive far faster than x264 can take them: the excess is dropped and counted."""
    pipe = StreamPipeline("b1", 640, 360, FPS, VideoSettings(preset="veryfast"), queue_frames=2)
    frame = np.full(640 * 360 * 3 // 2, 128, np.uint8)
    accepted = sum(pipe.submit(frame, n) for n in range(300))
    pipe.close(10)
    stats = pipe.stats()
    assert stats["frames_in"] == 300
    assert stats["frames_dropped"] == 300 - accepted > 0
    assert stats["frames_encoded"] == accepted


def test_bad_frames_and_settings_are_rejected():
    with pytest.raises(StreamError):
        VideoSettings(bitrate_kbps=10)
    with pytest.raises(StreamError):
        VideoSettings(vbv_ms=2000)
    pipe = StreamPipeline("e1", W, H, FPS, FAST)
    try:
        with pytest.raises(StreamError, match="frame must be"):
            pipe.submit(np.zeros(10, np.uint8), 0)
        with pytest.raises(StreamError):
            pipe.set_bitrate(0)
        with pytest.raises(StreamError):
            pipe.remove_output(99)
    finally:
        pipe.close(2)


def test_outputs_join_and_leave_a_live_session(tmp_path):
    pipe = StreamPipeline("j1", W, H, FPS, FAST, ["record:a.mp4"], recordings_root=tmp_path)
    n = feed(pipe, FPS + 7, paced=False)
    assert wait_for(lambda: pipe.stats()["outputs"][1]["queued"] == 0, 5)
    late = pipe.add_output("record:b.mp4")
    n = feed(pipe, 2 * FPS, start=n, paced=False)
    pipe.remove_output(1)
    assert set(pipe.stats()["outputs"]) == {late}
    feed(pipe, FPS, start=n, paced=False)
    pipe.close(5)
    a, _ = _decode_video(tmp_path / "a.mp4")
    b, b_times = _decode_video(tmp_path / "b.mp4")
    assert len(a) >= FPS + 7  # finalized when removed
    assert b[0].key_frame and b_times[0] == 0.0  # joined on a forced IDR, own timeline
    assert 2 * FPS <= len(b) <= 3 * FPS + 3  # + frames still queued when it joined


def test_outputs_are_capped_and_none_join_a_closing_stream(tmp_path):
    names = [f"record:{i}.mp4" for i in range(MAX_OUTPUTS)]
    pipe = StreamPipeline("c1", W, H, FPS, FAST, names, recordings_root=tmp_path)
    with pytest.raises(StreamError, match=f"at most {MAX_OUTPUTS}"):
        pipe.add_output("record:one-more.mp4")
    pipe.remove_output(1)
    pipe.add_output("record:instead.mp4")  # room again
    pipe.close(5)
    with pytest.raises(StreamError, match="closing"):
        pipe.add_output("record:too-late.mp4")  # would be a thread nobody closes
    assert not (tmp_path / "too-late.mp4").exists()


def test_reconnect_backoff_stays_capped_however_long_an_ingest_is_down():
    backoff = Backoff(first=0.5, cap=30.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(3000)]  # days of retries
    assert delays[0] <= 0.6 and max(delays) <= 36.0 and min(delays[20:]) >= 24.0


def test_a_destination_that_breaks_says_so_instead_of_dying_silently(tmp_path):
    def broken_templates():
        raise RuntimeError("encoder templates went away")

    target = parse_target("record:x.mp4", "d1", 2.0, None, tmp_path)
    dest = Destination(1, target, broken_templates, lambda: None)
    assert wait_for(lambda: dest.state == "failed", 5)
    assert "encoder templates went away" in dest.stats()["last_error"]
    assert dest.close(1.0)
