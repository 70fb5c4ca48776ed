//! Who may watch a private stream, and the signed media URLs that let a player fetch its
//! media without sending a credential each time.
//!
//! A private stream's playlist needs a viewer token: the platform's login (an AuthX access
//! token; where it is read from, cookie, `Authorization: Bearer` or `?token=`, is HTTP's
//! business), verified with the configured key by [`JwtVerifier::verify_viewer`] (refresh
//! tokens refused), and meeting the configured [`ClaimRule`], so the platform's backend
//! decides who may watch what. The playlist then lists its media with a signature
//! ([`UrlSigner`]): HMAC-SHA256 (RFC 2104) over the stream name and an expiry. A player that
//! cannot send the cookie with every request still gets the media, a CDN can cache the media
//! under a key without the query, and a URL copied elsewhere stops working at its expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::jwt::{JwtVerifier, ViewerClaims};
use crate::key_store::KeyStoreError;

type HmacSha256 = Hmac<Sha256>;

/// How long a signed media URL works by default: a player fetches what a playlist lists
/// within a few target durations; a paused player past this reloads the playlist (with its
/// token) and gets fresh URLs.
pub const SIGNED_URL_TTL: Duration = Duration::from_secs(300);
/// Expiries are rounded up to a multiple of this many seconds, so every viewer's playlist
/// carries the same signature for that long, and a low-latency player sees the URI of a
/// hinted part unchanged when the part is listed (players match them by URI) except once a
/// minute.
pub const EXPIRY_STEP_SECONDS: u64 = 60;
/// Shortest signing secret accepted: 256 bits, the HMAC-SHA256 key size RFC 2104 §3 advises.
pub const MIN_SIGNING_SECRET_LEN: usize = 32;
/// Bytes of the MAC kept in a URL: 128 bits (RFC 2104 §5 allows truncation to half).
const TAG_BYTES: usize = 16;
/// Base64url characters of a [`TAG_BYTES`] tag.
const TAG_CHARS: usize = 22;
/// Longest `exp` value read (a u64 has 20 digits).
const MAX_EXPIRY_DIGITS: usize = 20;
/// Binds the MAC to this use, so no other message signed with the key is a valid URL.
const CONTEXT: &[u8] = b"rtmp-hls signed media v1\0";
/// The query parameter carrying the expiry (seconds since the epoch).
pub const EXPIRY_PARAM: &str = "exp";
/// The query parameter carrying the signature (base64url).
pub const SIGNATURE_PARAM: &str = "sig";

/// Signs and checks media URLs of private streams.
#[derive(Clone)]
pub struct UrlSigner {
    mac: HmacSha256,
    ttl_seconds: u64,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner").field("ttl_seconds", &self.ttl_seconds).finish_non_exhaustive()
    }
}

/// A signing secret that is too short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the URL signing secret needs at least {MIN_SIGNING_SECRET_LEN} bytes, this one has {0}")]
pub struct WeakSecret(pub usize);

/// Why a media request's signature does not admit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefused {
    /// No `exp` and `sig` parameters.
    #[error("the media URL is not signed")]
    Missing,
    /// They are there but not a signature's shape.
    #[error("the media URL's signature is malformed")]
    Malformed,
    /// The signature is not ours for this stream and expiry.
    #[error("the media URL's signature is invalid")]
    Invalid,
    /// It was ours, and expired.
    #[error("the media URL expired; reload the playlist")]
    Expired,
}

