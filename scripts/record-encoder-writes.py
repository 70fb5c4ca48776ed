#!/usr/bin/env python3
"""What real encoders write when they publish: the `write` calls (and their sizes and timing)
that Debian's ffmpeg 5.1, the static ffmpeg 7.0 of `imageio-ffmpeg` and librtmp (the library
OBS's RTMP output is built on; python3-librtmp) make on their RTMP socket while publishing the
benchmark clip in real time, recorded with strace, and the chunk size each announces.

Publishes to a fresh rtmp-hls (release build) for --seconds each. Prints, and writes to
benches/results/<YYYY-MM-DD>-encoder-writes.md unless --no-write, per encoder: writes per
second, bytes per second, write sizes (median, p90, max), writes per video frame, the
announced chunk size, and how writes are spaced (median and p90 gap). `rtmp-hls-bench`'s
`--traffic encoder` mode reproduces what this finds.

Usage: python3 scripts/record-encoder-writes.py [--seconds 20] [--no-write]
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "encoder-writes")
RESULTS = os.path.join(ROOT, "benches", "results")
FLV = os.path.join(ROOT, "target", "test-media", "bench-720p-60s.flv")
PORTS = (19391, 18111)
# The clip's video frame rate (bench-720p-60s.flv: 720p30).
FPS = 30

WRITE = re.compile(r'^(?:\[pid\s+\d+\]\s+)?(?:\d+\s+)?(\d+):(\d+):(\d+\.\d+) '
                   r'(write|writev|sendto|sendmsg)\((\d+), [^"]*"([^"]*)".*= (\d+)$')
CONNECT = re.compile(r'connect\((\d+), \{sa_family=AF_INET, sin_port=htons\((\d+)\)')


def log(message):
    print(f"[encoder-writes] {message}", file=sys.stderr, flush=True)


def binary(name):
    return os.path.join(ROOT, "target", "release", name)


def ffmpeg7():
    venv = os.environ.get("RTMP_HLS_TEST_VENV", os.path.join(ROOT, ".venv-test"))
    python = os.path.join(venv, "bin", "python")
    return subprocess.run([python, "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
                          check=True, capture_output=True, text=True).stdout.strip()


def encoders(seconds, url):
    ffmpeg_args = ["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", FLV,
                   "-t", str(seconds), "-c", "copy", "-f", "flv", url]
    cut = os.path.join(OUT, "clip.flv")
    return [
        ("ffmpeg 5.1 (Debian)", ["ffmpeg", *ffmpeg_args]),
        ("ffmpeg 7.0 (imageio-ffmpeg)", [ffmpeg7(), *ffmpeg_args]),
        ("librtmp (python3-librtmp)", ["/usr/bin/python3",
                                       os.path.join(ROOT, "tests", "librtmp_publish.py"), url, cut]),
    ]


def cut_clip(seconds):
    """The first `seconds` of the clip, for librtmp's publisher (it sends a whole file)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", FLV, "-t",
                    str(seconds), "-c", "copy", os.path.join(OUT, "clip.flv")], check=True)


