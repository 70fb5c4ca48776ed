#!/usr/bin/python3
"""Publishes an FLV file in real time through librtmp, the RTMP library OBS's output is built on.

Usage: librtmp_publish.py RTMP_URL FLV_FILE
Exits 0 when the whole file was sent, 1 with librtmp's error otherwise.
"""
import sys
import time

import librtmp

FLV_HEADER_AND_FIRST_TAG_SIZE = 13
TAG_HEADER = 11
PREVIOUS_TAG_SIZE = 4


def main(url, path):
    data = open(path, "rb").read()
    conn = librtmp.RTMP(url, live=True)
    conn.connect()
    stream = conn.create_stream(writeable=True)
    # RTMP_Write crashes on a write of the file header alone: send it with the first tag.
    pos = FLV_HEADER_AND_FIRST_TAG_SIZE
    header = data[:pos]
    start = time.monotonic()
    while pos + TAG_HEADER <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + TAG_HEADER + size + PREVIOUS_TAG_SIZE
        delay = timestamp / 1000 - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        stream.write(header + data[pos:end])
        header = b""
        pos = end
    stream.close()
    conn.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except librtmp.RTMPError as e:
        print(f"librtmp: {e}", file=sys.stderr)
        sys.exit(1)
