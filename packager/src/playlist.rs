//! The live media playlist: a sliding window of segments rendered as m3u8 text.
//!
//! Implements RFC 8216 §4.3.3 (media playlist tags: TARGETDURATION, MEDIA-SEQUENCE,
//! DISCONTINUITY-SEQUENCE, ENDLIST, INDEPENDENT-SEGMENTS) and the server rules of §6.2.1
//! and §6.2.2 (media sequence and discontinuity sequence kept right as segments slide out);
//! for fMP4, EXT-X-MAP (§4.3.2.5); for low-latency HLS, the tags of the second edition
//! (draft-pantos-hls-rfc8216bis §4.4.3.7 to §4.4.5.3): EXT-X-SERVER-CONTROL, EXT-X-PART-INF,
//! EXT-X-PART, EXT-X-PRELOAD-HINT, and EXT-X-SKIP in playlist delta updates (§6.2.5.1).
//! Never touches segment bytes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// 9999-12-31T23:59:59Z, the last time RFC 3339 formatting covers.
const LAST_FORMATTABLE_SECOND: u64 = 253_402_300_799;

/// One segment as the playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The segment's URI, relative to the playlist.
    pub uri: String,
    /// EXTINF.
    pub duration: Duration,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// Starts with a keyframe (all entries so: EXT-X-INDEPENDENT-SEGMENTS).
    pub independent: bool,
    /// EXT-X-PROGRAM-DATE-TIME: the wall-clock time of the segment's first frame.
    pub program_date_time: Option<SystemTime>,
    /// The URI of its init segment (fMP4): EXT-X-MAP where it changes.
    pub map: Option<String>,
    /// Its parts (low-latency HLS), in order.
    pub parts: Vec<Part>,
}

/// One part of a segment, as its EXT-X-PART line: made once, when the part ends, shared by
/// every listing of its segment after (a clone is a reference count) and copied into each
/// playlist (a low-latency playlist lists a few dozen parts and is written again at every
/// part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    line: Arc<str>,
}

impl Part {
    /// The part at `uri`, `duration` long, holding a keyframe if `independent`
    /// (INDEPENDENT=YES).
    pub fn new(uri: &str, duration: Duration, independent: bool) -> Self {
        let independent = if independent { ",INDEPENDENT=YES" } else { "" };
        let mut line = String::with_capacity(56 + uri.len());
        let _ =
            writeln!(line, "#EXT-X-PART:DURATION={},URI=\"{uri}\"{independent}", seconds(duration));
        Self { line: line.into() }
    }
}

/// The segment being written, as a low-latency playlist lists it: its parts so far, and the
/// next part as a preload hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSegment {
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// EXT-X-PROGRAM-DATE-TIME of its first frame.
    pub program_date_time: Option<SystemTime>,
    /// Its init segment's URI.
    pub map: Option<String>,
    /// Its complete parts.
    pub parts: Vec<Part>,
    /// The URI of the part being written (EXT-X-PRELOAD-HINT).
    pub next_part: String,
}

/// What a low-latency playlist announces (draft-pantos-hls-rfc8216bis §4.4.3.7, §4.4.3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowLatency {
    /// EXT-X-PART-INF PART-TARGET: no part is longer.
    pub part_target: Duration,
}

/// Parts are listed for the segments that end within this many target durations of the
/// playlist's end (rfc8216bis §4.4.4.9: parts SHOULD be removed after three).
const PART_WINDOW_TARGETS: u64 = 3;
/// CAN-SKIP-UNTIL in target durations: the least rfc8216bis §4.4.3.8 allows.
const SKIP_UNTIL_TARGETS: u64 = 6;
/// PART-HOLD-BACK in part targets: the least rfc8216bis §4.4.3.8 allows.
const PART_HOLD_BACK_PARTS: u32 = 3;
/// A live playlist is at least this many target durations long: RFC 8216 §6.2.2 forbids
/// removing a segment that would make it shorter, so a short window (`--playlist-length`
/// 1 or 2) or a target grown by a long segment keeps more segments than the window.
const MIN_PLAYLIST_TARGETS: u32 = 3;
/// But never more segments than this many windows, or [`MAX_LISTED`] if that is more: a
/// publisher whose timestamps barely move (frozen clocks: each frame a tick after the last)
/// makes segments of milliseconds, which would otherwise pile up for hours; such a playlist
/// is short instead.
const MAX_WINDOWS_LISTED: usize = 3;
/// See [`MAX_WINDOWS_LISTED`]: room for a window of one with a target grown to 5 s.
const MAX_LISTED: usize = 16;

