//! A RabbitMQ node of a test's own, beside the machine's: its own node name, ports and data
//! directory, and its own settings. RabbitMQ 3.10 has some settings only node-wide (the
//! `consumer_timeout` after which the broker closes the channel of an unacknowledged delivery,
//! and the channel tick that checks it), so a scenario that needs a short one starts a node.
//!
//! The node runs in the foreground under `setsid` (the Debian wrapper drops to the `rabbitmq`
//! user, so its directories belong to that user), and is stopped — `rabbitmqctl stop`, then
//! its process group killed — when the handle drops, also when the test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::procs::free_port;

/// How long a node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running RabbitMQ node, stopped on drop.
pub struct BrokerNode {
    /// `name@localhost`.
    pub name: String,
    /// Where to reach it.
    pub broker: Broker,
    dir: PathBuf,
    child: Child,
}

/// Settings of a node (its `advanced.config`, the `rabbit` application's environment).
#[derive(Debug, Clone, Copy)]
pub struct NodeSettings {
    /// `consumer_timeout`: a delivery left unacknowledged longer closes its channel.
    pub consumer_timeout: Duration,
    /// `channel_tick_interval`: how often channels check it (60 s by default).
    pub channel_tick: Duration,
}

fn ctl(name: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("rabbitmqctl")
        .arg("-n")
        .arg(name)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// A free port outside 35672–35682, which `rabbitmqctl` takes for its own distribution.
fn port() -> u16 {
    loop {
        let p = free_port();
        if !(35672..=35682).contains(&p) {
            return p;
        }
    }
}

impl BrokerNode {
    /// Starts a node with `settings`, its management plugin on its own port (the plugin is
    /// enabled machine-wide by `make rabbitmq`), and waits until it answers.
    pub fn start(label: &str, settings: NodeSettings) -> BrokerNode {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("scimrelay-{label}-{suffix}@localhost");
        let dir = std::env::temp_dir().join(format!("scimrelay-node-{label}-{suffix}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        let (amqp, management, prometheus, dist) = (port(), port(), port(), port());
        let write = |file: &str, text: String| {
            std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
        };
        write(
            "rabbitmq.conf",
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.port = {management}\nmanagement.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {prometheus}\nprometheus.tcp.ip = 127.0.0.1\n"
            ),
        );
        write(
            "advanced.config",
            format!(
                "[{{rabbit, [{{consumer_timeout, {}}}, {{channel_tick_interval, {}}}]}}].\n",
                settings.consumer_timeout.as_millis(),
                settings.channel_tick.as_millis()
            ),
        );
        // The server runs as the `rabbitmq` user (when started as root, the wrapper drops to
        // it), which must own its directories.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let log = std::fs::File::create(dir.join("server.out"))
            .unwrap_or_else(|e| panic!("server.out: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("server.out: {e}"));
        let child = Command::new("setsid")
            .arg("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting rabbitmq-server: {e}"));
        let mut node = BrokerNode {
            name,
            broker: Broker {
                management: format!("127.0.0.1:{management}"),
                amqp_port: amqp,
            },
            dir,
            child,
        };
        node.wait_started();
        node
    }

    fn wait_started(&mut self) {
        let begin = Instant::now();
        // The node registers with epmd a few seconds after its start; until then every
        // `rabbitmqctl` call fails at once.
        loop {
            let out = ctl(&self.name, &["await_startup", "--timeout", "30"]);
            if matches!(&out, Ok(o) if o.status.success()) {
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "RabbitMQ node {} exited ({status}) while starting:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                begin.elapsed() < START_TIMEOUT,
                "RabbitMQ node {} did not start within {START_TIMEOUT:?}: {out:?}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        while std::net::TcpStream::connect(&self.broker.management).is_err() {
            assert!(
                begin.elapsed() < START_TIMEOUT,
                "node {}: management API never listened on {}\n{}",
                self.name,
                self.broker.management,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node's own log (where it says which channels it closed, and why).
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        text
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        let _ = ctl(&self.name, &["stop"]);
        // The wrapper, the Erlang VM and its helpers are one process group (setsid).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