impl UrlSigner {
    /// A signer with `secret` (at least [`MIN_SIGNING_SECRET_LEN`] bytes) whose URLs work for
    /// `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SIGNING_SECRET_LEN {
            return Err(WeakSecret(secret.len()));
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| WeakSecret(secret.len()))?;
        Ok(Self { mac, ttl_seconds: ttl.as_secs().max(1) })
    }

    /// A signer with a random secret: URLs it signs work on this process only (nodes behind
    /// one name need a shared secret).
    pub fn random(ttl: Duration) -> Result<Self, KeyStoreError> {
        let mut secret = [0u8; MIN_SIGNING_SECRET_LEN];
        getrandom::fill(&mut secret).map_err(|e| KeyStoreError(format!("no randomness: {e}")))?;
        Self::new(&secret, ttl).map_err(|e| KeyStoreError(e.to_string()))
    }

    /// The query (`exp=…&sig=…`, no `?`) that admits media of `stream` until `ttl` after
    /// `now`, rounded up to [`EXPIRY_STEP_SECONDS`].
    pub fn query(&self, stream: &str, now: SystemTime) -> String {
        let deadline = unix_seconds(now).saturating_add(self.ttl_seconds);
        let expiry = deadline.div_ceil(EXPIRY_STEP_SECONDS).saturating_mul(EXPIRY_STEP_SECONDS);
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&self.tag(stream, expiry)[..TAG_BYTES]);
        format!("{EXPIRY_PARAM}={expiry}&{SIGNATURE_PARAM}={tag}")
    }

    /// Whether `query` (a request's query string, without `?`) signs media of `stream` and
    /// has not expired at `now`.
    pub fn check(
        &self,
        stream: &str,
        query: &str,
        now: SystemTime,
    ) -> Result<(), SignatureRefused> {
        let mut expiry = None;
        let mut signature = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((EXPIRY_PARAM, value)) => expiry = Some(value),
                Some((SIGNATURE_PARAM, value)) => signature = Some(value),
                _ => {}
            }
        }
        let (expiry, signature) = match (expiry, signature) {
            (None, None) => return Err(SignatureRefused::Missing),
            (Some(expiry), Some(signature)) => (expiry, signature),
            _ => return Err(SignatureRefused::Malformed),
        };
        if expiry.is_empty()
            || expiry.len() > MAX_EXPIRY_DIGITS
            || !expiry.bytes().all(|b| b.is_ascii_digit())
            || signature.len() != TAG_CHARS
        {
            return Err(SignatureRefused::Malformed);
        }
        let expiry: u64 = expiry.parse().map_err(|_| SignatureRefused::Malformed)?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| SignatureRefused::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(&message(stream, expiry));
        mac.verify_truncated_left(&tag).map_err(|_| SignatureRefused::Invalid)?;
        if unix_seconds(now) > expiry {
            return Err(SignatureRefused::Expired);
        }
        Ok(())
    }

    fn tag(&self, stream: &str, expiry: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(&message(stream, expiry));
        mac.finalize().into_bytes().into()
    }
}

/// What is signed: the context, the stream name and the expiry, unambiguous (a stream name
/// has no NUL).
fn message(stream: &str, expiry: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + stream.len() + 21);
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(stream.as_bytes());
    message.push(0);
    message.extend_from_slice(expiry.to_string().as_bytes());
    message
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a viewer token must also claim to watch a private stream, beyond being valid
/// (`--viewer-claim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRule {
    /// `NAME`: the claim lists the stream (a string, or a list of strings; `*` is every
    /// stream), as a backend puts the streams a subscriber may watch in the token.
    ListsStream(String),
    /// `NAME=VALUE`: the claim is the value, or a list holding it (a role).
    Has {
        /// The claim.
        claim: String,
        /// The value it must have.
        value: String,
    },
}

/// Bytes of a `--viewer-claim`'s claim name: JWT claim names are short words (`sub`,
/// `streams`, `role`); a longer one is a mistake in the setting.
const MAX_CLAIM_NAME: usize = 64;

/// A `--viewer-claim` that is not `NAME` or `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a viewer claim is NAME (the claim lists the stream) or NAME=VALUE, not {0:?}")]
pub struct InvalidClaimRule(pub String);

impl std::str::FromStr for ClaimRule {
    type Err = InvalidClaimRule;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidClaimRule(text.to_owned());
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= MAX_CLAIM_NAME
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
        };
        match text.split_once('=') {
            Some((claim, value)) if name_ok(claim) && !value.is_empty() => {
                Ok(Self::Has { claim: claim.to_owned(), value: value.to_owned() })
            }
            None if name_ok(text) => Ok(Self::ListsStream(text.to_owned())),
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Display for ClaimRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ListsStream(claim) => write!(f, "{claim}"),
            Self::Has { claim, value } => write!(f, "{claim}={value}"),
        }
    }
}

/// Every stream, in a [`ClaimRule::ListsStream`] claim.
const EVERY_STREAM: &str = "*";

