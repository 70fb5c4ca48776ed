//! Publish tokens: a JWT signed by the platform's backend, used as the stream key.
//!
//! Implements RFC 7519 validation with the algorithm pinned by configuration (RFC 8725 §3.1:
//! never taken from the token's header, so `alg: none` and HS/RS confusion cannot work):
//! HS256 with a shared secret, or RS256/ES256 with a public key (PEM, or a JWKS file whose
//! keys carry their own `alg`). Claims: `stream` (the public stream name, required), `exp`
//! (required), `sub` (the owner, optional), `nbf` (checked when present), `jti` (a token id
//! the key store can revoke). With a [`Scope`] configured, `aud` and `iss` are required and
//! must match, publish and admin tokens each with their own audience, so a token minted for
//! one purpose (or for another service) is refused for the other.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 5;

/// The claims a publish token must carry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PublishClaims {
    /// The public stream name the token publishes.
    pub stream: String,
    /// The owner (the backend's user id).
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch (a float in tokens AuthX issues). Required: absent,
    /// the token is refused by validation before these claims are used.
    #[serde(default)]
    pub exp: Option<f64>,
    /// AuthX's token type (`access`, `refresh`): refresh tokens are refused.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
    /// The token's id: a revoked id never publishes again, and ends a publish it started.
    #[serde(default)]
    pub jti: Option<String>,
    /// The stream is private: only viewers with a credential watch it.
    #[serde(default)]
    pub private: bool,
}

/// What a token must be issued for: its `aud` (audience) and `iss` (issuer) claims, each
/// required when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The `aud` the token must carry.
    pub audience: Option<String>,
    /// The `iss` the token must carry.
    pub issuer: Option<String>,
}

/// The claims an admin API token must carry: `exp`, and `admin` in `role` (a string) or
/// `roles` (a list), as a backend adds them (AuthX: `data={"role": "admin"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdminClaims {
    /// Who.
    #[serde(default)]
    pub sub: Option<String>,
    /// One role.
    #[serde(default)]
    pub role: Option<String>,
    /// Several roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// AuthX's token type (`access`, `refresh`): refresh tokens are refused.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
}

/// The claims of a viewer's token (the platform's login: an AuthX access token): who, and
/// every other claim for the configured claim check (see [`crate::viewer::ClaimRule`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ViewerClaims {
    /// Who: the viewer's session is counted by it.
    #[serde(default)]
    pub sub: Option<String>,
    /// AuthX's token type (`access`, `refresh`): refresh tokens are refused.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
    /// Expiry, seconds since the epoch (required by validation).
    #[serde(default)]
    pub exp: Option<f64>,
    /// The other claims.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The `type` of tokens that only get other tokens (AuthX's refresh tokens): never accepted
/// to publish or to administer, whatever else they claim.
const REFRESH_TYPE: &str = "refresh";

fn not_refresh(token_type: Option<&str>, what: &str) -> Result<(), TokenRejected> {
    if token_type == Some(REFRESH_TYPE) {
        return Err(TokenRejected(format!("a refresh token is not a {what}")));
    }
    Ok(())
}

/// The role an admin API token must have.
pub const ADMIN_ROLE: &str = "admin";

impl AdminClaims {
    /// Whether the token grants the admin role.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some(ADMIN_ROLE)
            || self.roles.as_ref().is_some_and(|roles| roles.iter().any(|r| r == ADMIN_ROLE))
    }
}

/// A token that must not publish; the text is safe to show the publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(pub String);

