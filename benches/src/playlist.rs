//! Reading a live media playlist (RFC 8216 §4.3): target duration, media sequence, and each
//! segment's sequence number, duration and URI. Tags a player may ignore are ignored; a
//! segment's URI is resolved against the playlist's path (§4.1, RFC 3986 §5.2).

/// Segments read from one playlist; a live window holds a handful.
const MAX_SEGMENTS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    /// Media sequence number (§4.3.3.2 plus the position).
    pub(crate) seq: u64,
    /// EXTINF duration, milliseconds.
    pub(crate) duration_ms: f64,
    pub(crate) uri: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub(crate) target_duration: f64,
    pub(crate) segments: Vec<Segment>,
    /// EXT-X-ENDLIST: the stream ended.
    pub(crate) ended: bool,
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
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration = v.parse::<f64>().ok().filter(|d| *d > 0.0);
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
        }
    }
    Some(MediaPlaylist { target_duration: target_duration?, segments, ended })
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
        assert_eq!(parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\nb.ts\n"), None, "no EXTINF");
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
