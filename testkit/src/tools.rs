//! ffprobe and ffmpeg as independent judges of the output, and polling with a deadline.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` naming `what`.
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ffprobe -show_streams -show_format` of `input` (a path or URL), as JSON.
pub fn ffprobe(input: &str) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format", input])
        .output()
        .expect("running ffprobe (the test command installs ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe {input}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Decodes `input` fully with `ffmpeg -v warning`; returns what it printed (empty when clean)
/// and the number of video frames decoded.
///
/// `-enc_time_base -1` keeps the input's 90 kHz time base for the null output: otherwise
/// ffmpeg rounds each frame time to 1/fps, and millisecond-rounded source timestamps (33, 34,
/// 33 ms steps at 30 fps) can collide after rounding, which ffmpeg reports as
/// "non monotonically increasing dts" although every DTS in the input increases.
pub fn decode(input: &str) -> (String, u64) {
    decode_at(input, "warning")
}

/// [`decode`], reporting only messages at `level` or above.
pub fn decode_at(input: &str, level: &str) -> (String, u64) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", level, "-progress", "pipe:1"])
        .args(["-i", input, "-enc_time_base", "-1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg (the test command installs it)");
    let progress = String::from_utf8_lossy(&output.stdout);
    let frames = progress
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    (String::from_utf8_lossy(&output.stderr).into_owned(), frames)
}

/// The first stream of `codec_type` in ffprobe output.
pub fn stream<'a>(probe: &'a serde_json::Value, codec_type: &str) -> Option<&'a serde_json::Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_type"] == codec_type)
}
