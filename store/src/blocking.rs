//! Blocking playlist reload and playlist delta updates (draft-pantos-hls-rfc8216bis §6.2.5):
//! the delivery directives a low-latency client adds to a playlist request, and whether the
//! playlist satisfies them yet.
//!
//! A request with `_HLS_msn=M` waits until the playlist holds segment M complete; with
//! `_HLS_part=N` as well, until it holds part N of segment M (or anything later; a part
//! index past the last part of a complete segment M asks for part 0 of M+1). One too
//! far ahead is refused at once (§6.2.5.2: M beyond the last segment plus two, or N beyond
//! the last part by the Advance Part Limit); one not satisfied within three target durations
//! is given up on (the caller answers 503). An ended stream satisfies every request.

use std::time::Duration;

use tokio::sync::watch;

/// How many target durations a blocked request waits at most (§6.2.5.2 says the server
/// SHOULD answer 503 after three).
pub const BLOCK_TARGETS: u32 = 3;
/// The Advance Part Limit (§6.2.5.2) expressed as time, for parts under a second: a request
/// may ask for a part less than this far ahead of the last one.
const ADVANCE_PART_TIME: Duration = Duration::from_secs(3);

/// Why directives cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    /// `_HLS_part` without `_HLS_msn` (§6.2.5.2: the server MUST answer 400).
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    /// A value that is not a decimal integer, or a `_HLS_skip` other than YES or v2.
    #[error("malformed delivery directive {0}")]
    Malformed(&'static str),
}

/// A playlist request's delivery directives (§6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn`: the media sequence number to wait for.
    pub msn: Option<u64>,
    /// `_HLS_part`: the part of that segment to wait for.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`): a delta update is welcome.
    pub skip: bool,
}

impl Directives {
    /// The directives in a URL query (`_HLS_msn=5&_HLS_part=2`); other parameters are
    /// ignored (a CDN may add its own). A repeated directive keeps its first value.
    pub fn from_query(query: &str) -> Result<Self, DirectiveError> {
        let mut directives = Self::default();
        let number =
            |value: &str, name| value.parse::<u64>().map_err(|_| DirectiveError::Malformed(name));
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" if directives.msn.is_none() => {
                    directives.msn = Some(number(value, "_HLS_msn")?);
                }
                "_HLS_part" if directives.part.is_none() => {
                    directives.part = Some(number(value, "_HLS_part")?);
                }
                "_HLS_skip" => match value {
                    "YES" | "v2" => directives.skip = true,
                    _ => return Err(DirectiveError::Malformed("_HLS_skip")),
                },
                _ => {}
            }
        }
        if directives.part.is_some() && directives.msn.is_none() {
            return Err(DirectiveError::PartWithoutMsn);
        }
        Ok(directives)
    }

    /// Whether the request blocks (it names a segment or part to wait for).
    pub fn blocks(&self) -> bool {
        self.msn.is_some()
    }
}

/// What a playlist request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The playlist, which satisfies the directives.
    Ready(bytes::Bytes),
    /// Not yet: wait for a change ([`Changes`]) for at most `timeout` in all, then answer
    /// 503.
    Wait {
        /// Three target durations.
        timeout: Duration,
    },
    /// The request is too far ahead of the stream: answer 400 at once.
    TooFarAhead,
}

/// Where a low-latency stream is: its last complete segment and the open one's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveEdge {
    /// The media sequence number of the segment being written (the last complete one's
    /// plus one).
    pub open_sequence: u64,
    /// Parts of that segment complete.
    pub open_parts: u64,
    /// Parts of the last complete segment (`open_sequence - 1`).
    pub closed_parts: u64,
    /// Whether the playlist carries EXT-X-ENDLIST.
    pub ended: bool,
    pub part_target: Duration,
}

/// How `directives` stand against `edge`: `Some(true)` satisfied, `Some(false)` not yet,
/// `None` too far ahead.
pub(crate) fn satisfied(edge: LiveEdge, directives: Directives) -> Option<bool> {
    let Some(msn) = directives.msn else { return Some(true) };
    if edge.ended {
        return Some(true);
    }
    // The last complete segment is `open_sequence - 1`; "plus two" from it.
    if msn > edge.open_sequence + 1 {
        return None;
    }
    let within = |excess| within_advance_part_limit(excess, edge.part_target);
    match directives.part {
        None => Some(msn < edge.open_sequence),
        // §6.2.5.2: a part index past the last part of the segment is part 0 of the next,
        // however far past (a segment can end without the part its playlist hinted: a
        // timeline break). (A segment without parts, not low-latency, has no last part to be
        // past.)
        Some(part)
            if msn + 1 == edge.open_sequence
                && edge.closed_parts > 0
                && part >= edge.closed_parts =>
        {
            Some(edge.open_parts > 0)
        }
        Some(_) if msn < edge.open_sequence => Some(true),
        // Counted from the last part listed: the open segment's, or the closed one's last.
        Some(part) if msn == edge.open_sequence => {
            within(part.saturating_add(1).saturating_sub(edge.open_parts))
                .then_some(part < edge.open_parts)
        }
        // The segment after the open one: at least the part's index plus one ahead.
        Some(part) => within(part.saturating_add(1)).then_some(false),
    }
}

/// Whether a part `excess` parts past the last one listed is short of the Advance Part Limit
/// (§6.2.5.2: three divided by the part target when that is under a second, three
/// otherwise); a request that exceeds the last part by the limit is answered 400.
fn within_advance_part_limit(excess: u64, part_target: Duration) -> bool {
    let part_ms = part_target.as_millis().max(1);
    if part_ms < 1000 {
        u128::from(excess) * part_ms < ADVANCE_PART_TIME.as_millis()
    } else {
        excess < 3
    }
}

