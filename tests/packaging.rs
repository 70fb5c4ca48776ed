//! Packaging, checked without a Docker engine: docker-compose.yml validates (docker-compose
//! v1, and `docker compose` v2 when the plugin is there) and wires the services the way the
//! server reads its configuration; the Dockerfile builds every workspace member, runs as a
//! non-root user and its health check works against the real binary; the systemd unit
//! verifies, is hardened, and its command line starts the real binary. The test command
//! installs docker-compose and systemd when missing: a missing tool fails, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rtmp-hls");

/// The secrets docker-compose.yml requires; each must be set, never defaulted.
const COMPOSE_SECRETS: [&str; 3] =
    ["MONGO_ROOT_PASSWORD", "RTMP_HLS_JWT_SECRET", "RTMP_HLS_ADMIN_TOKEN"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rtmp-hls-packaging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every environment variable the server reads, from `rtmp-hls --help` (`[env: NAME=...]`).
fn server_env_names() -> BTreeSet<String> {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success(), "rtmp-hls --help: {}", text(&output.stderr));
    let help = text(&output.stdout);
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        })
        .map(String::from_iter)
        .collect();
    // Not vacuous: the options the packaging sets are among them.
    for name in ["RTMP_HLS_HTTP_ADDR", "RTMP_HLS_DATA_DIR", "RTMP_HLS_MONGO_URI", "RTMP_HLS_CONFIG"]
    {
        assert!(names.contains(name), "{name} not in --help: {names:?}");
    }
    assert!(names.len() >= 30, "{names:?}");
    names
}

// ---------------------------------------------------------------------------------------------
// A server process started the way a deployment starts it.

struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Runs `argv` with exactly `env` (plus PATH), like systemd and Docker do.
    fn start(argv: &[String], env: &BTreeMap<String, String>) -> Self {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, stderr }
    }

    /// The address the HTTP listener reports in the log.
    fn http_addr(&mut self) -> SocketAddr {
        let (child, stderr) = (&mut self.child, &self.stderr);
        testkit::wait_until(Duration::from_secs(20), "the server to listen", || {
            let log = stderr.lock().unwrap().clone();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the server exited ({status}): {log}");
            }
            let marker = "HTTP listening addr=";
            let at = log.find(marker)? + marker.len();
            log[at..].split_whitespace().next()?.parse().ok()
        })
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    fn terminate_within(mut self, limit: Duration) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {limit:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `argv` (binary replaced by the built one) with exactly `env`.
fn run_with(argv: &[String], env: &BTreeMap<String, String>) -> Output {
    Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env)
        .output()
        .unwrap()
}

/// `host:port` with the port replaced by 0 (an ephemeral port for the test).
fn any_port(addr: &str) -> String {
    let (host, _) = addr.rsplit_once(':').unwrap();
    format!("{host}:0")
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One instruction of a Dockerfile: its stage (0-based, by FROM), keyword and arguments.
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut stage = None::<usize>;
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue; // comments (also inside continuations) and blank lines
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let logical = std::mem::take(&mut pending);
        let (keyword, args) = logical.split_once(char::is_whitespace).unwrap_or((&logical, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        if let Some(stage) = stage {
            instructions.push(Instruction { stage, keyword, args: args.trim().to_owned() });
        }
    }
    assert!(pending.is_empty(), "the Dockerfile ends inside a continuation");
    instructions
}

/// The exec-form JSON array at the end of `args` (after any `--options` and a keyword).
fn exec_form(args: &str) -> Vec<String> {
    let at = args.find('[').unwrap_or_else(|| panic!("not in exec form: {args}"));
    serde_json::from_str(&args[at..]).unwrap_or_else(|e| panic!("{args}: {e}"))
}

/// The runtime stage's `ENV` variables.
fn dockerfile_env(instructions: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    instructions
        .iter()
        .filter(|i| i.stage == stage && i.keyword == "ENV")
        .flat_map(|i| i.args.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair}"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// The workspace members' directories, relative to the root (`.` for the root package).
fn workspace_member_dirs() -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata: {}", text(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let dirs: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().strip_prefix(root()).unwrap();
            if dir.as_os_str().is_empty() { ".".to_owned() } else { dir.display().to_string() }
        })
        .collect();
    assert!(dirs.len() >= 2 && dirs.contains(&".".to_owned()), "{dirs:?}");
    dirs
}

