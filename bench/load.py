"""Load on the app: N concurrent clients mixing the queue, the REST route, cancels and disconnects.

Serves `app.py` (tiny preset by default) in a child process on 127.0.0.1, renders each
client's video alone first, then fires the clients at once and prints what came back:
served / refused with a message / stopped (cancelled or disconnected) / failed, whether any
video differs from its solo rendering, the server's peak RSS, and its RSS growth over
`--sessions` sequential browser-like sessions. Loopback only; every wait is bounded.

    python bench/load.py                 # 20 clients, 100 sessions
    python bench/load.py --clients 40 --sessions 200 --preset nano
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the raw HTTP client the tests share

import httpx  # noqa: E402
import imageio_ffmpeg  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from raw_client import RawSession, error_text  # noqa: E402

SUBJECT = ROOT / "assets" / "examples" / "chelsea.png"
MIX = ("queue", "queue", "queue", "rest", "cancel", "queue", "disconnect", "queue", "queue", "rest")
"""The route each client takes, cycled: mostly the page's queue, some hostile or impatient."""


def main() -> int:
    args = parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(args, port)
    try:
        wait_until_up(url, server, args.timeout)
        shape = dict(steps=args.steps, frames=9, resolution=args.resolution)
        solos = {
            seed: frames_of(Client(url, verbose=False).predict(*fields(seed, **shape), api_name="/generate")[0])
            for seed in range(args.clients)
        }
        started = time.perf_counter()
        outcomes = run_clients(url, args, shape, solos)
        burst_seconds = time.perf_counter() - started
        before = rss_kib(server.pid)
        sessions_seconds = sequential_sessions(url, args.sessions, shape)
        after = rss_kib(server.pid)
        report(args, outcomes, burst_seconds, (before, after, peak_rss_kib(server.pid)), sessions_seconds)
    finally:
        server.terminate()
        server.wait(30)
    return 0


def fields(seed: int, steps: int, frames: int, resolution: str, subject=None) -> list:
    subject = subject if subject is not None else handle_file(str(SUBJECT))
    return [subject, "a cat surfing", "", False, steps, 6.0, False, frames, 8, resolution, seed, False]


def run_clients(url: str, args, shape: dict, solos: dict) -> list[tuple[str, str, str]]:
    """(route, outcome, detail) per client, all started together."""
    outcomes, threads = [], []
    start = threading.Barrier(args.clients)
    for index in range(args.clients):
        route = MIX[index % len(MIX)]
        threads.append(threading.Thread(target=client, args=(url, route, index, shape, solos, start, outcomes)))
        threads[-1].start()
    for thread in threads:
        thread.join(args.timeout)
    return outcomes


def client(url, route, seed, shape, solos, start, outcomes) -> None:
    try:
        start.wait(30)
        outcomes.append((route, *ROUTES[route](url, seed, shape, solos)))
    except Exception as error:  # counted and printed: a failure without a clear message
        outcomes.append((route, "failed", f"{type(error).__name__}: {error}"[:160]))


def by_queue(url, seed, shape, solos):
    try:
        video = Client(url, verbose=False).predict(*fields(seed, **shape), api_name="/generate")[0]
    except Exception as error:
        return ("refused", str(error)[:120]) if clear(str(error)) else ("failed", str(error)[:160])
    return "served", "same as solo" if frames_of(video) == solos[seed] else "DIFFERS from solo"


def by_rest(url, seed, shape, solos):
    """Gradio's REST route with a properly uploaded subject: what a script skipping the queue sends."""
    subject = RawSession(url, heartbeat=False).upload(SUBJECT)
    response = httpx.post(
        f"{url}gradio_api/run/generate", json={"data": fields(seed, **shape, subject=subject)}, timeout=120
    )
    if response.status_code == 200:
        video = response.json()["data"][0]
        same = frames_of(video.get("path") or video["video"]["path"]) == solos[seed]
        return "served", f"outside the queue, {'same as solo' if same else 'DIFFERS from solo'}"
    return ("refused" if clear(response.text) else "failed"), f"{response.status_code} {response.text[:100]}"