def start_server():
    data = os.path.join(OUT, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    key = subprocess.run([binary("rtmp-hls"), "keys", "add", "rec", "--data-dir", data],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([binary("rtmp-hls"), "--rtmp-addr", f"127.0.0.1:{PORTS[0]}",
                             "--http-addr", f"127.0.0.1:{PORTS[1]}", "--data-dir", data],
                            stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, "server.log"), "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORTS[1]}/healthz", timeout=1).read()
            return proc, key
        except OSError:
            time.sleep(0.1)
    sys.exit("rtmp-hls did not start")


def record(name, command, trace):
    log(f"recording {name}")
    subprocess.run(["strace", "-f", "-qq", "-tt", "-xx", "-s", "16",
                    "-e", "trace=connect,write,writev,sendto,sendmsg", "-e", "signal=none",
                    "-o", trace, *command], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def analyse(trace):
    """Writes on the RTMP socket after the handshake: (seconds, size, first bytes)."""
    sockets = set()
    writes = []
    for line in open(trace):
        connect = CONNECT.search(line)
        if connect and int(connect.group(2)) == PORTS[0]:
            sockets.add(connect.group(1))
            continue
        match = WRITE.match(line)
        if not match or match.group(5) not in sockets:
            continue
        h, m, s = int(match.group(1)), int(match.group(2)), float(match.group(3))
        head = bytes(int(x, 16) for x in re.findall(r"\\x([0-9a-f]{2})", match.group(6)))
        writes.append((h * 3600 + m * 60 + s, int(match.group(7)), head))
    # The handshake is C0+C1 (1537 bytes) and C2 (1536): media starts after them.
    while writes and writes[0][1] in (1537, 1536, 1):
        writes.pop(0)
    return writes


def chunk_size(writes):
    """The size a Set Chunk Size message (type 1 on chunk stream 2) announces: its header
    and body in one write or in two; 128 (the default) when none is sent."""
    for (_, _, head), following in zip(writes, writes[1:] + [(0, 0, b"")]):
        at = head.find(b"\x02\x00\x00\x00\x00\x00\x04\x01")
        if at < 0:
            continue
        body = head[at + 12:at + 16] if len(head) >= at + 16 else following[2][:4]
        if len(body) == 4:
            return int.from_bytes(body, "big") & 0x7FFFFFFF
    return 128


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0


def summary(name, writes, seconds):
    # The steady part: after the first second (setup, sequence headers).
    start = writes[0][0] + 1.0 if writes else 0
    steady = [w for w in writes if w[0] >= start]
    span = (steady[-1][0] - steady[0][0]) if len(steady) > 1 else 1.0
    sizes = [w[1] for w in steady]
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(steady, steady[1:])]
    return {
        "name": name,
        "chunk_size": chunk_size(writes),
        "writes_per_s": len(steady) / span,
        "bytes_per_s": sum(sizes) / span,
        "size_p50": percentile(sizes, 0.5),
        "size_p90": percentile(sizes, 0.9),
        "size_max": max(sizes, default=0),
        "writes_per_frame": len(steady) / span / FPS,
        "gap_p50_ms": percentile(gaps, 0.5),
        "gap_p90_ms": percentile(gaps, 0.9),
        "small_share": sum(1 for s in sizes if s <= 16) / max(1, len(sizes)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"), os.path.dirname(FLV),
                    "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls"], cwd=ROOT,
                   env=env, check=True)
    cut_clip(args.seconds)
    proc, key = start_server()
    rows = []
    try:
        url = f"rtmp://127.0.0.1:{PORTS[0]}/live/{key}"
        for i, (name, command) in enumerate(encoders(args.seconds, url)):
            trace = os.path.join(OUT, f"trace-{i}.txt")
            record(name, command, trace)
            rows.append(summary(name, analyse(trace), args.seconds))
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    lines = [f"# What encoders write when they publish, {started:%Y-%m-%d}", "",
             f"`python3 scripts/record-encoder-writes.py --seconds {args.seconds}` on "
             f"{started:%Y-%m-%d} ({started:%H:%M} UTC), commit `{commit}`: each encoder "
             f"publishes the first {args.seconds} s of `bench-720p-60s.flv` (720p30 H.264 "
             "2.5 Mbit/s + AAC 44.1 kHz) in real time to rtmp-hls on loopback under `strace`; "
             "counted: `write`/`writev`/`sendto`/`sendmsg` calls on the RTMP socket after the "
             "handshake and the first second.", "",
             "| encoder | chunk size | writes/s | writes per video frame | bytes/s | write size "
             "p50 / p90 / max | writes of ≤ 16 bytes | gap between writes p50 / p90, ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['chunk_size']} | {r['writes_per_s']:,.0f} | "
                     f"{r['writes_per_frame']:.1f} | {r['bytes_per_s']:,.0f} | "
                     f"{r['size_p50']:,} / {r['size_p90']:,} / {r['size_max']:,} | "
                     f"{r['small_share']:.0%} | {r['gap_p50_ms']:.2f} / {r['gap_p90_ms']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        base = os.path.join(RESULTS, f"{started:%Y-%m-%d}-encoder-writes")
        path, n = base + ".md", 2
        while os.path.exists(path):
            path, n = f"{base}-{n}.md", n + 1
        with open(path, "w") as f:
            f.write(text)
        log(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
