#!/usr/bin/env python3
"""Where rtmp-hls's memory per stream goes, under encoder-shaped load.

Starts rtmp-hls (release) as scripts/bench-vs-nginx.py does (2 s segments, 3 listed, limits
lifted), publishes the same clip to --publishers streams with rtmp-hls-bench (`fixed`, writing
as ffmpeg does, one viewer per stream), and near the end of the window reads, eight times over
one segment duration, beside the same figures taken before any publisher:

- the process's Pss (/proc/PID/smaps_rollup) and its anonymous part;
- the RAM of its memory files (allocated blocks of every memfd in /proc/PID/fd);
- its own gauges: rtmp_hls_segment_bytes{storage}, rtmp_hls_segment_bytes_being_written and
  rtmp_hls_segment_buffer_pool_bytes.

It prints the breakdown per stream: the bytes of closed segments (the listed ones and those
RFC 8216 §6.2.2 keeps after they leave the playlist), the open segment, recycled buffers, and
the rest (buffers' and connections' memory, the allocator's own), i.e. the overhead beyond the
segments, at the first sample and on average (the publishers' segments close together, so
the open segments' size depends on the instant). Writes benches/results/<date>-memory.md
unless --no-write.

Usage: python3 scripts/bench-memory.py [--publishers 64] [--seconds 35] [--no-write]
       [--rtmp-hls-arg=--segment-storage=heap]
"""
import argparse
import datetime
import importlib.util
import os
import re
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("vs", os.path.join(ROOT, "scripts", "bench-vs-nginx.py"))
vs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vs)

MIB = 1024 * 1024


def smaps(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def memfd_bytes(pid):
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith("/memfd:"):
                total += os.stat(os.path.join(fd_dir, fd)).st_blocks * 512
        except OSError:
            pass
    return total


def gauges(http_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = {
        "heap": 'rtmp_hls_segment_bytes{storage="heap"}',
        "files": 'rtmp_hls_segment_bytes{storage="memory_file"}',
        "writing": "rtmp_hls_segment_bytes_being_written",
        "pool": "rtmp_hls_segment_buffer_pool_bytes",
    }
    found = {}
    for key, series in wanted.items():
        m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
        found[key] = float(m.group(1)) if m else 0.0
    return found


# Samples taken over one segment duration (the script's 2 s segments).
SAMPLES = 8
SEGMENT_SECONDS = 2.0


def sample(pid, http_port):
    s = smaps(pid)
    return {"pss": s.get("Pss", 0), "anon": s.get("Pss_Anon", s.get("Anonymous", 0)),
            "memfd": memfd_bytes(pid), **gauges(http_port)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=35,
                        help="how long the publishers run before the sample")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--rtmp-hls-arg", action="append", default=[],
                        help="an extra flag for rtmp-hls (repeatable), e.g. --rtmp-hls-arg=--segment-storage=heap")
    args = parser.parse_args()
    vs.EXTRA_ARGS.extend(args.rtmp_hls_arg)

    os.makedirs(vs.OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"), vs.MEDIA, "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls", "-p", "rtmp-hls-bench"],
                   cwd=ROOT, env=env, check=True)
    names = [f"bench-{i:03}" for i in range(args.publishers)]
    streams = vs.make_keys(names)
    streams_file = os.path.join(vs.OUT, "memory.streams")
    vs.write_streams(streams_file, streams)

    server = vs.start_rtmp_hls()
    rtmp, http = vs.RTMP_HLS_PORTS
    try:
        time.sleep(2)
        idle = sample(server.pid, http)
        cmd = [vs.bench_bin(), "fixed", "--flv", os.path.relpath(vs.FLV, ROOT),
               "--publish-url", f"rtmp://127.0.0.1:{rtmp}/live",
               "--playlist-url", f"http://127.0.0.1:{http}/hls/{{name}}/index.m3u8",
               "--streams-file", os.path.relpath(streams_file, ROOT),
               "--server-pid", str(server.pid), "--label", "rtmp-hls",
               "--publishers", str(args.publishers), "--viewers", str(args.publishers),
               "--warmup", "5", "--duration", str(args.seconds + 10)]
        vs.command(cmd)
        load = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.seconds)
        samples = []
        for _ in range(SAMPLES):
            if load.poll() is not None:
                sys.exit(f"rtmp-hls-bench ended early ({load.returncode})")
            samples.append(sample(server.pid, http))
            time.sleep(SEGMENT_SECONDS / SAMPLES)
        load.terminate()
        load.wait()
    finally:
        vs.stop([server])

    n = args.publishers
    idle_share = (idle["pss"] + idle["memfd"]) / n / MIB

    def rows_of(busy):
        total = (busy["pss"] + busy["memfd"]) / n / MIB
        closed = (busy["heap"] + busy["files"] - busy["writing"]) / n / MIB
        writing = busy["writing"] / n / MIB
        pool = busy["pool"] / n / MIB
        rest = total - idle_share - closed - writing - pool
        return [total, idle_share, closed, writing, pool, rest, writing + pool + rest]

    # Every publisher sends the same clip from the same moment, so their segments close
    # together and the open segments' size is one point of a sawtooth at any instant: the
    # samples spread over one segment duration, and their mean, say what a stream holds.
    per_sample = [rows_of(busy) for busy in samples]
    first, mean = per_sample[0], [sum(col) / len(col) for col in zip(*per_sample)]
    labels = [
        "Pss + memory files, per stream",
        "the idle process's share",
        "closed segments (listed, and kept after the playlist per RFC 8216 §6.2.2)",
        "the open segments, written so far",
        "recycled heap buffers waiting in the pool",
        "the rest: buffers, connections, the allocator's own",
        "overhead beyond the closed segments (open + pool + rest)",
    ]
    rows = list(zip(labels, first, mean))
    busy = samples[0]
    info = vs.machine()
    machine = f"{info['cores']} cores, {info['model']}, Linux {info['kernel']}, {info['rustc']}"
    commit = info["commit"]
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# rtmp-hls memory per stream, {now:%Y-%m-%d}",
        "",
        f"`python3 scripts/bench-memory.py --publishers {n} --seconds {args.seconds:g}"
        + "".join(f" --rtmp-hls-arg={a}" for a in args.rtmp_hls_arg)
        + f"` on "
        f"{now:%Y-%m-%d} ({now:%H:%M} UTC), commit `{commit}`, {machine}.",
        "",
        f"{n} publishers writing the bench clip (720p30 H.264 2.5 Mbit/s + AAC) as ffmpeg does, one "
        "viewer each, 2 s segments, 3 listed; sampled "
        f"{args.seconds:g} s after they started, then {SAMPLES - 1} more times over one segment "
        "duration (the publishers' segments close together, so the open segments' size "
        "depends on the instant: the mean is what a stream holds). Pss from "
        "/proc/PID/smaps_rollup; memory files: allocated blocks of the process's memfds; "
        "segment figures from the server's gauges.",
        "",
        f"| | MiB per stream, first sample | mean of {SAMPLES} |",
        "|---|---|---|",
    ] + [f"| {label} | {one:.2f} | {avg:.2f} |" for label, one, avg in rows] + [
        "",
        f"Overhead beyond the closed segments in KiB: {rows[-1][1] * 1024:.0f} in the first "
        f"sample, {rows[-1][2] * 1024:.0f} on average.",
        "",
        f"Raw: idle {idle}; under load (first sample) {busy}.",
        "",
        "Commands:",
        "",
    ] + [f"    {c}" for c in vs.COMMANDS]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        path = vs.write_result(report, now, "memory")
        print(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
