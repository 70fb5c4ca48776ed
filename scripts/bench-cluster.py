#!/usr/bin/env python3
"""What cluster mode costs: server CPU per stream with `--cluster-url` against the same server
without it, side by side in one run, and the registry operations a node makes per minute.

Both servers keep their keys in the same MongoDB-wire server (SecantusDB from the test venv,
`.venv-test`, which ./scripts/test.sh creates), so the only difference is the cluster
membership: the stream leases, their renewals and upkeep, and reading the registry. Builds
rtmp-hls and rtmp-hls-bench in release, then for --rounds rounds, in alternating order,
starts a fresh server per mode and runs `rtmp-hls-bench fixed` with N publishers of the
benchmark clip and one player-style viewer each (8 s warm-up, 20 s measured). Registry
operations are read from `rtmp_hls_registry_operations_total` before and after each cluster
run. Writes benches/results/<YYYY-MM-DD>-cluster.md (a suffix when the date has one) unless
--no-write.

Usage: python3 scripts/bench-cluster.py [--publishers 50] [--rounds 3] [--no-write]
"""
import argparse
import datetime
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench-cluster")
PORTS = (19381, 18101)
MONGO_PORT = 27217
MODES = ["standalone", "cluster"]


def variants_module():
    """scripts/bench-variants.py as a module: its figures and helpers."""
    spec = importlib.util.spec_from_file_location(
        "bench_variants", os.path.join(ROOT, "scripts", "bench-variants.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V = variants_module()


def log(message):
    print(f"[bench-cluster] {message}", file=sys.stderr, flush=True)


def mongo_uri():
    return f"mongodb://127.0.0.1:{MONGO_PORT}/"


def start_mongo():
    venv = os.environ.get("RTMP_HLS_TEST_VENV", os.path.join(ROOT, ".venv-test"))
    daemon = os.path.join(venv, "bin", "secantusd-py")
    if not os.path.exists(daemon):
        sys.exit(f"no {daemon}: run ./scripts/test.sh once (it creates the test venv)")
    proc = subprocess.Popen([daemon, "--host", "127.0.0.1", "--port", str(MONGO_PORT),
                             "--storage-path", ":memory:", "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import socket
            socket.create_connection(("127.0.0.1", MONGO_PORT), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    sys.exit("SecantusDB did not listen")


def start(mode, commands):
    data = os.path.join(OUT, f"data-{mode}")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    cmd = [V.binary("rtmp-hls"), "--rtmp-addr", f"127.0.0.1:{PORTS[0]}",
           "--http-addr", f"127.0.0.1:{PORTS[1]}", "--data-dir", data,
           "--mongo-uri", mongo_uri(), "--segment-duration", "2", "--playlist-length", "3",
           "--max-connections", "65536", "--max-connections-per-ip", "65536",
           "--max-unauthenticated", "65536", "--new-connections-per-ip-per-minute", "0",
           "--max-streams", "65536",
           "--http-max-connections", "65536", "--http-max-connections-per-ip", "65536"]
    if mode == "cluster":
        cmd += ["--cluster-url", f"http://127.0.0.1:{PORTS[1]}", "--server-id", "bench-node"]
    line = " ".join(cmd).replace(ROOT + "/", "")
    if line not in commands:
        commands.append(line)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(OUT, f"{mode}.log"), "a"))
    V.wait_http(f"http://127.0.0.1:{PORTS[1]}/healthz")
    if proc.poll() is not None:
        sys.exit(f"rtmp-hls exited ({proc.returncode}); another server on the ports? see {OUT}")
    return proc


def registry_operations():
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORTS[1]}/metrics", timeout=5).read()
    ops = {}
    for match in re.finditer(r'rtmp_hls_registry_operations_total\{op="(\w+)"\} (\d+)',
                             text.decode()):
        ops[match.group(1)] = int(match.group(2))
    return ops


def run(mode, streams_file, args, round_, commands):
    proc = start(mode, commands)
    try:
        report = os.path.join(OUT, f"{mode}-round{round_}.json")
        cmd = [V.binary("rtmp-hls-bench"), "fixed", "--flv", os.path.relpath(V.FLV, ROOT),
               "--publish-url", f"rtmp://127.0.0.1:{PORTS[0]}/live",
               "--playlist-url", f"http://127.0.0.1:{PORTS[1]}/hls/{{name}}/index.m3u8",
               "--streams-file", os.path.relpath(streams_file, ROOT),
               "--server-pid", str(proc.pid), "--publishers", str(args.publishers),
               "--viewers", str(args.publishers), "--viewer-mode", "player", "--label", mode,
               "--warmup", "8", "--duration", "20", "--json", os.path.relpath(report, ROOT),
               "--no-progress"]
        line = " ".join(cmd)
        if line not in commands:
            commands.append(line)
        log(f"round {round_}: {mode}")
        before, started = registry_operations(), time.monotonic()
        subprocess.run(cmd, cwd=ROOT, check=True)
        after, elapsed = registry_operations(), time.monotonic() - started
        with open(report) as f:
            figures = V.figures(json.load(f)["steps"][0])
        if mode == "cluster":
            delta = {op: after.get(op, 0) - before.get(op, 0) for op in after}
            figures["ops_per_minute"] = {op: n * 60 / elapsed for op, n in delta.items()}
        return figures
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(OUT, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"),
                    os.path.dirname(V.FLV), "bench"], check=True)
    env = dict(os.environ, CARGO_INCREMENTAL="0")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rtmp-hls",
                    "-p", "rtmp-hls-bench"], cwd=ROOT, env=env, check=True)
    mongo = start_mongo()
    commands = []
    try:
        streams = []
        for i in range(args.publishers):
            out = subprocess.run([V.binary("rtmp-hls"), "keys", "add", f"c{i:03}",
                                  "--mongo-uri", mongo_uri(), "--data-dir", OUT],
                                 check=True, capture_output=True, text=True).stdout
            streams.append(f"c{i:03}={out.strip().splitlines()[-1]}")
        streams_file = os.path.join(OUT, "streams")
        with open(streams_file, "w") as f:
            f.write("\n".join(streams) + "\n")
        results = {mode: [] for mode in MODES}
        for round_ in range(1, args.rounds + 1):
            order = MODES if round_ % 2 == 1 else list(reversed(MODES))
            for mode in order:
                results[mode].append(run(mode, streams_file, args, round_, commands))
    finally:
        mongo.send_signal(signal.SIGTERM)
        mongo.wait(timeout=15)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "unknown CPU")
    lines = [f"# Cluster mode's cost, {started:%Y-%m-%d}", "",
             f"`python3 scripts/bench-cluster.py --publishers {args.publishers} --rounds "
             f"{args.rounds}` on {started:%Y-%m-%d} ({started:%H:%M} UTC), commit `{commit}`: "
             f"{os.cpu_count()} cores, {model} (shared VM). Keys in SecantusDB for both; each "
             f"server started fresh; {args.publishers} publishers of `bench-720p-60s.flv` "
             "(720p30 H.264 2.5 Mbit/s + AAC), one player-style viewer each, 8 s warm-up, "
             "20 s measured; rounds in alternating order; medians over the rounds.", "",
             "| mode | CPU per stream, ms per stream-second (rounds) | memory, MiB | errors |",
             "|---|---|---|---|"]
    cpu = {}
    for mode in MODES:
        rows = results[mode]
        cpu[mode] = V.med([r["cpu_ms"] for r in rows])
        rounds = ", ".join(V.fmt(r["cpu_ms"]) for r in rows)
        lines.append(f"| {mode} | {V.fmt(cpu[mode])} ({rounds}) | "
                     f"{V.fmt(V.med([r['mem_mib'] for r in rows]), 0)} | "
                     f"{sum(r['errors'] for r in rows)} |")
    if cpu.get("standalone") and cpu.get("cluster"):
        lines += ["", f"cluster / standalone CPU per stream: "
                  f"{cpu['cluster'] / cpu['standalone']:.3f}x"]
    ops = [r["ops_per_minute"] for r in results["cluster"]]
    names = sorted({op for o in ops for op in o})
    total = V.med([sum(o.values()) for o in ops])
    lines += ["", f"Registry operations per minute on the node, during the run (medians; "
              f"{args.publishers} live streams): {V.fmt(total, 1)} in all, "
              f"{V.fmt(total / args.publishers, 2)} per live stream; by kind: " +
              ", ".join(f"{op} {V.fmt(V.med([o.get(op, 0) for o in ops]), 1)}"
                        for op in names) + "."]
    lines += ["", "Commands:", ""] + [f"    {c}" for c in commands]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = V.vs_nginx().write_result(text, started, "cluster")
        log(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
