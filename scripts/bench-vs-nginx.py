#!/usr/bin/env python3
"""rtmp-hls against Nginx-RTMP, side by side in one run.

Installs Debian's nginx, libnginx-mod-rtmp and wrk when missing, configures Nginx-RTMP the way
a production HLS origin is configured (hls on, 2 s fragments, 6 s playlist, hls_path on
tmpfs, no-cache playlists, CORS, worker_processes auto), builds rtmp-hls in release, and
then, in one run on one machine:

1. ramps publishers against each server with rtmp-hls-bench (the same clip, steps, viewers
   and durations), recording server CPU per stream, memory, packaging delay, fetch times and
   errors, and the generator's own CPU; in --rounds rounds (default 2) of alternating order,
   each server started fresh for its ramp, the figures being the medians over the rounds;
2. measures HLS delivery with wrk (requests/s for a live playlist and for a segment), the
   servers alternating round by round;
3. writes the figures, ratios, machine, date and exact commands to a new dated file,
   benches/results/<YYYY-MM-DD>-vs-nginx.md (a suffix when that date has one already), and
   the JSON reports and plot beside it (benches/results/{nginx-rtmp,rtmp-hls,wrk}.json,
   vs-nginx.svg: the latest run's), then prints the figures of BENCHMARKS.md's current
   table, which is updated by hand.

Usage: python3 scripts/bench-vs-nginx.py [--steps 5,10,20] [--duration 20] [--warmup 8]
       [--viewers-per-stream 1] [--rounds 2] [--wrk-rounds 5] [--rtmp-hls-arg=--flag=value]
       [--no-write]
"""
import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench-vs-nginx")
RESULTS = os.path.join(ROOT, "benches", "results")
MEDIA = os.path.join(ROOT, "target", "test-media")
FLV = os.path.join(MEDIA, "bench-720p-60s.flv")
# Nginx-RTMP's HLS files live on tmpfs, as production setups put them.
HLS_ROOT = "/dev/shm/rtmp-hls-bench"
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
NGINX_USER = "www-data"
# Ports on loopback for the two servers (RTMP, HTTP).
NGINX_PORTS = (19351, 18081)
RTMP_HLS_PORTS = (19352, 18082)
# Ramp: steps of publishers; each step warms up, then measures.
DEFAULT_STEPS = "5,10,20,40,60,80,100,130,160,200,250,300,350,400,500,600,700,800,900,1000"
# wrk: one thread (the other core serves), 32 keep-alive connections, short runs: a segment
# must stay listed for the whole run, and the newest one stays 6 s.
WRK_THREADS = 1
WRK_CONNECTIONS = 32
WRK_SECONDS = 4
# Streams ready before wrk starts: the playlist must list this many segments.
WRK_MIN_SEGMENTS = 2
# Before each ramp: wait until the idle machine uses less than QUIET_CORES (sampled over
# QUIET_SAMPLE s), for at most QUIET_WAIT s.
QUIET_CORES = 0.25
QUIET_SAMPLE = 3
QUIET_WAIT = 600

COMMANDS = []  # every command the measurement ran, for the report


def log(message):
    print(f"bench-vs-nginx: {message}", file=sys.stderr, flush=True)


def sudo():
    return [] if os.geteuid() == 0 else ["sudo"]