/// The verification key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is neither a usable PEM public key nor a JWKS.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One verification key and the only algorithm it accepts.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Verifies publish tokens.
pub struct JwtVerifier {
    keys: Vec<Key>,
    /// What publish tokens must be issued for.
    publish: Scope,
    /// What admin tokens must be issued for.
    admin: Scope,
    /// What viewer tokens must be issued for: the publish tokens' issuer, any audience (a
    /// login token is issued for the platform, not for this server).
    viewer: Scope,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().map(|k| k.algorithm).collect();
        f.debug_struct("JwtVerifier").field("algorithms", &algorithms).finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::with_keys(vec![Key {
            kid: None,
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
        }])
    }

    fn with_keys(keys: Vec<Key>) -> Self {
        Self { keys, publish: Scope::default(), admin: Scope::default(), viewer: Scope::default() }
    }

    /// Requires publish tokens to be issued for `publish` and admin tokens for `admin`.
    #[must_use]
    pub fn scoped(mut self, publish: Scope, admin: Scope) -> Self {
        self.viewer = Scope { audience: None, issuer: publish.issuer.clone() };
        self.publish = publish;
        self.admin = admin;
        self
    }

    /// RS256 or ES256 from a PEM public key, or every RS256/ES256 key of a JWKS file.
    pub fn from_public_key_file(path: &Path) -> Result<Self, JwtConfigError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|source| JwtConfigError::Read { path: name.clone(), source })?;
        let invalid = |reason: String| JwtConfigError::Invalid { path: name.clone(), reason };
        if bytes.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    // Symmetric keys do not belong in a public key set.
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
                keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithm });
            }
            if keys.is_empty() {
                return Err(invalid("the JWKS has no RSA or EC key".into()));
            }
            return Ok(Self::with_keys(keys));
        }
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
            (key, Algorithm::ES256)
        } else {
            return Err(invalid("not an RSA or EC public key in PEM".into()));
        };
        Ok(Self::with_keys(vec![Key { kid: None, key, algorithm }]))
    }

    /// Verifies publish token `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<PublishClaims, TokenRejected> {
        let claims: PublishClaims =
            self.verify_as(token, &self.publish, "publish token", "stream, exp")?;
        not_refresh(claims.token_type.as_deref(), "publish token")?;
        Ok(claims)
    }

    /// Verifies admin API token `token` and returns its claims (the role is the caller's to
    /// check: a valid token without it is "forbidden", not "unauthenticated").
    pub fn verify_admin(&self, token: &str) -> Result<AdminClaims, TokenRejected> {
        let claims: AdminClaims = self.verify_as(token, &self.admin, "admin token", "exp")?;
        not_refresh(claims.token_type.as_deref(), "admin token")?;
        Ok(claims)
    }

    /// Verifies viewer token `token` (an access token of the platform's login) and returns
    /// its claims; what it may watch is the caller's to check.
    /// A publish token (it names a `stream`) or a token issued for the publish or admin
    /// audience is not a viewer token: a streamer's token in OBS's settings watches nothing.
    pub fn verify_viewer(&self, token: &str) -> Result<ViewerClaims, TokenRejected> {
        let claims: ViewerClaims = self.verify_as(token, &self.viewer, "viewer token", "exp")?;
        not_refresh(claims.token_type.as_deref(), "viewer token")?;
        if claims.other.contains_key("stream") {
            return Err(TokenRejected("a publish token is not a viewer token".into()));
        }
        let audience = claims.other.get("aud");
        let issued_for = |wanted: &Option<String>| {
            wanted.as_deref().is_some_and(|wanted| match audience {
                Some(serde_json::Value::String(aud)) => aud == wanted,
                Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a == wanted),
                _ => false,
            })
        };
        if issued_for(&self.publish.audience) || issued_for(&self.admin.audience) {
            return Err(TokenRejected(
                "a token issued for publishing or administering is not a viewer token".into(),
            ));
        }
        Ok(claims)
    }

    /// Verifies `token` (a `what` needing `claims`, in error texts) and decodes its claims.
    fn verify_as<C: DeserializeOwned>(
        &self,
        token: &str,
        scope: &Scope,
        what: &str,
        claims: &str,
    ) -> Result<C, TokenRejected> {
        let header =
            decode_header(token).map_err(|_| TokenRejected(format!("malformed {what}")))?;
        let candidates = self
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        let mut last = TokenRejected(format!("no key verifies this {what}"));
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            let mut required = vec!["exp"];
            match &scope.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                // Any audience, or none, as before audiences were configured.
                None => validation.validate_aud = false,
            }
            if let Some(issuer) = &scope.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            match decode::<C>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = TokenRejected(describe(&e, what, claims)),
            }
        }
        Err(last)
    }
}

/// A publisher-facing reason for a rejected token (no secrets, no internals).
fn describe(error: &jsonwebtoken::errors::Error, what: &str, claims: &str) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => format!("{what} expired"),
        ErrorKind::ImmatureSignature => format!("{what} not valid yet"),
        ErrorKind::InvalidSignature => format!("{what} signature is invalid"),
        ErrorKind::InvalidAlgorithm => format!("{what} algorithm is not accepted"),
        ErrorKind::MissingRequiredClaim(claim) => format!("{what} has no {claim} claim"),
        ErrorKind::InvalidAudience => format!("{what} is not issued for this service (aud)"),
        ErrorKind::InvalidIssuer => format!("{what} is not from the expected issuer (iss)"),
        ErrorKind::Json(_) => format!("{what} claims are missing or malformed ({claims})"),
        _ => format!("{what} is invalid"),
    }
}

