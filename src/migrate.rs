//! `rtmp-hls migrate nginx.conf`: reads an Nginx configuration's `rtmp {}` block (and the
//! `http {}` server that serves its HLS) and writes the equivalent rtmp-hls configuration
//! file. Every directive is accounted for: mapped to an option, implied by how rtmp-hls
//! works, or listed with why it has no counterpart; nothing is dropped silently.
//!
//! The parser reads Nginx's syntax (nginx.org/en/docs/beginners_guide.html#conf_structure):
//! words and quoted strings ending in `;`, blocks in `{}`, `#` comments. `include` is not
//! followed (named instead).

use std::fmt::Write as _;

/// One directive: its name, arguments, line, and block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    name: String,
    args: Vec<String>,
    line: usize,
    block: Option<Vec<Self>>,
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    #[error("line {0}: a quoted string is not closed")]
    UnclosedQuote(usize),
    #[error("line {0}: `}}` without a block to close")]
    UnexpectedClose(usize),
    #[error("line {0}: a block is not closed")]
    UnclosedBlock(usize),
    #[error("line {0}: a directive has no name")]
    NoName(usize),
    #[error("line {0}: the last directive has no `;`")]
    MissingSemicolon(usize),
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String, usize),
    Semicolon(usize),
    Open(usize),
    Close(usize),
}

fn tokens(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' => out.push(Token::Semicolon(line)),
            '{' => out.push(Token::Open(line)),
            '}' => out.push(Token::Close(line)),
            '"' | '\'' => {
                let (quote, start) = (c, line);
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err(SyntaxError::UnclosedQuote(start)),
                        Some('\\') => word.extend(chars.next()),
                        Some(c) if c == quote => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            word.push(c);
                        }
                    }
                }
                out.push(Token::Word(word, start));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, ';' | '{' | '}') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                out.push(Token::Word(word, line));
            }
        }
    }
    Ok(out)
}

/// Parses a whole configuration file.
pub(crate) fn parse(text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let mut tokens = tokens(text)?.into_iter();
    let directives = block(&mut tokens, None)?;
    Ok(directives)
}

fn block(
    tokens: &mut std::vec::IntoIter<Token>,
    opened: Option<usize>,
) -> Result<Vec<Directive>, SyntaxError> {
    let mut directives = Vec::new();
    let mut words: Vec<(String, usize)> = Vec::new();
    loop {
        let Some(token) = tokens.next() else {
            if let Some(line) = opened {
                return Err(SyntaxError::UnclosedBlock(line));
            }
            if let Some((_, line)) = words.first() {
                return Err(SyntaxError::MissingSemicolon(*line));
            }
            return Ok(directives);
        };
        match token {
            Token::Word(word, line) => words.push((word, line)),
            Token::Semicolon(line) | Token::Open(line) => {
                let is_block = matches!(token, Token::Open(_));
                let mut parts = std::mem::take(&mut words).into_iter();
                let (name, line) = parts.next().ok_or(SyntaxError::NoName(line))?;
                let inner = if is_block { Some(block(tokens, Some(line))?) } else { None };
                directives.push(Directive {
                    name,
                    args: parts.map(|(w, _)| w).collect(),
                    line,
                    block: inner,
                });
            }
            Token::Close(line) => {
                if opened.is_none() {
                    return Err(SyntaxError::UnexpectedClose(line));
                }
                if let Some((_, line)) = words.first() {
                    return Err(SyntaxError::MissingSemicolon(*line));
                }
                return Ok(directives);
            }
        }
    }
}

/// What became of one directive that has no option of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    line: usize,
    directive: String,
    why: &'static str,
}

/// The migrated configuration: `(option, TOML value)` pairs, and notes on the rest.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Migration {
    options: Vec<(&'static str, String)>,
    notes: Vec<Note>,
    /// A push URL (with its target's key) was copied into the options.
    secret_copied: bool,
}

impl Migration {
    fn set(&mut self, option: &'static str, value: String) {
        self.options.retain(|(o, _)| *o != option);
        self.options.push((option, value));
    }

    fn note(&mut self, directive: &Directive, why: &'static str) {
        let shown = std::iter::once(directive.name.as_str())
            .chain(directive.args.iter().map(|a| redact_url(a)))
            .collect::<Vec<_>>()
            .join(" ");
        self.notes.push(Note { line: directive.line, directive: shown, why });
    }

