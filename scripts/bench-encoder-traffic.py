#!/usr/bin/env python3
"""Does the load generator cost the server what real encoders cost it? rtmp-hls's CPU per
stream under N real ffmpeg publishers, side by side in one run with `rtmp-hls-bench` sending
N streams as ffmpeg writes them (`--traffic ffmpeg`, the default), as librtmp writes them
(`--traffic librtmp`), and batched (`--traffic batched`, the generator's old, lighter
traffic).

Builds rtmp-hls and rtmp-hls-bench in release; for each step (--steps, default 32,64) and
round, in alternating order, starts a fresh server, starts the publishers (staggered over
2 s), waits 8 s, and reads the server's CPU time from /proc over 20 s. No viewers: this
measures what publishing costs. Real publishers are Debian's ffmpeg, `-re -stream_loop -1
-c copy` of the benchmark clip. Writes benches/results/<YYYY-MM-DD>-encoder-traffic.md unless
--no-write.

Usage: python3 scripts/bench-encoder-traffic.py [--steps 32,64] [--rounds 2] [--no-write]
"""
import argparse
import datetime
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench-encoder-traffic")
PORTS = (19401, 18121)
MODES = ["ffmpeg processes", "generator: ffmpeg", "generator: librtmp", "generator: batched"]
WARMUP_S = 8
MEASURE_S = 20
STAGGER_S = 2.0


def variants_module():
    spec = importlib.util.spec_from_file_location(
        "bench_variants", os.path.join(ROOT, "scripts", "bench-variants.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V = variants_module()
TICKS = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"[encoder-traffic] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(n):
    data = os.path.join(OUT, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    keys = []
    for i in range(n):
        out = subprocess.run([V.binary("rtmp-hls"), "keys", "add", f"e{i:03}", "--data-dir", data],
                             check=True, capture_output=True, text=True).stdout
        keys.append(out.strip().splitlines()[-1])
    cmd = [V.binary("rtmp-hls"), "--rtmp-addr", f"127.0.0.1:{PORTS[0]}",
           "--http-addr", f"127.0.0.1:{PORTS[1]}", "--data-dir", data,
           "--segment-duration", "2", "--playlist-length", "3",
           "--max-connections", "65536", "--max-connections-per-ip", "65536",
           "--max-unauthenticated", "65536", "--new-connections-per-ip-per-minute", "0",
           "--max-streams", "65536",
           "--http-max-connections", "65536", "--http-max-connections-per-ip", "65536"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, "server.log"), "a"))
    V.wait_http(f"http://127.0.0.1:{PORTS[1]}/healthz")
    return proc, keys, " ".join(cmd).replace(ROOT + "/", "")


def start_load(mode, keys):
    url = f"rtmp://127.0.0.1:{PORTS[0]}/live"
    if mode == "ffmpeg processes":
        procs = []
        for i, key in enumerate(keys):
            procs.append(subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                 "-stream_loop", "-1", "-i", V.FLV, "-c", "copy", "-f", "flv", f"{url}/{key}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(STAGGER_S / len(keys))
        return procs, "ffmpeg -re -stream_loop -1 -i bench-720p-60s.flv -c copy -f flv URL/KEY"
    traffic = mode.split(": ")[1]
    streams = os.path.join(OUT, "streams")
    with open(streams, "w") as f:
        f.write("\n".join(f"e{i:03}={k}" for i, k in enumerate(keys)) + "\n")
    cmd = [V.binary("rtmp-hls-bench"), "fixed", "--flv", os.path.relpath(V.FLV, ROOT),
           "--publish-url", url, "--playlist-url",
           f"http://127.0.0.1:{PORTS[1]}/hls/{{name}}/index.m3u8",
           "--streams-file", os.path.relpath(streams, ROOT), "--publishers", str(len(keys)),
           "--viewers", "0", "--traffic", traffic, "--warmup", str(WARMUP_S),
           "--duration", str(MEASURE_S + 5), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, "bench.log"), "a"))
    return [proc], " ".join(cmd)


def measure(mode, n, commands):
    server, keys, server_cmd = start_server(n)
    loads = []
    try:
        loads, load_cmd = start_load(mode, keys)
        for c in (server_cmd, load_cmd):
            if c not in commands:
                commands.append(c)
        time.sleep(WARMUP_S)
        before, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(MEASURE_S)
        after, t1 = cpu_seconds(server.pid), time.monotonic()
        alive = sum(1 for p in loads if p.poll() is None)
        if alive < len(loads):
            log(f"{mode}: {len(loads) - alive} of {len(loads)} load processes ended early")
        return (after - before) / n / (t1 - t0) * 1000
    finally:
        for p in loads:
            p.send_signal(signal.SIGINT)
        for p in loads:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="32,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"),
                    os.path.dirname(V.FLV), "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls",
                    "-p", "rtmp-hls-bench"], cwd=ROOT, env=env, check=True)
    commands = []
    results = {(n, mode): [] for n in steps for mode in MODES}
    for n in steps:
        for round_ in range(1, args.rounds + 1):
            order = MODES if round_ % 2 == 1 else list(reversed(MODES))
            for mode in order:
                log(f"{n} streams, round {round_}: {mode}")
                results[(n, mode)].append(measure(mode, n, commands))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "unknown CPU")
    lines = [f"# The generator's traffic against real encoders', {started:%Y-%m-%d}", "",
             f"`python3 scripts/bench-encoder-traffic.py --steps {args.steps} --rounds "
             f"{args.rounds}` on {started:%Y-%m-%d} ({started:%H:%M} UTC), commit `{commit}`: "
             f"{os.cpu_count()} cores, {model} (shared VM). rtmp-hls started fresh for each "
             "measurement; publishers of `bench-720p-60s.flv` (720p30 H.264 2.5 Mbit/s + AAC), "
             f"no viewers; server CPU read from /proc over {MEASURE_S} s after {WARMUP_S} s; "
             "rounds in alternating order; medians over the rounds.", "",
             "| streams | publishers | server CPU, ms per stream-second (rounds) | against "
             "ffmpeg processes |", "|---|---|---|---|"]
    for n in steps:
        real = V.med(results[(n, MODES[0])])
        for mode in MODES:
            rows = results[(n, mode)]
            value = V.med(rows)
            ratio = "" if mode == MODES[0] or not real else f"{value / real:.2f}x"
            lines.append(f"| {n} | {mode} | {V.fmt(value)} ({', '.join(V.fmt(r) for r in rows)}) "
                         f"| {ratio} |")
    lines += ["", "Commands:", ""] + [f"    {c}" for c in commands]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = V.vs_nginx().write_result(text, started, "encoder-traffic")
        log(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
