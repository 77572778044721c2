"""Input latency: UDP packet -> pose tick, and UDP packet -> the first encoded frame showing it.

Input to photon (`photon`): the real engine loop (CPU renderer, one 192x192 session at
30 fps in head framing, smoothing "none", idle off) with its x264 StreamPipeline
(tune zerolatency, CFR), and the session's VMC port opened as the API does (VmcReceiver
with the API's CPU share). A sender thread sends a head yaw at random moments. Measured
per sample: send -> the end of the first `Renderer.render` whose head row has that yaw
("render"), and send -> x264 returning the packet of that frame ("encoded": the frame is
found by its index through `StreamPipeline.submit`, the packet by its pts). The encoder's
own delay in frames is the packet's pts against the frame submitted last when it appeared.

Input to pose (`measure`): senders (python-osc like VSeeFace for VMC; raw version-6 bytes
for Live Link Face) send poses at random moments, unsynchronised with the tick; an
engine-like loop ticks `PoseBank.advance` at 30 fps with smoothing off (filter "none") so
the number is transport + receive thread + tick quantisation only (smoothing adds its own
lag by design). Also times `advance` and `IdleBank.advance` per tick for growing session
counts, and the receive thread's CPU per datagram. Prints markdown tables.

    python bench/bench_drive_latency.py [--samples 200] [--photon-samples 200]
                                        [--results bench/results_drive_latency.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from avatarfarm.render.avatars import load
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene
from avatarfarm.render.vocabulary import VOCABULARY
from avatarfarm.server.api.drivers import CPU_SHARES
from avatarfarm.server.drivers.idle import IdleBank
from avatarfarm.server.drivers.livelink import LiveLinkReceiver, encode_packet
from avatarfarm.server.drivers.pose import FilterConfig, PoseBank
from avatarfarm.server.drivers.udp import UdpReceiver
from avatarfarm.server.drivers.vmc import VmcReceiver
from avatarfarm.server.engine import Engine
from avatarfarm.server.sessions import DriverSpec, Session, SessionSpec, VideoSpec
from avatarfarm.server.stream import StreamPipeline, VideoSettings

FPS = 30
K = len(VOCABULARY)


def vmc_sender(address: tuple[str, int]):
    client = SimpleUDPClient(*address)

    def send(yaw: float) -> None:
        half = math.radians(-yaw) / 2  # Unity yaw -y turns the avatar's face to +y for us
        client.send_message(
            "/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.0, 0.0, 0.0, math.sin(half), 0.0, math.cos(half)]
        )

    return send


def livelink_sender(address: tuple[str, int]):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    values = np.zeros(61, np.float32)

    def send(yaw: float) -> None:
        values[52] = math.radians(yaw)
        sock.sendto(encode_packet(values), address)

    return send


def measure(kind: str, samples: int) -> np.ndarray:
    """Latencies (s) from send to the first tick whose output head yaw is the sent value."""
    bank = PoseBank(64)
    state = bank.allocate(FilterConfig("none"))
    rx: UdpReceiver = (VmcReceiver if kind == "vmc" else LiveLinkReceiver)(state)
    send = (vmc_sender if kind == "vmc" else livelink_sender)(rx.start())
    expr = np.zeros((64, K), np.float32)
    head = np.zeros((64, 3), np.float32)
    eyes = np.zeros((64, 4), np.float32)
    sent: dict[float, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def sender() -> None:
        rng = random.Random(1)
        for i in range(samples):
            time.sleep(rng.uniform(0.04, 0.09))
            yaw = float(1 + i % 50)  # distinct from the previous value
            sent[yaw] = time.perf_counter()
            send(yaw)
        time.sleep(0.2)
        done.set()

    thread = threading.Thread(target=sender)
    thread.start()
    last = 0.0
    next_tick = time.perf_counter()
    while not done.is_set():
        next_tick += 1 / FPS
        time.sleep(max(0.0, next_tick - time.perf_counter()))
        bank.advance(1 / FPS, expr, head, eyes)
        now = time.perf_counter()
        yaw = round(float(head[state.slot, 0]), 3)
        if yaw != last and yaw in sent:
            latencies.append(now - sent.pop(yaw))
            last = yaw
    thread.join()
    rx.stop()
    return np.array(latencies)


def photon(samples: int, size: int = 192) -> dict[str, np.ndarray]:
    """Latencies (s) send -> rendered frame and send -> encoded frame; encoder delay (frames)."""
    engine = Engine(Renderer("cpu"))
    video = VideoSpec(width=size, height=size, fps=FPS, encoder="x264", bitrate_kbps=500)
    spec = SessionSpec(video=video, scene=Scene(framing="head"),
                       driver=DriverSpec(idle=False, smoothing="none"))  # fmt: skip
    session = Session("bench", spec)
    pipeline = StreamPipeline(session.id, size, size, FPS, VideoSettings(encoder="x264"))
    sent: dict[float, float] = {}
    rendered: dict[float, float] = {}  # yaw -> end of the first render showing it
    frame_yaw: dict[int, float] = {}  # frame index -> yaw it shows
    encoded: dict[float, float] = {}  # yaw -> x264 output time of that frame
    delays: list[int] = []
    state: dict = {"yaw": 0.0}

    render = engine.renderer.render

    def timed_render(slots, expressions, head, eyes) -> None:
        start = time.perf_counter()
        render(slots, expressions, head, eyes)
        state.setdefault("render_call", []).append(time.perf_counter() - start)
        yaw = round(float(head[0, 0]), 3)
        state["yaw"] = yaw
        rendered.setdefault(yaw, time.perf_counter())

    submit = pipeline.submit

    def tagged_submit(frame, index: int) -> bool:
        frame_yaw[index] = state["yaw"]
        return submit(frame, index)

    encoder = pipeline._encoder
    encode = encoder.encode

    def timed_encode(buf, pts: int, force: bool):
        packets = encode(buf, pts, force)
        now = time.perf_counter()
        first = pipeline._first_index or 0  # frame index of pts 0
        for p in packets:
            if p.kind == "video":
                out_pts = round(float(p.pts * p.time_base) * FPS)
                delays.append(pts - out_pts)
                yaw = frame_yaw.get(out_pts + first)
                if yaw is not None:
                    encoded.setdefault(yaw, now)
        return packets

    engine.renderer.render = timed_render
    pipeline.submit = tagged_submit
    encoder.encode = timed_encode
    engine.start()
    try:
        engine.create(session, load("default"), pipeline).result(300)
        assert session.drivers.pose is not None
        rx = VmcReceiver(session.drivers.pose, cpu_share=CPU_SHARES["vmc"])
        send = vmc_sender(rx.start())
        time.sleep(2.0)  # first frames (and a warm encoder) before measuring
        rng = random.Random(1)
        for i in range(samples):
            time.sleep(rng.uniform(0.04, 0.09))
            yaw = float(1 + i % 40) * (1 if i % 2 else -1)  # distinct from the previous
            sent[yaw] = time.perf_counter()
            rendered.pop(yaw, None)
            encoded.pop(yaw, None)
            send(yaw)
            time.sleep(0.15)  # rendered and encoded by now
            if yaw in rendered and yaw in encoded:
                state.setdefault("render_ms", []).append(rendered[yaw] - sent[yaw])
                state.setdefault("encoded_ms", []).append(encoded[yaw] - sent[yaw])
        rx.stop()
    finally:
        engine.stop(5.0)
    return {
        "render": np.array(state.get("render_ms", [])),
        "encoded": np.array(state.get("encoded_ms", [])),
        "delay": np.array(delays),
        "render_call": np.array(state.get("render_call", [])),
    }


def tick_cost(sessions: int, ticks: int = 200) -> tuple[float, float]:
    """Mean ms per tick of PoseBank.advance and IdleBank.advance for `sessions` slots."""
    bank, idle = PoseBank(sessions), IdleBank(sessions)
    rng = np.random.default_rng(0)
    for slot in range(sessions):
        bank.allocate(FilterConfig(("one_euro", "spring")[slot % 2])).update(
            expressions=rng.random(K), head=rng.uniform(-20, 20, 3)
        )
        idle.reset(slot, seed=slot, t=0.0)
    expr = np.zeros((sessions, K), np.float32)
    head = np.zeros((sessions, 3), np.float32)
    eyes = np.zeros((sessions, 4), np.float32)
    active = np.zeros(sessions, bool)
    t0 = time.perf_counter()
    for _ in range(ticks):
        bank.advance(1 / FPS, expr, head, eyes)
    t1 = time.perf_counter()
    for i in range(ticks):
        idle.advance(i / FPS, active, expr, head, eyes)
    t2 = time.perf_counter()
    return (t1 - t0) / ticks * 1e3, (t2 - t1) / ticks * 1e3


def vseeface_frame() -> bytes:
    """One VSeeFace-like bundle: Head bone, 52 ARKit + 5 viseme Blend/Val, Apply, OK, T."""

    def message(address: str, *args: object):
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        return builder.build()

    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(message("/VMC/Ext/Bone/Pos", "Head", 0.0, 1.5, 0.0, 0.0, 0.1, 0.0, 0.99))
    for name in VOCABULARY[:57]:
        bundle.add_content(message("/VMC/Ext/Blend/Val", name, 0.5))
    bundle.add_content(message("/VMC/Ext/Blend/Apply"))
    bundle.add_content(message("/VMC/Ext/OK", 1))
    bundle.add_content(message("/VMC/Ext/T", 1.0))
    return bundle.build().dgram


def handle_cost(n: int = 300) -> list[tuple[str, float]]:
    """Receive-thread CPU per datagram (µs), without the socket."""
    state = PoseBank(1).allocate()
    vmc, livelink = VmcReceiver(state), LiveLinkReceiver(state)
    cases = [
        ("VMC frame bundle (61 messages)", vmc, vseeface_frame()),
        ("Live Link Face packet", livelink, encode_packet(np.zeros(61))),
        ("garbage datagram (VMC)", vmc, b"\x00garbage"),
    ]
    out = []
    for label, rx, data in cases:
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                rx.handle(data, ("127.0.0.1", 1))
            except ValueError:
                pass
        out.append((label, (time.perf_counter() - t0) / n * 1e6))
    return out


def _row(label: str, seconds: np.ndarray, period: float) -> str:
    ms = seconds * 1e3
    p50, p99 = np.percentile(ms, [50, 99])
    return f"| {label} | {len(ms)} | {p50:.1f} | {p99:.1f} | {ms.max():.1f} | {p99 / period:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--photon-samples", type=int, default=200)
    parser.add_argument("--results", type=Path, default=None, help="also write markdown here")
    args = parser.parse_args()
    period = 1000 / FPS
    head = "| path | samples | p50 ms | p99 ms | max ms | p99 / frame period |\n" + "|---" * 6 + "|"
    out: list[str] = []
    out.append(f"## Input to photon: VMC packet -> encoded frame ({FPS} fps, CPU, x264)\n")
    out.append(head)
    result = photon(args.photon_samples)
    out.append(_row("VMC -> rendered frame", result["render"], period))
    out.append(_row("VMC -> encoded frame (x264 zerolatency)", result["encoded"], period))
    out.append(_row("(Renderer.render call alone, per tick)", result["render_call"], period))
    delay = result["delay"]
    frames = f"{delay.max():.0f}" if delay.size else "n/a"
    out.append(f"\nx264's own delay: packets come out {frames} frames after their frame "
               f"(max over {delay.size} frames). Target: p99 <= 1.5 frame periods "
               f"({1.5 * period:.1f} ms) + that delay.\n")  # fmt: skip
    out.append(f"## Input to pose at a {FPS} fps tick (CPU, loopback, smoothing off)\n")
    out.append(head.replace("path", "input"))
    for kind in ("vmc", "livelink"):
        out.append(_row(kind, measure(kind, args.samples), period))
    out.append("\n## Per-tick host cost\n")
    out.append("| sessions | PoseBank.advance ms | IdleBank.advance ms |\n|---|---|---|")
    for sessions in (16, 64, 256, 1024):
        pose_ms, idle_ms = tick_cost(sessions)
        out.append(f"| {sessions} | {pose_ms:.3f} | {idle_ms:.3f} |")
    out.append("\n## Receive-thread cost per datagram\n")
    out.append("| datagram | µs |\n|---|---|")
    for label, us in handle_cost():
        out.append(f"| {label} | {us:.0f} |")
    text = "\n".join(out)
    print(text)
    if args.results is not None:
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                       if line.startswith("model name"))  # fmt: skip
        except (OSError, StopIteration):
            pass
        load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        args.results.write_text(
            "# Drive latency\n\n"
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {cpu}, {os.cpu_count()} cores, load average {load_avg}, "
            f"Python {platform.python_version()}\n"
            f"- command: `python {' '.join(sys.argv)}`\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