impl ClaimRule {
    /// Whether `claims` may watch `stream`.
    pub fn allows(&self, claims: &ViewerClaims, stream: &str) -> bool {
        let (claim, wanted) = match self {
            Self::ListsStream(claim) => (claim, None),
            Self::Has { claim, value } => (claim, Some(value.as_str())),
        };
        let matches = |value: &serde_json::Value| match (value, wanted) {
            (serde_json::Value::String(s), None) => s == stream || s == EVERY_STREAM,
            (serde_json::Value::String(s), Some(wanted)) => s == wanted,
            (serde_json::Value::Bool(b), Some(wanted)) => wanted.parse::<bool>() == Ok(*b),
            (serde_json::Value::Number(n), Some(wanted)) => {
                wanted.parse::<serde_json::Number>().is_ok_and(|wanted| wanted == *n)
            }
            _ => false,
        };
        let value = match claim.as_str() {
            "sub" => return claims.sub.as_deref().is_some_and(|s| matches(&s.into())),
            "type" => return claims.token_type.as_deref().is_some_and(|s| matches(&s.into())),
            _ => claims.other.get(claim),
        };
        match value {
            Some(serde_json::Value::Array(items)) => items.iter().any(matches),
            Some(value) => matches(value),
            None => false,
        }
    }
}

/// A viewer let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's subject (the platform's user id), when it has one.
    pub subject: Option<String>,
}

/// Why a viewer is not let in; the text is safe to show the viewer (never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewerRefused {
    /// No usable credential (none, expired, invalid): 401, log in again.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential that does not allow this stream: 403.
    #[error("{0}")]
    Forbidden(String),
}

/// Verified viewer tokens kept this long at most (and never past their `exp`): a player
/// sends its token with every playlist request, several a second in low latency, and
/// verifying a signature (RS256, ES256) costs tens of microseconds.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);
/// Verified tokens kept at once; when full the cache starts again empty. Only tokens that
/// verified are kept, so filling it takes that many valid tokens.
pub const MAX_CACHED_TOKENS: usize = 4096;

/// The viewer side of authorisation: tokens for private streams' playlists, signatures for
/// their media.
#[derive(Debug)]
pub struct ViewerAccess {
    verifier: Option<Arc<JwtVerifier>>,
    rule: Option<ClaimRule>,
    signer: UrlSigner,
    /// Token → its claims and until when they may be reused.
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// A verified token's claims, and until when (seconds since the epoch) they may be reused.
type Verified = (Arc<ViewerClaims>, f64);

impl ViewerAccess {
    /// Viewer tokens verified by `verifier` (none configured: private streams can be watched
    /// by nobody), meeting `rule`; media URLs signed by `signer`.
    pub fn new(
        verifier: Option<Arc<JwtVerifier>>,
        rule: Option<ClaimRule>,
        signer: UrlSigner,
    ) -> Self {
        Self { verifier, rule, signer, verified: Mutex::default() }
    }

