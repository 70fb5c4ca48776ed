//! Reading a live media playlist (RFC 8216 §4.3): target duration, media sequence, and each
//! segment's sequence number, duration and URI; for low-latency HLS (draft-pantos-hls-rfc8216bis
//! §4.4.3.7 to §4.4.5.3) also EXT-X-MAP, EXT-X-SERVER-CONTROL's CAN-BLOCK-RELOAD,
//! EXT-X-PART-INF, each EXT-X-PART's segment and index, and the EXT-X-PRELOAD-HINT part. Tags
//! a player may ignore are ignored; a segment's URI is resolved against the playlist's path
//! (§4.1, RFC 3986 §5.2).

/// Segments read from one playlist; a live window holds a handful.
const MAX_SEGMENTS: usize = 1000;
/// Longest target duration (and part target) accepted, seconds: an hour-long segment is no
/// live stream, and every wait computed from it stays a valid `Duration` (no NaN, no
/// infinity).
const MAX_TARGET_DURATION: f64 = 3600.0;
/// Parts read from one playlist: they are listed for the last three target durations, so
/// this covers parts of 40 ms (one frame at 25 fps) with target durations up to 13 s.
const MAX_PARTS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    /// Media sequence number (§4.3.3.2 plus the position).
    pub(crate) seq: u64,
    /// EXTINF duration, milliseconds.
    pub(crate) duration_ms: f64,
    pub(crate) uri: String,
}

/// A partial segment (EXT-X-PART), or the one hinted (EXT-X-PRELOAD-HINT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// Media sequence number of the segment it belongs to.
    pub(crate) msn: u64,
    /// Its index in that segment, from 0 (what `_HLS_part` names).
    pub(crate) index: u64,
    pub(crate) uri: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub(crate) target_duration: f64,
    pub(crate) segments: Vec<Segment>,
    /// EXT-X-ENDLIST: the stream ended.
    pub(crate) ended: bool,
    /// URI of the last EXT-X-MAP: the init segment of the last segment and of the hint.
    pub(crate) map: Option<String>,
    /// EXT-X-SERVER-CONTROL CAN-BLOCK-RELOAD=YES: `_HLS_msn` requests block (§6.2.5.2).
    pub(crate) can_block_reload: bool,
    /// EXT-X-PART-INF PART-TARGET, seconds.
    pub(crate) part_target: Option<f64>,
    /// The parts listed, in order.
    pub(crate) parts: Vec<Part>,
    /// The EXT-X-PRELOAD-HINT of TYPE=PART: the part being written.
    pub(crate) hint: Option<Part>,
}

impl MediaPlaylist {
    /// Whether this playlist satisfies a blocking reload for part `index` of segment `msn`
    /// (§6.2.5.2): it lists that part or a later one, or segment `msn` complete (a segment
    /// may end before a hinted part starts, when its publisher leaves).
    pub(crate) fn has_part(&self, msn: u64, index: u64) -> bool {
        self.parts.last().is_some_and(|p| (p.msn, p.index) >= (msn, index))
            || self.segments.last().is_some_and(|s| s.seq >= msn)
    }
}

/// Parses a media playlist; `None` if it is not one.
pub(crate) fn parse(text: &str) -> Option<MediaPlaylist> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != "#EXTM3U" {
        return None;
    }
    let mut target_duration = None;
    let mut seq = 0u64;
    let mut duration_ms = None;
    let mut segments = Vec::new();
    let mut ended = false;
    let mut map = None;
    let mut can_block_reload = false;
    let mut part_target = None;
    let mut parts = Vec::new();
    // Parts listed since the last segment: the next one's index.
    let mut part_index = 0u64;
    let mut hint = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let uri = attribute(v, "URI")?;
            if parts.len() < MAX_PARTS {
                parts.push(Part { msn: seq, index: part_index, uri: uri.to_owned() });
            }
            part_index += 1;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attribute(v, "TYPE") == Some("PART") {
                let uri = attribute(v, "URI")?.to_owned();
                hint = Some(Part { msn: seq, index: part_index, uri });
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            map = Some(attribute(v, "URI")?.to_owned());
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            can_block_reload = attribute(v, "CAN-BLOCK-RELOAD") == Some("YES");
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            part_target = attribute(v, "PART-TARGET")
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|t| *t > 0.0 && *t <= MAX_TARGET_DURATION);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            // A delta update (§6.2.5.1): the skipped segments still take their numbers.
            seq += attribute(v, "SKIPPED-SEGMENTS")?.parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration =
                v.parse::<f64>().ok().filter(|d| *d > 0.0 && *d <= MAX_TARGET_DURATION);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let seconds: f64 = v.split(',').next()?.trim().parse().ok()?;
            duration_ms = Some(seconds * 1000.0);
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if !line.starts_with('#') {
            let duration_ms = duration_ms.take()?;
            if segments.len() < MAX_SEGMENTS {
                segments.push(Segment { seq, duration_ms, uri: line.to_owned() });
            }
            seq += 1;
            part_index = 0;
        }
    }
    Some(MediaPlaylist {
        target_duration: target_duration?,
        segments,
        ended,
        map,
        can_block_reload,
        part_target,
        parts,
        hint,
    })
}

/// The value of attribute `name` in an attribute list (§4.2), quotes removed.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let (value, after) = quoted.split_once('"')?;
                (value, after)
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = after.trim_start_matches(',');
    }
    None
}

