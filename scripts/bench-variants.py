#!/usr/bin/env python3
"""rtmp-hls's HLS variants side by side in one run: server CPU per stream, memory and latency
of `--hls-variant mpegts` (one player-style viewer per stream, as today) against
`--hls-variant low-latency` (one low-latency viewer per stream: blocking reloads, the hinted
part while it is written), and `fmp4` with a player-style viewer.

Builds rtmp-hls and rtmp-hls-bench in release, then for --rounds rounds, in alternating
order, starts a fresh server per variant and runs `rtmp-hls-bench fixed` with N publishers of
the benchmark clip and one viewer each (--warmup 8 s, then 20 s measured; a warm-up of 30 s
measures the steady state, once the store holds a full retention window and recycles what
leaves it). Figures are medians over
the rounds; the ratio is low-latency over mpegts. With --nginx, Nginx-RTMP (set up as
scripts/bench-vs-nginx.py sets it up: 2 s fragments, a 6 s playlist on tmpfs) runs beside
them with player-style viewers, and its ratios to each variant are given. Writes
benches/results/<YYYY-MM-DD>-variants.md (a suffix when the date has one) unless --no-write.

Usage: python3 scripts/bench-variants.py [--publishers 50] [--rounds 3] [--warmup 8] [--nginx]
                                        [--no-write]
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import importlib.util
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench-variants")
FLV = os.path.join(ROOT, "target", "test-media", "bench-720p-60s.flv")
PORTS = (19371, 18091)
# (variant, viewer mode of the generator)
VARIANTS = [("mpegts", "player"), ("low-latency", "low-latency"), ("fmp4", "player")]
NGINX = "nginx-rtmp"
# Seconds measured after the warm-up; the clip lasts 60 s.
MEASURED_S = 20
CLIP_S = 60


def vs_nginx():
    """scripts/bench-vs-nginx.py as a module: its Nginx-RTMP setup (packages, config, start)."""
    spec = importlib.util.spec_from_file_location(
        "vs_nginx", os.path.join(ROOT, "scripts", "bench-vs-nginx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(message):
    print(f"[bench-variants] {message}", file=sys.stderr, flush=True)


def binary(name):
    return os.path.join(ROOT, "target", "release", name)


def wait_http(url, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer")


def start(variant, data, commands):
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    cmd = [binary("rtmp-hls"), "--rtmp-addr", f"127.0.0.1:{PORTS[0]}",
           "--http-addr", f"127.0.0.1:{PORTS[1]}", "--data-dir", data,
           "--hls-variant", variant, "--segment-duration", "2", "--playlist-length", "3",
           "--max-connections", "65536", "--max-connections-per-ip", "65536",
           "--max-unauthenticated", "65536", "--new-connections-per-ip-per-minute", "0",
           "--max-streams", "65536",
           "--http-max-connections", "65536", "--http-max-connections-per-ip", "65536"]
    commands.append(" ".join(cmd).replace(ROOT + "/", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, f"{variant}.log"), "a"))
    wait_http(f"http://127.0.0.1:{PORTS[1]}/healthz")
    if proc.poll() is not None:
        sys.exit(f"rtmp-hls exited ({proc.returncode}); another server on the ports? see {OUT}")
    return proc


def keys(data, n):
    streams = []
    for i in range(n):
        out = subprocess.run([binary("rtmp-hls"), "keys", "add", f"v{i:03}", "--data-dir", data],
                             check=True, capture_output=True, text=True).stdout
        streams.append(f"v{i:03}={out.strip().splitlines()[-1]}")
    return streams


def run(variant, mode, args, round_, commands):
    if variant == NGINX:
        nginx = vs_nginx()
        proc = nginx.start_nginx()
        commands.extend(c for c in nginx.COMMANDS if c not in commands)
        ports = nginx.NGINX_PORTS
        streams = [f"n{i:03}" for i in range(args.publishers)]
        playlist = f"http://127.0.0.1:{ports[1]}/hls/{{name}}.m3u8"
        extra = ["--server-files", os.path.join(nginx.HLS_ROOT, "hls")]
    else:
        data = os.path.join(OUT, f"data-{variant}")
        proc = start(variant, data, commands)
        ports = PORTS
        playlist = f"http://127.0.0.1:{PORTS[1]}/hls/{{name}}/index.m3u8"
        extra = []
    try:
        if variant != NGINX:
            streams = keys(data, args.publishers)
        path = os.path.join(OUT, f"streams-{variant}")
        with open(path, "w") as f:
            f.write("\n".join(streams) + "\n")
        report = os.path.join(OUT, f"{variant}-round{round_}.json")
        cmd = [binary("rtmp-hls-bench"), "fixed", "--flv", os.path.relpath(FLV, ROOT),
               "--publish-url", f"rtmp://127.0.0.1:{ports[0]}/live",
               "--playlist-url", playlist, *extra,
               "--streams-file", os.path.relpath(path, ROOT), "--server-pid", str(proc.pid),
               "--publishers", str(args.publishers), "--viewers", str(viewers(args)),
               "--viewer-mode", mode, "--label", variant, "--warmup", str(args.warmup),
               "--duration", str(MEASURED_S),
               "--json", os.path.relpath(report, ROOT), "--no-progress"]
        line = " ".join(cmd)
        if line not in commands:
            commands.append(line)
        log(f"round {round_}: {variant} ({mode} viewers)")
        subprocess.run(cmd, cwd=ROOT, check=True)
        with open(report) as f:
            return json.load(f)["steps"][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def viewers(args):
    return args.publishers if args.viewers is None else args.viewers


def watching(args):
    if viewers(args) == 0:
        return "no viewers (packaging alone)"
    kinds = "player-style for mpegts, fmp4 and Nginx-RTMP, low-latency for low-latency"
    if viewers(args) == args.publishers:
        return f"one viewer each ({kinds})"
    return f"{viewers(args)} viewers in all ({kinds})"


def figures(step):
    server = step.get("server") or {}
    cpu = server.get("cpu_per_stream")
    return {
        "cpu_ms": None if cpu is None else cpu * 1000,
        # Nginx-RTMP's HLS files on tmpfs count as its memory, as rtmp-hls's memory files do.
        "mem_mib": (server.get("pss_kib", 0) + (server.get("memfd_kib") or 0)
                    + (server.get("files_kib") or 0)) / 1024,
        "delay_p50": (step.get("packaging_delay") or {}).get("p50_ms"),
        "part_p50": (step.get("part_latency") or {}).get("p50_ms"),
        "part_p99": (step.get("part_latency") or {}).get("p99_ms"),
        "errors": sum((step.get("errors") or {}).values()),
    }


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "-" if value is None else f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=8,
                        help="seconds before measuring (at most the clip's 60 s less the "
                        f"{MEASURED_S} s measured; 30 measures the steady state)")
    parser.add_argument("--viewers", type=int, default=None,
                        help="viewers in all (default: one per publisher; 0 measures packaging "
                        "alone)")
    parser.add_argument("--nginx", action="store_true",
                        help="also Nginx-RTMP (Debian's, set up as scripts/bench-vs-nginx.py "
                        "does; installed when missing) with player-style viewers")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not 0 <= args.warmup <= CLIP_S - MEASURED_S:
        parser.error(f"--warmup must be 0 to {CLIP_S - MEASURED_S} s")
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"),
                    os.path.dirname(FLV), "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls",
                    "-p", "rtmp-hls-bench"], cwd=ROOT, env=env, check=True)
    variants = VARIANTS + ([(NGINX, "player")] if args.nginx else [])
    if args.nginx:
        vs_nginx().ensure_packages()
    commands = []
    results = {variant: [] for variant, _ in variants}
    for round_ in range(1, args.rounds + 1):
        order = variants if round_ % 2 == 1 else list(reversed(variants))
        for variant, mode in order:
            results[variant].append(figures(run(variant, mode, args, round_, commands)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "unknown CPU")
    lines = [f"# HLS variants side by side, {started:%Y-%m-%d}", "",
             f"`python3 scripts/bench-variants.py --publishers {args.publishers} --rounds "
             f"{args.rounds}{' --nginx' if args.nginx else ''}"
             f"{'' if args.viewers is None else f' --viewers {args.viewers}'}"
             f"{'' if args.warmup == 8 else f' --warmup {args.warmup}'}` on "
             f"{started:%Y-%m-%d} ({started:%H:%M} UTC), commit `{commit}`: "
             f"{os.cpu_count()} cores, {model} (shared VM). Each variant's server started fresh; "
             f"{args.publishers} publishers of `bench-720p-60s.flv` (720p30 H.264 2.5 Mbit/s + "
             f"AAC), {watching(args)}, {args.warmup} s warm-up, {MEASURED_S} s measured; rounds in alternating order; "
             "medians over the rounds.", "",
             "| variant | CPU per stream, ms per stream-second (rounds) | memory, MiB | packaging "
             "delay p50, ms | part latency p50 / p99, ms | errors |",
             "|---|---|---|---|---|---|"]
    cpu = {}
    for variant, _ in variants:
        rows = results[variant]
        cpu[variant] = med([r["cpu_ms"] for r in rows])
        rounds = ", ".join(fmt(r["cpu_ms"]) for r in rows)
        lines.append(f"| {variant} | {fmt(cpu[variant])} ({rounds}) | "
                     f"{fmt(med([r['mem_mib'] for r in rows]), 0)} | "
                     f"{fmt(med([r['delay_p50'] for r in rows]), 1)} | "
                     f"{fmt(med([r['part_p50'] for r in rows]), 1)} / "
                     f"{fmt(med([r['part_p99'] for r in rows]), 1)} | "
                     f"{sum(r['errors'] for r in rows)} |")
    if cpu.get("mpegts") and cpu.get("low-latency"):
        lines += ["", f"low-latency / mpegts CPU per stream: "
                  f"{cpu['low-latency'] / cpu['mpegts']:.2f}x"]
    if cpu.get(NGINX):
        lines.append("")
        lines += [f"{NGINX} / {v} CPU per stream: {cpu[NGINX] / cpu[v]:.2f}x"
                  for v, _ in VARIANTS if cpu.get(v)]
    lines += ["", "Commands:", ""] + [f"    {c}" for c in commands]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = vs_nginx().write_result(text, started, "variants")
        log(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
