//! The configuration file: one TOML file (`--config` / `RTMP_HLS_CONFIG`) whose keys are the
//! command line's long options in snake case (`rtmp_addr = "0.0.0.0:1935"`).
//!
//! Precedence is file < environment < flag: the file's values become the defaults of the
//! command line before it is parsed, so clap's own order (flag, then `RTMP_HLS_*`, then
//! default) does the rest, and every value, wherever it comes from, goes through the same
//! parser. A file value is checked on its own first, so its error names the file and the key.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};

use crate::config::Cli;

/// The option naming the file, and its variable.
const CONFIG_FLAG: &str = "--config";
const CONFIG_ENV: &str = "RTMP_HLS_CONFIG";

/// Options whose values are secrets: masked wherever the configuration is shown.
const SECRETS: &[&str] = &["jwt_secret", "admin_token", "url_signing_secret"];
/// Options holding URLs whose password part is a secret.
const URLS_WITH_CREDENTIALS: &[&str] =
    &["mongo_uri", "on_publish", "on_publish_done", "on_record_done"];
/// Words in the name of a librdkafka property or URL query parameter whose value is a secret
/// (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, `?token=`, ...).
const SECRET_PROPERTY_WORDS: &[&str] = &["password", "secret", "key", "token"];

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PROPERTY_WORDS.iter().any(|word| name.contains(word))
}
/// Options that are not settings (so not in the file).
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// Parses the command line in `args` over the environment and the configuration file.
pub(crate) fn load(args: Vec<OsString>) -> Result<(Cli, ArgMatches), clap::Error> {
    let mut command = Cli::command();
    if let Some(path) = config_path(&args) {
        command = with_file_defaults(command, &path)?;
    }
    let matches = command.clone().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    cli.serve.validate().map_err(|message| command.error(ErrorKind::ArgumentConflict, message))?;
    Ok((cli, matches))
}

/// The file named by `--config FILE`, `--config=FILE` or `RTMP_HLS_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == CONFIG_FLAG {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `command` with the values of the file at `path` as its defaults.
fn with_file_defaults(
    mut command: clap::Command,
    path: &Path,
) -> Result<clap::Command, clap::Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        command.error(ErrorKind::Io, format!("reading the configuration file {shown}: {e}"))
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| command.error(ErrorKind::InvalidValue, format!("{shown}: {e}")))?;
    for (key, value) in table {
        let known = command
            .get_arguments()
            .find(|arg| key_of(arg) == key && !NOT_SETTINGS.contains(&key.as_str()))
            .cloned();
        let Some(arg) = known else {
            let hint = if key.contains('-') { " (keys use underscores: rtmp_addr)" } else { "" };
            return Err(command.error(
                ErrorKind::UnknownArgument,
                format!("{shown}: unknown option `{key}`{hint}"),
            ));
        };
        let values = scalars(&value).ok_or_else(|| {
            command.error(
                ErrorKind::InvalidValue,
                format!("{shown}: `{key}` must be a string, number, boolean, list or table"),
            )
        })?;
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Append);
        if values.len() != 1 && !many {
            return Err(
                command.error(ErrorKind::InvalidValue, format!("{shown}: `{key}` takes one value"))
            );
        }
        for v in &values {
            check_value(&arg, v).map_err(|detail| {
                command.error(ErrorKind::InvalidValue, format!("{shown}: `{key}`: {detail}"))
            })?;
        }
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |arg| arg.default_values(values));
    }
    Ok(command)
}

/// Runs `value` through `arg`'s parser alone; the parser's complaint on failure.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or("value");
    let probe = clap::Arg::new("value")
        .long(long.to_owned())
        .value_name(arg.get_id().as_str().to_uppercase())
        .value_parser(arg.get_value_parser().clone())
        .action(clap::ArgAction::Set);
    let outcome = clap::Command::new("check")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{long}"), value.to_owned()]);
    match outcome {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid value");
            Err(first.trim_start_matches("error: ").to_owned())
        }
    }
}