def by_cancel(url, seed, shape, solos):
    job = Client(url, verbose=False).submit(*fields(seed, **{**shape, "steps": 200}), api_name="/generate")
    time.sleep(1.0)
    job.cancel()
    return "stopped", "job.cancel()"


def by_disconnect(url, seed, shape, solos):
    session = RawSession(url)
    subject = session.upload(SUBJECT)
    joined = session.join("generate", fields(seed, **{**shape, "steps": 200}, subject=subject))
    if joined.status_code != 200:
        return ("refused" if clear(joined.text) else "failed"), joined.text[:120]
    time.sleep(1.0)
    session.leave()
    return "stopped", "disconnected"


ROUTES = {"queue": by_queue, "rest": by_rest, "cancel": by_cancel, "disconnect": by_disconnect}


def clear(message: str) -> bool:
    """A refusal a person can act on: not empty, not Gradio's "enable verbose error reporting", no traceback,
    no server path."""
    hidden = ("verbose error", "Traceback", "/tmp/", str(ROOT))
    return bool(message.strip()) and not any(text in message for text in hidden)


def sequential_sessions(url: str, count: int, shape: dict) -> float:
    """`count` browser-like sessions one after another: heartbeat, upload, one video, leave."""
    started = time.perf_counter()
    for seed in range(count):
        session = RawSession(url)
        reply = session.call("generate", fields(seed, **shape, subject=session.upload(SUBJECT)))
        if not reply.get("success"):
            raise SystemExit(f"session {seed} failed: {error_text(reply)}")
        session.leave()
    return time.perf_counter() - started


def report(args, outcomes, burst_seconds, memory, sessions_seconds) -> None:
    """The table for the closing note; a cancelled or disconnected 200-step run that kept going shows in the time."""
    before, after, peak = memory
    counts = {
        kind: sum(1 for _, outcome, _ in outcomes if outcome == kind)
        for kind in ("served", "refused", "stopped", "failed")
    }
    differing = sum(1 for _, outcome, detail in outcomes if outcome == "served" and "DIFFERS" in detail)
    print(f"| measure ({args.clients} concurrent clients, preset {args.preset}) | value |\n|---|---|")
    for kind, count in counts.items():
        print(f"| {kind} | {count}/{len(outcomes)} |")
    print(f"| served videos differing from their solo rendering | {differing}/{counts['served']} |")
    print(f"| wall time of the burst (stopped runs asked for 200 steps) | {burst_seconds:.1f} s |")
    print(f"| server peak RSS | {peak / 1024:.0f} MiB |")
    print(
        f"| RSS growth over {args.sessions} sequential sessions | {(after - before) / 1024:+.1f} MiB "
        f"({before / 1024:.0f} -> {after / 1024:.0f} MiB, {sessions_seconds:.0f} s) |"
    )
    for route, outcome, detail in sorted(outcomes):
        if outcome in ("refused", "failed") or "DIFFERS" in detail or "outside" in detail:
            print(f"- {route}: {outcome}: {detail}")


def start_server(args, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "app.py"), "--preset", args.preset, "--port", str(port)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the app exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the app did not come up in time")


def frames_of(path) -> bytes:
    return b"".join(list(imageio_ffmpeg.read_frames(str(path), output_params=["-f", "rawvideo"]))[1:])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} for process {pid}")


def peak_rss_kib(pid: int) -> int:
    return rss_kib(pid, "VmHWM")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--sessions", type=int, default=100, help="sequential sessions for RSS growth (default 100)")
    parser.add_argument("--preset", default="tiny", help="the app's preset (default tiny)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of each served video (default 3)")
    parser.add_argument("--resolution", default="64x96", help="one of the preset's sizes (default 64x96, tiny's)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds any one wait may take (default 600)")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