    /// The configuration file, with the notes as comments.
    pub(crate) fn render(&self, source: &str) -> String {
        let mut out = format!(
            "# rtmp-hls configuration migrated from {source} by `rtmp-hls migrate`.\n\
             # Pass it with --config FILE; every other option keeps its default\n\
             # (rtmp-hls.example.toml lists them all).\n\n"
        );
        if self.secret_copied {
            out.push_str(
                "# `push` holds the targets' stream keys, as nginx.conf did: keep this file as\n\
                 # secret as that one.\n\n",
            );
        }
        for (option, value) in &self.options {
            let _ = writeln!(out, "{option} = {value}");
        }
        if !self.notes.is_empty() {
            out.push_str("\n# Directives with no option of their own:\n");
            for note in &self.notes {
                let _ = writeln!(out, "# {source}:{}: {}: {}", note.line, note.directive, note.why);
            }
        }
        out
    }
}

/// Hides what looks like a secret in a URL argument (a stream key in the path's last segment,
/// a query): `push rtmp://a.rtmp.youtube.com/live2/xxxx` must not print the key.
fn redact_url(arg: &str) -> &str {
    if arg.contains("://") && (arg.matches('/').count() > 3 || arg.contains('?')) {
        "<url, secret hidden>"
    } else {
        arg
    }
}

/// Seconds in an Nginx time value (`2s`, `500ms`, `1m`, `3`).
fn seconds(value: &str) -> Option<f64> {
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(number * factor)
}

