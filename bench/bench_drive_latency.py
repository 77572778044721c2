"""Input-to-pose latency: a UDP packet sent -> the first 30 fps PoseBank tick that shows it.

Senders (python-osc like VSeeFace for VMC; raw version-6 bytes for Live Link Face) send
poses at random moments, unsynchronised with the tick; an engine-like loop ticks
`PoseBank.advance` at 30 fps with smoothing off (filter "none") so the number is transport
+ receive thread + tick quantisation only. Smoothing adds its own lag by design, and the
render + encode delay is added by the engine benchmark. Also times `advance` and
`IdleBank.advance` per tick for growing session counts, and the receive thread's CPU per
datagram. Prints markdown tables.

    python bench/bench_drive_latency.py [--samples 200]
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import threading
import time

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from avatarfarm.render.vocabulary import VOCABULARY
from avatarfarm.server.drivers.idle import IdleBank
from avatarfarm.server.drivers.livelink import LiveLinkReceiver, encode_packet
from avatarfarm.server.drivers.pose import FilterConfig, PoseBank
from avatarfarm.server.drivers.udp import UdpReceiver
from avatarfarm.server.drivers.vmc import VmcReceiver

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    period = 1000 / FPS
    print(f"## Input to pose at a {FPS} fps tick (CPU, loopback, smoothing off)\n")
    print("| input | samples | p50 ms | p99 ms | max ms | p99 / frame period |")
    print("|---|---|---|---|---|---|")
    for kind in ("vmc", "livelink"):
        ms = measure(kind, args.samples) * 1e3
        p50, p99 = np.percentile(ms, [50, 99])
        print(
            f"| {kind} | {len(ms)} | {p50:.1f} | {p99:.1f} | {ms.max():.1f} | {p99 / period:.2f} |"
        )
    print("\n## Per-tick host cost\n")
    print("| sessions | PoseBank.advance ms | IdleBank.advance ms |")
    print("|---|---|---|")
    for sessions in (16, 64, 256, 1024):
        pose_ms, idle_ms = tick_cost(sessions)
        print(f"| {sessions} | {pose_ms:.3f} | {idle_ms:.3f} |")
    print("\n## Receive-thread cost per datagram\n")
    print("| datagram | µs |")
    print("|---|---|")
    for label, us in handle_cost():
        print(f"| {label} | {us:.0f} |")


if __name__ == "__main__":
    main()