/// A live media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    window: usize,
    entries: VecDeque<Entry>,
    /// The entries' durations, summed.
    duration: Duration,
    /// EXT-X-MEDIA-SEQUENCE: the sequence number of the first entry.
    media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that have slid out of the window.
    discontinuity_sequence: u64,
    /// EXT-X-TARGETDURATION in seconds; only grows (RFC 8216 §6.2.1: it must not change
    /// in a way that makes an earlier segment longer than the target).
    target_duration: u64,
    ended: bool,
    /// Low-latency HLS tags, when set.
    low_latency: Option<LowLatency>,
    /// The segment being written (low-latency HLS).
    open: Option<OpenSegment>,
}

impl MediaPlaylist {
    /// An empty playlist keeping `window` (≥ 1) segments, with a target of at least
    /// `min_target` rounded up to whole seconds.
    pub fn new(window: usize, min_target: Duration) -> Self {
        Self {
            window: window.max(1),
            entries: VecDeque::with_capacity(window.max(1) + 1),
            duration: Duration::ZERO,
            media_sequence: 0,
            discontinuity_sequence: 0,
            target_duration: min_target.as_secs() + u64::from(min_target.subsec_nanos() > 0),
            ended: false,
            low_latency: None,
            open: None,
        }
    }

    /// Announces low-latency HLS: server control, part information, parts and hints.
    pub fn set_low_latency(&mut self, low_latency: LowLatency) {
        self.low_latency = Some(low_latency);
    }

    /// What the playlist announces of low-latency HLS, if it is.
    pub fn low_latency(&self) -> Option<LowLatency> {
        self.low_latency
    }

    /// Whether the playlist announces low-latency HLS.
    pub fn is_low_latency(&self) -> bool {
        self.low_latency.is_some()
    }

    /// Sets (or clears) the segment being written, as a low-latency playlist lists it.
    pub fn set_open(&mut self, open: Option<OpenSegment>) {
        self.open = open;
    }

    /// An empty playlist whose first segment gets media sequence number `first` (to continue
    /// a stream's numbering after a restart).
    pub fn starting_at(window: usize, min_target: Duration, first: u64) -> Self {
        Self { media_sequence: first, ..Self::new(window, min_target) }
    }

    /// Sets EXT-X-DISCONTINUITY-SEQUENCE of an empty playlist that continues another's
    /// numbering: the other's [`discontinuities`](Self::discontinuities), so a player that
    /// read both counts the same discontinuity sequence for every segment.
    pub fn set_discontinuity_sequence(&mut self, discontinuity_sequence: u64) {
        debug_assert!(self.entries.is_empty(), "only an empty playlist is renumbered");
        self.discontinuity_sequence = discontinuity_sequence;
    }

    /// The discontinuity sequence number once every listed segment has slid out: what a
    /// playlist continuing this one after a break starts EXT-X-DISCONTINUITY-SEQUENCE at.
    pub fn discontinuities(&self) -> u64 {
        self.discontinuity_sequence
            + self.entries.iter().filter(|entry| entry.discontinuity).count() as u64
    }

