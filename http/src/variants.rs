//! Multivariant playlists for streams published as renditions of one another (Nginx-RTMP's
//! `hls_variant`): with `--variant _720p --variant _480p`, the streams `cam_720p` and
//! `cam_480p` are listed by `/hls/cam/index.m3u8`, with BANDWIDTH, AVERAGE-BANDWIDTH,
//! CODECS, RESOLUTION and FRAME-RATE measured from the streams themselves (RFC 8216
//! §4.3.4.2); in low latency each rendition's playlist reports its siblings' live edges
//! (EXT-X-RENDITION-REPORT, draft-pantos-hls-rfc8216bis §4.4.5.4), so a player switches
//! with one blocking request.
//!
//! A private rendition is listed only to a viewer its token admits; a token given in the
//! query is passed on in that rendition's URI (a player without cookies keeps no query
//! across playlists).

use auth::viewer::{ViewerAccess, ViewerRefused};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use packager::multivariant::{self, Variant};
use stream_store::StreamStore;

use crate::{PLAYLIST_CACHE, PLAYLIST_MIME, private};

/// The multivariant playlist of `base` from its renditions named `base` + each of
/// `suffixes`, in that order; `None` when none of them has a segment (a 404).
pub(crate) fn master(
    store: &StreamStore,
    base: &str,
    suffixes: &[String],
    access: &ViewerAccess,
    headers: &HeaderMap,
    query: &str,
) -> Option<Response> {
    let token = private::viewer_token(headers, query);
    let query_token = query.split('&').find_map(|pair| pair.strip_prefix("token="));
    let mut refused: Option<ViewerRefused> = None;
    let mut any_private = false;
    let mut variants = Vec::new();
    for suffix in suffixes {
        let name = format!("{base}{suffix}");
        // An ended rendition is no choice for a live player.
        let Some(rendition) = store.rendition(&name).filter(|r| !r.ended) else { continue };
        let mut uri = format!("../{name}/{}", crate::PLAYLIST_FILE);
        if rendition.private {
            any_private = true;
            if let Err(refusal) = access.admit(&name, token) {
                refused.get_or_insert(refusal);
                continue;
            }
            if let Some(token) = query_token {
                uri = format!("{uri}?token={token}");
            }
        }
        let media = rendition.media;
        variants.push(Variant {
            uri,
            bandwidth: rendition.peak_bps,
            average_bandwidth: Some(rendition.average_bps),
            codecs: media.codecs,
            resolution: media.resolution,
            frame_rate: media.frame_rate,
        });
    }
    if variants.is_empty() {
        return refused.map(|refusal| private::refusal(&refusal));
    }
    let cache =
        if any_private { format!("private, {PLAYLIST_CACHE}") } else { PLAYLIST_CACHE.into() };
    let body = multivariant::render(&variants);
    Some(([(CONTENT_TYPE, PLAYLIST_MIME.to_owned()), (CACHE_CONTROL, cache)], body).into_response())
}

/// The EXT-X-RENDITION-REPORT lines of the siblings of rendition `name` (named with one of
/// `suffixes`), or nothing when it is not a rendition.
pub(crate) fn reports(store: &StreamStore, name: &str, suffixes: &[String]) -> String {
    // The longest suffix that fits (`_hi` and `_very_hi`).
    let base = suffixes
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix.as_str()).map(|base| (suffix.len(), base)))
        .max_by_key(|(len, _)| *len)
        .map(|(_, base)| base);
    let Some(base) = base else { return String::new() };
    let mut out = String::new();
    for suffix in suffixes {
        let sibling = format!("{base}{suffix}");
        if sibling == name {
            continue;
        }
        // Private siblings are not reported: this playlist's viewers may not watch them.
        let rendition = store.rendition(&sibling).filter(|r| !r.ended && !r.private);
        if let Some((msn, part)) = rendition.and_then(|r| r.last) {
            let uri = format!("../{sibling}/{}", crate::PLAYLIST_FILE);
            out.push_str(&multivariant::rendition_report(&uri, msn, part));
        }
    }
    out
}
