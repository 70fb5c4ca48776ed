#!/usr/bin/env python3
"""Builds the fuzz seed corpora from real encoder output.

- flv_tag, avc, audio_config, amf0 (onMetaData), remuxer: from the FLV clips that
  scripts/gen-test-media.sh makes with ffmpeg (x264, AAC, MP3, Speex, Nellymoser, Sorenson).
- rtmp_session, rtmp_chunks, amf0 (commands): the bytes real publishers send (ffmpeg's
  native RTMP client, and librtmp as OBS uses it), recorded by a relay between them and a
  running rtmp-hls.
- hook_response, api_body: written here (HTTP answers of a callback backend, API bodies).

Usage: fuzz/seed.py RTMP_HLS_BINARY   (writes fuzz/corpus/<target>/)
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "target", "test-media")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
HANDSHAKE = 1 + 2 * 1536


def tags(path):
    data = open(path, "rb").read()
    pos = int.from_bytes(data[5:9], "big") + 4
    while pos + 11 <= len(data):
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        yield kind, ts, data[pos + 11:pos + 11 + size]
        pos += 11 + size + 4


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def from_clips():
    for clip in sorted(os.listdir(MEDIA)):
        if not clip.endswith(".flv") or clip.startswith("bench"):
            continue
        stem = clip[:-4]
        all_tags = list(tags(os.path.join(MEDIA, clip)))
        avc_record = None
        for i, (kind, ts, body) in enumerate(all_tags):
            if i < 12 or i % 97 == 0:
                write("flv_tag", f"{stem}-{i}", body)
            if kind == 9 and len(body) > 5 and body[0] & 0x0F == 7 and body[1] == 0:
                avc_record = body[5:]
            if kind == 9 and avc_record and len(body) > 5 and body[1] == 1 and (i < 40 or i % 151 == 0):
                record = avc_record[:255]
                write("avc", f"{stem}-{i}", bytes([len(record)]) + record + body[5:5 + 4096])
            if kind == 8 and body and body[0] >> 4 == 10 and len(body) > 1 and body[1] == 0:
                write("audio_config", f"{stem}-asc-{i}", body[2:])
            if kind == 8 and body and body[0] >> 4 in (2, 14) and i < 30:
                write("audio_config", f"{stem}-mp3-{i}", body[1:5])
            if kind == 18:
                write("amf0", f"{stem}-metadata", body)
        # The first frames of each clip, framed as the remuxer target reads them after the
        # byte choosing its output (MPEG-TS, fMP4, low-latency fMP4), each body cut to 2 KiB,
        # 6 KB in all: small seeds keep executions fast; sequence headers and keyframe flags
        # are in the first bytes. For parts, more frames cut shorter: a second of media.
        def framed(cut, size):
            out = bytearray()
            for kind, ts, body in all_tags:
                if kind in (8, 9) and len(out) < size:
                    out += bytes([1 if kind == 9 else 0]) + ts.to_bytes(4, "big") + len(body[:cut]).to_bytes(2, "big") + body[:cut]
            return bytes(out)
        for shape, name in enumerate(("ts", "fmp4", "ll")):
            write("remuxer", f"{stem}-{name}", bytes([shape]) + framed(2048, 6_000))
        write("remuxer", f"{stem}-ll-parts", bytes([2]) + framed(96, 12_000))


class Relay(threading.Thread):
    """Relays one connection to the server and records what the client sent."""

    def __init__(self, listener, server):
        super().__init__(daemon=True)
        self.listener, self.server, self.recorded = listener, server, bytearray()

    def run(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.server)

        def pump(src, dst, record):
            try:
                while data := src.recv(65536):
                    if record:
                        self.recorded += data
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        back = threading.Thread(target=pump, args=(upstream, client, False), daemon=True)
        back.start()
        pump(client, upstream, True)
        back.join(timeout=5)


def record(server_addr, command):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    relay = Relay(listener, server_addr)
    relay.start()
    port = listener.getsockname()[1]
    subprocess.run([part.replace("PORT", str(port)) for part in command], timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay.join(timeout=10)
    return bytes(relay.recorded)


def from_publishers(binary):
    data_dir = tempfile.mkdtemp(prefix="rtmp-hls-seed-")
    key = subprocess.run([binary, "keys", "add", "seed", "--data-dir", data_dir],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    server = subprocess.Popen([binary, "--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                               "--data-dir", data_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rtmp = None
        deadline = time.monotonic() + 20
        while rtmp is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            match = re.search(r"RTMP listening addr=(\S+)", line)
            if match:
                host, port = match.group(1).rsplit(":", 1)
                rtmp = (host, int(port))
        if rtmp is None:
            sys.exit("rtmp-hls did not start")
        threading.Thread(target=lambda: server.stderr.read(), daemon=True).start()
        clip = os.path.join(MEDIA, "av-small.flv")
        ffmpeg = ["ffmpeg", "-v", "error", "-i", clip, "-t", "2", "-c", "copy", "-f", "flv",
                  f"rtmp://127.0.0.1:PORT/live/{key}"]
        librtmp = ["/usr/bin/python3", os.path.join(ROOT, "tests", "librtmp_publish.py"),
                   f"rtmp://127.0.0.1:PORT/live/{key}", os.path.join(MEDIA, "audio-only-aac.flv")]
        for name, command in (("ffmpeg", ffmpeg), ("librtmp", librtmp)):
            wire = record(rtmp, command)[HANDSHAKE:]
            if len(wire) < 100:
                sys.exit(f"recorded only {len(wire)} bytes from {name}")
            # Small seeds keep executions fast (the session target runs each input twice):
            # the commands and the first frames are where the protocol's branches are.
            write("rtmp_session", f"{name}-publish", wire[:4_000])
            write("rtmp_session", f"{name}-head", wire[:2000])
            write("amf0", f"{name}-commands-head", wire[12:400])
            # The chunk layer alone: a first byte choosing limits and chunk size, then chunks.
            write("rtmp_chunks", f"{name}-before-publish", bytes([0]) + wire[:4000])
            write("rtmp_chunks", f"{name}-publishing", bytes([1 + (5 << 1)]) + wire[:12_000])
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)


def by_hand():
    """Seeds of the targets whose input no encoder makes: callback answers, API bodies."""
    answers = {
        "allow": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "rename": b"HTTP/1.1 302 Found\r\nLocation: renamed-target\r\nContent-Length: 0\r\n\r\n",
        "refuse": b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n",
        "http10": b"HTTP/1.0 200 OK\r\n\r\nbody until close",
    }
    for name, answer in answers.items():
        write("hook_response", name, answer)
    bodies = {
        "stream": b'{"stream":"cam"}',
        "owner": b'{"stream":"cam-2","owner":"user-7"}',
        "null-owner": b'{"stream":"x","owner":null}',
        "extra": b'{"stream":"x","extra":1}',
    }
    for name, body in bodies.items():
        write("api_body", name, body)
    # Enhanced RTMP records as ffmpeg 7.0 sent them (libx265 VPS/SPS/PPS, libaom with its
    # sequence header, libvpx-vp9), after the byte choosing the codec (0 HEVC, 1 AV1, 2 VP9),
    # and an AV1 temporal unit's start and a VP9 keyframe's header.
    records = {
        "hevc-x265": "00" "0101600000009000000000003cf000fcfdf8f800000f03200001001840010c01ffff01600000"
        "030090000003000003003c959809210001002a4201010160000003009000000300000300"
        "3ca00a080f165959a4932bc05a020000030002000003003210220001000744 01c172b46240",
        "av1-libaom": "01" "81000c000a0b000000043cffbcdaf90040",
        "av1-unit": "01" "12000a0b000000043cffbcdaf9004032ac1214",
        "vp9-libvpx": "02" "010000000014820202020000",
        "vp9-keyframe": "02" "824983420013f00ef60838241c184a",
    }
    for name, hex_bytes in records.items():
        write("video_config", name, bytes.fromhex(hex_bytes.replace(" ", "")))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    subprocess.run([os.path.join(ROOT, "scripts", "gen-test-media.sh"), MEDIA], check=True)
    from_clips()
    from_publishers(sys.argv[1])
    by_hand()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} seeds")


if __name__ == "__main__":
    main()