/// A listen argument as an address: `1935` → `0.0.0.0:1935`.
fn listen_addr(arg: &str) -> String {
    if arg.chars().all(|c| c.is_ascii_digit()) { format!("0.0.0.0:{arg}") } else { arg.to_owned() }
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

const PROCESS: &str = "an Nginx process setting; rtmp-hls is one process with its own threads";
const IMPLIED: &str = "implied: rtmp-hls always does this";
const NOT_YET: &str =
    "no equivalent yet (pull, recording limits per file and recorders are planned)";

/// Maps a parsed configuration.
pub(crate) fn migrate(config: &[Directive]) -> Migration {
    let mut m = Migration::default();
    for directive in config {
        match (directive.name.as_str(), &directive.block) {
            ("rtmp", Some(inner)) => rtmp(&mut m, inner),
            ("http", Some(inner)) => http(&mut m, inner),
            ("include", _) => m.note(directive, "not followed: migrate the included file too"),
            (
                "user"
                | "worker_processes"
                | "worker_rlimit_nofile"
                | "pid"
                | "error_log"
                | "load_module"
                | "events"
                | "daemon"
                | "master_process"
                | "worker_cpu_affinity",
                _,
            ) => m.note(directive, PROCESS),
            _ => m.note(directive, "unknown here: not migrated"),
        }
    }
    m
}

fn rtmp(m: &mut Migration, directives: &[Directive]) {
    let mut servers = 0;
    for directive in directives {
        match (directive.name.as_str(), &directive.block) {
            ("server", Some(inner)) => {
                servers += 1;
                if servers > 1 {
                    m.note(directive, "a second RTMP server: rtmp-hls listens on one address");
                    continue;
                }
                rtmp_server(m, inner);
            }
            _ => rtmp_setting(m, directive),
        }
    }
}

fn rtmp_server(m: &mut Migration, directives: &[Directive]) {
    let mut apps = 0;
    for directive in directives {
        match (directive.name.as_str(), &directive.block) {
            ("listen", None) => match directive.args.first() {
                Some(addr) => m.set("rtmp_addr", quoted(&listen_addr(addr))),
                None => m.note(directive, "no address given"),
            },
            ("application", Some(inner)) => {
                apps += 1;
                if apps > 1 {
                    m.note(directive, "a second application: rtmp-hls serves one (--app)");
                    continue;
                }
                if let Some(name) = directive.args.first() {
                    m.set("app", quoted(name));
                }
                application(m, inner);
            }
            _ => rtmp_setting(m, directive),
        }
    }
}

/// Settings allowed in `rtmp`, `server` and `application` alike.
fn rtmp_setting(m: &mut Migration, directive: &Directive) {
    let arg = directive.args.first().map(String::as_str);
    match directive.name.as_str() {
        "chunk_size" => m.note(directive, "rtmp-hls sends 4 KiB chunks and takes any size a client sets"),
        "max_connections" => match arg.and_then(|a| a.parse::<usize>().ok()) {
            Some(n) => m.set("max_connections", n.to_string()),
            None => m.note(directive, "not a number"),
        },
        "ping" | "ping_timeout" => {
            m.note(directive, "a dead publisher is found by --no-media-timeout and TCP instead")
        }
        "timeout" => m.note(directive, "see --handshake-timeout, --publish-timeout, --write-timeout"),
        "ack_window" | "buflen" | "max_streams" | "max_message" | "out_queue" | "out_cork" => {
            m.note(directive, "a protocol tuning rtmp-hls sets itself (limits in docs/robustness.md)")
        }
        "notify_method" => match arg {
            Some("get") => m.set("hook_method", quoted("get")),
            _ => m.set("hook_method", quoted("post")),
        },
        "notify_update_timeout" | "notify_update_strict" | "notify_relay_redirect" => {
            m.note(directive, "no on_update callback here")
        }
        "drop_idle_publisher" => match arg.and_then(seconds) {
            Some(s) => m.set("no_media_timeout", format!("{}", s.ceil().max(1.0))),
            None => m.note(directive, "not a time"),
        },
        "idle_streams" | "wait_key" | "wait_video" | "publish_notify" | "play_restart"
        | "meta" | "interleave" | "sync" | "live" | "publish_time_fix" => {
            m.note(directive, IMPLIED)
        }
        "on_publish" => set_hook(m, directive, "on_publish"),
        "on_publish_done" | "on_done" => set_hook(m, directive, "on_publish_done"),
        "on_record_done" => set_hook(m, directive, "on_record_done"),
        "on_play" | "on_play_done" | "on_update" | "on_connect" | "on_disconnect" => m.note(
            directive,
            "no such callback here (RTMP players of private streams are authorised by viewer tokens)",
        ),
        "allow" | "deny" => m.note(
            directive,
            "publishing is authorised by stream keys, publish tokens or on_publish; keep address rules in a firewall",
        ),
        "record" if arg == Some("off") => m.note(directive, "rtmp-hls records nothing"),
        "record" => m.note(
            directive,
            "every publish is recorded (audio and video, as fragmented MP4) when record_dir is set",
        ),
        "record_path" => match arg {
            Some(path) => m.set("record_dir", quoted(path)),
            None => m.note(directive, "record_path without a path"),
        },
        "record_suffix" | "record_unique" | "record_append" => m.note(
            directive,
            "recordings are named <stream>-<start time>.mp4, one per publish",
        ),
        "push" => push(m, directive),
        "push_reconnect" => m.note(
            directive,
            "push targets are retried after 1 s, doubling to 30 s, back to 1 s after 30 s connected",
        ),
        "pull" | "session_relay" | "record_max_size" | "record_interval" | "recorder" => {
            m.note(directive, NOT_YET)
        }
        "hls_variant" => variant(m, directive),
        name if name.starts_with("exec") => m.note(
            directive,
            "rtmp-hls starts no programs: run ffmpeg (transcodes, relays) beside it, publishing to it",
        ),
        name if name.starts_with("hls") => hls_setting(m, directive),
        name if name.starts_with("dash") => m.note(directive, "no DASH output"),
        _ => m.note(directive, "unknown here: not migrated"),
    }
}

/// `push URL [name=... app=...]`: the URL joins `push`, which needs it whole, key included.
fn push(m: &mut Migration, directive: &Directive) {
    let Some(url) = directive.args.first() else {
        return m.note(directive, "push without a URL");
    };
    if directive.args.len() > 1 {
        return m.note(
            directive,
            "push with name=/app= arguments: put the target's application and key in the URL \
             (rtmp://host/app/key) and add it to push",
        );
    }
    if ingest::push::PushTarget::parse(url).is_err() {
        return m.note(directive, "not an rtmp:// or rtmps:// URL rtmp-hls can push to");
    }
    let list = match m.options.iter().find(|(o, _)| *o == "push") {
        Some((_, list)) => format!("{}, {}]", list.trim_end_matches(']'), quoted(url)),
        None => format!("[{}]", quoted(url)),
    };
    m.set("push", list);
    m.secret_copied = true;
}

/// `hls_variant SUFFIX [BANDWIDTH=...]`: the suffix joins `variant`; the attributes are
/// measured from the streams here.
fn variant(m: &mut Migration, directive: &Directive) {
    let Some(suffix) = directive.args.first() else {
        return m.note(directive, "hls_variant without a suffix");
    };
    let list = match m.options.iter().find(|(o, _)| *o == "variant") {
        Some((_, list)) => format!("{}, {}]", list.trim_end_matches(']'), quoted(suffix)),
        None => format!("[{}]", quoted(suffix)),
    };
    m.set("variant", list);
    if directive.args.len() > 1 {
        m.note(
            directive,
            "BANDWIDTH, RESOLUTION and CODECS are measured from the streams: the suffix became variant",
        );
    }
}

fn set_hook(m: &mut Migration, directive: &Directive, option: &'static str) {
    match directive.args.first() {
        Some(url) if url.starts_with("http://") => m.set(option, quoted(url)),
        _ => m.note(directive, "only http:// callback URLs are supported"),
    }
}

fn application(m: &mut Migration, directives: &[Directive]) {
    let mut fragment = None;
    let mut playlist = None;
    for directive in directives {
        let time = directive.args.first().and_then(|a| seconds(a));
        match (directive.name.as_str(), time) {
            ("hls_fragment", Some(time)) => fragment = Some(time),
            ("hls_playlist_length", Some(time)) => playlist = Some(time),
            _ => rtmp_setting(m, directive),
        }
    }
    let fragment = fragment.unwrap_or(5.0);
    m.set("segment_duration", format!("{fragment}"));
    if let Some(length) = playlist {
        let segments = (length / fragment).ceil().clamp(1.0, 100.0);
        m.set("playlist_length", format!("{segments}"));
    }
}

fn hls_setting(m: &mut Migration, directive: &Directive) {
    match directive.name.as_str() {
        "hls" => match directive.args.first().map(String::as_str) {
            Some("on") => m.note(directive, IMPLIED),
            _ => m.note(directive, "rtmp-hls always makes HLS"),
        },
        // Mapped by `application` when inside one, with a time.
        "hls_fragment" | "hls_playlist_length" => {
            m.note(directive, "read only inside the application, as a time")
        }
        "hls_path"
        | "hls_cleanup"
        | "hls_nested"
        | "hls_fragment_naming"
        | "hls_fragment_naming_granularity"
        | "hls_datetime" => {
            m.note(directive, "segments are kept in memory and named by rtmp-hls; nothing to set")
        }
        "hls_type" => m.note(directive, "live playlists only (no EVENT type)"),
        "hls_fragment_slicing"
        | "hls_sync"
        | "hls_max_fragment"
        | "hls_max_audio_delay"
        | "hls_audio_buffer_size"
        | "hls_continuous"
        | "hls_fragments_per_key" => m.note(
            directive,
            "segments are cut on keyframes after segment_duration; audio interleaving is automatic",
        ),
        "hls_keys" | "hls_key_path" | "hls_key_url" | "hls_fragments_per_key_path" => {
            m.note(directive, "no HLS encryption; serve over HTTPS (--https-addr)")
        }
        "hls_base_url" => {
            m.note(directive, "URIs in playlists are relative; put a CDN in front instead")
        }
        _ => m.note(directive, "unknown here: not migrated"),
    }
}

fn http(m: &mut Migration, directives: &[Directive]) {
    let mut found = false;
    for directive in directives {
        match (directive.name.as_str(), &directive.block) {
            ("server", Some(inner)) if !found && serves_hls(inner) => {
                found = true;
                for d in inner {
                    match (d.name.as_str(), d.args.first()) {
                        ("listen", Some(addr)) if d.args.iter().any(|a| a == "ssl") => {
                            m.set("https_addr", quoted(&listen_addr(addr)));
                        }
                        ("listen", Some(addr)) => m.set("http_addr", quoted(&listen_addr(addr))),
                        ("ssl_certificate", Some(path)) => m.set("tls_cert", quoted(path)),
                        ("ssl_certificate_key", Some(path)) => m.set("tls_key", quoted(path)),
                        ("location", _) => {}
                        _ => m.note(
                            d,
                            "an Nginx HTTP setting; rtmp-hls serves HLS with its own headers",
                        ),
                    }
                }
            }
            ("server", Some(_)) => {
                m.note(directive, "an HTTP server that does not serve the HLS files: left to Nginx")
            }
            _ => {
                m.note(directive, "an Nginx HTTP setting; rtmp-hls serves HLS with its own headers")
            }
        }
    }
}

/// Whether an HTTP server block has a location serving HLS (`.m3u8` types or an hls path).
fn serves_hls(directives: &[Directive]) -> bool {
    directives.iter().any(|d| {
        d.name == "location"
            && (d.args.iter().any(|a| a.contains("hls") || a.contains("m3u8"))
                || d.block.as_deref().is_some_and(serves_hls))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nginx-RTMP as its README and wiki show it: an HLS application, callbacks, a relay, a
    /// recording, a transcode, access rules, and the HTTP server of the HLS files.
    const DOCUMENTED: &str = r#"
worker_processes auto;
events { worker_connections 1024; }
rtmp {
    server {
        listen 1935;
        chunk_size 4000;
        ping 30s;
        notify_method get;
        application live {
            live on;
            allow publish 10.0.0.0/8;
            deny publish all;
            on_publish http://backend:8000/auth;
            on_publish_done "http://backend:8000/done";
            push rtmp://a.rtmp.youtube.com/live2/abcd-secret-key;
            record all;
            exec ffmpeg -i rtmp://localhost/live/$name -c:v libx264 -f flv rtmp://localhost/hls/$name_low;
            hls on;
            hls_path /tmp/hls;   # served below
            hls_fragment 3s;
            hls_playlist_length 60s;
            hls_variant _low BANDWIDTH=640000;
        }
        application vod { play /var/videos; }
    }
}
http {
    sendfile on;
    server {
        listen 8088;
        location /hls {
            types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
            root /tmp;
            add_header Cache-Control no-cache;
        }
    }
}
"#;

    fn option<'a>(m: &'a Migration, name: &str) -> Option<&'a str> {
        m.options.iter().find(|(o, _)| *o == name).map(|(_, v)| v.as_str())
    }

    fn note<'a>(m: &'a Migration, directive: &str) -> Option<&'a Note> {
        m.notes.iter().find(|n| n.directive.starts_with(directive))
    }

    #[test]
    fn the_documented_directives_map_or_say_why_not() {
        let m = migrate(&parse(DOCUMENTED).unwrap());
        assert_eq!(option(&m, "rtmp_addr"), Some("\"0.0.0.0:1935\""));
        assert_eq!(option(&m, "app"), Some("\"live\""));
        assert_eq!(option(&m, "segment_duration"), Some("3"));
        assert_eq!(option(&m, "playlist_length"), Some("20"));
        assert_eq!(option(&m, "on_publish"), Some("\"http://backend:8000/auth\""));
        assert_eq!(option(&m, "on_publish_done"), Some("\"http://backend:8000/done\""));
        assert_eq!(option(&m, "hook_method"), Some("\"get\""));
        assert_eq!(option(&m, "http_addr"), Some("\"0.0.0.0:8088\""));
        assert_eq!(option(&m, "variant"), Some("[\"_low\"]"));
        assert!(note(&m, "record all").unwrap().why.contains("record_dir"), "{m:?}");
        for (directive, why) in [("worker_processes", PROCESS), ("events", PROCESS)] {
            assert_eq!(note(&m, directive).map(|n| n.why), Some(why), "{directive}");
        }
        for directive in [
            "exec",
            "allow publish",
            "deny publish",
            "chunk_size",
            "ping",
            "sendfile",
            "application vod",
            "hls_path",
        ] {
            assert!(note(&m, directive).is_some(), "{directive} is not accounted for: {m:?}");
        }
        assert_eq!(note(&m, "exec").unwrap().line, 18);
        // The push target is migrated whole (the key with it), with a warning to keep the
        // file secret; notes never print a key.
        assert_eq!(
            option(&m, "push"),
            Some("[\"rtmp://a.rtmp.youtube.com/live2/abcd-secret-key\"]")
        );
        let text = m.render("nginx.conf");
        assert!(text.contains("keep this file as\n# secret"), "{text}");
        assert!(m.notes.iter().all(|n| !n.directive.contains("abcd-secret-key")), "{m:?}");
    }

    #[test]
    fn unknown_directives_are_named() {
        let m = migrate(&parse("rtmp { server { frobnicate 1; } } mystery on;").unwrap());
        let named: Vec<&str> = m.notes.iter().map(|n| n.directive.as_str()).collect();
        assert_eq!(named, ["frobnicate 1", "mystery on"]);
        assert!(m.notes.iter().all(|n| n.why == "unknown here: not migrated"));
    }

    #[test]
    fn broken_files_say_where() {
        assert_eq!(parse("rtmp { server { listen 1935; }"), Err(SyntaxError::UnclosedBlock(1)));
        assert_eq!(parse("listen 1935"), Err(SyntaxError::MissingSemicolon(1)));
        assert_eq!(parse("a;\n}"), Err(SyntaxError::UnexpectedClose(2)));
        assert_eq!(parse("a 'b;\n"), Err(SyntaxError::UnclosedQuote(1)));
        assert_eq!(parse(";"), Err(SyntaxError::NoName(1)));
    }

    #[test]
    fn times_and_addresses() {
        assert_eq!(seconds("2s"), Some(2.0));
        assert_eq!(seconds("500ms"), Some(0.5));
        assert_eq!(seconds("1m"), Some(60.0));
        assert_eq!(seconds("3"), Some(3.0));
        assert_eq!(seconds("fast"), None);
        assert_eq!(listen_addr("1935"), "0.0.0.0:1935");
        assert_eq!(listen_addr("127.0.0.1:1935"), "127.0.0.1:1935");
    }
}
