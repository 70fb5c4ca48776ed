//! Where a stream is pushed: an `rtmp://` or `rtmps://` URL as Nginx-RTMP's `push` takes it,
//! and how it is shown without its secret.
//!
//! `rtmp://host[:port]/app[/name]`: the publishing name after the application is the target's
//! stream key (YouTube's `rtmp://a.rtmp.youtube.com/live2/<key>`, Facebook's
//! `rtmps://live-api-s.facebook.com:443/rtmp/<key>`); without one, the stream's own name is
//! published, as Nginx-RTMP does. The name is a secret: logs, events, metrics and the API show
//! [`PushTarget::label`], which replaces it with a short hash.

use auth::key_store::redact;

/// Default port of `rtmp://` (RTMP specification §4) and of `rtmps://` (TLS).
const RTMP_PORT: u16 = 1935;
const RTMPS_PORT: u16 = 443;
/// Longest push URL accepted: keys and query strings are a few hundred bytes at most.
pub const MAX_URL_LEN: usize = 2048;

/// A push target.
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// Over TLS (`rtmps://`).
    pub tls: bool,
    /// Host name or address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The application (`live2`).
    pub app: String,
    /// The publishing name (the target's key: secret); `None`: the stream's own name.
    pub name: Option<String>,
}

/// A push URL that cannot be used; the text never repeats the URL (it may hold a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("push target: {0}")]
pub struct InvalidTarget(&'static str);

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl PushTarget {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, InvalidTarget> {
        if url.len() > MAX_URL_LEN {
            return Err(InvalidTarget("the URL is too long"));
        }
        let (tls, rest) = if let Some(rest) = url.strip_prefix("rtmp://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rtmps://") {
            (true, rest)
        } else {
            return Err(InvalidTarget("the URL must start with rtmp:// or rtmps://"));
        };
        let (authority, path) =
            rest.split_once('/').ok_or(InvalidTarget("the URL has no application"))?;
        if authority.contains('@') {
            return Err(InvalidTarget("user names and passwords in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) =
                v6.split_once(']').ok_or(InvalidTarget("unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(InvalidTarget("the host is empty or not a host name"));
        }
        let port = match port {
            Some(port) => port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(InvalidTarget("the port is not 1-65535"))?,
            None if tls => RTMPS_PORT,
            None => RTMP_PORT,
        };
        let (app, name) = match path.split_once('/') {
            Some((app, name)) => (app, (!name.is_empty()).then(|| name.to_owned())),
            None => (path, None),
        };
        if app.is_empty() || app.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(InvalidTarget("the application is empty or not printable"));
        }
        if name.as_deref().is_some_and(|n| n.bytes().any(|b| b.is_ascii_control())) {
            return Err(InvalidTarget("the stream name has control characters"));
        }
        Ok(Self { tls, host: host.to_owned(), port, app: app.to_owned(), name })
    }

    /// The URL the `connect` command states (`tcUrl`): no publishing name.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}/{}", self.port, self.app)
    }

    /// How the target is shown: its `tcUrl` without any query (a service may put a secret
    /// there), and the name as a short hash.
    pub fn label(&self) -> String {
        let tc_url = self.tc_url();
        let shown = tc_url.split('?').next().unwrap_or_default();
        match &self.name {
            Some(name) => format!("{shown}/{}", redact(name)),
            None => shown.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_urls_parse() {
        let youtube = PushTarget::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(
            (youtube.tls, youtube.host.as_str(), youtube.port, youtube.app.as_str()),
            (false, "a.rtmp.youtube.com", 1935, "live2")
        );
        assert_eq!(youtube.name.as_deref(), Some("abcd-efgh-ijkl"));
        let facebook =
            PushTarget::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-1-2?s_bl=1").unwrap();
        assert!(facebook.tls);
        assert_eq!(facebook.name.as_deref(), Some("FB-1-2?s_bl=1"));
        assert_eq!(PushTarget::parse("rtmps://h/app").unwrap().port, 443);
        let same_name = PushTarget::parse("rtmp://10.0.0.2:1936/live").unwrap();
        assert_eq!((same_name.port, same_name.name), (1936, None));
        let v6 = PushTarget::parse("rtmp://[::1]:19350/live/k").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 19350));
        assert_eq!(v6.tc_url(), "rtmp://[::1]:19350/live");
    }

    #[test]
    fn labels_never_show_the_key() {
        let target = PushTarget::parse("rtmp://a.rtmp.youtube.com/live2/secret-key-1").unwrap();
        let label = target.label();
        assert!(label.starts_with("rtmp://a.rtmp.youtube.com:1935/live2/sha256:"), "{label}");
        assert!(!label.contains("secret") && !format!("{target:?}").contains("secret"));
        let with_query = PushTarget::parse("rtmp://h/app?auth=hidden/key").unwrap();
        assert!(!with_query.label().contains("hidden"), "{}", with_query.label());
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for bad in [
            "http://h/app/k",
            "rtmp://h",
            "rtmp:///app",
            "rtmp://h:0/app",
            "rtmp://h:99999/app",
            "rtmp://user:pw@h/app",
            "rtmp://h/",
            "rtmp://h/app/k\n",
            "rtmp://h h/app",
            &format!("rtmp://h/app/{}", "k".repeat(MAX_URL_LEN)),
        ] {
            let error = PushTarget::parse(bad).unwrap_err().to_string();
            assert!(!error.contains(bad.trim()) && !error.contains("/app"), "{bad}: {error}");
        }
    }
}