/// A TOML value as command-line values: scalars as text, a list item by item, a table as
/// `name=value` pairs (for `kafka_property`).
fn scalars(value: &toml::Value) -> Option<Vec<String>> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        toml::Value::Table(table) => {
            table.iter().map(|(k, v)| scalar(v).map(|v| format!("{k}={v}"))).collect()
        }
        other => scalar(other).map(|v| vec![v]),
    }
}

/// The effective configuration as TOML, with where each value came from; secrets masked.
pub(crate) fn effective(matches: &ArgMatches) -> String {
    let command = Cli::command();
    let mut out = String::from("# Effective configuration (source of each value in the comment)\n");
    for arg in settings(&command) {
        let (id, key) = (arg.get_id().as_str(), key_of(arg));
        let Some(raw) = matches.get_raw(id) else {
            let _ = writeln!(out, "# {key} (not set)");
            continue;
        };
        let values: Vec<String> = raw.map(|v| mask(&key, &v.to_string_lossy())).collect();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if is_builtin_default(arg, &values) => "default",
            Some(ValueSource::DefaultValue) => "file",
            _ => "?",
        };
        let _ = writeln!(out, "{key} = {}  # {source}", toml_values(arg, &values));
    }
    out
}

/// Whether `values` are the option's built-in default (not the file's).
fn is_builtin_default(arg: &clap::Arg, values: &[String]) -> bool {
    let builtin = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == arg.get_id())
        .map(|a| {
            a.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    builtin == values
}

/// An example file: every option, its help and its default, commented out.
pub(crate) fn example() -> String {
    let command = Cli::command();
    let mut out = String::from(
        "# rtmp-hls configuration: pass with --config FILE (or RTMP_HLS_CONFIG=FILE).\n\
         # Every key is a command-line option in snake case; RTMP_HLS_* variables and flags\n\
         # override the file. Generated by `rtmp-hls config example`; values shown are the\n\
         # defaults. Lists take [\"a\", \"b\"]; kafka_property takes a table of librdkafka properties.\n",
    );
    let mut heading = None;
    for arg in settings(&command) {
        let this = arg.get_help_heading().unwrap_or("Server");
        if heading != Some(this) {
            heading = Some(this);
            let _ = writeln!(out, "\n# --- {this} ---");
        }
        let id = key_of(arg);
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string);
        out.push('\n');
        for line in wrap(&help.unwrap_or_default(), EXAMPLE_WIDTH) {
            let _ = writeln!(out, "# {line}");
        }
        if let Some(env) = arg.get_env() {
            let _ = writeln!(out, "# (env {})", env.to_string_lossy());
        }
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if id == "kafka_property" {
            let _ =
                writeln!(out, "# {id} = {{}}  # e.g. {{ \"security.protocol\" = \"SASL_SSL\" }}");
        } else if defaults.is_empty() && matches!(arg.get_action(), clap::ArgAction::Append) {
            let _ = writeln!(out, "# {id} = []");
        } else if defaults.is_empty() {
            let _ = writeln!(out, "# {id} =");
        } else {
            let _ = writeln!(out, "# {id} = {}", toml_values(arg, &defaults));
        }
    }
    out
}

/// Columns of the example file's comments.
const EXAMPLE_WIDTH: usize = 92;

/// `text` broken into lines of at most `width` columns, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// An option's key in the file: its long name in snake case.
fn key_of(arg: &clap::Arg) -> String {
    arg.get_long().map_or_else(|| arg.get_id().to_string(), |long| long.replace('-', "_"))
}

/// The options that are settings, in the order `--help` shows them.
fn settings(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()) && !arg.is_positional())
}

