//! Real services the tests start themselves: a MongoDB-wire server (SecantusDB) and the
//! test venv's Python (pymongo, AuthX) playing the platform's backend. The test command
//! installs them into `.venv-test`; a missing one fails the test, it never skips it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

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
