//! Operations end to end: the configuration file and its precedence, the stats and admin
//! APIs, metrics, and Nginx-RTMP-style hooks, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rtmp-hls-ops-{name}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `rtmp-hls <args> config check` with `env`; (success, stdout, stderr).
fn config_check(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
        .args(args)
        .args(["config", "check"])
        .env_remove("RTMP_HLS_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// File < environment < flag, for every kind of value; secrets never printed.
#[test]
fn configuration_precedence_is_file_then_environment_then_flag() {
    let file = temp_file(
        "precedence.toml",
        "playlist_length = 8\nsegment_duration = 3\napp = \"file-app\"\n\
         jwt_secret = \"file-secret-value\"\n[kafka_property]\n\"linger.ms\" = 7\n",
    );
    let file_arg = file.display().to_string();
    let (ok, out, err) = config_check(
        &["--config", &file_arg, "--app", "flag-app"],
        &[("RTMP_HLS_SEGMENT_DURATION", "5"), ("RTMP_HLS_APP", "env-app")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("playlist_length = 8  # file"), "{out}");
    assert!(out.contains("segment_duration = 5  # environment"), "{out}");
    assert!(out.contains("app = \"flag-app\"  # flag"), "{out}");
    assert!(out.contains("kafka_property = [\"linger.ms=7\"]  # file"), "{out}");
    assert!(out.contains("jwt_secret = \"********\"  # file"), "{out}");
    assert!(!out.contains("file-secret-value") && !err.contains("file-secret-value"));

    // The file can also be named by the environment.
    let (ok, out, err) = config_check(&[], &[("RTMP_HLS_CONFIG", &file_arg)]);
    assert!(ok, "{err}");
    assert!(out.contains("app = \"file-app\"  # file"), "{out}");
    std::fs::remove_file(file).unwrap();
}

/// An invalid value is refused at startup, naming the option (and the file it came from).
#[test]
fn invalid_configuration_is_refused_at_startup_naming_the_option() {
    let file = temp_file("invalid.toml", "playlist_length = 0\n");
    let file_arg = file.display().to_string();
    for (args, env, needle) in [
        (vec!["--config", file_arg.as_str()], vec![], "`playlist_length`"),
        (vec![], vec![("RTMP_HLS_SEGMENT_DURATION", "soon")], "--segment-duration"),
        (vec!["--takeover", "maybe"], vec![], "--takeover"),
        (vec!["--jwt-public-key", "/nonexistent/key.pem"], vec![], "--jwt-public-key"),
    ] {
        let (ok, _, err) = config_check(&args, &env);
        assert!(!ok, "{args:?} {env:?} was accepted");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
        // The server itself refuses the same way before listening.
        let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
            .args(&args)
            .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--data-dir",
                std::env::temp_dir().join("rtmp-hls-ops-invalid").to_str().unwrap(),
            ])
            .env_remove("RTMP_HLS_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: the server started");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening"), "{args:?}: {stderr}");
    }
    std::fs::remove_file(file).unwrap();
}
