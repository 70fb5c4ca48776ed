#!/usr/bin/env python3
"""Many blocked low-latency playlist reloads held at once: what they cost the server while
they wait (CPU and memory per request), and whether each is answered.

Starts `rtmp-hls --hls-variant low-latency` (release), publishes the benchmark clip with
Debian's ffmpeg from a pipe, and measures two cases, each with --requests connections that
each send one blocking reload (`_HLS_msn`/`_HLS_part`, HTTP/1.1) and wait for its answer:

- stalled: the publisher stays connected but sends nothing more (ffmpeg waits on its pipe), so
  no part completes; every request waits until the server gives up on it (503 after three
  target durations, draft-pantos-hls-rfc8216bis §6.2.5.2). The server's CPU over the wait
  is what holding the requests costs.
- live: the publisher keeps sending in real time; just after a segment starts, the requests
  ask for the last part of the next one, about 4 s ahead, and are answered when it completes
  (200). The server's CPU over a window while they wait, against the same window with none
  waiting, is what holding them costs while parts complete around them.

Connections are opened first, then every request is sent at once, so the window starts once
all are waiting.

Memory per request is the growth of the server's resident set (VmRSS; socket buffers are the
kernel's and not in it) once every request is in, over the number of requests.
Writes benches/results/<YYYY-MM-DD>-blocked-reloads.md (a suffix when the date has one)
unless --no-write.

Usage: python3 scripts/bench-blocked-reloads.py [--requests 10000] [--no-write]
"""
import argparse
import asyncio
import datetime
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench-blocked-reloads")
RESULTS = os.path.join(ROOT, "benches", "results")
FLV = os.path.join(ROOT, "target", "test-media", "bench-720p-60s.flv")
RTMP, HTTP = 19381, 18191
CLK = os.sysconf("SC_CLK_TCK")
# How much of the clip the stalled publisher sends before it stops: about 12 s of media.
STALL_BYTES = 3_800_000


def log(message):
    print(f"[bench-blocked-reloads] {message}", file=sys.stderr, flush=True)


def binary(name):
    return os.path.join(ROOT, "target", "release", name)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def get(url):
    return urllib.request.urlopen(url, timeout=5).read().decode()


