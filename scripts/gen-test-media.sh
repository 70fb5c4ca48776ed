#!/bin/sh
# Generates the test media into $1 (default target/test-media) from ffmpeg's lavfi sources.
# Nothing generated here is committed; tests call this script when a file is missing.
# Each file is written under a temporary name and renamed, so a reader never sees half a file.
set -eu
out=${1:-target/test-media}
mkdir -p "$out"

gen() {
    name=$1; shift
    [ -s "$out/$name" ] && return 0
    ffmpeg -hide_banner -loglevel error -y "$@" "$out/$name.tmp.$$.flv"
    mv "$out/$name.tmp.$$.flv" "$out/$name"
}

# 12 s of 1280x720 30 fps H.264 High (3 B-frames, 2 s GOP) + AAC-LC 44.1 kHz stereo.
gen av-720p30.flv \
    -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=44100 \
    -t 12 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -bf 3 \
    -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -ac 2 -f flv

# 4 s of small video, for refusal tests and many concurrent publishers.
gen av-small.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=1000:sample_rate=48000 \
    -t 4 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 25 -c:a aac -b:a 64k -ac 1 -f flv
