//! `rtmp-hls migrate`: the Nginx-RTMP configuration the load benchmark runs (written by
//! `scripts/bench-vs-nginx.py`) becomes a configuration file rtmp-hls accepts, with the same
//! addresses, segment duration and playlist length, and every other directive named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn rtmp_hls(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_benchmarks_nginx_conf_migrates_to_a_configuration_that_checks() {
    let root = testkit::media::workspace_root();
    let dir = std::env::temp_dir().join(format!("rtmp-hls-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nginx_conf = dir.join("nginx.conf");
    let script = root.join("scripts").join("bench-vs-nginx.py");
    let generate = format!(
        "import importlib.util\n\
         spec = importlib.util.spec_from_file_location('bench', {script:?})\n\
         bench = importlib.util.module_from_spec(spec)\n\
         spec.loader.exec_module(bench)\n\
         print(bench.nginx_conf('/run/nginx-bench', 19351, 18081))\n"
    );
    let output = Command::new("python3").args(["-c", &generate]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&nginx_conf, &output.stdout).unwrap();

    let (ok, migrated, said) = rtmp_hls(&["migrate", nginx_conf.to_str().unwrap()]);
    assert!(ok, "{said}");
    for line in [
        "rtmp_addr = \"127.0.0.1:19351\"",
        "http_addr = \"127.0.0.1:18081\"",
        "app = \"live\"",
        "segment_duration = 2",
        "playlist_length = 3",
    ] {
        assert!(migrated.lines().any(|l| l == line), "{line} missing:\n{migrated}");
    }
    // Every directive of the file is either an option or a note naming it.
    let nginx = String::from_utf8(output.stdout).unwrap();
    for directive in ["worker_processes", "load_module", "chunk_size", "hls_path", "sendfile"] {
        assert!(nginx.contains(directive));
        assert!(
            migrated.contains(&format!(": {directive} ")),
            "{directive} not named:\n{migrated}"
        );
    }

    let toml = dir.join("rtmp-hls.toml");
    std::fs::write(&toml, &migrated).unwrap();
    let (ok, effective, said) = rtmp_hls(&["--config", toml.to_str().unwrap(), "config", "check"]);
    assert!(ok, "the migrated file does not check: {said}\n{migrated}");
    assert!(
        effective.contains("127.0.0.1:19351") && effective.contains("playlist_length = 3"),
        "{effective}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
