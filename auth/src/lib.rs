//! Who may publish, who may administer and who may watch a private stream: stream keys, JSON
//! Web Tokens and signed media URLs.
//!
//! [`Authorizer`] turns a publishing name into a [`Grant`] (a stored key looked up by its
//! hash in a [`KeyStore`], or a JWT publish token), under a timeout, failing closed, with
//! failed attempts rate-limited per address before any lookup ([`failure_limiter`]).
//! [`jwt::JwtVerifier`] verifies publish, admin and viewer tokens with the configured key;
//! [`viewer::ViewerAccess`] decides who watches private streams and signs their media URLs.
//! [`FileKeyStore`] is the embedded store (`data/keys.json`, replaced atomically); the
//! MongoDB store is the binary's adapter behind the same trait.
//!
//! This crate owns keys (generation, hashing, redaction for logs), stream-name rules and
//! token verification, for the RTMP side and the admin API alike. It never speaks RTMP or
//! HTTP and never sees media.

pub mod address;
pub mod atomic_file;
pub mod authorizer;
pub mod failure_limiter;
pub mod file_key_store;
pub mod jwt;
pub mod key_store;
pub mod viewer;

pub use authorizer::{Authorizer, Denial, RECHECK_MAX_AGE, Recheck};
pub use file_key_store::FileKeyStore;
pub use key_store::{Grant, KeyStore};