/// Wakes a waiting request (a blocked playlist reload, a request for the hinted part) when a
/// stream's playlist changes: a part or a segment completes, the stream ends.
#[derive(Debug)]
pub struct Changes(pub(crate) watch::Receiver<u64>);

impl Changes {
    /// Waits for the next change; false once the stream is gone from the store.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(open_sequence: u64, open_parts: u64) -> LiveEdge {
        LiveEdge {
            open_sequence,
            open_parts,
            closed_parts: 4,
            ended: false,
            part_target: Duration::from_millis(334),
        }
    }

    fn wants(msn: u64, part: Option<u64>) -> Directives {
        Directives { msn: Some(msn), part, skip: false }
    }

    #[test]
    fn directives_are_read_from_the_query() {
        let read = Directives::from_query;
        assert_eq!(read(""), Ok(Directives::default()));
        assert_eq!(read("_HLS_msn=5&_HLS_part=2"), Ok(wants(5, Some(2))));
        assert_eq!(
            read("token=x&_HLS_msn=5&_HLS_skip=YES"),
            Ok(Directives { msn: Some(5), part: None, skip: true })
        );
        assert_eq!(read("_HLS_msn=5&_HLS_msn=9"), Ok(wants(5, None)));
        assert_eq!(read("_HLS_part=2"), Err(DirectiveError::PartWithoutMsn));
        assert_eq!(read("_HLS_msn=-1"), Err(DirectiveError::Malformed("_HLS_msn")));
        assert_eq!(read("_HLS_msn=5&_HLS_part=x"), Err(DirectiveError::Malformed("_HLS_part")));
        assert_eq!(read("_HLS_skip=NO"), Err(DirectiveError::Malformed("_HLS_skip")));
        assert!(!read("_HLS_skip=YES").unwrap().blocks());
    }

    #[test]
    fn a_request_waits_for_its_part_or_segment() {
        // Segment 10 being written with parts 0 and 1 complete; 9 is the last complete one.
        let edge = edge(10, 2);
        assert_eq!(satisfied(edge, Directives::default()), Some(true));
        assert_eq!(satisfied(edge, wants(9, None)), Some(true));
        assert_eq!(satisfied(edge, wants(10, None)), Some(false));
        assert_eq!(satisfied(edge, wants(10, Some(1))), Some(true));
        assert_eq!(satisfied(edge, wants(10, Some(2))), Some(false));
        assert_eq!(satisfied(edge, wants(9, Some(3))), Some(true));
        assert_eq!(satisfied(edge, wants(9, Some(7))), Some(true), "a later part exists");
        // Past the last part of 9 (four): part 0 of 10, which does not exist yet.
        let starting = self::edge(10, 0);
        assert_eq!(satisfied(starting, wants(9, Some(3))), Some(true));
        assert_eq!(satisfied(starting, wants(9, Some(4))), Some(false));
        assert_eq!(satisfied(starting, wants(8, Some(9))), Some(true), "9's part 0 exists");
        assert_eq!(satisfied(starting, wants(9, Some(4 + 90))), Some(false), "10's part 0");
        assert_eq!(satisfied(edge, wants(9, Some(4 + 90))), Some(true), "10's part 0 exists");
        let no_parts = LiveEdge { closed_parts: 0, ..starting };
        assert_eq!(satisfied(no_parts, wants(9, Some(0))), Some(true));
        assert_eq!(satisfied(edge, wants(11, Some(0))), Some(false));
        assert_eq!(satisfied(edge, wants(11, None)), Some(false));
    }

    #[test]
    fn a_request_too_far_ahead_is_refused() {
        let edge = edge(10, 2);
        // Last complete segment 9: 11 is "plus two", 12 beyond.
        assert_eq!(satisfied(edge, wants(12, None)), None);
        // 334 ms parts: the limit is 3 / 0.334 = 8.98 parts past the last (part 1).
        assert_eq!(satisfied(edge, wants(10, Some(9))), Some(false));
        assert_eq!(satisfied(edge, wants(10, Some(10))), None);
        assert_eq!(satisfied(edge, wants(11, Some(7))), Some(false));
        assert_eq!(satisfied(edge, wants(11, Some(8))), None);
        // Past the closed segment's last part while the open one has none: 10's part 8 is
        // nine past 9's part 3.
        assert_eq!(satisfied(self::edge(10, 0), wants(10, Some(7))), Some(false));
        assert_eq!(satisfied(self::edge(10, 0), wants(10, Some(8))), None);
        // Half-second parts: exactly six past is the limit; two-second parts: three.
        assert!(within_advance_part_limit(5, Duration::from_millis(500)));
        assert!(!within_advance_part_limit(6, Duration::from_millis(500)));
        assert!(within_advance_part_limit(2, Duration::from_secs(2)));
        assert!(!within_advance_part_limit(3, Duration::from_secs(2)));
        assert!(!within_advance_part_limit(u64::MAX, Duration::from_millis(1)));
    }

    #[test]
    fn an_ended_stream_satisfies_everything_in_reach() {
        let edge = LiveEdge { ended: true, ..edge(10, 0) };
        assert_eq!(satisfied(edge, wants(11, Some(3))), Some(true));
        assert_eq!(satisfied(edge, wants(500, None)), Some(true));
    }
}