/// The request path of `uri` found in the playlist at `playlist_path`, or `None` when it
/// points at another server.
pub(crate) fn resolve(playlist_host: &str, playlist_path: &str, uri: &str) -> Option<String> {
    if let Some((host, path)) = crate::http::split_url(uri) {
        return (host == playlist_host).then(|| path.to_owned());
    }
    if uri.contains("://") {
        return None;
    }
    if uri.starts_with('/') {
        return Some(uri.to_owned());
    }
    let dir = playlist_path.split('?').next().unwrap_or_default();
    let dir = &dir[..=dir.rfind('/').unwrap_or(0)];
    Some(format!("{dir}{uri}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_rtmp_playlist() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-TARGETDURATION:3\n\
                    \n#EXTINF:2.000,\nk-7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.033,\nk-8.ts\n";
        let p = parse(text).unwrap();
        assert_eq!(p.target_duration, 3.0);
        assert!(!p.ended);
        let got: Vec<_> =
            p.segments.iter().map(|s| (s.seq, s.duration_ms, s.uri.as_str())).collect();
        assert_eq!(got, [(7, 2000.0, "k-7.ts"), (8, 2033.0, "k-8.ts")]);
    }

    #[test]
    fn ended_playlist_and_refusals() {
        let p = parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\na.ts\n#EXT-X-ENDLIST\n")
            .unwrap();
        assert!(p.ended);
        assert_eq!(p.segments.len(), 1);
        assert_eq!(parse("<html>"), None);
        assert_eq!(parse("#EXTM3U\n#EXTINF:2,\na.ts\n"), None, "no target duration");
        for bad in ["inf", "NaN", "-2", "0", "1e300"] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:{bad}\n");
            assert_eq!(parse(&text), None, "target duration {bad}");
        }
        assert_eq!(parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\nb.ts\n"), None, "no EXTINF");
    }

    /// rtmp-hls's low-latency playlist: one complete segment with its parts, the open one's
    /// first part and the hint.
    const LOW_LATENCY: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.75,CAN-SKIP-UNTIL=12.0\n\
        #EXT-X-PART-INF:PART-TARGET=0.25\n#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXT-X-MAP:URI=\"9-init0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-06T03:00:00.000Z\n\
        #EXT-X-PART:DURATION=0.24,URI=\"9-4.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.24,URI=\"9-4.1.m4s\"\n#EXTINF:0.480,\n9-4.m4s\n\
        #EXT-X-MAP:URI=\"9-init1.mp4\"\n\
        #EXT-X-PART:DURATION=0.24,URI=\"9-5.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"9-5.1.m4s\"\n";

    #[test]
    fn low_latency_tags_give_parts_map_and_hint() {
        let p = parse(LOW_LATENCY).unwrap();
        assert!(p.can_block_reload);
        assert_eq!(p.part_target, Some(0.25));
        assert_eq!(p.map.as_deref(), Some("9-init1.mp4"), "the last map is the hint's");
        let got: Vec<_> = p.parts.iter().map(|p| (p.msn, p.index, p.uri.as_str())).collect();
        assert_eq!(got, [(4, 0, "9-4.0.m4s"), (4, 1, "9-4.1.m4s"), (5, 0, "9-5.0.m4s")]);
        assert_eq!(p.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), [4]);
        let hint = p.hint.as_ref().unwrap();
        assert_eq!((hint.msn, hint.index, hint.uri.as_str()), (5, 1, "9-5.1.m4s"));
        assert!(p.has_part(5, 0) && p.has_part(4, 9), "listed, or in a complete segment");
        assert!(!p.has_part(5, 1) && !p.has_part(6, 0), "not yet");
    }

    #[test]
    fn a_hint_after_a_segment_boundary_is_part_zero_of_the_next_segment() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
                    #EXT-X-PART:DURATION=0.2,URI=\"1-0.0.m4s\"\n#EXTINF:0.2,\n1-0.m4s\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1-1.0.m4s\"\n";
        let p = parse(text).unwrap();
        let hint = p.hint.unwrap();
        assert_eq!((hint.msn, hint.index), (1, 0));
        assert!(!p.can_block_reload && p.part_target.is_none() && p.map.is_none());
        // A map hint is not a part; a delta update's skipped segments keep their numbers.
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
                    #EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXTINF:2,\n1-13.m4s\n\
                    #EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"1-init1.mp4\"\n";
        let p = parse(text).unwrap();
        assert_eq!(p.segments[0].seq, 13);
        assert_eq!(p.hint, None);
        assert_eq!(parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=1\n"), None);
    }

    #[test]
    fn attributes_are_read_around_quoted_commas() {
        let list = "TYPE=PART,URI=\"a,b=c.m4s\",BYTERANGE-START=10";
        assert_eq!(attribute(list, "URI"), Some("a,b=c.m4s"));
        assert_eq!(attribute(list, "BYTERANGE-START"), Some("10"));
        assert_eq!(attribute(list, "TYPE"), Some("PART"));
        assert_eq!(attribute(list, "DURATION"), None);
    }

    #[test]
    fn uris_resolve_against_the_playlist() {
        assert_eq!(
            resolve("h:1", "/hls/cam/index.m3u8", "5-0.ts").as_deref(),
            Some("/hls/cam/5-0.ts")
        );
        assert_eq!(resolve("h:1", "/hls/k.m3u8", "k-3.ts").as_deref(), Some("/hls/k-3.ts"));
        assert_eq!(resolve("h:1", "/hls/k.m3u8", "/x/k-3.ts").as_deref(), Some("/x/k-3.ts"));
        assert_eq!(resolve("h:1", "/hls/k.m3u8", "http://h:1/a.ts").as_deref(), Some("/a.ts"));
        assert_eq!(resolve("h:1", "/hls/k.m3u8", "http://other/a.ts"), None);
    }
}
