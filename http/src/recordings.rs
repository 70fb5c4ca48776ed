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
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{FMP4_MIME, PLAYLIST_MIME};

/// MIME type of FLV recordings.
const FLV_MIME: &str = "video/x-flv";
/// Bytes read from a recording per body chunk.
const CHUNK: usize = 64 << 10;
/// Bytes read from the end of a recording's playlist to see how it ends: its last entry
/// (an EXTINF, a BYTERANGE and a file name, under 200 bytes) and EXT-X-ENDLIST.
const PLAYLIST_TAIL: u64 = 4 << 10;
/// The end of a complete playlist.
const ENDLIST: &[u8] = b"#EXT-X-ENDLIST\n";
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
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(meta) = file.metadata().await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = meta.len();
    // The end says whether the recording is complete, and where the last whole entry of
    // one cut short ends: the file itself is sent as it is read, never held whole.
    let tail_start = len.saturating_sub(PLAYLIST_TAIL);
    let mut tail = Vec::new();
    let read = async {
        file.seek(SeekFrom::Start(tail_start)).await?;
        (&mut file).take(len - tail_start).read_to_end(&mut tail).await?;
        file.seek(SeekFrom::Start(0)).await
    };
    if read.await.is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let idle = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
    let abandoned = idle.is_some_and(|idle| idle > ABANDONED_AFTER);
    let ending = served_playlist(&tail, tail_start, len, abandoned);
    let cache = if ending.complete { "public, max-age=60" } else { "no-cache" };
    let suffix: &[u8] = if ending.add_endlist { ENDLIST } else { b"" };
    let body = file_chunks(file.take(ending.len))
        .chain(futures_util::stream::iter([Ok(Bytes::from_static(suffix))]));
    let mut response =
        ([(CONTENT_TYPE, PLAYLIST_MIME), (CACHE_CONTROL, cache)], Body::from_stream(body))
            .into_response();
    response.headers_mut().insert(CONTENT_LENGTH, (ending.len + suffix.len() as u64).into());
    response
}

/// What of a recording's playlist of `len` bytes is served, from its last bytes `tail`
/// (starting at `tail_start`).
#[derive(Debug, PartialEq, Eq)]
struct PlaylistEnding {
    /// Bytes of the file served.
    len: u64,
    /// The writer never wrote EXT-X-ENDLIST (it was cut short): it is added.
    add_endlist: bool,
    /// The playlist will not change.
    complete: bool,
}

/// A playlist that ends with EXT-X-ENDLIST is served whole; one `abandoned` without it (the
/// server was killed) up to its last whole entry, which may have been cut in the middle,
/// then EXT-X-ENDLIST; one being written whole, as it is.
fn served_playlist(tail: &[u8], tail_start: u64, len: u64, abandoned: bool) -> PlaylistEnding {
    if tail.ends_with(ENDLIST) {
        return PlaylistEnding { len, add_endlist: false, complete: true };
    }
    if !abandoned {
        return PlaylistEnding { len, add_endlist: false, complete: false };
    }
    let entry_end = tail.windows(5).rposition(|w| w == b".mp4\n").map(|at| at + 5);
    let len = entry_end.map_or(len, |end| tail_start + end as u64);
    PlaylistEnding { len, add_endlist: true, complete: true }
}

/// `file`'s bytes as body chunks of at most [`CHUNK`], read as the body is sent.
fn file_chunks(
    file: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold((file, vec![0; CHUNK]), |(mut file, mut buf)| async move {
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => Some((Ok(Bytes::copy_from_slice(&buf[..n])), (file, buf))),
            Err(e) => Some((Err(e), (file, buf))),
        }
    })
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
    let mut response =
        (status, Body::from_stream(file_chunks(file.take(end - start)))).into_response();
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
    fn playlists_are_served_to_their_last_whole_entry() {
        let entry = "#EXTINF:2.000,\n#EXT-X-BYTERANGE:10@5\ncam-t.mp4\n";
        let head = "#EXTM3U\n";
        let done = format!("{head}{entry}#EXT-X-ENDLIST\n");
        let len = |text: &str| text.len() as u64;
        for abandoned in [false, true] {
            let ending = served_playlist(done.as_bytes(), 0, len(&done), abandoned);
            assert_eq!(
                ending,
                PlaylistEnding { len: len(&done), add_endlist: false, complete: true }
            );
        }
        let cut = format!("{head}{entry}#EXTINF:2.0");
        let live = served_playlist(cut.as_bytes(), 0, len(&cut), false);
        assert_eq!(live, PlaylistEnding { len: len(&cut), add_endlist: false, complete: false });
        // Cut short: to the end of the last whole entry, from a tail that starts mid-file.
        let tail = &cut.as_bytes()[4..];
        let ending = served_playlist(tail, 4, len(&cut), true);
        let whole = len(head) + len(entry);
        assert_eq!(ending, PlaylistEnding { len: whole, add_endlist: true, complete: true });
    }

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
