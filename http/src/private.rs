//! Private streams on the HLS routes: where a viewer's credential is read from, the 401 and
//! 403 answers (which carry no stream data), and playlists whose media URIs carry a
//! signature. Who may watch is [`auth::viewer`]'s decision.
//!
//! A viewer's token is the platform's login: AuthX keeps it in the cookie
//! `access_token_cookie`; players that set headers send `Authorization: Bearer`; players that
//! can do neither put it in the playlist URL as `?token=` (hls.js keeps a playlist URL's query
//! on every reload). A private stream's playlist needs one; its media (init, segments,
//! parts) need the signature its playlist gave them, or a token.

use std::time::SystemTime;

use auth::viewer::{ViewerAccess, ViewerRefused};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

/// The cookie AuthX keeps the access token in (its `JWT_ACCESS_COOKIE_NAME` default).
pub const TOKEN_COOKIE: &str = "access_token_cookie";
/// The query parameter a player without cookies or headers puts the token in.
pub const TOKEN_PARAM: &str = "token";
/// The challenge of a 401 (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"rtmp-hls\"";

/// The viewer token a request carries: `Authorization: Bearer`, else the cookie, else the
/// query parameter.
pub(crate) fn viewer_token<'a>(headers: &'a HeaderMap, query: &'a str) -> Option<&'a str> {
    bearer(headers)
        .or_else(|| token_cookie(headers))
        .or_else(|| {
            query.split('&').find_map(|pair| pair.strip_prefix(TOKEN_PARAM)?.strip_prefix('='))
        })
        .map(|token| token.trim_matches('"'))
        .filter(|token| !token.is_empty())
}

/// The value of a request's [`TOKEN_COOKIE`], if any (the first; other cookies are not read).
pub(crate) fn token_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
}

/// The bearer token of a request's `Authorization` header, if any (RFC 6750 §2.1).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
}

/// Whether media of private stream `name` may go to a request with `headers` and `query`:
/// a valid signature, or else a token that may watch the stream.
pub(crate) fn media_allowed(
    access: &ViewerAccess,
    name: &str,
    headers: &HeaderMap,
    query: &str,
) -> Result<(), ViewerRefused> {
    match access.media(name, query, SystemTime::now()) {
        Ok(()) => Ok(()),
        Err(refused) => match viewer_token(headers, query) {
            Some(token) => access.admit(name, Some(token)).map(|_| ()),
            None => Err(refused),
        },
    }
}

/// The answer to a refused viewer: 401 with a challenge, or 403; the reason as text, never
/// the stream's data, never stored by a cache.
pub(crate) fn refusal(refused: &ViewerRefused) -> Response {
    let (status, text) = match refused {
        ViewerRefused::Unauthenticated(text) => (StatusCode::UNAUTHORIZED, text),
        ViewerRefused::Forbidden(text) => (StatusCode::FORBIDDEN, text),
    };
    let mut response = (status, format!("{text}\n")).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    response
}

/// `playlist` with `query` added to every URI it lists: segment lines, and the `URI`
/// attributes of tags (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT).
pub(crate) fn sign_playlist(playlist: &[u8], query: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(playlist.len() + playlist.len() / 2);
    for line in playlist.split_inclusive(|&b| b == b'\n') {
        let (text, end) = match line.strip_suffix(b"\n") {
            Some(text) => (text, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        if text.starts_with(b"#") {
            let mut rest = text;
            while let Some(at) = find(rest, b"URI=\"") {
                let value_start = at + 5;
                let Some(len) = rest[value_start..].iter().position(|&b| b == b'"') else {
                    break;
                };
                let value_end = value_start + len;
                out.put_slice(&rest[..value_end]);
                put_query(&mut out, &rest[value_start..value_end], query);
                rest = &rest[value_end..];
            }
            out.put_slice(rest);
        } else if text.is_empty() {
            out.put_slice(text);
        } else {
            out.put_slice(text);
            put_query(&mut out, text, query);
        }
        out.put_slice(end);
    }
    out.freeze()
}

fn put_query(out: &mut BytesMut, uri: &[u8], query: &str) {
    out.put_u8(if uri.contains(&b'?') { b'&' } else { b'?' });
    out.put_slice(query.as_bytes());
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_the_cookie_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(viewer_token(&headers, ""), None);
        assert_eq!(viewer_token(&headers, "_HLS_msn=3&token=q.q.q"), Some("q.q.q"));
        assert_eq!(viewer_token(&headers, "tokens=x"), None);
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; access_token_cookie=c.c.c"));
        assert_eq!(viewer_token(&headers, "token=q.q.q"), Some("c.c.c"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer h.h.h"));
        assert_eq!(viewer_token(&headers, "token=q.q.q"), Some("h.h.h"));
        let mut other = HeaderMap::new();
        other.append(COOKIE, HeaderValue::from_static("a=1"));
        other.append(COOKIE, HeaderValue::from_static("access_token_cookie=\"d.d.d\""));
        assert_eq!(viewer_token(&other, ""), Some("d.d.d"));
        other.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(viewer_token(&other, ""), Some("d.d.d"));
    }

    #[test]
    fn every_listed_uri_is_signed() {
        let playlist = b"#EXTM3U\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXTINF:2.000,\n1-0.m4s\n\
#EXT-X-PART:DURATION=0.3,URI=\"1-1.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1-1.1.m4s\"\n";
        let signed = sign_playlist(playlist, "exp=10&sig=abc");
        assert_eq!(
            std::str::from_utf8(&signed).unwrap(),
            "#EXTM3U\n#EXT-X-MAP:URI=\"init-1.mp4?exp=10&sig=abc\"\n#EXTINF:2.000,\n\
1-0.m4s?exp=10&sig=abc\n#EXT-X-PART:DURATION=0.3,URI=\"1-1.0.m4s?exp=10&sig=abc\",\
INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1-1.1.m4s?exp=10&sig=abc\"\n"
        );
        // A URI with a query gets `&`; a last line without a newline is kept so.
        assert_eq!(&sign_playlist(b"a.ts?x=1\nb.ts", "s=1")[..], b"a.ts?x=1&s=1\nb.ts?s=1");
    }

    #[test]
    fn refusals_carry_a_reason_and_no_data() {
        let response = refusal(&ViewerRefused::Unauthenticated("log in".into()));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let response = refusal(&ViewerRefused::Forbidden("not yours".into()));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