def start_server(commands):
    data = os.path.join(OUT, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    cmd = [binary("rtmp-hls"), "--rtmp-addr", f"127.0.0.1:{RTMP}", "--http-addr",
           f"127.0.0.1:{HTTP}", "--data-dir", data, "--hls-variant", "low-latency",
           "--segment-duration", "2", "--http-max-connections", "20000",
           "--http-max-connections-per-ip", "20000", "--no-media-timeout", "120"]
    commands.append(" ".join(cmd).replace(ROOT + "/", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, "server.log"), "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            get(f"http://127.0.0.1:{HTTP}/healthz")
            break
        except OSError:
            time.sleep(0.1)
    if proc.poll() is not None:
        sys.exit(f"rtmp-hls exited ({proc.returncode}); another server on the ports? see {OUT}")
    key = subprocess.run([binary("rtmp-hls"), "keys", "add", "bench", "--data-dir", data],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return proc, key


def publish(key, stalled, commands):
    """ffmpeg -re copying the clip from its stdin: all of it, looped, or the first
    STALL_BYTES and then nothing (the pipe stays open)."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
    if stalled:
        cmd += ["-f", "flv", "-i", "pipe:0"]
    else:
        cmd += ["-stream_loop", "-1", "-i", os.path.relpath(FLV, ROOT)]
    cmd += ["-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{RTMP}/live/<key>"]
    commands.append(" ".join(cmd) + (f"  (stdin: the first {STALL_BYTES:,} bytes of the clip)"
                                     if stalled else ""))
    cmd[-1] = cmd[-1].replace("<key>", key)
    if stalled:
        cmd[cmd.index("-nostdin")] = "-y"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE if stalled else None)
    if stalled:
        with open(FLV, "rb") as f:
            proc.stdin.write(f.read(STALL_BYTES))
        proc.stdin.flush()
    return proc


def hint(playlist):
    """(msn, part) of the EXT-X-PRELOAD-HINT part."""
    uri = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', playlist).group(1)
    msn, part = re.search(r"(\d+)\.(\d+)\.m4s", uri).groups()
    return int(msn), int(part)


def wait_for_segments(n, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            playlist = get(f"http://127.0.0.1:{HTTP}/hls/bench/index.m3u8")
            if playlist.count("#EXTINF") >= n:
                return playlist
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the stream did not appear")


async def hold(requests, target, server, window):
    """Opens `requests` connections, then asks `target()` for the (msn, part) to request and
    sends one blocking reload on each; measures the server once all are sent and `window`
    seconds later; returns the answers' status codes and seconds, the measurements and the
    target."""
    connections = []
    for i in range(requests):
        connections.append(await asyncio.open_connection("127.0.0.1", HTTP))
    msn, part = target()
    request = (f"GET /hls/bench/index.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\n"
               "Host: 127.0.0.1\r\n\r\n").encode()
    answers = []

    async def answer(reader, writer, start):
        line = await reader.readline()
        answers.append((line.split()[1].decode() if line else "closed", time.monotonic() - start))
        writer.close()

    tasks = []
    for reader, writer in connections:
        writer.write(request)
        tasks.append(asyncio.create_task(answer(reader, writer, time.monotonic())))
    for _, writer in connections:
        await writer.drain()
    await asyncio.sleep(0.3)  # the last requests reach their wait
    cpu0, rss = cpu_seconds(server.pid), rss_kib(server.pid)
    t0 = time.monotonic()
    await asyncio.sleep(window)
    cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
    pending = requests - len(answers)
    await asyncio.gather(*tasks)
    return answers, {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "rss_kib": rss,
                     "pending_at_window_end": pending}, (msn, part)


def idle_cpu(server, window):
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    time.sleep(window)
    return cpu_seconds(server.pid) - cpu0, time.monotonic() - t0


def summary(answers):
    codes = {}
    for code, _ in answers:
        codes[code] = codes.get(code, 0) + 1
    seconds = sorted(s for _, s in answers)
    return codes, seconds[len(seconds) // 2], seconds[-1]


def case(stalled, requests, commands):
    server, key = start_server(commands)
    publisher = publish(key, stalled, commands)
    try:
        wait_for_segments(3)
        playlist = get(f"http://127.0.0.1:{HTTP}/hls/bench/index.m3u8")
        while stalled:  # until ffmpeg -re has sent what it was given and waits on its pipe
            time.sleep(2)
            playlist, before = get(f"http://127.0.0.1:{HTTP}/hls/bench/index.m3u8"), playlist
            if playlist == before:
                break
        base_rss = rss_kib(server.pid)
        window = 3.0 if stalled else 2.0
        base_cpu, base_wall = idle_cpu(server, window)

        def target():
            msn, part = hint(get(f"http://127.0.0.1:{HTTP}/hls/bench/index.m3u8"))
            # Live: the last part of the next segment, asked for just after a segment
            # starts, answered about 4 s later when that part completes.
            while not stalled and part != 0:
                time.sleep(0.02)
                msn, part = hint(get(f"http://127.0.0.1:{HTTP}/hls/bench/index.m3u8"))
            return (msn, part) if stalled else (msn + 1, 7)

        answers, m, (msn, part) = asyncio.run(hold(requests, target, server, window))
        codes, p50, worst = summary(answers)
        return {"case": "stalled" if stalled else "live", "requests": requests,
                "target": f"_HLS_msn={msn}&_HLS_part={part}",
                "base_cpu_ms_per_s": 1000 * base_cpu / base_wall,
                "held_cpu_ms_per_s": 1000 * m["cpu_s"] / m["wall_s"],
                "window_s": m["wall_s"], "pending": m["pending_at_window_end"],
                "rss_per_request_b": (m["rss_kib"] - base_rss) * 1024 / requests,
                "base_rss_mib": base_rss / 1024, "codes": codes, "answer_p50_s": p50,
                "answer_max_s": worst}
    finally:
        publisher.kill()
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.requests + 100:
        sys.exit(f"the open-file limit ({hard}) is below {args.requests + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(OUT, exist_ok=True)
    if not os.path.exists(FLV):
        subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"),
                        os.path.dirname(FLV), "bench"], check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls"], cwd=ROOT,
                   check=True, env={**os.environ, "CARGO_INCREMENTAL": "0"})
    commands = []
    results = [case(True, args.requests, commands), case(False, args.requests, commands)]
    for r in results:
        log(str(r))
    if args.no_write:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = f"{now:%Y-%m-%d}-blocked-reloads"
    path = os.path.join(RESULTS, f"{name}.md")
    n = 2
    while os.path.exists(path):
        path = os.path.join(RESULTS, f"{name}-{n}.md")
        n += 1
    lines = [f"# Blocked low-latency playlist reloads held at once, {now:%Y-%m-%d}", "",
             f"`python3 scripts/bench-blocked-reloads.py --requests {args.requests}` on "
             f"{now:%Y-%m-%d} ({now:%H:%M} UTC), commit `{commit}`: {os.cpu_count()} cores, "
             f"{cpu}. One low-latency stream (2 s segments, 0.25 s parts); each request is "
             "its own HTTP/1.1 connection from the same machine.", "",
             "| case | requests | server CPU without them, ms/s | server CPU while they wait, "
             "ms/s | window, s | resident memory per request, bytes | answers | answer "
             "after, p50 / max s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        codes = ", ".join(f"{v:,} × {k}" for k, v in sorted(r["codes"].items()))
        lines.append(f"| {r['case']} | {r['requests']:,} | {r['base_cpu_ms_per_s']:.1f} | "
                     f"{r['held_cpu_ms_per_s']:.1f} | {r['window_s']:.1f} | "
                     f"{r['rss_per_request_b']:,.0f} | {codes} | {r['answer_p50_s']:.2f} / "
                     f"{r['answer_max_s']:.2f} |")
    lines += ["", "Commands:", ""] + [f"    {c}" for c in commands] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