    /// Appends a segment and returns its media sequence number. The oldest entry leaves the
    /// window once it holds more than `window` segments, unless the rest would be shorter
    /// than [`MIN_PLAYLIST_TARGETS`] target durations (up to [`MAX_WINDOWS_LISTED`] windows).
    pub fn push(&mut self, entry: Entry) -> u64 {
        let sequence = self.media_sequence + self.entries.len() as u64;
        self.target_duration = self.target_duration.max(round_secs(entry.duration));
        self.duration += entry.duration;
        self.entries.push_back(entry);
        let least = Duration::from_secs(self.target_duration) * MIN_PLAYLIST_TARGETS;
        let most = (self.window * MAX_WINDOWS_LISTED).max(MAX_LISTED);
        while self.entries.len() > self.window {
            let oldest = self.entries.front().map_or(Duration::ZERO, |entry| entry.duration);
            if self.duration.saturating_sub(oldest) < least && self.entries.len() <= most {
                break;
            }
            if let Some(gone) = self.entries.pop_front() {
                self.duration = self.duration.saturating_sub(gone.duration);
                self.media_sequence += 1;
                if gone.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        sequence
    }

    /// The media sequence number the next pushed segment gets.
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence + self.entries.len() as u64
    }

    /// The parts of the last complete segment (zero without parts, or without a segment).
    pub fn last_segment_parts(&self) -> usize {
        self.entries.back().map_or(0, |entry| entry.parts.len())
    }

    /// Marks the stream ended: the playlist gets EXT-X-ENDLIST.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The stream is live again (a republish): ENDLIST goes away.
    pub fn resume(&mut self) {
        self.ended = false;
    }

    /// Whether the playlist carries EXT-X-ENDLIST.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Segments listed, and the sequence number of the first.
    pub fn window(&self) -> (usize, u64) {
        (self.entries.len(), self.media_sequence)
    }

    /// EXT-X-TARGETDURATION in seconds.
    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// Whether no segment has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Renders the m3u8 text.
    pub fn render(&self) -> String {
        self.render_with(false)
    }

    /// Renders the m3u8 text; with `skip` (a client's `_HLS_skip=YES`), as a playlist delta
    /// update: the segments older than CAN-SKIP-UNTIL replaced by one EXT-X-SKIP.
    pub fn render_with(&self, skip: bool) -> String {
        // About what it takes (each growth copies it): EXTINF and date lines, part lines.
        let parts = self.entries.iter().map(|e| e.parts.len()).sum::<usize>()
            + self.open.as_ref().map_or(0, |open| open.parts.len());
        let mut out = String::with_capacity(256 + self.entries.len() * 112 + parts * 72);
        let fmp4 = self.entries.iter().any(|e| e.map.is_some())
            || self.open.as_ref().is_some_and(|o| o.map.is_some());
        // The least each kind needs (RFC 8216bis §8): EXT-X-MAP 6; a low-latency playlist
        // 9, as any of its answers may be a delta update (EXT-X-SKIP), and one version for
        // all of them.
        let version = match (self.low_latency.is_some(), fmp4) {
            (true, _) => 9,
            (false, true) => 6,
            (false, false) => 3,
        };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n",
            self.target_duration
        );
        let skip_until = self.target_duration * SKIP_UNTIL_TARGETS;
        if let Some(low_latency) = self.low_latency {
            let hold_back = low_latency.part_target * PART_HOLD_BACK_PARTS;
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={skip_until}.0",
                seconds(hold_back)
            );
            let _ =
                writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds(low_latency.part_target));
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        // The open segment is listed by low-latency playlists only, and only while live.
        let open_listed = self.open.as_ref().filter(|_| !self.ended && self.low_latency.is_some());
        // §6.2.2: a playlist listing a discontinuity says its sequence, 0 included.
        if self.discontinuity_sequence > 0
            || self.entries.iter().any(|e| e.discontinuity)
            || open_listed.is_some_and(|open| open.discontinuity)
        {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        if self.entries.iter().all(|e| e.independent) {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        // Segments older than CAN-SKIP-UNTIL from the end may be skipped (never all).
        let skipped = if skip && self.low_latency.is_some() {
            let mut age = Duration::ZERO;
            let mut keep = 0;
            for entry in self.entries.iter().rev() {
                if age >= Duration::from_secs(skip_until) {
                    break;
                }
                age += entry.duration;
                keep += 1;
            }
            self.entries.len() - keep.min(self.entries.len())
        } else {
            0
        };
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // Parts are listed for the segments ending within the part window of the end.
        let part_window = Duration::from_secs(self.target_duration * PART_WINDOW_TARGETS);
        let mut to_end = Duration::ZERO;
        let mut parts_from = self.entries.len();
        for entry in self.entries.iter().rev() {
            if to_end >= part_window {
                break;
            }
            to_end += entry.duration;
            parts_from -= 1;
        }
        let mut map: Option<&str> = None;
        for (index, entry) in self.entries.iter().enumerate().skip(skipped) {
            if entry.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_map(&mut out, &mut map, entry.map.as_deref());
            write_program_date_time(&mut out, entry.program_date_time);
            if index >= parts_from {
                for part in &entry.parts {
                    write_part(&mut out, part);
                }
            }
            let millis = entry.duration.as_millis();
            let _ = write!(out, "#EXTINF:{}.{:03},\n{}\n", millis / 1000, millis % 1000, entry.uri);
        }
        if let Some(open) = open_listed {
            if open.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_map(&mut out, &mut map, open.map.as_deref());
            write_program_date_time(&mut out, open.program_date_time);
            for part in &open.parts {
                write_part(&mut out, part);
            }
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", open.next_part);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// EXT-X-MAP where the init segment differs from the last one written.
fn write_map<'a>(out: &mut String, current: &mut Option<&'a str>, map: Option<&'a str>) {
    if let Some(uri) = map
        && *current != Some(uri)
    {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\"");
        *current = Some(uri);
    }
}

fn write_program_date_time(out: &mut String, time: Option<SystemTime>) {
    // humantime formats years 1970 to 9999 only (and panics before 1970).
    if let Some(time) = time.filter(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() < LAST_FORMATTABLE_SECOND)
    }) {
        let _ =
            writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", humantime::format_rfc3339_millis(time));
    }
}

