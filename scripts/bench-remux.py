#!/usr/bin/env python3
"""Remux speed, side by side in one run: rtmp-hls's packager (the criterion benchmark
`remux`: to MPEG-TS, to fMP4, and to low-latency fMP4 with 0.25 s parts) against
`ffmpeg -c copy -f mpegts` on the same generated FLV.

ffmpeg's CPU time is measured with getrusage over a long input (the file looped 20 times)
minus a zero-length run of the same command, so process start and probing are taken out.
Prints both rates in MB (10^6 bytes) of FLV input per CPU-second and their ratio.
"""
import os
import re
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "target", "test-media")
FLV = os.path.join(MEDIA, "bench-720p-60s.flv")
LOOPS = 20
RUNS = 5


def child_cpu(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ffmpeg_rate(size):
    base = ["ffmpeg", "-nostdin", "-v", "error"]
    out = ["-c", "copy", "-f", "mpegts", "-y", "/dev/null"]
    full = [child_cpu(base + ["-stream_loop", str(LOOPS - 1), "-i", FLV] + out) for _ in range(RUNS)]
    zero = [child_cpu(base + ["-i", FLV, "-t", "0"] + out) for _ in range(RUNS)]
    cpu = statistics.median(full) - statistics.median(zero)
    return size * LOOPS / cpu, statistics.median(full), statistics.median(zero)


def ours_rate():
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    result = subprocess.run(
        ["cargo", "bench", "-p", "rtmp-hls-bench", "--bench", "remux", "--", "--noplot"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )
    allocs = [l for l in result.stdout.splitlines() if ": allocations:" in l]
    rates = {}
    scale = {"B/s": 1, "KiB/s": 1024, "MiB/s": 1024**2, "GiB/s": 1024**3}
    for name, value, unit in re.findall(
        r"remux/flv_720p_60s_2500k(\S*)\s.*?thrpt:\s+\[\S+ \S+ (\S+) (\S+)", result.stdout, re.S
    ):
        rates[name.lstrip("_") or "ts"] = float(value) * scale[unit]
    if "ts" not in rates:
        sys.exit("no throughput in the benchmark output:\n" + result.stdout)
    return rates, allocs


def main():
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"), MEDIA, "bench"], check=True)
    size = os.path.getsize(FLV)
    rates, allocs = ours_rate()
    ours = rates["ts"]
    theirs, full, zero = ffmpeg_rate(size)
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    print(f"machine: {os.cpu_count()} cores, {model.group(1) if model else 'unknown CPU'}")
    print(f"input: {os.path.relpath(FLV, ROOT)}, {size / 1e6:.1f} MB")
    for name, rate in rates.items():
        print(f"rtmp-hls packager to {name} (criterion median, one core): {rate / 1e6:,.0f} MB/CPU-s ({rate / ours:.2f}x ts)")
    print(f"ffmpeg -c copy -f mpegts ({LOOPS} loops {full:.2f} s - zero-length {zero:.2f} s): {theirs / 1e6:,.0f} MB/CPU-s")
    print(f"ratio (ts): {ours / theirs:.2f}x")
    for line in allocs:
        print(line)


if __name__ == "__main__":
    main()