    /// The claims of viewer token `token`, verified now or within [`TOKEN_CACHE_TTL`].
    fn claims(
        &self,
        verifier: &JwtVerifier,
        token: &str,
    ) -> Result<Arc<ViewerClaims>, crate::jwt::TokenRejected> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((claims, until)) = verified.get(token)
            && now < *until
        {
            return Ok(Arc::clone(claims));
        }
        drop(verified);
        let claims = Arc::new(verifier.verify_viewer(token)?);
        let until = claims.exp.unwrap_or(now).min(now + TOKEN_CACHE_TTL.as_secs_f64());
        verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_CACHED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), (Arc::clone(&claims), until));
        Ok(claims)
    }

    /// Whether the holder of `token` may watch private stream `stream`.
    pub fn admit(&self, stream: &str, token: Option<&str>) -> Result<Viewer, ViewerRefused> {
        let Some(token) = token else {
            return Err(ViewerRefused::Unauthenticated(
                "this stream is private: log in (a viewer token is needed)".into(),
            ));
        };
        let Some(verifier) = &self.verifier else {
            return Err(ViewerRefused::Forbidden(
                "this stream is private and the server has no key to verify viewer tokens".into(),
            ));
        };
        let claims =
            self.claims(verifier, token).map_err(|e| ViewerRefused::Unauthenticated(e.0))?;
        if let Some(rule) = &self.rule
            && !rule.allows(&claims, stream)
        {
            return Err(ViewerRefused::Forbidden(format!(
                "the viewer token does not allow this stream (claim {rule})"
            )));
        }
        Ok(Viewer { subject: claims.sub.clone() })
    }

    /// The subject of `token` if it is a valid viewer token, whatever it may watch: who a
    /// viewer of a public stream is, for counting sessions.
    pub fn subject(&self, token: &str) -> Option<String> {
        self.claims(self.verifier.as_ref()?, token).ok()?.sub.clone()
    }

    /// Whether media of private stream `stream` may be served to a request with `query`
    /// (see [`UrlSigner::check`]).
    pub fn media(&self, stream: &str, query: &str, now: SystemTime) -> Result<(), ViewerRefused> {
        match self.signer.check(stream, query, now) {
            Ok(()) => Ok(()),
            Err(SignatureRefused::Missing) => Err(ViewerRefused::Unauthenticated(
                "this stream is private: its media URLs are signed (take them from the playlist)"
                    .into(),
            )),
            Err(refused) => Err(ViewerRefused::Forbidden(refused.to_string())),
        }
    }

    /// The signer of media URLs.
    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn signer() -> UrlSigner {
        UrlSigner::new(SECRET, Duration::from_secs(300)).unwrap()
    }

    #[test]
    fn signed_queries_admit_their_stream_until_they_expire() {
        let signer = signer();
        let query = signer.query("cam", at(1_000_003));
        // Rounded up: the same text for every viewer within a step.
        assert!(query.starts_with("exp=1000320&sig="), "{query}");
        assert_eq!(query, signer.query("cam", at(1_000_019)));
        assert_eq!(signer.check("cam", &query, at(1_000_100)), Ok(()));
        assert_eq!(signer.check("cam", &query, at(1_000_320)), Ok(()));
        assert_eq!(signer.check("cam", &query, at(1_000_321)), Err(SignatureRefused::Expired));
        // Another stream, a changed expiry, another key: refused.
        assert_eq!(signer.check("door", &query, at(1_000_100)), Err(SignatureRefused::Invalid));
        let later = query.replace("exp=1000320", "exp=9000320");
        assert_eq!(signer.check("cam", &later, at(1_000_100)), Err(SignatureRefused::Invalid));
        let other = UrlSigner::new(&[7; 32], Duration::from_secs(300)).unwrap();
        assert_eq!(other.check("cam", &query, at(1_000_100)), Err(SignatureRefused::Invalid));
        // Other parameters around it do not matter.
        let around = format!("x=1&{query}&_HLS_msn=3");
        assert_eq!(signer.check("cam", &around, at(1_000_100)), Ok(()));
    }

    #[test]
    fn malformed_and_missing_signatures() {
        let signer = signer();
        assert_eq!(signer.check("cam", "", at(0)), Err(SignatureRefused::Missing));
        assert_eq!(signer.check("cam", "token=abc", at(0)), Err(SignatureRefused::Missing));
        for bad in [
            "exp=1",
            "sig=AAAAAAAAAAAAAAAAAAAAAA",
            "exp=&sig=AAAAAAAAAAAAAAAAAAAAAA",
            "exp=-1&sig=AAAAAAAAAAAAAAAAAAAAAA",
            "exp=123456789012345678901&sig=AAAAAAAAAAAAAAAAAAAAAA",
            "exp=99999999999999999999&sig=AAAAAAAAAAAAAAAAAAAAAA",
            "exp=10&sig=short",
            "exp=10&sig=!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(signer.check("cam", bad, at(0)), Err(SignatureRefused::Malformed), "{bad}");
        }
        assert_eq!(
            signer.check("cam", "exp=10&sig=AAAAAAAAAAAAAAAAAAAAAA", at(0)),
            Err(SignatureRefused::Invalid)
        );
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_key() {
        assert_eq!(UrlSigner::new(b"short", SIGNED_URL_TTL).unwrap_err(), WeakSecret(5));
        let debug = format!("{:?}", signer());
        assert!(!debug.contains("0123"), "{debug}");
        let a = UrlSigner::random(SIGNED_URL_TTL).unwrap();
        let b = UrlSigner::random(SIGNED_URL_TTL).unwrap();
        assert_ne!(a.query("cam", at(0)), b.query("cam", at(0)));
    }

    fn claims(json: serde_json::Value) -> ViewerClaims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn claim_rules() {
        assert_eq!("streams".parse(), Ok(ClaimRule::ListsStream("streams".into())));
        assert_eq!(
            "role=subscriber".parse(),
            Ok(ClaimRule::Has { claim: "role".into(), value: "subscriber".into() })
        );
        for bad in ["", "=x", "role=", "a b", &"x".repeat(MAX_CLAIM_NAME + 1)] {
            assert!(bad.parse::<ClaimRule>().is_err(), "{bad}");
        }
        assert!("x".repeat(MAX_CLAIM_NAME).parse::<ClaimRule>().is_ok());
        let lists = ClaimRule::ListsStream("streams".into());
        assert!(lists.allows(&claims(serde_json::json!({"streams": ["a", "cam"]})), "cam"));
        assert!(lists.allows(&claims(serde_json::json!({"streams": "cam"})), "cam"));
        assert!(lists.allows(&claims(serde_json::json!({"streams": "*"})), "cam"));
        assert!(!lists.allows(&claims(serde_json::json!({"streams": ["a"]})), "cam"));
        assert!(!lists.allows(&claims(serde_json::json!({"streams": {"cam": true}})), "cam"));
        assert!(!lists.allows(&claims(serde_json::json!({})), "cam"));
        let role: ClaimRule = "role=subscriber".parse().unwrap();
        assert!(role.allows(&claims(serde_json::json!({"role": "subscriber"})), "cam"));
        assert!(role.allows(&claims(serde_json::json!({"role": ["x", "subscriber"]})), "cam"));
        assert!(!role.allows(&claims(serde_json::json!({"role": "viewer"})), "cam"));
        let flag: ClaimRule = "premium=true".parse().unwrap();
        assert!(flag.allows(&claims(serde_json::json!({"premium": true})), "cam"));
        assert!(!flag.allows(&claims(serde_json::json!({"premium": false})), "cam"));
        let tier: ClaimRule = "tier=2".parse().unwrap();
        assert!(tier.allows(&claims(serde_json::json!({"tier": 2})), "cam"));
        assert!(!tier.allows(&claims(serde_json::json!({"tier": 3})), "cam"));
        let user: ClaimRule = "sub=user-1".parse().unwrap();
        assert!(user.allows(&claims(serde_json::json!({"sub": "user-1"})), "cam"));
    }

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn now() -> u64 {
        unix_seconds(SystemTime::now())
    }

    #[test]
    fn private_streams_need_a_valid_token_meeting_the_rule() {
        let verifier = Arc::new(JwtVerifier::from_secret(SECRET));
        let rule = Some(ClaimRule::ListsStream("streams".into()));
        let access = ViewerAccess::new(Some(verifier), rule, signer());
        let allowed =
            token(serde_json::json!({"sub": "u1", "exp": now() + 60, "streams": ["cam"]}));
        assert_eq!(access.admit("cam", Some(&allowed)), Ok(Viewer { subject: Some("u1".into()) }));
        assert!(matches!(access.admit("door", Some(&allowed)), Err(ViewerRefused::Forbidden(_))));
        assert!(matches!(access.admit("cam", None), Err(ViewerRefused::Unauthenticated(_))));
        assert!(matches!(
            access.admit("cam", Some("junk")),
            Err(ViewerRefused::Unauthenticated(_))
        ));
        let refresh = token(serde_json::json!({
            "sub": "u1", "exp": now() + 60, "streams": ["cam"], "type": "refresh",
        }));
        assert!(matches!(
            access.admit("cam", Some(&refresh)),
            Err(ViewerRefused::Unauthenticated(_))
        ));
        assert_eq!(access.subject(&allowed).as_deref(), Some("u1"));
        // Verified once, then answered from the cache (for its subject and for the rule).
        assert_eq!(access.verified.lock().unwrap().len(), 1);
        assert!(matches!(access.admit("door", Some(&allowed)), Err(ViewerRefused::Forbidden(_))));
        let expired =
            token(serde_json::json!({"sub": "u1", "exp": now() - 60, "streams": ["cam"]}));
        assert!(matches!(
            access.admit("cam", Some(&expired)),
            Err(ViewerRefused::Unauthenticated(_))
        ));
        assert_eq!(access.subject("junk"), None);
        // Without a verification key nobody watches.
        let keyless = ViewerAccess::new(None, None, signer());
        assert!(matches!(keyless.admit("cam", Some(&allowed)), Err(ViewerRefused::Forbidden(_))));
        // Media: signed, or 401 without a signature and 403 with a bad one.
        let query = access.signer().query("cam", SystemTime::now());
        assert_eq!(access.media("cam", &query, SystemTime::now()), Ok(()));
        assert!(matches!(
            access.media("cam", "", SystemTime::now()),
            Err(ViewerRefused::Unauthenticated(_))
        ));
        assert!(matches!(
            access.media("door", &query, SystemTime::now()),
            Err(ViewerRefused::Forbidden(_))
        ));
    }
}
