//! The live media playlist: a sliding window of segments rendered as m3u8 text.
//!
//! Implements RFC 8216 §4.3.3 (media playlist tags: TARGETDURATION, MEDIA-SEQUENCE,
//! DISCONTINUITY-SEQUENCE, ENDLIST, INDEPENDENT-SEGMENTS) and the server rules of §6.2.1
//! and §6.2.2 (media sequence and discontinuity sequence kept right as segments slide out).
//! Never touches segment bytes.

use std::collections::VecDeque;
use std::fmt::Write as _;
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
}

/// A live media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    window: usize,
    entries: VecDeque<Entry>,
    /// EXT-X-MEDIA-SEQUENCE: the sequence number of the first entry.
    media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that have slid out of the window.
    discontinuity_sequence: u64,
    /// EXT-X-TARGETDURATION in seconds; only grows (RFC 8216 §6.2.1: it must not change
    /// in a way that makes an earlier segment longer than the target).
    target_duration: u64,
    ended: bool,
}

impl MediaPlaylist {
    /// An empty playlist keeping `window` (≥ 1) segments, with a target of at least
    /// `min_target` rounded up to whole seconds.
    pub fn new(window: usize, min_target: Duration) -> Self {
        Self {
            window: window.max(1),
            entries: VecDeque::with_capacity(window.max(1) + 1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            target_duration: min_target.as_secs() + u64::from(min_target.subsec_nanos() > 0),
            ended: false,
        }
    }

    /// An empty playlist whose first segment gets media sequence number `first` (to continue
    /// a stream's numbering after a restart).
    pub fn starting_at(window: usize, min_target: Duration, first: u64) -> Self {
        Self { media_sequence: first, ..Self::new(window, min_target) }
    }

    /// Appends a segment and returns its media sequence number. The oldest entry leaves the
    /// window once it holds more than `window` segments.
    pub fn push(&mut self, entry: Entry) -> u64 {
        let sequence = self.media_sequence + self.entries.len() as u64;
        self.target_duration = self.target_duration.max(round_secs(entry.duration));
        self.entries.push_back(entry);
        while self.entries.len() > self.window {
            if let Some(gone) = self.entries.pop_front() {
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

    /// Marks the stream ended: the playlist gets EXT-X-ENDLIST.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The stream is live again (a republish): ENDLIST goes away.
    pub fn resume(&mut self) {
        self.ended = false;
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
        let mut out = String::with_capacity(128 + self.entries.len() * 48);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.target_duration, self.media_sequence
        );
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        if self.entries.iter().all(|e| e.independent) {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for entry in &self.entries {
            if entry.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            // humantime formats years 1970 to 9999 only (and panics before 1970).
            if let Some(time) = entry.program_date_time.filter(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .is_ok_and(|d| d.as_secs() < LAST_FORMATTABLE_SECOND)
            }) {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    humantime::format_rfc3339_millis(time)
                );
            }
            let millis = entry.duration.as_millis();
            let _ = write!(out, "#EXTINF:{}.{:03},\n{}\n", millis / 1000, millis % 1000, entry.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
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

    fn entry(uri: &str, millis: u64, discontinuity: bool) -> Entry {
        Entry {
            uri: uri.to_owned(),
            duration: ms(millis),
            discontinuity,
            independent: true,
            program_date_time: None,
        }
    }

    #[test]
    fn renders_a_live_window() {
        let mut p = MediaPlaylist::new(3, Duration::from_secs(2));
        for (i, d) in [2000, 2002, 1999, 2500].into_iter().enumerate() {
            assert_eq!(p.push(entry(&format!("{i}.ts"), d, false)), i as u64);
        }
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXTINF:2.002,\n1.ts\n#EXTINF:1.999,\n2.ts\n#EXTINF:2.500,\n3.ts\n"
        );
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
        let mut p = MediaPlaylist::new(2, Duration::from_secs(2));
        p.push(entry("0.ts", 2000, false));
        p.push(entry("1.ts", 2000, true));
        p.push(entry("2.ts", 2000, false));
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n1.ts\n#EXTINF:2.000,\n2.ts\n"
        );
        p.push(Entry { independent: false, ..entry("3.ts", 2000, false) });
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:2\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:1\n\
             #EXTINF:2.000,\n2.ts\n#EXTINF:2.000,\n3.ts\n"
        );
    }

    #[test]
    fn program_date_time_is_written_in_utc_with_milliseconds() {
        let mut p = MediaPlaylist::new(6, Duration::from_secs(2));
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_108_000_123);
        p.push(Entry { program_date_time: Some(time), ..entry("a.ts", 2000, true) });
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-DISCONTINUITY\n\
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
