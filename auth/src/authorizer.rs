//! The publish decision: a JWT publish token or a stored key, under a timeout, with failed
//! attempts rate-limited per remote address before any lookup.
//!
//! Accepted key forms (the RTMP publishing name):
//! - `<key>`: a stored key (anything after a `?` is ignored, as encoders add query strings);
//! - `<jwt>`: a publish token; the stream is its `stream` claim;
//! - `<stream>?token=<jwt>` (or `jwt=`): a publish token that must be for `<stream>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::failure_limiter::{FailureLimiter, FailureLimits};
use crate::jwt::{JwtVerifier, TokenRejected, looks_like_jwt};
use crate::key_store::{Grant, KeyStore, MAX_TOKEN_ID_LEN, Revocation, is_valid_token_id};

/// How old what the store read may be when it answers a live publish's re-check: the embedded
/// store then reads its file once for every stream re-checked within it, not once per stream.
/// A revocation reaches a live publish within the re-check interval plus this.
pub const RECHECK_MAX_AGE: Duration = Duration::from_secs(1);

/// Why a publish is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No stream has this key (or it was revoked).
    #[error("invalid stream key")]
    UnknownKey,
    /// The publish token does not verify.
    #[error("{0}")]
    Token(TokenRejected),
    /// The publish token is for another stream than the one named.
    #[error("publish token is for another stream")]
    WrongStream,
    /// Too many failed attempts from this address.
    #[error("too many failed publish attempts from this address; retry later")]
    RateLimited,
    /// The key store failed or did not answer in time (the publish fails closed).
    #[error("stream keys cannot be checked right now; try again shortly")]
    Unavailable(String),
}

/// Decides publishes.
#[derive(Debug)]
pub struct Authorizer {
    store: Arc<dyn KeyStore>,
    jwt: Option<Arc<JwtVerifier>>,
    failures: FailureLimiter,
    timeout: Duration,
}