def ensure_packages():
    missing = []
    if shutil.which("nginx") is None:
        missing.append("nginx")
    if not os.path.exists(NGINX_MODULE):
        missing.append("libnginx-mod-rtmp")
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if shutil.which("ffmpeg") is None:
        missing.append("ffmpeg")
    if not missing:
        return
    log("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = sudo() + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(sudo() + ["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def wait_port(port, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {limit} s")


def busy_cores(seconds):
    """Cores the machine keeps busy over `seconds` (user+nice+system+irq+softirq)."""
    def busy():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return f[0] + f[1] + f[2] + f[5] + f[6]
    start = busy()
    time.sleep(seconds)
    return (busy() - start) / os.sysconf("SC_CLK_TCK") / seconds


def tree_cpu_seconds(pid):
    """utime+stime of `pid` and its direct children (Nginx's workers), in seconds."""
    def ticks(stat_path):
        try:
            text = open(stat_path).read()
        except OSError:  # the process ended between the listing and the read
            return None, 0
        fields = text[text.rindex(")") + 2:].split()
        return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime + stime
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit(f"the server (pid {pid}) is gone")
    total = ticks(f"/proc/{pid}/stat")[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            ppid, cpu = ticks(f"/proc/{entry}/stat")
            if ppid == pid:
                total += cpu
    return total / os.sysconf("SC_CLK_TCK")


def wait_quiet():
    """Waits (up to QUIET_WAIT) until other work on the machine (a build, say) is over, so it
    does not land in a ramp's figures; goes on regardless after that, and says so."""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        cores = busy_cores(QUIET_SAMPLE)
        if cores < QUIET_CORES:
            return
        if time.monotonic() > deadline:
            log(f"the machine is still busy ({cores:.2f} cores); measuring anyway")
            return
        log(f"waiting for the machine to quiet down ({cores:.2f} cores busy)")


def nginx_conf(prefix, rtmp_port, http_port):
    hls_path = os.path.join(HLS_ROOT, "hls")
    return f"""# Written by scripts/bench-vs-nginx.py: a production-style Nginx-RTMP HLS origin.
user {NGINX_USER};
worker_processes auto;
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
load_module {NGINX_MODULE};

events {{
    worker_connections 16384;
}}

rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            hls on;
            hls_path {hls_path};
            hls_fragment 2s;
            hls_playlist_length 6s;
        }}
    }}
}}

http {{
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    # No access log: cheaper for Nginx than production, where origins usually log.
    access_log off;
    server {{
        listen 127.0.0.1:{http_port};
        location /hls {{
            types {{
                application/vnd.apple.mpegurl m3u8;
                video/mp2t ts;
            }}
            root {HLS_ROOT};
            add_header Access-Control-Allow-Origin * always;
            location ~ \\.m3u8$ {{
                add_header Cache-Control no-cache;
                add_header Access-Control-Allow-Origin * always;
            }}
        }}
    }}
}}
"""


def start_nginx():
    prefix = os.path.join(OUT, "nginx")
    os.makedirs(prefix, exist_ok=True)
    shutil.rmtree(HLS_ROOT, ignore_errors=True)
    os.makedirs(os.path.join(HLS_ROOT, "hls"))
    shutil.chown(HLS_ROOT, user=NGINX_USER)
    shutil.chown(os.path.join(HLS_ROOT, "hls"), user=NGINX_USER)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(prefix, *NGINX_PORTS))
    cmd = ["nginx", "-p", prefix + "/", "-c", conf, "-g", "daemon off;"]
    subprocess.run(["nginx", "-t", "-q", "-p", prefix + "/", "-c", conf], check=True)
    command(cmd)
    proc = subprocess.Popen(cmd)
    for port in NGINX_PORTS:
        wait_port(port)
    return proc


def rtmp_hls_bin():
    return os.path.join(ROOT, "target", "release", "rtmp-hls")


def bench_bin():
    return os.path.join(ROOT, "target", "release", "rtmp-hls-bench")


RTMP_HLS_DATA = os.path.join(OUT, "rtmp-hls-data")


def make_keys(names):
    """A fresh key store holding one key per name: [(name, key)]."""
    shutil.rmtree(RTMP_HLS_DATA, ignore_errors=True)
    os.makedirs(RTMP_HLS_DATA)
    streams = []
    for name in names:
        out = subprocess.run([rtmp_hls_bin(), "keys", "add", name, "--data-dir", RTMP_HLS_DATA],
                             check=True, capture_output=True, text=True).stdout
        streams.append((name, out.strip().splitlines()[-1].strip()))
    return streams


def command(cmd):
    """Records a command line for the report, once."""
    line = " ".join(c if c.find(" ") < 0 else f"'{c}'" for c in cmd).replace(ROOT + "/", "")
    if line not in COMMANDS:
        COMMANDS.append(line)


# Extra flags for rtmp-hls (--rtmp-hls-arg), for A/B runs of its options.
EXTRA_ARGS = []


def start_rtmp_hls():
    data = RTMP_HLS_DATA
    # Sequence numbers of an earlier round would only make the restart resume them.
    try:
        os.remove(os.path.join(data, "sequences.json"))
    except FileNotFoundError:
        pass
    rtmp, http = RTMP_HLS_PORTS
    cmd = [rtmp_hls_bin(), "--rtmp-addr", f"127.0.0.1:{rtmp}", "--http-addr", f"127.0.0.1:{http}",
           "--data-dir", data, "--segment-duration", "2", "--playlist-length", "3",
           # Every publisher and viewer comes from 127.0.0.1: lift the per-address and total
           # limits, RTMP's and HTTP's.
           "--max-connections", "65536", "--max-connections-per-ip", "65536",
           "--max-unauthenticated", "65536", "--new-connections-per-ip-per-minute", "0",
           "--max-streams", "65536",
           "--http-max-connections", "65536", "--http-max-connections-per-ip", "65536"] + EXTRA_ARGS
    command(cmd)
    log_file = open(os.path.join(OUT, "rtmp-hls.log"), "a")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file)
    for port in RTMP_HLS_PORTS:
        wait_port(port)
    return proc


def stop(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def write_streams(path, streams):
    with open(path, "w") as f:
        for name, key in streams:
            f.write(f"{name} {key}\n")


def ramp(label, pid, rtmp_port, playlist_url, streams_file, args, round_, files=None):
    report = os.path.join(OUT, f"{label}-round{round_}.json")
    cmd = [bench_bin(), "ramp", "--flv", os.path.relpath(FLV, ROOT),
           "--publish-url", f"rtmp://127.0.0.1:{rtmp_port}/live",
           "--playlist-url", playlist_url, "--streams-file", os.path.relpath(streams_file, ROOT),
           "--server-pid", str(pid), "--label", label,
           "--steps", args.steps, "--viewers-per-stream", str(args.viewers_per_stream),
           "--warmup", str(args.warmup), "--duration", str(args.duration),
           "--json", os.path.relpath(report, ROOT),
           "--svg", os.path.relpath(os.path.join(OUT, f"{label}-round{round_}.svg"), ROOT)]
    if files:
        cmd += ["--server-files", files]
    command(cmd)
    wait_quiet()
    log(f"round {round_}: ramp against {label}")
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(report) as f:
        return json.load(f)


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def live_segment(playlist_url):
    """The newest segment's URL once the playlist lists enough segments."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            text = fetch(playlist_url)
            uris = [l for l in text.splitlines() if l and not l.startswith("#")]
            if len(uris) >= WRK_MIN_SEGMENTS:
                return urllib.parse.urljoin(playlist_url, uris[-1])
        except (OSError, ValueError):  # ValueError: UnicodeDecodeError of a broken answer
            pass
        time.sleep(0.5)
    sys.exit(f"{playlist_url} never listed {WRK_MIN_SEGMENTS} segments")


def wrk(url, server_pid):
    """wrk's requests/s on `url`, non-2xx count, socket errors, and the server's CPU
    microseconds per request over the run (its process tree's CPU over wrk's request count)."""
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", url]
    cpu_before = tree_cpu_seconds(server_pid)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if found is None or requests is None:
        sys.exit(f"wrk printed no Requests/sec for {url}:\n{out}")
    rate = float(found.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu_us = cpu * 1e6 / max(int(requests.group(1)), 1)
    return rate, int(bad.group(1)) if bad else 0, errors.group(1) if errors else "", cpu_us


def delivery(args, nginx_streams, rtmp_hls_streams, pids):
    """wrk on a live playlist and on a segment of each server (`pids`: label -> server pid),
    alternating, while one publisher streams to each."""
    targets = {
        "nginx-rtmp": (NGINX_PORTS, nginx_streams, "http://127.0.0.1:{port}/hls/{name}.m3u8"),
        "rtmp-hls": (RTMP_HLS_PORTS, rtmp_hls_streams, "http://127.0.0.1:{port}/hls/{name}/index.m3u8"),
    }
    publishers = []
    urls = {}
    for label, ((rtmp, http), stream, template) in targets.items():
        streams_file = os.path.join(OUT, f"{label}-wrk.streams")
        write_streams(streams_file, [stream])
        cmd = [bench_bin(), "fixed", "--flv", FLV, "--publish-url", f"rtmp://127.0.0.1:{rtmp}/live",
               "--playlist-url", template.replace("{port}", str(http)), "--streams-file", streams_file,
               "--publishers", "1", "--warmup", "0", "--duration", "3600", "--no-progress", "--label", label]
        publishers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls[label] = template.replace("{port}", str(http)).replace("{name}", stream[0])
    results = {label: {"playlist": [], "segment": [], "playlist_cpu_us": [], "segment_cpu_us": [],
                       "non_2xx": 0, "socket_errors": []} for label in targets}
    try:
        for label, url in urls.items():
            live_segment(url)
        for round_ in range(args.wrk_rounds):
            order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
            for kind in ("playlist", "segment"):
                for label in order:
                    url = urls[label] if kind == "playlist" else live_segment(urls[label])
                    rate, bad, errors, cpu_us = wrk(url, pids[label])
                    results[label][kind].append(rate)
                    results[label][f"{kind}_cpu_us"].append(cpu_us)
                    results[label]["non_2xx"] += bad
                    if errors:
                        results[label]["socket_errors"].append(errors)
                    log(f"wrk {label} {kind}: {rate:,.0f} req/s, server {cpu_us:,.1f} us of CPU per request"
                        + (f", {bad} non-2xx" if bad else ""))
    finally:
        for p in publishers:
            p.terminate()
            p.wait()
    COMMANDS.append(f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s <playlist or newest segment URL>"
                    f"  # {args.wrk_rounds} rounds, servers alternating")
    return results


def machine():
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    def version(cmd, fallback="unknown"):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0] if r.returncode == 0 else fallback
        except (OSError, IndexError):
            return fallback
    return {
        "cores": os.cpu_count(),
        "model": model.group(1).strip() if model else "unknown CPU",
        "kernel": os.uname().release,
        "nginx": version(["nginx", "-v"]),
        "rtmp_module": version(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-rtmp"]),
        "wrk": version(["dpkg-query", "-W", "-f", "${Version}", "wrk"]),
        "rustc": version(["rustc", "--version"]),
        # BENCH_COMMIT names the commit when running from an export without .git.
        "commit": version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          os.environ.get("BENCH_COMMIT", "unknown")),
    }


def merge(values, key=None):
    """One figure from the same figure of several rounds: the median of numbers (counts of
    streams behind: the most; errors: summed; held: every round; generator late: any)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    first = values[0]
    if isinstance(first, bool):
        return any(values) if key == "generator_late" else all(values)
    if isinstance(first, (int, float)):
        if key == "streams_behind":
            return max(values)
        middle = statistics.median(values)
        return round(middle) if all(isinstance(v, int) for v in values) else middle
    if isinstance(first, dict):
        if key == "errors":
            total = {}
            for v in values:
                for kind, count in v.items():
                    total[kind] = total.get(kind, 0) + count
            return total
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: merge([v.get(k) for v in values], k) for k in keys}
    if isinstance(first, list):
        return [x for v in values for x in v]
    return first


def combine(reports):
    """One report from a server's ramps in several rounds: per step, the median of each
    figure; a step is held only when every round held it."""
    if len(reports) == 1:
        return reports[0]
    out = dict(reports[0])
    counts = sorted({s["publishers"] for r in reports for s in r["steps"]})
    steps = []
    for n in counts:
        found = [s for r in reports for s in r["steps"] if s["publishers"] == n]
        step = merge(found)
        step["held"] = len(found) == len(reports) and all(s["held"] for s in found)
        step["rounds"] = len(found)
        steps.append(step)
    out["steps"] = steps
    held = [r.get("max_publishers_held") or 0 for r in reports]
    out["max_publishers_held"] = min(held)
    out["max_publishers_held_by_round"] = held
    out["stopped_because"] = "; ".join(
        f"round {i}: {r['stopped_because']}" for i, r in enumerate(reports, 1))
    return out


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def cpu_ms(step, who):
    figures = step.get(who)
    return None if not figures or figures.get("cpu_per_stream") is None else figures["cpu_per_stream"] * 1000


def memory_mib(step):
    """Pss of the server's process tree plus the HLS segments it keeps outside it: files on
    tmpfs (Nginx) or memory files (rtmp-hls's memfds)."""
    server = step.get("server") or {}
    files = (server.get("files_kib") or 0) + server.get("memfd_kib", 0)
    return (server.get("pss_kib", 0) + files) / 1024


def nginx_workers(report):
    """Nginx's children as counted in the report: its process tree minus the master."""
    counts = {s["server"].get("processes") for s in report["steps"]} - {None}
    return "/".join(str(c - 1) for c in sorted(counts)) or "?"


def markdown(reports, rounds, wrk_results, info, args, started):
    nginx, ours = reports["nginx-rtmp"], reports["rtmp-hls"]
    by_n = {label: {s["publishers"]: s for s in r["steps"]} for label, r in reports.items()}
    common = sorted(n for n in by_n["nginx-rtmp"] if n in by_n["rtmp-hls"]
                    and by_n["nginx-rtmp"][n]["held"] and by_n["rtmp-hls"][n]["held"])
    lines = [f"# Side-by-side run: rtmp-hls against Nginx-RTMP, {started:%Y-%m-%d}", ""]
    lines += [
        f"`python3 scripts/bench-vs-nginx.py` on {started:%Y-%m-%d} ({started:%H:%M} UTC), commit "
        f"`{info['commit']}`: {info['cores']} cores, {info['model']} (shared VM), Linux "
        f"{info['kernel']}, {info['nginx']} with libnginx-mod-rtmp {info['rtmp_module']} (Debian 12), "
        f"{info['rustc']}, wrk {info['wrk']}.",
        "",
        "Both servers ran on the same machine in the same run, one loaded at a time, with the same "
        "generator (`rtmp-hls-bench`, release build, one thread), the same clip "
        f"(`scripts/gen-test-media.sh target/test-media bench`: 720p30 H.264 2.5 Mbit/s + AAC, "
        f"{ours['clip']['kbit_per_s']:,.0f} kbit/s of media, 2 s GOP), the same steps "
        f"({args.steps}; {args.warmup:g} s warm-up then {args.duration:g} s measured per step), "
        f"{args.viewers_per_stream} viewer(s) per stream, and the same HLS settings: 2 s segments, a "
        "6 s (3-segment) live playlist. Nginx-RTMP: `worker_processes auto` "
        f"({nginx_workers(nginx)} processes besides the master), "
        "`hls_path` on tmpfs, playlists `Cache-Control: no-cache`, CORS header, `sendfile on`, "
        "access log off. rtmp-hls: release build, defaults but `--playlist-length 3` and the "
        "connection limits lifted (every publisher and viewer comes from 127.0.0.1)"
        + "".join(f", `{a}`" for a in args.rtmp_hls_arg) + ".",
        "",
        f"{len(rounds)} round(s): each server ramped {len(rounds)} time(s), the order alternating "
        "(round 1 Nginx-RTMP first, round 2 rtmp-hls first, ...), each server started fresh for "
        "its ramp and alone on the machine, so a drift of the shared machine during the run "
        "weighs on both. Every figure in the step table is the median over the rounds (errors "
        "summed), and a step counts as held only when every round held it.",
        "",
        "How the figures are taken (see `benches/src/`): server CPU is utime+stime+cutime+cstime "
        "of the server's whole process tree from `/proc` (Nginx's master and workers), over the "
        "measured window, divided by the media seconds sent in it (so 1 ms/s = 0.1 % of a core "
        "per stream); memory is taken at the end of the window: the tree's summed VmRSS, and "
        "\"server memory\" = its Pss (shared pages split between Nginx's processes) plus the "
        "HLS files Nginx keeps on tmpfs and the memory files (memfd) rtmp-hls keeps its closed "
        "segments in (RAM too, outside RSS). "
        "Packaging delay = the moment a poll first sees a segment in the playlist minus "
        "the moment the generator sent the keyframe that closed it (segment end located by "
        "EXTINF sums snapped to the keyframes sent); after each keyframe the playlist is polled "
        "at 2 ms, then at intervals growing by 1.25x, so a delay is an upper bound at most ~25 % "
        "high. A stream is behind when its playlist does not advance for two target durations, "
        "or two segments in a row take over 2 s.",
        "",
        "| publishers | server | server CPU ms/s per stream | generator CPU ms/s per stream | "
        "server VmRSS MiB | server memory MiB | delay p50 ms | delay p99 ms | "
        "segment fetch p50 / p99 ms | playlist fetch p50 / p99 ms | errors | held | "
        "other processes, cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    all_n = sorted(set(by_n["nginx-rtmp"]) | set(by_n["rtmp-hls"]))
    for n in all_n:
        for label in ("nginx-rtmp", "rtmp-hls"):
            s = by_n[label].get(n)
            if s is None:
                continue
            server = s.get("server") or {}
            errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "0"
            held = "yes" if s["held"] else f"**no** ({s['streams_behind']} behind)"
            if s["generator_late"]:
                held += ", generator late"
            lines.append(
                f"| {n} | {label} | {fmt(cpu_ms(s, 'server'), 2)} | {fmt(cpu_ms(s, 'generator'), 2)} | "
                f"{fmt(server.get('rss_kib', 0) / 1024)} | {fmt(memory_mib(s))} | "
                f"{fmt(s['packaging_delay']['p50_ms'])} | "
                f"{fmt(s['packaging_delay']['p99_ms'])} | {fmt(s['segment_fetch']['p50_ms'])} / "
                f"{fmt(s['segment_fetch']['p99_ms'])} | {fmt(s['playlist_fetch']['p50_ms'])} / "
                f"{fmt(s['playlist_fetch']['p99_ms'])} | {errors} | {held} | "
                f"{fmt(s.get('other_cores'), 2)} |")
    lines.append("")

    def median_over_common(label, figure):
        return med([figure(by_n[label][n]) for n in common])

    figures = [
        ("server CPU ms per stream-second", lambda s: cpu_ms(s, "server"), 2),
        ("generator CPU ms per stream-second", lambda s: cpu_ms(s, "generator"), 2),
        ("packaging delay p50, ms", lambda s: s["packaging_delay"]["p50_ms"], 1),
        ("packaging delay p99, ms", lambda s: s["packaging_delay"]["p99_ms"], 1),
        ("segment fetch p50, ms", lambda s: s["segment_fetch"]["p50_ms"], 1),
        ("segment fetch p99, ms", lambda s: s["segment_fetch"]["p99_ms"], 1),
    ]
    lines += [
        f"Medians over the steps both servers held ({', '.join(map(str, common)) or 'none'} "
        "publishers); the ratio is Nginx-RTMP / rtmp-hls (above 1: rtmp-hls needs less):",
        "",
        "| figure | Nginx-RTMP | rtmp-hls | ratio |",
        "|---|---|---|---|",
    ]
    summary = {}
    for name, figure, digits in figures:
        a = median_over_common("nginx-rtmp", figure)
        b = median_over_common("rtmp-hls", figure)
        summary[name] = (a, b)
        lines.append(f"| {name} | {fmt(a, digits)} | {fmt(b, digits)} | {fmt(ratio(a, b), 2)}x |")
    if common:
        top = common[-1]
        rows = (
            ("VmRSS, process tree", lambda s: (s.get("server") or {}).get("rss_kib", 0) / 1024),
            ("Pss, process tree", lambda s: (s.get("server") or {}).get("pss_kib", 0) / 1024),
            ("HLS files on tmpfs", lambda s: ((s.get("server") or {}).get("files_kib") or 0) / 1024),
            ("segments in memory files", lambda s: (s.get("server") or {}).get("memfd_kib", 0) / 1024),
            ("Pss + HLS files + memory files", memory_mib),
        )
        for what, figure in rows:
            a, b = figure(by_n["nginx-rtmp"][top]), figure(by_n["rtmp-hls"][top])
            lines.append(f"| server memory at {top} publishers ({what}), MiB | "
                         f"{fmt(a)} | {fmt(b)} | {fmt(ratio(a, b), 2)}x |")
    held_a, held_b = nginx["max_publishers_held"], ours["max_publishers_held"]
    lines.append(f"| most publishers held | {held_a or 0} | {held_b or 0} | "
                 f"{fmt(ratio(held_b, held_a), 2)}x (rtmp-hls / Nginx-RTMP) |")
    lines += ["", f"Why each ramp stopped: Nginx-RTMP: {nginx['stopped_because']}; rtmp-hls: "
              f"{ours['stopped_because']}.", ""]
    if len(rounds) > 1:
        lines += [
            "Round by round (medians over the steps both servers held in that round):",
            "",
            "| round | first | server CPU ms per stream-second, Nginx-RTMP / rtmp-hls | ratio | "
            "most publishers held, Nginx-RTMP / rtmp-hls |",
            "|---|---|---|---|---|",
        ]
        for i, r in enumerate(rounds, 1):
            steps = {label: {s["publishers"]: s for s in r[label]["steps"]} for label in r}
            held = sorted(n for n in steps["nginx-rtmp"] if n in steps["rtmp-hls"]
                          and steps["nginx-rtmp"][n]["held"] and steps["rtmp-hls"][n]["held"])
            a = med([cpu_ms(steps["nginx-rtmp"][n], "server") for n in held])
            b = med([cpu_ms(steps["rtmp-hls"][n], "server") for n in held])
            first = "Nginx-RTMP" if i % 2 == 1 else "rtmp-hls"
            lines.append(f"| {i} | {first} | {fmt(a, 2)} / {fmt(b, 2)} | {fmt(ratio(a, b), 2)}x | "
                         f"{r['nginx-rtmp']['max_publishers_held'] or 0} / "
                         f"{r['rtmp-hls']['max_publishers_held'] or 0} |")
        lines.append("")

    kinds = ("playlist", "segment", "playlist_cpu_us", "segment_cpu_us")
    rate = {label: {k: med(v.get(k, [])) for k in kinds} for label, v in wrk_results.items()}
    lines += [
        f"HLS delivery with wrk ({WRK_THREADS} thread, {WRK_CONNECTIONS} keep-alive connections, "
        f"{WRK_SECONDS} s per run, median of {args.wrk_rounds} runs per server, the servers alternating; "
        "one publisher live on each): rtmp-hls serves playlists from its heap and segments "
        + ("from its heap with a copy"
           if "--segment-storage heap" in " ".join(args.rtmp_hls_arg).replace("=", " ")
           else "from its memory files with sendfile")
        + ", Nginx serves the files on tmpfs with sendfile.",
        "",
        "| | Nginx-RTMP | rtmp-hls | ratio |",
        "|---|---|---|---|",
    ]
    for kind, what in (("playlist", "live playlist (.m3u8)"), ("segment", "newest segment (.ts)")):
        a, b = rate["nginx-rtmp"][kind], rate["rtmp-hls"][kind]
        lines.append(f"| {what}: requests/s | {fmt(a, 0)} | {fmt(b, 0)} | {fmt(ratio(b, a), 2)}x (rtmp-hls / Nginx) |")
        a, b = rate["nginx-rtmp"][f"{kind}_cpu_us"], rate["rtmp-hls"][f"{kind}_cpu_us"]
        lines.append(f"| {what}: server CPU µs per request | {fmt(a, 1)} | {fmt(b, 1)} | {fmt(ratio(a, b), 2)}x (Nginx / rtmp-hls) |")
    lines += [
        "",
        "wrk runs on the same two cores as the server and keeps one of them busy, so requests/s "
        "is shared between the server and wrk; the server's CPU per request (its process tree's "
        "CPU over the run divided by wrk's request count) is what a server with remote viewers "
        "would pay per request.",
    ]
    for label, r in wrk_results.items():
        if r["non_2xx"] or r["socket_errors"]:
            lines.append(f"\n{label}: {r['non_2xx']} non-2xx responses, socket errors: "
                         f"{'; '.join(r['socket_errors']) or 'none'}.")
    lines += ["", "Every run of each:", ""]
    for label, r in wrk_results.items():
        lines.append(f"- {label}: playlist {', '.join(f'{x:,.0f}' for x in r['playlist'])} req/s "
                     f"({', '.join(f'{x:,.1f}' for x in r.get('playlist_cpu_us', []))} µs per request); "
                     f"segment {', '.join(f'{x:,.0f}' for x in r['segment'])} req/s "
                     f"({', '.join(f'{x:,.1f}' for x in r.get('segment_cpu_us', []))} µs per request)")

    others = [s.get("other_cores") for r in reports.values() for s in r["steps"]]
    others = [o for o in others if o is not None]
    gen_ok = all(
        (cpu_ms(s, "generator") or 0) < (cpu_ms(s, "server") or float("inf"))
        for r in reports.values() for s in r["steps"])
    lines += [
        "",
        "Reading it honestly: this is a shared 2-core VM, and the generator, the server and "
        "wrk share its two cores, so a step's CPU figures move between runs; "
        "compare the ratios from one run, not absolute numbers across runs. Other processes "
        "(the last column: machine CPU minus server and generator, from /proc/stat) used "
        f"{fmt(min(others) if others else None, 2)} to {fmt(max(others) if others else None, 2)} "
        "cores during the measured windows; a step where that is large is noisier. The generator "
        + ("spent less CPU per stream than either server at every step. "
           if gen_ok else "did **not** stay below the server's CPU per stream at every step (see the table). ")
        + "When the machine is saturated the ramp's limit is the machine's, shared between the "
        "generator and the server, not the server's alone. Packaging delay is bounded below by "
        "the polling resolution (~2 ms). The plot: `benches/results/vs-nginx.svg`; the JSON "
        "reports beside it.",
        "",
        "Commands (from the repository root, as the script ran them):",
        "",
        "```sh",
        "python3 scripts/bench-vs-nginx.py "
        + f"--steps {args.steps} --duration {args.duration:g} --warmup {args.warmup:g} "
        + f"--viewers-per-stream {args.viewers_per_stream} --rounds {args.rounds} "
        + f"--wrk-rounds {args.wrk_rounds}"
        + "".join(f" --rtmp-hls-arg={a}" for a in args.rtmp_hls_arg),
        "# which ran:",
        "scripts/gen-test-media.sh target/test-media bench",
        "cargo build --release --locked -p rtmp-hls -p rtmp-hls-bench",
    ]
    lines += COMMANDS
    lines += ["```"]
    return "\n".join(lines) + "\n", summary


def write_result(text, started, name):
    """Writes a script's report to a new file, benches/results/<date>-<name>.md, or -2, -3, ...
    after it when that date has one already; returns its path. The other bench scripts
    write theirs with it too."""
    base = os.path.join(RESULTS, f"{started:%Y-%m-%d}-{name}")
    path, n = base + ".md", 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}.md"
    with open(path, "x") as f:
        f.write(text)
    return path


def write_report(report, started):
    """Writes the report to benches/results/<date>-vs-nginx.md (see `write_result`)."""
    return write_result(report, started, "vs-nginx")


def current_figures(reports, summary, wrk_results):
    """The load rows of BENCHMARKS.md's current table, as this run measured them."""
    def pair(name, digits):
        a, b = summary[name]
        return f"{fmt(a, digits)} vs {fmt(b, digits)}"
    cpu = summary["server CPU ms per stream-second"]
    held = [reports[label]["max_publishers_held"] or 0 for label in ("nginx-rtmp", "rtmp-hls")]
    lines = [
        f"server CPU per stream, Nginx-RTMP / rtmp-hls: {fmt(ratio(*cpu), 2)}x "
        f"({pair('server CPU ms per stream-second', 2)} ms per stream-second)",
        f"most publishers held, Nginx-RTMP vs rtmp-hls: {held[0]} vs {held[1]}",
        f"packaging delay p50, Nginx-RTMP vs rtmp-hls: {pair('packaging delay p50, ms', 1)} ms "
        f"(p99 {pair('packaging delay p99, ms', 1)} ms)",
    ]
    by_n = {label: {s["publishers"]: s for s in r["steps"]} for label, r in reports.items()}
    common = [n for n in by_n["nginx-rtmp"] if n in by_n["rtmp-hls"]
              and by_n["nginx-rtmp"][n]["held"] and by_n["rtmp-hls"][n]["held"]]
    if common:
        top = max(common)
        a, b = (memory_mib(by_n[label][top]) / top for label in ("nginx-rtmp", "rtmp-hls"))
        lines.append(f"server memory per stream at {top} publishers (Pss + HLS files + memory "
                     f"files), Nginx-RTMP vs rtmp-hls: {fmt(a, 2)} vs {fmt(b, 2)} MiB")
    for kind in ("playlist", "segment"):
        rate = [med(wrk_results[label].get(kind, [])) for label in ("nginx-rtmp", "rtmp-hls")]
        cpu = [med(wrk_results[label].get(f"{kind}_cpu_us", [])) for label in ("nginx-rtmp", "rtmp-hls")]
        lines.append(f"wrk {kind}, Nginx-RTMP vs rtmp-hls: {fmt(rate[0], 0)} vs {fmt(rate[1], 0)} "
                     f"req/s ({fmt(ratio(rate[1], rate[0]), 2)}x), {fmt(cpu[0], 1)} vs "
                     f"{fmt(cpu[1], 1)} µs of server CPU per request")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=DEFAULT_STEPS)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--viewers-per-stream", type=int, default=1)
    parser.add_argument("--wrk-rounds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="ramps per server, alternating order; figures are medians over them")
    parser.add_argument("--rtmp-hls-arg", action="append", default=[],
                        help="an extra flag for rtmp-hls (repeatable), e.g. --rtmp-hls-arg=--segment-storage=heap")
    parser.add_argument("--no-write", action="store_true",
                        help="print the report only; write no benches/results/<date>-vs-nginx.md")
    args = parser.parse_args()
    EXTRA_ARGS.extend(args.rtmp_hls_arg)
    if args.rounds < 1 or args.wrk_rounds < 1:
        parser.error("--rounds and --wrk-rounds need at least 1")
    started = datetime.datetime.now(datetime.timezone.utc)
    # Three sockets per stream in the generator, two per stream in each server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ensure_packages()
    os.makedirs(OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"), MEDIA, "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls", "-p", "rtmp-hls-bench"],
                   cwd=ROOT, env=env, check=True)

    most = max(int(n) for n in args.steps.split(","))
    names = [f"bench-{i:03}" for i in range(most)] + ["wrk-0"]
    streams = make_keys(names)
    nginx_file = os.path.join(OUT, "nginx-rtmp.streams")
    write_streams(nginx_file, [(n, n) for n in names[:-1]])
    ours_file = os.path.join(OUT, "rtmp-hls.streams")
    write_streams(ours_file, streams[:-1])
    servers = {
        "nginx-rtmp": lambda: start_nginx(),
        "rtmp-hls": lambda: start_rtmp_hls(),
    }
    targets = {
        "nginx-rtmp": (NGINX_PORTS[0], f"http://127.0.0.1:{NGINX_PORTS[1]}/hls/{{name}}.m3u8",
                       nginx_file, os.path.join(HLS_ROOT, "hls")),
        "rtmp-hls": (RTMP_HLS_PORTS[0], f"http://127.0.0.1:{RTMP_HLS_PORTS[1]}/hls/{{name}}/index.m3u8",
                     ours_file, None),
    }
    # Rounds in alternating order (A B, B A, ...), each server freshly started for its ramp and
    # alone on the machine: a drift of the shared machine during the run then weighs on both.
    rounds = []
    for round_ in range(1, args.rounds + 1):
        order = list(servers) if round_ % 2 == 1 else list(reversed(servers))
        reports = {}
        for label in order:
            proc = servers[label]()
            try:
                rtmp_port, playlist_url, streams_file, files = targets[label]
                reports[label] = ramp(label, proc.pid, rtmp_port, playlist_url, streams_file, args,
                                      round_, files=files)
            finally:
                stop([proc])
        rounds.append(reports)
    reports = {label: combine([r[label] for r in rounds]) for label in servers}
    procs = [start_nginx(), start_rtmp_hls()]
    try:
        wait_quiet()
        pids = {"nginx-rtmp": procs[0].pid, "rtmp-hls": procs[1].pid}
        wrk_results = delivery(args, ("wrk-0", "wrk-0"), streams[-1], pids)
    finally:
        stop(procs)

    os.makedirs(RESULTS, exist_ok=True)
    for label, report in reports.items():
        # The committed copy keeps, per step, only the streams that fell behind: the full
        # per-stream lists stay in target/bench-vs-nginx/.
        for step in report["steps"]:
            step["streams"] = [s for s in step["streams"] if s["behind"] or not s["segments"]]
        with open(os.path.join(RESULTS, f"{label}.json"), "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    subprocess.run([bench_bin(), "plot", os.path.join(RESULTS, "nginx-rtmp.json"),
                    os.path.join(RESULTS, "rtmp-hls.json"), "--svg", os.path.join(RESULTS, "vs-nginx.svg")],
                   check=True)
    with open(os.path.join(RESULTS, "wrk.json"), "w") as f:
        json.dump(wrk_results, f, indent=2)
    report, summary = markdown(reports, rounds, wrk_results, machine(), args, started)
    print(report)
    if not args.no_write:
        path = write_report(report, started)
        log(f"report written to {os.path.relpath(path, ROOT)}")
    log("update BENCHMARKS.md by hand: the load rows of its current table (figures, commit, "
        "date) and its list of results; this run's figures:")
    for line in current_figures(reports, summary, wrk_results):
        log("  " + line)


if __name__ == "__main__":
    main()
