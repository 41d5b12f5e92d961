//! `dingsync run` as a child process with its JSON log captured, and what /proc says of a
//! process: the one daemon harness of the tests and the benchmarks (which include this
//! module with `#[path]`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running daemon.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its log lines (stderr) so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `dingsync run --config <config> --log-format json` (tests and benchmarks alike).
    pub fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .env_remove("DINGSYNC_CONFIG")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// [`Daemon::start`], then waits (20 s at most) until it logged `daemon.started`.
    pub async fn started(config: &std::path::Path) -> Self {
        let daemon = Self::start(config);
        daemon.wait_for("daemon.started", 1).await;
        daemon
    }

    /// How many log lines carry `event`.
    pub fn count(&self, event: &str) -> usize {
        let needle = format!("\"event\":\"{event}\"");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Waits (20 s at most) until `event` was logged `times` times.
    pub async fn wait_for(&self, event: &str, times: usize) {
        self.eventually(&format!("{event} logged {times} times"), 20, || {
            self.count(event) >= times
        })
        .await;
    }

    /// Waits (20 s at most) until a line with `event` also contains `text`.
    pub async fn wait_for_with(&self, event: &str, text: &str) {
        let needle = format!("\"event\":\"{event}\"");
        self.eventually(&format!("{event} with {text}"), 20, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&needle) && l.contains(text))
        })
        .await;
    }

    /// Waits (`seconds` at most) until `check` holds; on a timeout the failure shows the log.
    pub async fn eventually<F: Fn() -> bool>(&self, what: &str, seconds: u64, check: F) {
        super::eventually(what, Duration::from_secs(seconds), async || {
            if check() {
                Ok(())
            } else {
                Err(format!("the daemon's log:\n{}", self.log()))
            }
        })
        .await
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the daemon is running")
    }

    /// The address logged as `metrics.listening` (`[metrics] listen`, port 0 resolved).
    pub fn metrics_address(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let line = lines
            .iter()
            .find(|l| l.contains("\"event\":\"metrics.listening\""))
            .expect("metrics.listening logged");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["address"]
            .as_str()
            .or_else(|| value["fields"]["address"].as_str())
            .unwrap()
            .to_string()
    }

    /// SIGTERM, then waits (20 s at most) for the exit; returns its code.
    pub async fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exited within 20 s")
            .unwrap()
            .code()
    }

    /// Sends signal `name` (e.g. TERM).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }
}

/// GET `url`: the status and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// CPU seconds (user + system) the live process `pid` has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The peak resident set (VmHWM) of the live process `pid`, in KiB (0 once it is gone).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