/// Values as TOML: numbers and booleans bare, the rest quoted; several as a list.
fn toml_values(arg: &clap::Arg, values: &[String]) -> String {
    let one = |v: &String| {
        if v.parse::<f64>().is_ok() || v == "true" || v == "false" { v.clone() } else { quote(v) }
    };
    let many = matches!(arg.get_action(), clap::ArgAction::Append);
    if many || values.len() > 1 {
        format!("[{}]", values.iter().map(one).collect::<Vec<_>>().join(", "))
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

/// `text` as a TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` of option `id` with any secret in it replaced.
pub(crate) fn mask(id: &str, value: &str) -> String {
    if SECRETS.contains(&id) {
        return "********".to_owned();
    }
    if id == "push" {
        // The key in the URL is the target's: shown hashed, as in logs.
        return ingest::push::PushTarget::parse(value)
            .map_or_else(|_| "********".to_owned(), |target| target.label());
    }
    if URLS_WITH_CREDENTIALS.contains(&id) {
        // A callback URL's query is often the backend's shared secret.
        return mask_url(value, id != "mongo_uri");
    }
    if id == "kafka_property"
        && let Some((name, _)) = value.split_once('=')
        && looks_secret(name)
    {
        return format!("{name}=********");
    }
    value.to_owned()
}

/// A URL with its password replaced (`scheme://user:password@host`; a password may hold
/// `/`, `?` or `@` unescaped: everything from the user's `:` to the last `@` goes), and the
/// values of its query replaced: all of them with `every_query_value`, else those whose
/// name looks secret (`password`, `secret`, `key`, `token`).
pub(crate) fn mask_url(url: &str, every_query_value: bool) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let rest = match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at && !rest[..colon].contains(['/', '?']) => {
            format!("{}:********{}", &rest[..colon], &rest[at..])
        }
        _ => rest.to_owned(),
    };
    let masked = match rest.split_once('?') {
        Some((before, query)) => {
            let values = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if every_query_value || looks_secret(name) => {
                        format!("{name}=********")
                    }
                    _ => pair.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{before}?{values}")
        }
        None => rest,
    };
    format!("{scheme}://{masked}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    /// A file removed when dropped (no crate for this).
    mod tempfile_path {
        pub(super) struct TempFile(pub(super) std::path::PathBuf);
        impl TempFile {
            pub(super) fn new(text: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "rtmp-hls-config-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
            pub(super) fn arg(&self) -> String {
                self.0.display().to_string()
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let f = file("segment_duration = 4\nplaylist_length = 10\napp = \"stream\"\n");
        let (cli, _) = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap();
        assert_eq!(cli.serve.segment_duration, std::time::Duration::from_secs(4));
        assert_eq!(cli.serve.playlist_length, 10);
        assert_eq!(cli.serve.app, "stream");
        let (cli, _) =
            load(args(&["rtmp-hls", &format!("--config={}", f.arg()), "--playlist-length", "3"]))
                .unwrap();
        assert_eq!(cli.serve.playlist_length, 3);
        assert_eq!(cli.serve.segment_duration, std::time::Duration::from_secs(4));
    }

    #[test]
    fn rules_across_options_hold_for_file_values_too() {
        let f = file(&format!("jwt_secret = \"{}\"\n", "s".repeat(40)));
        let err = load(args(&["rtmp-hls", "--config", &f.arg(), "--jwt-public-key", "k.pem"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--jwt-public-key") && !err.contains("ssss"), "{err}");
        let f = file("hook_mode = \"only\"\n");
        let err = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap_err().to_string();
        assert!(err.contains("--on-publish"), "{err}");
        let f = file("admin_token = \"short-secret\"\n");
        let err = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap_err().to_string();
        assert!(err.contains("--admin-token") && !err.contains("short-secret"), "{err}");
    }

    #[test]
    fn lists_and_tables() {
        let f = file("[kafka_property]\n\"sasl.mechanism\" = \"PLAIN\"\n\"linger.ms\" = 5\n");
        let (cli, _) = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap();
        let mut properties = cli.serve.kafka_properties.clone();
        properties.sort();
        assert_eq!(
            properties,
            [
                ("linger.ms".to_owned(), "5".to_owned()),
                ("sasl.mechanism".to_owned(), "PLAIN".to_owned())
            ]
        );
    }

    #[test]
    fn bad_files_are_errors_naming_file_and_key() {
        for (text, needle) in [
            ("segment_duration = 0\n", "`segment_duration`"),
            ("rtmp_addr = \"nowhere\"\n", "`rtmp_addr`"),
            ("rtmp-addr = \"0.0.0.0:1\"\n", "underscores"),
            ("no_such_option = 1\n", "unknown option `no_such_option`"),
            ("app = [\"a\", \"b\"]\n", "takes one value"),
            ("app = ", "expected"),
        ] {
            let f = file(text);
            let err = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains(&f.arg()), "{text:?}: the file is not named: {err}");
        }
        let err = load(args(&["rtmp-hls", "--config", "/nonexistent.toml"])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent.toml"), "{err}");
    }

    #[test]
    fn the_effective_config_masks_secrets_and_names_sources() {
        let f =
            file("jwt_secret = \"hunter2-hunter2-hunter2-hunter2-hunter2\"\nplaylist_length = 8\n");
        let (_, matches) = load(args(&[
            "rtmp-hls",
            "--config",
            &f.arg(),
            "--mongo-uri",
            "mongodb://app:s3cret@db:27017/?authSource=admin",
            "--segment-duration",
            "3",
        ]))
        .unwrap();
        let text = effective(&matches);
        assert!(
            !text.contains("hunter2-hunter2-hunter2-hunter2-hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("jwt_secret = \"********\"  # file"), "{text}");
        assert!(text.contains("mongodb://app:********@db:27017/?authSource=admin"), "{text}");
        assert!(text.contains("playlist_length = 8  # file"), "{text}");
        assert!(text.contains("segment_duration = 3  # flag"), "{text}");
        assert!(text.contains("rtmp_addr = \"0.0.0.0:1935\"  # default"), "{text}");
        // What it prints is itself a valid configuration file.
        let unmasked = text
            .replace("\"********\"", &format!("\"{}\"", "x".repeat(32)))
            .replace(":********@", ":x@");
        let f =
            file(&unmasked.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n"));
        load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap();
    }

    #[test]
    fn the_example_file_is_current_and_loads() {
        let committed = include_str!("../rtmp-hls.example.toml");
        assert!(
            committed == example(),
            "rtmp-hls.example.toml is stale: regenerate it with \
             `cargo run -- config example > rtmp-hls.example.toml`"
        );
        // Uncommenting every default gives a file that loads, to the built-in defaults.
        let uncommented: String = committed
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = ") && !l.starts_with('('))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = file(&uncommented);
        let (from_file, _) = load(args(&["rtmp-hls", "--config", &f.arg()])).unwrap();
        let (builtin, _) = load(args(&["rtmp-hls"])).unwrap();
        assert_eq!(format!("{:?}", from_file.serve), format!("{:?}", builtin.serve));
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(mask_url("mongodb://u:p@h/db", false), "mongodb://u:********@h/db");
        assert_eq!(mask_url("mongodb://h/db", false), "mongodb://h/db");
        assert_eq!(mask_url("http://u@h/x?a=b@c", true), "http://u@h/x?a=********");
        assert_eq!(
            mask_url("mongodb://h/db?authSource=admin&tlsCertificateKeyFilePassword=pw", false),
            "mongodb://h/db?authSource=admin&tlsCertificateKeyFilePassword=********"
        );
        // Passwords with characters that end an authority, unescaped.
        for url in ["mongodb://u:p/ss@h/db", "mongodb://u:p?w@h:27017/db", "mongodb://u:a@b@h/db"] {
            let masked = mask_url(url, false);
            assert!(masked.starts_with("mongodb://u:********@h"), "{url} -> {masked}");
        }
        // A callback URL's query.
        assert_eq!(
            mask_url("http://backend/hook?secret=s3&x", true),
            "http://backend/hook?secret=********&x"
        );
        assert_eq!(mask("on_publish", "http://b/h?token=t0k"), "http://b/h?token=********");
        assert_eq!(mask("jwt_secret", "abc"), "********");
        assert_eq!(mask("kafka_property", "sasl.password=pw"), "sasl.password=********");
        assert_eq!(mask("kafka_property", "linger.ms=5"), "linger.ms=5");
    }
}