#[test]
fn dockerfile_builds_every_member_and_runs_unprivileged_with_a_health_check() {
    let names = server_env_names();
    let instructions = dockerfile();
    let stages: Vec<&Instruction> = instructions.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(stages.len() >= 2, "a multi-stage build has at least two FROM");
    let runtime = stages.len() - 1;
    let in_stage = |stage: usize, keyword: &str| -> Vec<&Instruction> {
        instructions.iter().filter(|i| i.stage == stage && i.keyword == keyword).collect()
    };

    // Builder: Debian 12 Rust (the runtime's glibc), the locked release build of the binary,
    // and a COPY of every workspace member.
    let builder = &stages[0].args;
    assert!(builder.starts_with("rust:") && builder.contains("-bookworm"), "FROM {builder}");
    let build = in_stage(0, "RUN").into_iter().find(|i| i.args.contains("cargo build"));
    let build = build.expect("a RUN with cargo build in the first stage");
    for flag in ["--release", "--locked", "-p rtmp-hls"] {
        assert!(build.args.contains(flag), "cargo build without {flag}: {}", build.args);
    }
    // The sources of the builder's COPY instructions (every word but the flags and the last).
    let copies: Vec<String> = in_stage(0, "COPY")
        .iter()
        .flat_map(|i| {
            let words: Vec<&str> =
                i.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let copied = |path: &str| copies.iter().any(|c| c == "." || c == path);
    for required in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied(required), "the builder does not COPY {required}: {copies:?}");
    }
    for member in workspace_member_dirs().iter().filter(|d| *d != ".") {
        assert!(copied(member), "workspace member {member} is not copied: {copies:?}");
    }

    // .dockerignore keeps build output, secrets and the repository out of the context, and
    // none of what the build copies.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for must in ["target", ".git", ".env", ".venv-test"] {
        assert!(ignored.iter().any(|p| p == must), ".dockerignore lacks {must}: {ignored:?}");
    }
    let excludes = |pattern: &str, path: &str| {
        pattern == path
            || path.starts_with(&format!("{pattern}/"))
            || pattern
                .strip_prefix('*')
                .is_some_and(|end| !path.contains('/') && path.ends_with(end))
    };
    for path in copies.iter().filter(|c| *c != ".") {
        assert!(
            !ignored.iter().any(|p| excludes(p, path)),
            ".dockerignore excludes {path}, which the Dockerfile copies"
        );
    }

    // Runtime: slim Debian 12 (the binary links nothing it lacks), a non-root numeric user,
    // the ports, the data volume, the binary as entrypoint, a health check using it.
    assert!(stages[runtime].args.starts_with("debian:bookworm-slim"), "{}", stages[runtime].args);
    let copy_from = in_stage(runtime, "COPY");
    assert!(
        copy_from
            .iter()
            .any(|i| i.args.starts_with("--from=") && i.args.ends_with(" /usr/local/bin/rtmp-hls")),
        "the runtime stage copies the binary from the builder to /usr/local/bin (on PATH)"
    );
    let user = in_stage(runtime, "USER");
    let user = &user.last().expect("a USER in the runtime stage").args;
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric USER");
    assert_ne!(uid, 0, "USER {user}");
    let exposed: BTreeSet<u16> = in_stage(runtime, "EXPOSE")
        .iter()
        .flat_map(|i| i.args.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(exposed.contains(&1935) && exposed.contains(&8080), "EXPOSE {exposed:?}");
    let env = dockerfile_env(&instructions, runtime);
    for name in env.keys() {
        assert!(names.contains(name), "the Dockerfile sets {name}, which the server does not read");
    }
    let port = |name: &str| -> u16 {
        let addr = env.get(name).unwrap_or_else(|| panic!("the image does not set {name}"));
        addr.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    assert_eq!(port("RTMP_HLS_RTMP_ADDR"), 1935);
    assert_eq!(port("RTMP_HLS_HTTP_ADDR"), 8080);
    let data_dir = env.get("RTMP_HLS_DATA_DIR").expect("the image sets RTMP_HLS_DATA_DIR");
    let volumes = in_stage(runtime, "VOLUME");
    assert!(volumes.iter().any(|v| v.args.contains(data_dir.as_str())), "VOLUME {data_dir}");
    let entrypoint = exec_form(&in_stage(runtime, "ENTRYPOINT").last().unwrap().args);
    assert_eq!(entrypoint.first().map(String::as_str), Some("rtmp-hls"), "{entrypoint:?}");
    let healthcheck = &in_stage(runtime, "HEALTHCHECK").last().expect("a HEALTHCHECK").args;
    let probe = exec_form(healthcheck);
    assert_eq!(probe, ["rtmp-hls", "healthcheck"], "HEALTHCHECK {healthcheck}");

    // What the binary links is all in debian:bookworm-slim (libc6, libgcc-s1, zlib1g).
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    assert!(ldd.status.success(), "ldd: {}", text(&ldd.stderr));
    let allowed = ["linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libgcc_s.so", "libz.so"];
    for line in text(&ldd.stdout).lines() {
        let library = line.split_whitespace().next().unwrap_or_default();
        let file = library.rsplit('/').next().unwrap();
        assert!(
            allowed.iter().any(|a| file.starts_with(a)),
            "the binary links {library}, which debian:bookworm-slim lacks: add it to the \
             runtime stage\n{}",
            text(&ldd.stdout)
        );
    }

    // The image's configuration starts the server, and its HEALTHCHECK command, run with the
    // same environment, reports it healthy; once it stopped, unhealthy.
    let data = temp_dir("image");
    let mut env = env.clone();
    env.insert("RTMP_HLS_DATA_DIR".into(), data.display().to_string());
    for name in ["RTMP_HLS_RTMP_ADDR", "RTMP_HLS_HTTP_ADDR"] {
        let addr = any_port(&env[name]);
        env.insert(name.into(), addr);
    }
    let mut server = Running::start(&[BIN.to_owned()], &env);
    let http = server.http_addr();
    assert_eq!(http.ip().to_string(), "0.0.0.0", "the image listens on every interface");
    env.insert("RTMP_HLS_HTTP_ADDR".into(), http.to_string());
    let mut probe = probe;
    probe[0] = BIN.to_owned();
    let healthy = run_with(&probe, &env);
    assert!(healthy.status.success(), "healthcheck: {}\n{}", text(&healthy.stderr), server.log());
    let status = server.terminate_within(Duration::from_secs(20));
    assert!(status.success(), "exit after SIGTERM: {status}");
    let unhealthy = run_with(&probe, &env);
    assert!(!unhealthy.status.success(), "healthcheck passes with no server");
    std::fs::remove_dir_all(data).unwrap();
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// Runs docker-compose v1 (or `docker compose` with `plugin`) on docker-compose.yml with
/// exactly the variables of `env_file` (none of this process's).
fn compose(plugin: bool, env_file: &Path, args: &[&str]) -> Output {
    let mut command = if plugin { Command::new("docker") } else { Command::new("docker-compose") };
    if plugin {
        command.arg("compose");
    }
    command
        .arg("--env-file")
        .arg(env_file)
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .args(args)
        .current_dir(root());
    for (name, _) in std::env::vars() {
        if name.starts_with("RTMP_HLS_")
            || name.starts_with("MONGO_")
            || name.starts_with("COMPOSE_")
        {
            command.env_remove(name);
        }
    }
    command.output().unwrap_or_else(|e| {
        panic!("running docker-compose: {e} (./scripts/test.sh installs Debian's docker-compose)")
    })
}

/// YAML to JSON with the test venv's PyYAML.
fn yaml_to_json(yaml: &str) -> Value {
    let python = common::services::venv().join("bin").join("python");
    let mut child = Command::new(python)
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "PyYAML: {}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A service's environment as a map (compose writes a map or a list of `NAME=value`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A published port as (host IP, published port, container port).
fn port_mapping(port: &Value) -> (String, String, u16) {
    match port {
        Value::String(short) => {
            let short = short.split('/').next().unwrap();
            let parts: Vec<&str> = short.rsplitn(3, ':').collect();
            let target = parts[0].parse().unwrap();
            let published = parts.get(1).copied().unwrap_or_default().to_owned();
            let host = parts.get(2).copied().unwrap_or_default().to_owned();
            (host, published, target)
        }
        Value::Object(long) => (
            long.get("host_ip").and_then(Value::as_str).unwrap_or_default().to_owned(),
            long.get("published").map_or_else(String::new, |p| {
                p.as_str().map_or_else(|| p.to_string(), str::to_owned)
            }),
            long["target"].as_u64().unwrap().try_into().unwrap(),
        ),
        other => panic!("a port mapping: {other}"),
    }
}

/// Seconds of a compose duration like `30s`, `1m30s`.
fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let n: u64 = std::mem::take(&mut number).parse().unwrap();
            total += match c {
                'h' => n * 3600,
                'm' => n * 60,
                's' => n,
                _ => panic!("duration {duration}"),
            };
        }
    }
    assert!(number.is_empty(), "duration {duration} has no unit");
    total
}

