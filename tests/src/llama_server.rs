//! A real OpenAI-compatible server for tests: llama.cpp's `llama-server`
//! (built by `scripts/build-llama-cpp.sh`) on `127.0.0.1` and a free port,
//! stopped when the guard drops (also when a test panics).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/build-llama-cpp.sh` puts `llama-server`, or
/// `TECHNE_LLAMA_SERVER` when set.
pub fn binary_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TECHNE_LLAMA_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/llama.cpp/build/bin/llama-server")
}

/// A running `llama-server`; dropping it kills the process.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    /// Start `binary` serving `model` (one thread, a 2048-token context) with
    /// `extra` arguments (e.g. `--parallel 2`), and wait (up to
    /// `ready_within`) until `/health` answers 200. The server's output goes
    /// to `log`.
    pub fn start(
        binary: &Path,
        model: &Path,
        extra: &[&str],
        log: &Path,
        ready_within: Duration,
    ) -> Result<Self, String> {
        let port = free_port()?;
        let log_file = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err_file = log_file.try_clone().map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let child = Command::new(binary)
            .arg("--model")
            .arg(model)
            // One thread: llama.cpp's spinning thread barriers slow down badly on a
            // busy machine (tests and builds run beside it).
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--threads", "1", "--ctx-size", "2048"])
            .arg("--no-webui")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = Self { child, port, log: log.to_path_buf() };
        let deadline = Instant::now() + ready_within;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("llama-server exited ({status}) before it was ready:\n{}", server.log_tail()));
            }
            if http_status(port, "/health") == Some(200) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("llama-server was not ready within {ready_within:?}:\n{}", server.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

/// The status of `GET path` on `127.0.0.1:port`, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}
