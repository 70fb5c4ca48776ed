//! Recordings over HTTP (`--record-dir`): `/recordings/<stream>/<file>`, each recording's
//! VOD playlist and its fragmented MP4, read by byte ranges (RFC 9110 §14) as the playlist's
//! EXT-X-BYTERANGE tags ask. A recording cut short (the server was killed) gets the
//! EXT-X-ENDLIST its writer never wrote once it has not changed for a while. Recordings of
//! private streams are not served.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{FMP4_MIME, PLAYLIST_MIME};

/// MIME type of FLV recordings.
const FLV_MIME: &str = "video/x-flv";
/// Bytes read from a recording per body chunk.
const CHUNK: usize = 64 << 10;
/// Largest VOD playlist served (a day of 2 s segments is about 4 MiB).
const MAX_PLAYLIST_BYTES: u64 = 16 << 20;
/// Marks a private stream's recording (see `ingest::record::PRIVATE_MARK`).
const PRIVATE_MARK: &str = ".private";
/// A playlist without ENDLIST unchanged this long belongs to a recording that was cut short
/// (see `ingest::record::IN_USE`).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// What the recordings' routes read.
#[derive(Clone)]
struct Recordings {
    dir: PathBuf,
    /// Whether a stream is private now (its recordings are not served then either).
    store: std::sync::Arc<stream_store::StreamStore>,
}

/// The routes of the recordings under `dir`; those of streams `store` knows as private are
/// not served, nor those recorded while their stream was.
pub fn router(dir: PathBuf, store: std::sync::Arc<stream_store::StreamStore>) -> Router {
    Router::new()
        .route("/recordings/{stream}/{file}", get(recording))
        .layer(tower::util::MapResponseLayer::new(crate::allow_any_origin))
        .with_state(Recordings { dir, store })
}

async fn recording(
    State(Recordings { dir, store }): State<Recordings>,
    Path((stream, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let usable = auth::key_store::validate_stream_name(&stream).is_ok()
        && !store.is_private(&stream)
        && !file.starts_with('.')
        && !file.contains(PRIVATE_MARK)
        && file.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !usable {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = dir.join(&stream).join(&file);
    if file.ends_with(".m3u8") {
        return playlist(path).await;
    }
    if file.ends_with(".mp4") || file.ends_with(".flv") {
        let mime = if file.ends_with(".flv") { FLV_MIME } else { FMP4_MIME };
        return media(path, mime, &headers).await.unwrap_or_else(|status| status.into_response());
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn playlist(path: PathBuf) -> Response {
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if meta.len() > MAX_PLAYLIST_BYTES {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let Ok(mut text) = tokio::fs::read_to_string(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let idle = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
    let abandoned = idle.is_some_and(|idle| idle > ABANDONED_AFTER);
    let done = text.ends_with("#EXT-X-ENDLIST\n");
    if abandoned && !done {
        // A recording cut short may end in the middle of an entry: only whole ones count.
        if let Some(cut) = text.rfind(".mp4\n").map(|at| at + 5) {
            text.truncate(cut);
        }
        text.push_str("#EXT-X-ENDLIST\n");
    }
    let cache = if done || abandoned { "public, max-age=60" } else { "no-cache" };
    ([(CONTENT_TYPE, PLAYLIST_MIME), (CACHE_CONTROL, cache)], text).into_response()
}

/// The recording (`mime`), or the one byte range asked for (206); 416 for a range outside
/// it.
async fn media(path: PathBuf, mime: &str, headers: &HeaderMap) -> Result<Response, StatusCode> {
    let mut file = tokio::fs::File::open(&path).await.map_err(|_| StatusCode::NOT_FOUND)?;
    let len = file.metadata().await.map_err(|_| StatusCode::NOT_FOUND)?.len();
    let range = headers.get(RANGE).and_then(|v| v.to_str().ok());
    let (start, end, status) = match range.map(|range| parse_range(range, len)) {
        Some(Range::Bytes(start, end)) => (start, end, StatusCode::PARTIAL_CONTENT),
        Some(Range::Unsatisfiable) => {
            let unsatisfied = [(CONTENT_RANGE, format!("bytes */{len}"))];
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, unsatisfied).into_response());
        }
        // No range, or one not served here: the whole file (RFC 9110 §14.2).
        None | Some(Range::Ignored) => (0, len, StatusCode::OK),
    };
    file.seek(SeekFrom::Start(start)).await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let body = futures_util::stream::unfold(
        (file.take(end - start), vec![0; CHUNK]),
        |(mut file, mut buf)| async move {
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    Some((Ok::<_, std::io::Error>(Bytes::copy_from_slice(&buf[..n])), (file, buf)))
                }
                Err(e) => Some((Err(e), (file, buf))),
            }
        },
    );
    let mut response = (status, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, mime.parse().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?);
    headers.insert(ACCEPT_RANGES, "bytes".parse().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?);
    headers.insert(CONTENT_LENGTH, (end - start).into());
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        headers
            .insert(CONTENT_RANGE, value.parse().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?);
    }
    Ok(response)
}

/// What a Range header asks of a file.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Bytes `start..end`.
    Bytes(u64, u64),
    /// A range that starts past the end: 416.
    Unsatisfiable,
    /// Several ranges, another unit, or not a range: the header is ignored (RFC 9110 §14.2;
    /// players ask for one range).
    Ignored,
}

/// One range of `bytes=first-last`, `bytes=first-` or `bytes=-suffix` within `len` bytes.
fn parse_range(range: &str, len: u64) -> Range {
    let Some(spec) = range.trim().strip_prefix("bytes=").filter(|s| !s.contains(',')) else {
        return Range::Ignored;
    };
    let Some((first, last)) = spec.split_once('-') else { return Range::Ignored };
    let number = |text: &str| text.parse::<u64>().ok();
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => return Range::Unsatisfiable,
            Some(suffix) => (len.saturating_sub(suffix), len),
            None => return Range::Ignored,
        },
        (first, "") => match number(first) {
            Some(first) => (first, len),
            None => return Range::Ignored,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => (first, last.saturating_add(1).min(len)),
            _ => return Range::Ignored,
        },
    };
    if start < end { Range::Bytes(start, end) } else { Range::Unsatisfiable }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Range::Bytes(0, 100));
        assert_eq!(parse_range("bytes=900-", 1000), Range::Bytes(900, 1000));
        assert_eq!(parse_range("bytes=-100", 1000), Range::Bytes(900, 1000));
        assert_eq!(parse_range("bytes=990-2000", 1000), Range::Bytes(990, 1000));
        for unsatisfiable in ["bytes=1000-", "bytes=2000-3000", "bytes=-0"] {
            assert_eq!(parse_range(unsatisfiable, 1000), Range::Unsatisfiable, "{unsatisfiable}");
        }
        for ignored in ["bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=x-1", "nonsense"] {
            assert_eq!(parse_range(ignored, 1000), Range::Ignored, "{ignored}");
        }
    }
}