#[test]
fn compose_file_validates_and_wires_the_server_through_its_own_variables() {
    let names = server_env_names();
    let raw = read("docker-compose.yml");
    // Secrets are required (`${NAME:?...}`), never defaulted or written in the file.
    for secret in COMPOSE_SECRETS {
        let uses: Vec<&str> =
            raw.match_indices(&format!("${{{secret}")).map(|(i, _)| &raw[i..]).collect();
        assert!(!uses.is_empty(), "docker-compose.yml does not use {secret}");
        for usage in uses {
            assert!(
                usage.starts_with(&format!("${{{secret}:?")),
                "{secret} must be required with ${{{secret}:?...}}: {}",
                usage.lines().next().unwrap()
            );
        }
    }

    let dir = temp_dir("compose");
    let admin_token = "packaging-admin-token-0123456789";
    let env_file = dir.join("compose.env");
    std::fs::write(
        &env_file,
        format!(
            "MONGO_ROOT_PASSWORD=packaging-mongo-pw\nRTMP_HLS_JWT_SECRET=packaging-jwt-secret-32-bytes-long\n\
             RTMP_HLS_ADMIN_TOKEN={admin_token}\n"
        ),
    )
    .unwrap();
    let empty_env_file = dir.join("empty.env");
    std::fs::write(&empty_env_file, "").unwrap();

    // docker-compose v1 (Debian's), and the v2 plugin when this machine has it.
    let v1 = compose(false, &env_file, &["config", "-q"]);
    assert!(v1.status.success(), "docker-compose config -q: {}", text(&v1.stderr));
    let missing = compose(false, &empty_env_file, &["config", "-q"]);
    assert!(!missing.status.success(), "docker-compose config passes without the secrets");
    let why = text(&missing.stderr);
    assert!(COMPOSE_SECRETS.iter().any(|s| why.contains(s)), "{why}");
    let has_plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_plugin {
        let v2 = compose(true, &env_file, &["config", "-q"]);
        assert!(v2.status.success(), "docker compose config -q: {}", text(&v2.stderr));
        let missing = compose(true, &empty_env_file, &["config", "-q"]);
        assert!(!missing.status.success(), "docker compose config passes without the secrets");
    }

    let resolved = compose(false, &env_file, &["config"]);
    assert!(resolved.status.success(), "docker-compose config: {}", text(&resolved.stderr));
    let config = yaml_to_json(&text(&resolved.stdout));
    let services = config["services"].as_object().expect("services");
    for name in ["rtmp-hls", "mongo", "kafka"] {
        let service = services.get(name).unwrap_or_else(|| panic!("no {name} service"));
        let test = &service["healthcheck"]["test"];
        let probe = test.as_array().unwrap_or_else(|| panic!("{name} has no health check"));
        assert!(
            probe.first().and_then(Value::as_str).is_some_and(|t| t.starts_with("CMD")),
            "{name} health check: {test}"
        );
        assert_ne!(service["healthcheck"]["disable"], Value::Bool(true), "{name}");
    }
    // Dependencies wait for health (or for a one-shot init to succeed), never just a start.
    for (name, service) in services {
        if let Some(depends) = service.get("depends_on") {
            let depends = depends.as_object().unwrap_or_else(|| panic!("{name}: {depends}"));
            for (on, how) in depends {
                let condition = how["condition"].as_str().unwrap_or_default();
                let expected = if services[on].get("healthcheck").is_some() {
                    "service_healthy"
                } else {
                    "service_completed_successfully"
                };
                assert_eq!(condition, expected, "{name} depends on {on}");
            }
        }
    }
    let server = &services["rtmp-hls"];
    for on in ["mongo", "kafka"] {
        assert_eq!(server["depends_on"][on]["condition"], "service_healthy", "rtmp-hls on {on}");
    }
    assert_eq!(
        server["healthcheck"]["test"],
        serde_json::json!(["CMD", "rtmp-hls", "healthcheck"])
    );

    // Every variable it sets is one the server reads, and the important ones are there.
    let env = environment(server);
    for name in env.keys() {
        assert!(names.contains(name), "compose sets {name}, which the server does not read");
    }
    assert!(env.len() >= 5, "{env:?}");
    for name in [
        "RTMP_HLS_MONGO_URI",
        "RTMP_HLS_KAFKA_BROKERS",
        "RTMP_HLS_JWT_SECRET",
        "RTMP_HLS_ADMIN_TOKEN",
        "RTMP_HLS_ADMIN_ADDR",
    ] {
        assert!(env.contains_key(name), "rtmp-hls gets no {name}");
    }
    assert_eq!(env["RTMP_HLS_ADMIN_TOKEN"], admin_token);

    // They point at the compose services.
    let mongo_host = env["RTMP_HLS_MONGO_URI"].rsplit_once('@').unwrap().1;
    assert!(mongo_host.starts_with("mongo:27017"), "{mongo_host}");
    let brokers = &env["RTMP_HLS_KAFKA_BROKERS"];
    let kafka_env = environment(&services["kafka"]);
    for broker in brokers.split(',') {
        let (host, _) = broker.rsplit_once(':').unwrap();
        assert!(services.contains_key(host), "broker {broker} is not a compose service");
        assert!(
            kafka_env["KAFKA_ADVERTISED_LISTENERS"].contains(&format!("://{broker}")),
            "Kafka does not advertise {broker}: {kafka_env:?}"
        );
    }
    assert!(kafka_env["KAFKA_PROCESS_ROLES"].contains("controller"), "KRaft: {kafka_env:?}");
    let topic = env.get("RTMP_HLS_KAFKA_TOPIC").map_or("stream-events", String::as_str);
    if kafka_env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE").map(String::as_str) == Some("false") {
        let created = services.values().any(|s| {
            let command = s["command"].as_array().cloned().unwrap_or_default();
            let words: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
            words.windows(2).any(|w| w == ["--topic", topic]) && words.contains(&"--create")
        });
        assert!(created, "auto-creation is off and nothing creates topic {topic}");
    }

    // Ports: RTMP and HLS published; the admin API only on the host's loopback.
    let ports: Vec<(String, String, u16)> =
        server["ports"].as_array().unwrap().iter().map(port_mapping).collect();
    for target in [1935, 8080] {
        assert!(ports.iter().any(|p| p.2 == target), "{target} not published: {ports:?}");
    }
    let admin_port: u16 = env["RTMP_HLS_ADMIN_ADDR"].rsplit_once(':').unwrap().1.parse().unwrap();
    let admin: Vec<_> = ports.iter().filter(|p| p.2 == admin_port).collect();
    assert!(!admin.is_empty(), "the admin port {admin_port} is not published: {ports:?}");
    for (host, _, _) in admin {
        assert_eq!(host, "127.0.0.1", "the admin API must be published on loopback only");
    }

    // State on named volumes: the server's data directory (the image's), Mongo's, Kafka's.
    let instructions = dockerfile();
    let image_env = dockerfile_env(&instructions, instructions.last().unwrap().stage);
    let declared = config["volumes"].as_object().expect("top-level volumes");
    for (name, target) in [
        ("rtmp-hls", image_env["RTMP_HLS_DATA_DIR"].as_str()),
        ("mongo", "/data/db"),
        ("kafka", kafka_env["KAFKA_LOG_DIRS"].as_str()),
    ] {
        let mounts = services[name]["volumes"].as_array().unwrap_or_else(|| panic!("{name}"));
        // Short syntax (`name:/path:rw`, docker-compose v1) or long (compose v2).
        let volume = mounts.iter().find_map(|m| match m {
            Value::String(spec) => {
                let (source, rest) = spec.split_once(':')?;
                (rest.split(':').next() == Some(target)).then_some(source)
            }
            long => (long["type"] == "volume" && long["target"] == target)
                .then(|| long["source"].as_str())
                .flatten(),
        });
        let volume = volume.unwrap_or_else(|| panic!("{name} has no volume at {target}"));
        assert!(declared.contains_key(volume), "{volume} is not a named volume");
    }

    // The server stops cleanly within the grace period: RTMP and HTTP grace and Kafka flush.
    let grace = server["stop_grace_period"].as_str().expect("a stop_grace_period");
    assert!(seconds(grace) >= 20, "stop_grace_period {grace}");

    // The server accepts this configuration (the image's and the compose file's variables).
    let data = temp_dir("compose-data");
    let mut effective = image_env.clone();
    effective.extend(env.clone());
    effective.insert("RTMP_HLS_DATA_DIR".into(), data.display().to_string());
    let check = run_with(&[BIN.to_owned(), "config".into(), "check".into()], &effective);
    let out = text(&check.stdout);
    assert!(check.status.success(), "config check: {}{out}", text(&check.stderr));
    assert!(out.contains("log_format = \"json\"  # environment"), "{out}");
    assert!(out.contains(&format!("admin_addr = \"0.0.0.0:{admin_port}\"")), "{out}");
    assert!(!out.contains(admin_token), "config check printed the admin token");
    std::fs::remove_dir_all(data).unwrap();

    // The cluster profile: two nodes in one registry, each reachable at its own cluster URL,
    // each configuration accepted by the server, and nginx with the documented cache.
    let resolved = compose(false, &env_file, &["--profile", "cluster", "config"]);
    assert!(resolved.status.success(), "--profile cluster: {}", text(&resolved.stderr));
    let config = yaml_to_json(&text(&resolved.stdout));
    let services = config["services"].as_object().expect("services");
    for node in ["node-a", "node-b"] {
        let env = environment(&services[node]);
        for name in env.keys() {
            assert!(names.contains(name), "{node} sets {name}, which the server does not read");
        }
        assert_eq!(env["RTMP_HLS_SERVER_ID"], node);
        assert_eq!(env["RTMP_HLS_CLUSTER_URL"], format!("http://{node}:8080"));
        assert_eq!(env["RTMP_HLS_MONGO_URI"], environment(server)["RTMP_HLS_MONGO_URI"]);
        let data = temp_dir(&format!("compose-{node}"));
        let mut effective = image_env.clone();
        effective.extend(env.clone());
        effective.insert("RTMP_HLS_DATA_DIR".into(), data.display().to_string());
        let check = run_with(&[BIN.to_owned(), "config".into(), "check".into()], &effective);
        assert!(check.status.success(), "{node} config check: {}", text(&check.stderr));
        std::fs::remove_dir_all(data).unwrap();
    }
    let cdn = serde_json::to_string(&services["cdn"]).unwrap();
    for file in ["deploy/nginx-cluster.conf", "deploy/nginx-cache.conf"] {
        assert!(root().join(file).exists() && cdn.contains(file.trim_start_matches("deploy/")));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// systemd unit

/// The `[Service]` settings of deploy/rtmp-hls.service, in order.
fn unit_service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
            settings.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

#[test]
fn systemd_unit_verifies_is_hardened_and_its_command_line_runs() {
    let names = server_env_names();
    let unit = read("deploy/rtmp-hls.service");
    let settings = unit_service_settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    };
    let one = |key: &str| -> &str {
        let values = get(key);
        assert_eq!(values.len(), 1, "{key}= must be set once: {values:?}");
        values[0]
    };

    // Hardening directives.
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("User", "rtmp-hls"),
        ("Group", "rtmp-hls"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(key), value, "{key}=");
    }
    assert!(get("SystemCallFilter").contains(&"@system-service"), "SystemCallFilter=");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    let stop = one("TimeoutStopSec");
    let stop = Duration::from_secs(seconds(stop));
    assert!(stop >= Duration::from_secs(20), "TimeoutStopSec={stop:?}: grace + Kafka flush");
    assert!(get("EnvironmentFile").iter().all(|f| f.starts_with('-')), "optional env file");
    assert!(!unit.contains("RTMP_HLS_JWT_SECRET=") && !unit.contains("RTMP_HLS_ADMIN_TOKEN="));

    // The unit with ExecStart at the built binary verifies, without a warning.
    let exec_start: Vec<String> = one("ExecStart").split_whitespace().map(str::to_owned).collect();
    assert!(
        exec_start[0].starts_with('/') && !exec_start.iter().any(|a| a.contains(['"', '\''])),
        "ExecStart={exec_start:?}: a plain absolute command line"
    );
    assert!(exec_start[0].ends_with("/rtmp-hls"), "{exec_start:?}");
    let dir = temp_dir("systemd");
    let copy = dir.join("rtmp-hls.service");
    let original_exec = format!("ExecStart={}", one("ExecStart"));
    let mut argv = exec_start.clone();
    argv[0] = BIN.to_owned();
    assert!(unit.contains(&original_exec));
    std::fs::write(&copy, unit.replace(&original_exec, &format!("ExecStart={}", argv.join(" "))))
        .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (./scripts/test.sh installs Debian's systemd)");
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    // systemd's own exposure score: 2.0 or below ("OK"; 10 is unprotected).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = text(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}{}", text(&security.stderr));

    // Run the command line the way systemd does: an empty environment plus the unit's
    // Environment= (EnvironmentFile= is optional and absent), the state directory in a
    // temporary stand-in.
    let state_directory = one("StateDirectory");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut env = BTreeMap::new();
    for assignment in get("Environment") {
        for pair in assignment.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap_or_else(|| panic!("{pair}"));
            assert!(names.contains(name), "the unit sets {name}, which the server does not read");
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    assert_eq!(
        env.get("RTMP_HLS_DATA_DIR").map(String::as_str),
        Some(format!("/var/lib/{state_directory}").as_str()),
        "the data directory is the StateDirectory"
    );
    env.insert("RTMP_HLS_DATA_DIR".into(), state.display().to_string());
    let mut check = argv.clone();
    check.extend(["config".into(), "check".into()]);
    let checked = run_with(&check, &env);
    let out = text(&checked.stdout);
    assert!(checked.status.success(), "config check: {}{out}", text(&checked.stderr));
    assert!(out.contains(&format!("data_dir = \"{}\"  # environment", state.display())), "{out}");

    // It serves (on test ports, as /etc/rtmp-hls/env could set), and stops cleanly on
    // SIGTERM well within TimeoutStopSec (a failure exit would make Restart= restart it).
    env.insert("RTMP_HLS_RTMP_ADDR".into(), "127.0.0.1:0".into());
    env.insert("RTMP_HLS_HTTP_ADDR".into(), "127.0.0.1:0".into());
    let mut server = Running::start(&argv, &env);
    let http = server.http_addr();
    let health = testkit::http::get(http, "/healthz");
    assert_eq!(health.status, 200);
    assert!(state.join("keys.json").exists(), "the key store is in the state directory");
    let status = server.terminate_within(stop);
    assert!(status.success(), "exit after SIGTERM: {status}");
    std::fs::remove_dir_all(dir).unwrap();
}
