//! hls.js in headless Chromium (`tests/browser/*.mjs`, run by node): what a web viewer does.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

/// Plays `url` for `seconds` of media; returns hls.js's report (JSON).
pub fn play(url: &str, seconds: u32) -> serde_json::Value {
    play_in(url, seconds, "")
}

/// Whether every error hls.js reported is a recovered playback stall (the buffer ran dry for
/// a moment on a loaded machine, a small gap nudged over): never a request that failed, never
/// media it could not parse.
pub fn only_stalls(report: &serde_json::Value) -> bool {
    errors(report).iter().all(|e| e.as_str().is_some_and(|e| STALLS.contains(&e)))
}

/// The errors hls.js reports when playback stalled and resumed.
const STALLS: [&str; 3] = [
    "mediaError/bufferStalledError",
    "mediaError/bufferNudgeOnStall",
    "mediaError/bufferSeekOverHole",
];

/// A blocking playlist reload that hls.js gave up waiting for (non-fatal).
const RELOAD_TIMEOUT: &str = "networkError/levelLoadTimeOut";

fn errors(report: &serde_json::Value) -> &[serde_json::Value] {
    report["errors"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// [`only_stalls`], but hls.js may also have timed out on one blocking playlist reload.
///
/// hls.js gives a blocking reload max(3 part targets, 0.8 target durations) (1.6 s here), and
/// may ask for a part further ahead than that: without lowLatencyMode it asks for the last part
/// of the segment its playlist ends in (`_HLS_part` = the highest part index it has seen), up to
/// a segment duration (2 s) ahead when its first playlist ends at a segment's first part; in
/// lowLatencyMode, when its copy of the playlist looks older than a part, it asks ahead by that
/// age ("CDN tune-in", `base-playlist-controller.ts`). A server must hold such a request until
/// the part exists (the draft's Advance Part Limit is 12 parts at 0.25 s): hls.js times out by
/// itself, retries and plays on. One such timeout is that; a server that left blocking reloads
/// unanswered would time out on every reload (several in a 6 s play).
pub fn only_stalls_and_one_reload_timeout(report: &serde_json::Value) -> bool {
    let errors = errors(report);
    let timeouts = errors.iter().filter(|e| e.as_str() == Some(RELOAD_TIMEOUT)).count();
    let others_stalls = errors
        .iter()
        .all(|e| e.as_str().is_some_and(|e| e == RELOAD_TIMEOUT || STALLS.contains(&e)));
    timeouts <= 1 && others_stalls
}

/// [`play`] with hls.js in `mode` (`low-latency`: lowLatencyMode, and the report says how far
/// behind the publisher the playhead was).
pub fn play_in(url: &str, seconds: u32, mode: &str) -> serde_json::Value {
    let (ok, report) = browser("play.mjs", &[url, &seconds.to_string(), mode]);
    assert!(ok, "hls.js did not play {url}: {report}");
    report
}

/// Runs `tests/browser/<script>` with `args` in node; whether it succeeded, and the JSON
/// report it printed.
pub fn browser(script: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let path = testkit::media::workspace_root().join("tests").join("browser").join(script);
    let output =
        std::process::Command::new("node").arg(&path).args(args).output().expect(
            "running node (the test command installs tests/browser's packages and chromium)",
        );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!("{script} printed no report: {stdout}\n{}", String::from_utf8_lossy(&output.stderr))
    });
    (output.status.success(), report)
}

/// Milliseconds since the Unix epoch, as the page's `Date.now()` counts them.
pub fn now_ms() -> f64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    since.as_millis() as f64
}

/// Where the playhead was at wall-clock time `at` (ms), from a `watch` report.
pub fn playhead_at(report: &serde_json::Value, at: f64) -> f64 {
    let samples = report["playhead"].as_array().unwrap();
    let sample = |s: &serde_json::Value| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap());
    samples.iter().map(sample).take_while(|(t, _)| *t <= at).last().map_or(0.0, |(_, p)| p)
}
