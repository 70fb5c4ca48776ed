//! The server's TLS certificate, shared by its TLS listeners (HTTPS and RTMPS): PEM files
//! (`--tls-cert`, `--tls-key`), reloaded when they change, and the rustls settings (TLS 1.2
//! and 1.3, ring) each listener builds on with its own ALPN list. It owns no socket and no
//! protocol: the listeners do the handshakes. Also the client settings outgoing TLS (pushes
//! to `rtmps://` targets) verifies servers with: the Mozilla root store, plus an operator's
//! own CA file ([`client_config`]).
//!
//! The files are looked at every [`RELOAD_CHECK_INTERVAL`]; when either changed, both are
//! read again and, if they make a usable certificate and key, new connections get it (a
//! renewal by certbot or cert-manager needs no restart). Files that do not load leave the
//! current certificate in place, with one log line per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Why a certificate could not be loaded: the operator's files are at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    /// The key is of a kind rustls cannot sign with, or does not match the certificate.
    #[error("the key in {path} cannot be used with the certificate: {reason}")]
    Unusable {
        /// The key file.
        path: PathBuf,
        /// rustls's words.
        reason: String,
    },
}

/// The PEM files of the server's certificate (chain, leaf first) and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
        };
        let cert_pem = read(&self.cert)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|_| TlsError::NoKey(self.key.clone()))?;
        let provider = tokio_rustls::rustls::crypto::ring::default_provider();
        let unusable = |e: tokio_rustls::rustls::Error| TlsError::Unusable {
            path: self.key.clone(),
            reason: e.to_string(),
        };
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(unusable)?;
        Ok(certified)
    }

    /// When either file last changed (`None` if one cannot be looked at).
    fn modified(&self) -> Modified {
        let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

/// When the certificate and key files last changed.
type Modified = Option<(SystemTime, SystemTime)>;

/// The current certificate, swapped when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    /// The certificate in use, and the files' times when it was loaded.
    current: RwLock<(Arc<CertifiedKey>, Modified)>,
}

impl ReloadingCert {
    /// Loads the certificate from `files`; an error here stops the server from starting.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let modified = files.modified();
        let certified = Arc::new(files.load()?);
        Ok(Self { files, current: RwLock::new((certified, modified)) })
    }

    /// Loads the files again if they changed since the last look; whether a new
    /// certificate is now in use.
    pub fn reload_if_changed(&self) -> bool {
        let modified = self.files.modified();
        let seen = self.current.read().unwrap_or_else(PoisonError::into_inner).1;
        if modified.is_none() || modified == seen {
            return false;
        }
        // Read and parsed before the lock: handshakes wait for the swap only.
        let loaded = self.files.load();
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Seen now, whether it loads or not: a broken file is reported once, not every check.
        current.1 = modified;
        match loaded {
            Ok(certified) => {
                current.0 = Arc::new(certified);
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                warn!(error = %e, "TLS certificate files changed but do not load; keeping the current certificate");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`], forever.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner).0))
    }
}

/// TLS settings serving `cert`, offering `alpn` (most preferred first; empty: no ALPN).
pub fn server_config(cert: Arc<ReloadingCert>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    // The ring provider supports the default protocol versions: this cannot fail.
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| ServerConfig::builder());
    let mut config = builder.with_no_client_auth().with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Client TLS settings: servers are verified against the Mozilla root store
/// (`webpki-roots`, what browsers trust) and, with `extra_roots`, the certificates of that
/// PEM file too (a private CA, or a self-signed target).
pub fn client_config(extra_roots: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_roots {
        let pem = std::fs::read(path)
            .map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(TlsError::NoCertificate(path.to_owned()));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    // The ring provider supports the default protocol versions: this cannot fail.
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| ClientConfig::builder());
    Ok(Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_a_certificate_and_key_say_which_and_why() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let files = TlsFiles { cert: cert.clone(), key: key.clone() };
        assert!(matches!(files.load(), Err(TlsError::Read { path, .. }) if path == cert));
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        assert!(matches!(files.load(), Err(TlsError::NoCertificate(path)) if path == cert));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
