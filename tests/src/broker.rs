//! A private RabbitMQ vhost per test, created and deleted through the management API
//! (`make test` enables the plugin), so tests never see each other's queues.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;

/// The management API address of the machine's node.
pub const MANAGEMENT: &str = "127.0.0.1:15672";

/// Where a RabbitMQ node listens: the machine's (the default), or a test's own
/// ([`crate::node::BrokerNode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The management API (`host:port`).
    pub management: String,
    /// The AMQP port on 127.0.0.1.
    pub amqp_port: u16,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            management: MANAGEMENT.into(),
            amqp_port: 5672,
        }
    }
}

/// A vhost that is deleted on drop.
pub struct TestVhost {
    /// The vhost name.
    pub name: String,
    /// The node it lives on.
    pub broker: Broker,
}

fn request(
    management: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &management
            .parse()
            .map_err(|e| std::io::Error::other(format!("{e}")))?,
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {management}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl TestVhost {
    /// Creates `scimrelay-test-<label>-<random>` with full permissions for guest.
    /// Panics with instructions when RabbitMQ or its management plugin is not running: a test
    /// that needs the broker fails loudly, it never skips.
    pub fn create(label: &str) -> Self {
        Self::create_on(label, &Broker::default())
    }

    /// [`TestVhost::create`] on the node `broker`.
    pub fn create_on(label: &str, broker: &Broker) -> Self {
        let management = broker.management.as_str();
        let name = format!(
            "scimrelay-test-{label}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let path = format!("/api/vhosts/{}", encode(&name));
        match request(management, "PUT", &path, "{}") {
            Ok((201 | 204, _)) => {}
            Ok((status, body)) => {
                panic!("creating vhost {name}: management API answered {status}: {body}")
            }
            Err(e) => panic!(
                "RabbitMQ management API not reachable at {management} ({e}); run `make rabbitmq` (starts RabbitMQ and enables rabbitmq_management)"
            ),
        }
        let perm = r#"{"configure":".*","write":".*","read":".*"}"#;
        match request(
            management,
            "PUT",
            &format!("/api/permissions/{}/guest", encode(&name)),
            perm,
        ) {
            Ok((201 | 204, _)) => {}
            other => panic!("setting permissions on {name}: {other:?}"),
        }
        TestVhost {
            name,
            broker: broker.clone(),
        }
    }

    /// The AMQP URL of this vhost.
    pub fn amqp_url(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            self.broker.amqp_port,
            encode(&self.name)
        )
    }

    /// Messages ready + unacked in a queue of this vhost (management API; refreshed every few
    /// seconds by the broker, so poll).
    pub fn queue_depth(&self, queue: &str) -> Option<(u64, u64)> {
        let (status, body) = request(
            &self.broker.management,
            "GET",
            &format!("/api/queues/{}/{}", encode(&self.name), encode(queue)),
            "",
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        let json = body.split_once("\r\n\r\n").map(|(_, b)| b)?;
        let json = dechunk(json);
        let v: serde_json::Value = serde_json::from_str(&json).ok()?;
        Some((
            v.get("messages_ready")?.as_u64()?,
            v.get("messages_unacknowledged")?.as_u64()?,
        ))
    }
}

impl TestVhost {
    /// Closes (from the broker's side) every client connection of this vhost whose connection
    /// name contains `fragment`, as a network partition or a broker failover would; returns how
    /// many it closed.
    pub fn close_connections(&self, fragment: &str) -> usize {
        let path = format!("/api/vhosts/{}/connections", encode(&self.name));
        let Ok((200, body)) = request(&self.broker.management, "GET", &path, "") else {
            return 0;
        };
        let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let list: Vec<serde_json::Value> = serde_json::from_str(&dechunk(json)).unwrap_or_default();
        let mut closed = 0;
        for c in list {
            let named = c["client_properties"]["connection_name"]
                .as_str()
                .is_some_and(|n| n.contains(fragment));
            if let (true, Some(name)) = (named, c["name"].as_str())
                && let Ok((204, _)) = request(
                    &self.broker.management,
                    "DELETE",
                    &format!("/api/connections/{}", encode(name)),
                    "",
                )
            {
                closed += 1;
            }
        }
        closed
    }
}

/// Undoes HTTP/1.1 chunked transfer encoding when present.
fn dechunk(body: &str) -> String {
    if body.trim_start().starts_with(['{', '[']) {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = request(
            &self.broker.management,
            "DELETE",
            &format!("/api/vhosts/{}", encode(&self.name)),
            "",
        );
    }
}