/// Whether `key` has the shape of a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(key: &str) -> bool {
    key.starts_with("eyJ")
        && key.split('.').count() == 3
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Claims<'a> {
        stream: &'a str,
        sub: &'a str,
        exp: u64,
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn hs256(secret: &[u8], stream: &str, exp: u64) -> String {
        let claims = Claims { stream, sub: "user-1", exp };
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn hs256_tokens_verify_and_carry_stream_and_owner() {
        let verifier = JwtVerifier::from_secret(b"s3cret");
        let claims = verifier.verify(&hs256(b"s3cret", "cam", now() + 60)).unwrap();
        assert_eq!((claims.stream.as_str(), claims.sub.as_deref()), ("cam", Some("user-1")));
    }

    #[test]
    fn bad_tokens_are_rejected_with_a_reason() {
        let verifier = JwtVerifier::from_secret(b"s3cret");
        assert_eq!(
            verifier.verify(&hs256(b"s3cret", "cam", now() - 60)),
            Err(TokenRejected("publish token expired".into()))
        );
        assert_eq!(
            verifier.verify(&hs256(b"other", "cam", now() + 60)),
            Err(TokenRejected("publish token signature is invalid".into()))
        );
        assert_eq!(
            verifier.verify("eyJ.nope.x"),
            Err(TokenRejected("malformed publish token".into()))
        );
        // alg: none, with the claims unsigned.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(format!(r#"{{"stream":"cam","exp":{}}}"#, now() + 60).as_bytes())
        );
        assert!(verifier.verify(&none).is_err());
        // No exp.
        let no_exp = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"stream": "cam"}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&no_exp),
            Err(TokenRejected("publish token has no exp claim".into()))
        );
    }

    /// With scopes configured, `aud` and `iss` must match: a publish token is not an admin
    /// token, a token for another service is refused, and either claim missing is refused.
    #[test]
    fn scoped_tokens_need_their_own_audience_and_the_issuer() {
        let publish =
            Scope { audience: Some("rtmp-hls:publish".into()), issuer: Some("platform".into()) };
        let admin =
            Scope { audience: Some("rtmp-hls:admin".into()), issuer: Some("platform".into()) };
        let verifier = JwtVerifier::from_secret(b"s3cret").scoped(publish, admin);
        let token = |claims: serde_json::Value| {
            let mut claims = claims;
            claims["exp"] = (now() + 60).into();
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret"))
                .unwrap()
        };
        let good = token(serde_json::json!({
            "stream": "cam", "aud": "rtmp-hls:publish", "iss": "platform", "jti": "t-1",
        }));
        assert_eq!(verifier.verify(&good).unwrap().jti.as_deref(), Some("t-1"));
        // A list of audiences holding ours passes too (RFC 7519 §4.1.3).
        let listed = token(serde_json::json!({
            "stream": "cam", "aud": ["backend", "rtmp-hls:publish"], "iss": "platform",
        }));
        assert!(verifier.verify(&listed).is_ok());
        let wrong_aud = serde_json::json!({"stream": "cam", "aud": "backend", "iss": "platform"});
        assert_eq!(
            verifier.verify(&token(wrong_aud)),
            Err(TokenRejected("publish token is not issued for this service (aud)".into()))
        );
        let no_aud = serde_json::json!({"stream": "cam", "iss": "platform"});
        assert_eq!(
            verifier.verify(&token(no_aud)),
            Err(TokenRejected("publish token has no aud claim".into()))
        );
        let other_iss =
            serde_json::json!({"stream": "cam", "aud": "rtmp-hls:publish", "iss": "elsewhere"});
        assert!(verifier.verify(&token(other_iss)).is_err());
        // A publish token is not an admin token, and the other way round.
        let admin_claims =
            serde_json::json!({"role": "admin", "aud": "rtmp-hls:admin", "iss": "platform"});
        assert!(verifier.verify_admin(&good).is_err());
        assert!(verifier.verify_admin(&token(admin_claims.clone())).unwrap().is_admin());
        let mut as_publish = admin_claims;
        as_publish["stream"] = "cam".into();
        assert!(verifier.verify(&token(as_publish)).is_err());
        // Unscoped, any audience (or none) is accepted, as before.
        let unscoped = JwtVerifier::from_secret(b"s3cret");
        let any = serde_json::json!({"stream": "cam", "aud": "backend"});
        assert!(unscoped.verify(&token(any)).is_ok());
    }

    /// The claims AuthX (the backend's JWT library) puts in an access token created with
    /// `create_access_token(uid, data={"stream": ...})`: note the fractional `exp`.
    #[test]
    fn authx_shaped_tokens_verify() {
        let claims = serde_json::json!({
            "sub": "user-42", "jti": "3fc7a3cc-53b2-4888-8552-86bcf14fbf6a", "type": "access",
            "fresh": false, "csrf": "", "iat": now(), "exp": now() as f64 + 900.586207, "stream": "cam",
        });
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret"))
                .unwrap();
        let verified = JwtVerifier::from_secret(b"s3cret").verify(&token).unwrap();
        assert_eq!((verified.stream.as_str(), verified.sub.as_deref()), ("cam", Some("user-42")));
    }

    #[test]
    fn the_leeway_is_small() {
        let verifier = JwtVerifier::from_secret(b"s3cret");
        assert!(verifier.verify(&hs256(b"s3cret", "cam", now() - LEEWAY_SECONDS + 2)).is_ok());
        assert!(verifier.verify(&hs256(b"s3cret", "cam", now() - LEEWAY_SECONDS - 2)).is_err());
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt(&hs256(b"k", "cam", 1)));
        assert!(!looks_like_jwt("Eqlk_w99JRZshjE9zOssLr3tWRZZiQHh"));
        assert!(!looks_like_jwt("eyJ.a"));
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn viewer_tokens_are_access_tokens_of_the_issuer_with_any_audience() {
        let publish =
            Scope { audience: Some("rtmp-hls:publish".into()), issuer: Some("platform".into()) };
        let verifier = JwtVerifier::from_secret(b"s3cret").scoped(publish, Scope::default());
        let sign = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret"))
                .unwrap()
        };
        let exp = now() + 60;
        let login = sign(serde_json::json!({
            "sub": "user-7", "type": "access", "iss": "platform", "exp": exp, "streams": ["cam"],
        }));
        let claims = verifier.verify_viewer(&login).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("user-7"));
        assert_eq!(claims.other["streams"], serde_json::json!(["cam"]));
        let refresh = sign(
            serde_json::json!({"sub": "user-7", "type": "refresh", "iss": "platform", "exp": exp}),
        );
        assert_eq!(
            verifier.verify_viewer(&refresh),
            Err(TokenRejected("a refresh token is not a viewer token".into()))
        );
        let elsewhere = sign(serde_json::json!({"sub": "user-7", "iss": "other", "exp": exp}));
        assert!(verifier.verify_viewer(&elsewhere).is_err());
        // Publish tokens, and tokens for the publish audience, do not watch.
        let publish_token =
            sign(serde_json::json!({"stream": "cam", "iss": "platform", "exp": exp}));
        assert!(verifier.verify_viewer(&publish_token).is_err());
        let for_publishing = sign(serde_json::json!({
            "sub": "u", "iss": "platform", "exp": exp, "aud": ["x", "rtmp-hls:publish"],
        }));
        assert!(verifier.verify_viewer(&for_publishing).is_err());
        let expired =
            sign(serde_json::json!({"sub": "user-7", "iss": "platform", "exp": now() - 60}));
        assert_eq!(
            verifier.verify_viewer(&expired),
            Err(TokenRejected("viewer token expired".into()))
        );
    }

    #[test]
    fn admin_tokens_need_the_role_and_cannot_publish() {
        let verifier = JwtVerifier::from_secret(b"s3cret");
        let sign = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret"))
                .unwrap()
        };
        let exp = now() + 60;
        let admin = sign(serde_json::json!({"sub": "ops", "role": "admin", "exp": exp}));
        assert!(verifier.verify_admin(&admin).unwrap().is_admin());
        assert!(verifier.verify(&admin).is_err(), "an admin token published");
        let listed = sign(serde_json::json!({"roles": ["viewer", "admin"], "exp": exp}));
        assert!(verifier.verify_admin(&listed).unwrap().is_admin());
        let publisher = hs256(b"s3cret", "cam", exp);
        assert!(!verifier.verify_admin(&publisher).unwrap().is_admin());
        let no_exp = sign(serde_json::json!({"role": "admin"}));
        assert!(verifier.verify_admin(&no_exp).is_err());
        let refresh = sign(serde_json::json!({"role": "admin", "type": "refresh", "exp": exp}));
        assert!(verifier.verify_admin(&refresh).is_err(), "a refresh token administers");
        let refresh = sign(serde_json::json!({"stream": "cam", "type": "refresh", "exp": exp}));
        assert!(verifier.verify(&refresh).is_err(), "a refresh token publishes");
        let access = sign(serde_json::json!({"role": "admin", "type": "access", "exp": exp}));
        assert!(verifier.verify_admin(&access).unwrap().is_admin());
    }
}