impl Authorizer {
    /// Stored keys from `store`, publish tokens verified by `jwt` if configured; a lookup may
    /// take `timeout`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        jwt: Option<Arc<JwtVerifier>>,
        failures: FailureLimits,
        timeout: Duration,
    ) -> Self {
        Self { store, jwt, failures: FailureLimiter::new(failures), timeout }
    }

    /// Decides whether `key`, from `ip`, may publish.
    pub async fn authorize(&self, ip: IpAddr, key: &str) -> Result<Grant, Denial> {
        // The attempt counts as failed from its start and is given back unless it failed, so
        // attempts decided at once cannot pass more lookups than the allowance (and no more
        // than the allowance of an address's publishes are decided at once: lookups take
        // milliseconds).
        if !self.failures.take(ip, Instant::now()) {
            return Err(Denial::RateLimited);
        }
        let result = self.decide(key, None).await;
        if !matches!(result, Err(Denial::UnknownKey | Denial::Token(_) | Denial::WrongStream)) {
            self.failures.refund(ip, Instant::now());
        }
        result
    }

    /// Whether `ip` may try to publish now (it has failed too often otherwise). For a
    /// decision made elsewhere (the `on_publish` callback alone), whose failure
    /// [`Self::note_failure`] counts when it is known: callbacks may take seconds, and a
    /// relay restarting its pushes would have more than the allowance in flight at once.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.failures.allows(ip, Instant::now())
    }

    /// Counts a failed attempt from `ip` decided elsewhere (an `on_publish` refusal).
    pub fn note_failure(&self, ip: IpAddr) {
        self.failures.record_failure(ip, Instant::now());
    }

    /// Whether a grant for `key` still holds, as `revocation` says to check. A token's
    /// expiry does not end a publish it started (tokens are short-lived; streams are not).
    /// The store may answer from what it read up to [`RECHECK_MAX_AGE`] ago.
    pub async fn recheck(&self, key: &str, revocation: &Revocation) -> Recheck {
        match revocation {
            Revocation::Key => match self.decide(key, Some(RECHECK_MAX_AGE)).await {
                Ok(grant) => Recheck::Holds(Some(grant)),
                Err(Denial::Unavailable(_)) => Recheck::Unknown,
                Err(_) => Recheck::Revoked,
            },
            Revocation::Token(jti) => {
                let revoked = self.store.recheck_token_revoked(jti, RECHECK_MAX_AGE);
                match tokio::time::timeout(self.timeout, revoked).await {
                    Ok(Ok(false)) => Recheck::Holds(None),
                    Ok(Ok(true)) => Recheck::Revoked,
                    Ok(Err(_)) | Err(_) => Recheck::Unknown,
                }
            }
        }
    }

    /// `recheck`: a live publish's re-check, which the store may answer from what it read
    /// at most that long ago.
    async fn decide(&self, key: &str, recheck: Option<Duration>) -> Result<Grant, Denial> {
        let (named, rest) = match key.split_once('?') {
            Some((name, query)) => (Some(name), query),
            None => (None, key),
        };
        let token = rest
            .split('&')
            .find_map(|pair| pair.strip_prefix("token=").or_else(|| pair.strip_prefix("jwt=")))
            .or_else(|| looks_like_jwt(key).then_some(key));
        if let (Some(token), Some(verifier)) = (token, &self.jwt) {
            let claims = verifier.verify(token).map_err(Denial::Token)?;
            if named.is_some_and(|name| name != claims.stream) {
                return Err(Denial::WrongStream);
            }
            // A token id that cannot be revoked (the revocation API takes ids of 1 to the
            // limit's bytes) is refused, not taken for a token without one.
            if claims.jti.as_deref().is_some_and(|jti| !is_valid_token_id(jti)) {
                let reason =
                    format!("publish token id empty or longer than {MAX_TOKEN_ID_LEN} bytes");
                return Err(Denial::Token(TokenRejected(reason)));
            }
            let Some(jti) = claims.jti else {
                let private = claims.private;
                return Ok(Grant {
                    push: Vec::new(),
                    record: None,
                    stream: claims.stream,
                    owner: claims.sub,
                    private,
                    revocation: None,
                });
            };
            let revoked =
                match tokio::time::timeout(self.timeout, self.store.token_revoked(&jti)).await {
                    Ok(Ok(revoked)) => revoked,
                    Ok(Err(e)) => return Err(Denial::Unavailable(e.to_string())),
                    Err(_) => {
                        let cause = format!("no answer within {:?}", self.timeout);
                        return Err(Denial::Unavailable(cause));
                    }
                };
            if revoked {
                return Err(Denial::Token(TokenRejected("publish token was revoked".into())));
            }
            let revocation = Some(Revocation::Token(jti));
            let private = claims.private;
            let stream = claims.stream;
            return Ok(Grant {
                stream,
                owner: claims.sub,
                private,
                push: Vec::new(),
                record: None,
                revocation,
            });
        }
        let stored_key = named.unwrap_or(key);
        let lookup = async {
            match recheck {
                Some(max_age) => self.store.recheck_lookup(stored_key, max_age).await,
                None => self.store.lookup(stored_key).await,
            }
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(Some(grant))) => Ok(grant),
            Ok(Ok(None)) => Err(Denial::UnknownKey),
            Ok(Err(e)) => Err(Denial::Unavailable(e.to_string())),
            Err(_) => Err(Denial::Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// What a re-check of a live publish's grant found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// It holds; a stored key's grant as it is now (an operator may have made the stream
    /// private since), a token's `None` (its claims cannot change).
    Holds(Option<Grant>),
    /// The key or the token id was revoked.
    Revoked,
    /// The store cannot tell right now.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_store::KeyStoreError;
    use async_trait::async_trait;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    /// A store with one key, and a switch to make it fail or hang (faults a real store
    /// produces are tested against a real database in the binary's tests).
    struct OneKey {
        mode: std::sync::Mutex<&'static str>,
        /// Lookups asked.
        lookups: std::sync::atomic::AtomicUsize,
        /// The age each re-check allowed, in order.
        rechecks: std::sync::Mutex<Vec<Duration>>,
    }

    #[async_trait]
    impl KeyStore for OneKey {
        async fn lookup(&self, key: &str) -> Result<Option<Grant>, KeyStoreError> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mode = *self.mode.lock().unwrap();
            match mode {
                "fail" => Err(KeyStoreError("connection refused".into())),
                "hang" => std::future::pending().await,
                "slow" => {
                    // Every attempt started is in flight before any is answered.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(None)
                }
                _ => Ok((key == "good").then(|| Grant {
                    stream: "cam".into(),
                    owner: None,
                    private: false,
                    push: Vec::new(),
                    record: None,
                    revocation: Some(Revocation::Key),
                })),
            }
        }

        async fn token_revoked(&self, jti: &str) -> Result<bool, KeyStoreError> {
            match *self.mode.lock().unwrap() {
                "fail" => Err(KeyStoreError("connection refused".into())),
                _ => Ok(jti == "revoked"),
            }
        }

        async fn recheck_lookup(
            &self,
            key: &str,
            max_age: Duration,
        ) -> Result<Option<Grant>, KeyStoreError> {
            self.rechecks.lock().unwrap().push(max_age);
            self.lookup(key).await
        }

        async fn recheck_token_revoked(
            &self,
            jti: &str,
            max_age: Duration,
        ) -> Result<bool, KeyStoreError> {
            self.rechecks.lock().unwrap().push(max_age);
            self.token_revoked(jti).await
        }
    }

    fn authorizer(jwt: Option<JwtVerifier>) -> (Arc<OneKey>, Authorizer) {
        let store = Arc::new(OneKey {
            mode: std::sync::Mutex::new("ok"),
            lookups: std::sync::atomic::AtomicUsize::new(0),
            rechecks: std::sync::Mutex::default(),
        });
        let limits = FailureLimits { burst: 3, per_minute: 1 };
        (
            store.clone(),
            Authorizer::new(store, jwt.map(Arc::new), limits, Duration::from_millis(200)),
        )
    }

    fn token(stream: &str) -> String {
        let exp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                + 60;
        let claims = serde_json::json!({"stream": stream, "sub": "u1", "exp": exp});
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"k")).unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn stored_keys_and_query_strings() {
        let (_, auth) = authorizer(None);
        assert_eq!(auth.authorize(IP, "good").await.unwrap().stream, "cam");
        assert_eq!(auth.authorize(IP, "good?obs=1").await.unwrap().stream, "cam");
        assert_eq!(auth.authorize(IP, "bad").await, Err(Denial::UnknownKey));
    }

    #[tokio::test]
    async fn tokens_name_their_stream_and_cannot_publish_another() {
        let (_, auth) = authorizer(Some(JwtVerifier::from_secret(b"k")));
        let grant = auth.authorize(IP, &token("cam")).await.unwrap();
        assert_eq!(
            (grant.stream.as_str(), grant.owner.as_deref(), grant.revocation),
            ("cam", Some("u1"), None)
        );
        assert_eq!(
            auth.authorize(IP, &format!("cam?token={}", token("cam"))).await.unwrap().stream,
            "cam"
        );
        assert_eq!(
            auth.authorize(IP, &format!("other?token={}", token("cam"))).await,
            Err(Denial::WrongStream)
        );
    }

    /// A token with an id is checked against the store's deny list when it publishes, and
    /// its grant is re-checked by id (not by expiry) while the publish lasts.
    #[tokio::test]
    async fn token_ids_can_be_revoked() {
        let (store, auth) = authorizer(Some(JwtVerifier::from_secret(b"k")));
        let with_id = |jti: &str| {
            let claims = serde_json::json!({"stream": "cam", "exp": u64::MAX / 2, "jti": jti});
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"k"))
                .unwrap()
        };
        let grant = auth.authorize(IP, &with_id("t-1")).await.unwrap();
        assert_eq!(grant.revocation, Some(Revocation::Token("t-1".into())));
        assert_eq!(auth.recheck("", &Revocation::Token("t-1".into())).await, Recheck::Holds(None));
        assert_eq!(auth.recheck("", &Revocation::Token("revoked".into())).await, Recheck::Revoked);
        assert!(matches!(
            auth.authorize(IP, &with_id("revoked")).await,
            Err(Denial::Token(TokenRejected(reason))) if reason.contains("revoked")
        ));
        // An id that cannot be revoked (empty, or too long) is refused, not ignored.
        let (_, fresh) = authorizer(Some(JwtVerifier::from_secret(b"k")));
        assert!(fresh.authorize(IP, &with_id(&"x".repeat(MAX_TOKEN_ID_LEN))).await.is_ok());
        assert!(matches!(
            fresh.authorize(IP, &with_id(&"x".repeat(MAX_TOKEN_ID_LEN + 1))).await,
            Err(Denial::Token(TokenRejected(reason))) if reason.contains("longer than")
        ));
        assert!(matches!(
            fresh.authorize(IP, &with_id("")).await,
            Err(Denial::Token(TokenRejected(reason))) if reason.contains("id empty")
        ));
        // Fail closed when the deny list cannot be read; a live publish is not ended.
        *store.mode.lock().unwrap() = "fail";
        assert!(matches!(auth.authorize(IP, &with_id("t-2")).await, Err(Denial::Unavailable(_))));
        assert_eq!(auth.recheck("", &Revocation::Token("t-1".into())).await, Recheck::Unknown);
    }

    /// A publish asks the store as it is; a live publish's re-check lets it answer from what
    /// it read up to [`RECHECK_MAX_AGE`] ago, for a key and for a token.
    #[tokio::test]
    async fn only_rechecks_may_be_answered_from_a_recent_read() {
        let (store, auth) = authorizer(Some(JwtVerifier::from_secret(b"k")));
        assert!(auth.authorize(IP, "good").await.is_ok());
        assert!(auth.authorize(IP, &token("cam")).await.is_ok());
        assert!(store.rechecks.lock().unwrap().is_empty());
        assert!(matches!(auth.recheck("good", &Revocation::Key).await, Recheck::Holds(Some(_))));
        let revoked = Revocation::Token("revoked".into());
        assert_eq!(auth.recheck("", &revoked).await, Recheck::Revoked);
        assert_eq!(*store.rechecks.lock().unwrap(), [RECHECK_MAX_AGE, RECHECK_MAX_AGE]);
    }

    /// Attempts from one address decided at once pass no more lookups than its allowance of
    /// failures: each takes its share when it starts, not when it has failed.
    #[tokio::test]
    async fn attempts_in_flight_together_are_limited_too() {
        let (store, auth) = authorizer(None);
        *store.mode.lock().unwrap() = "slow";
        let auth = Arc::new(auth);
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.authorize(IP, "bad").await })
            })
            .collect();
        let mut limited = 0;
        for attempt in attempts {
            limited += usize::from(attempt.await.unwrap() == Err(Denial::RateLimited));
        }
        assert_eq!(store.lookups.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(limited, 17);
        // A right key from an address with allowance left gives its attempt back.
        *store.mode.lock().unwrap() = "ok";
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        for _ in 0..5 {
            assert!(auth.authorize(other, "good").await.is_ok());
        }
    }

    #[tokio::test]
    async fn failures_are_rate_limited_before_any_lookup() {
        let (store, auth) = authorizer(None);
        for _ in 0..3 {
            assert_eq!(auth.authorize(IP, "bad").await, Err(Denial::UnknownKey));
        }
        // Even the right key is refused now, without asking the store (which would fail).
        *store.mode.lock().unwrap() = "fail";
        assert_eq!(auth.authorize(IP, "good").await, Err(Denial::RateLimited));
    }

    #[tokio::test]
    async fn an_unavailable_store_fails_closed_and_is_not_counted_as_a_failure() {
        let (store, auth) = authorizer(None);
        *store.mode.lock().unwrap() = "fail";
        for _ in 0..5 {
            assert!(matches!(auth.authorize(IP, "good").await, Err(Denial::Unavailable(_))));
        }
        *store.mode.lock().unwrap() = "hang";
        assert!(matches!(auth.authorize(IP, "good").await, Err(Denial::Unavailable(_))));
        assert_eq!(auth.recheck("good", &Revocation::Key).await, Recheck::Unknown);
        *store.mode.lock().unwrap() = "ok";
        assert!(auth.authorize(IP, "good").await.is_ok());
        assert_eq!(auth.recheck("bad", &Revocation::Key).await, Recheck::Revoked);
        assert!(matches!(auth.recheck("good", &Revocation::Key).await, Recheck::Holds(Some(_))));
    }
}