fn write_part(out: &mut String, part: &Part) {
    out.push_str(&part.line);
}

/// Seconds with up to five decimals (`0.33333`), as the tags' decimal-floating-point.
fn seconds(d: Duration) -> Seconds {
    Seconds(d)
}

/// [`seconds`] as written: no allocation (a low-latency playlist has a duration per part,
/// and is written again at every part).
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hundred_thousandths = self.0.as_micros() / 10;
        let (whole, mut fraction) = (hundred_thousandths / 100_000, hundred_thousandths % 100_000);
        write!(f, "{whole}")?;
        if fraction == 0 {
            return Ok(());
        }
        let mut digits = 5;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        write!(f, ".{fraction:0digits$}")
    }
}

/// Rounds to the nearest whole second, halves up (RFC 8216 §4.3.3.1 compares EXTINF
/// "rounded to the nearest integer" with the target).
fn round_secs(d: Duration) -> u64 {
    (d.as_millis() as u64 + 500) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn seconds_have_up_to_five_decimals_without_trailing_zeros() {
        let cases = [
            (Duration::from_nanos(333_333_333), "0.33333"),
            (ms(250), "0.25"),
            (ms(1000), "1"),
            (ms(0), "0"),
            (ms(20_100), "20.1"),
            (ms(1005), "1.005"),
            (ms(50), "0.05"),
            (Duration::from_micros(1_000_010), "1.00001"),
            (Duration::from_micros(1_000_009), "1"),
        ];
        for (duration, text) in cases {
            assert_eq!(seconds(duration).to_string(), text, "{duration:?}");
        }
    }

    fn entry(uri: &str, millis: u64, discontinuity: bool) -> Entry {
        Entry {
            uri: uri.to_owned(),
            duration: ms(millis),
            discontinuity,
            independent: true,
            program_date_time: None,
            map: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn renders_a_live_window() {
        let mut p = MediaPlaylist::new(3, Duration::from_secs(2));
        for (i, d) in [2000, 2002, 1999, 2400].into_iter().enumerate() {
            assert_eq!(p.push(entry(&format!("{i}.ts"), d, false)), i as u64);
        }
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXTINF:2.002,\n1.ts\n#EXTINF:1.999,\n2.ts\n#EXTINF:2.400,\n3.ts\n"
        );
    }

    /// RFC 8216 §6.2.2: no segment leaves if the playlist would then be shorter than three
    /// target durations, whatever the window: a window of one keeps three 2 s segments,
    /// and a target grown by a long segment keeps more.
    #[test]
    fn a_live_playlist_stays_three_target_durations_long() {
        let listed = |p: &MediaPlaylist| p.window().0;
        let mut p = MediaPlaylist::new(1, Duration::from_secs(2));
        for i in 0..5 {
            p.push(entry(&format!("{i}.ts"), 2000, false));
        }
        assert_eq!(listed(&p), 3, "{}", p.render());
        assert_eq!(p.window().1, 2);
        // A 5 s segment: the target is 5 s, the playlist at least 15 s.
        p.push(entry("5.ts", 5000, false));
        for i in 6..10 {
            p.push(entry(&format!("{i}.ts"), 2000, false));
        }
        let text = p.render();
        assert!(text.contains("#EXT-X-TARGETDURATION:5\n"), "{text}");
        assert_eq!(listed(&p), 6, "5.ts and the 2 s segments after it, and one before: {text}");
        let mut q = MediaPlaylist::new(3, Duration::from_secs(2));
        for (i, d) in [2000, 1999, 1999, 1999].into_iter().enumerate() {
            q.push(entry(&format!("{i}.ts"), d, false));
        }
        assert_eq!(listed(&q), 4, "three would be 5.997 s, under 6 s: {}", q.render());
        // Segments of a millisecond (frozen timestamps): a bounded list, short.
        for window in [2, 10] {
            let mut r = MediaPlaylist::new(window, Duration::from_secs(2));
            for i in 0..1000 {
                r.push(entry(&format!("{i}.ts"), 1, false));
            }
            assert_eq!(listed(&r), (window * MAX_WINDOWS_LISTED).max(MAX_LISTED));
        }
    }

    #[test]
    fn ended_playlist_has_endlist() {
        let mut p = MediaPlaylist::new(6, Duration::from_secs(2));
        p.push(entry("a.ts", 1234, false));
        p.end();
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXTINF:1.234,\na.ts\n#EXT-X-ENDLIST\n"
        );
        p.resume();
        assert!(!p.render().contains("ENDLIST"));
    }

    #[test]
    fn discontinuity_sequence_counts_discontinuities_that_slid_out() {
        let mut p = MediaPlaylist::new(3, Duration::from_secs(2));
        p.push(entry("0.ts", 2000, false));
        p.push(entry("1.ts", 2000, true));
        p.push(entry("2.ts", 2000, false));
        p.push(entry("3.ts", 2000, false));
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n1.ts\n#EXTINF:2.000,\n2.ts\n\
             #EXTINF:2.000,\n3.ts\n"
        );
        p.push(Entry { independent: false, ..entry("4.ts", 2000, false) });
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:2\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:1\n\
             #EXTINF:2.000,\n2.ts\n#EXTINF:2.000,\n3.ts\n#EXTINF:2.000,\n4.ts\n"
        );
    }

    #[test]
    fn a_continuing_playlist_counts_on_from_the_discontinuities_of_the_first() {
        let mut first = MediaPlaylist::new(2, Duration::from_secs(2));
        first.push(entry("0.ts", 2000, false));
        first.push(entry("1.ts", 2000, true));
        first.push(entry("2.ts", 2000, true));
        // The discontinuities listed count as those slid out: a continuation starts after.
        assert_eq!(first.discontinuities(), 2);
        let mut next = MediaPlaylist::starting_at(2, Duration::from_secs(2), first.next_sequence());
        next.set_discontinuity_sequence(first.discontinuities());
        next.push(entry("3.ts", 2000, true));
        let text = next.render();
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"),
            "{text}"
        );
        assert_eq!(next.discontinuities(), 3);
    }

    #[test]
    fn program_date_time_is_written_in_utc_with_milliseconds() {
        let mut p = MediaPlaylist::new(6, Duration::from_secs(2));
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_108_000_123);
        p.push(Entry { program_date_time: Some(time), ..entry("a.ts", 2000, true) });
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-25T22:00:00.123Z\n#EXTINF:2.000,\na.ts\n"
        );
    }

    #[test]
    fn times_outside_1970_to_9999_are_left_out_not_a_panic() {
        let mut p = MediaPlaylist::new(6, Duration::from_secs(2));
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(2);
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_FORMATTABLE_SECOND + 1);
        p.push(Entry { program_date_time: Some(before), ..entry("a.ts", 2000, false) });
        p.push(Entry { program_date_time: Some(after), ..entry("b.ts", 2000, false) });
        assert!(!p.render().contains("PROGRAM-DATE-TIME"));
    }

    #[test]
    fn target_duration_covers_every_rounded_extinf() {
        let mut p = MediaPlaylist::new(6, Duration::from_millis(1500));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:2\n"));
        p.push(entry("a.ts", 2499, false));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:2\n"));
        p.push(entry("b.ts", 2500, false));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:3\n"));
        p.push(entry("c.ts", 100, false));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:3\n"));
    }
}
