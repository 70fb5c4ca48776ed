#!/bin/sh
# Generates the test media into $1 (default target/test-media) from ffmpeg's lavfi sources.
# With a second argument "bench", generates the (larger) benchmark clip only.
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

if [ "${2:-}" = bench ]; then
    # 60 s of 1280x720 30 fps H.264 High at 2.5 Mbit/s (2 s GOP) + AAC-LC 128 kbit/s: what
    # a typical OBS stream sends. Noise keeps the encoder at its bitrate.
    gen bench-720p-60s.flv \
        -f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t" \
        -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -t 60 -map 0:v -map 1:a \
        -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
        -b:v 2500k -maxrate 2500k -bufsize 5000k -g 60 -keyint_min 60 -sc_threshold 0 \
        -c:a aac -b:a 128k -ac 2 -f flv
    exit 0
fi

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

# Audio only: AAC-LC 48 kHz mono, 8 s.
gen audio-only-aac.flv \
    -f lavfi -i sine=frequency=660:sample_rate=48000 -t 8 \
    -c:a aac -b:a 96k -ac 1 -f flv

# Video only: 640x360 30 fps H.264 Main, 2 s GOP, 6 s.
gen video-only.flv \
    -f lavfi -i testsrc2=size=640x360:rate=30 -t 6 \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -g 60 -sc_threshold 0 -an -f flv

# AAC-LC 24 kHz stereo with 320x240 video, 6 s: the tests rewrite its AudioSpecificConfig to
# signal HE-AAC and HE-AACv2 explicitly (no HE-AAC encoder ships with Debian's ffmpeg).
gen av-aac24k.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=500:sample_rate=24000 \
    -t 6 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 50 -c:a aac -b:a 48k -ac 2 -ar 24000 -f flv

# MP3 in FLV: MPEG-1 (44.1 kHz stereo) and MPEG-2 (22.05 kHz mono) layer III, with video.
gen av-mp3.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=700:sample_rate=44100 \
    -t 6 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 50 -c:a libmp3lame -b:a 128k -ac 2 -f flv
gen av-mp3-22k.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=700:sample_rate=22050 \
    -t 6 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 50 -c:a libmp3lame -b:a 64k -ac 1 -f flv

# Unsupported codecs: Sorenson Spark video with AAC; H.264 with Nellymoser and Speex audio.
gen sorenson-aac.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=800:sample_rate=44100 \
    -t 6 -map 0:v -map 1:a -c:v flv1 -c:a aac -ac 2 -f flv
gen h264-nellymoser.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=800:sample_rate=44100 \
    -t 6 -map 0:v -map 1:a -c:v libx264 -preset veryfast -g 50 -c:a nellymoser -ac 1 -f flv
gen h264-speex.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=800:sample_rate=16000 \
    -t 6 -map 0:v -map 1:a -c:v libx264 -preset veryfast -g 50 -c:a libspeex -ar 16000 -ac 1 -f flv

# Low frame rate (5 fps): PCR must still come at least every 100 ms.
gen av-5fps.flv \
    -f lavfi -i testsrc2=size=320x240:rate=5 \
    -f lavfi -i sine=frequency=300:sample_rate=44100 \
    -t 6 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 10 -c:a aac -ac 2 -f flv

# A long GOP (5 s) against the 2 s target: segments follow the GOP.
gen av-long-gop.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=300:sample_rate=44100 \
    -t 12 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 125 -keyint_min 125 -sc_threshold 0 -c:a aac -ac 2 -f flv

# Short GOPs (0.2 s) against the 2 s target: no tiny segments.
gen av-short-gop.flv \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=300:sample_rate=44100 \
    -t 8 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -g 5 -keyint_min 5 -sc_threshold 0 -c:a aac -ac 2 -f flv
