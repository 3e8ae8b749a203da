//! Child processes of the services: started from the workspace's `target/` directory, logs in a
//! temp file, killed on drop, log tail printed when the test is failing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of a workspace binary next to the running executable (`target/debug`).
/// Panics with the build command when it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary {} not found; build the workspace binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 for a service a test starts, chosen at random **below the
/// kernel's ephemeral range**: a port from `bind(0)` comes from that range, and between its
/// release and the service's own bind any outgoing connection on the machine (to RabbitMQ, an
/// HTTP client) may be given it — a service then fails with "Address already in use". Below
/// the range only another explicit bind can take it, and a random pick makes that unlikely.
/// A port is never handed out twice by one process: a stack picks all its ports before its
/// services bind them, and a second pick of the same free port would start two services on it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FLOOR: u16 = 10_000;
    if low > FLOOR + 1_000 {
        for _ in 0..200 {
            let span = u128::from(low - FLOOR);
            let port = FLOOR + (uuid::Uuid::new_v4().as_u128() % span) as u16;
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running service process.
pub struct Proc {
    /// The name for messages.
    pub name: String,
    /// The binary it runs.
    pub bin: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts binary `bin` with `env` (added to a clean-ish environment) and `args`.
    pub fn start(
        name: &str,
        bin: &str,
        env: &BTreeMap<String, String>,
        args: &[String],
        log_dir: &std::path::Path,
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(args)
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        cmd.env(
            "RUST_LOG",
            std::env::var("SCIMRELAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Proc {
            name: name.to_owned(),
            bin: bin.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited; its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal (SIGTERM, SIGKILL, …).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // A negative pid would signal a process group; ours is a plain child pid.
            let pid = i32::try_from(c.id()).unwrap_or(0);
            if pid > 0 {
                // `unsafe` is forbidden in this workspace, so signal through kill(1), not libc.
                let _ = Command::new("kill")
                    .arg(format!("-{sig}"))
                    .arg(pid.to_string())
                    .status();
            }
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the status and the time taken.
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        self.signal(libc::SIGTERM);
        while start.elapsed() < limit {
            if let Some(s) = self.try_wait() {
                return Some((s, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until `line` appears in the log, up to `limit`.
    pub fn wait_for_log(&mut self, line: &str, limit: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| l.contains(line)) {
                return Some(l.to_owned());
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {line:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "----- last lines of {} ({}) -----",
                self.name,
                self.log.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
