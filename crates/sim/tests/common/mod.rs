//! Test harness: starts the simulator in-process on an ephemeral port and offers a SCIM client.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A running simulator.
pub struct Sim {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Starts a simulator with a YAML config.
pub async fn start(yaml: &str) -> Sim {
    let config =
        scimrelay_sim::SimConfig::from_yaml_str(yaml).unwrap_or_else(|e| panic!("config: {e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(scimrelay_sim::serve(config, listener, async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    Sim {
        origin: format!("http://{addr}"),
        http,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A plain scim tenant called `t`, no auth.
pub async fn start_plain() -> Sim {
    start("tenants: [{id: t, mode: scim}]").await
}

impl Sim {
    /// `/t/scim/v2` + path.
    pub fn url(&self, path: &str) -> String {
        format!("{}/t/scim/v2{path}", self.origin)
    }

    /// Any path on the server.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// Sends a JSON request and returns (status, headers, body or Null).
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(reqwest::Method::GET, &self.url(path), None, &[])
            .await;
        (s, b)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self
            .send(reqwest::Method::POST, &self.url(path), Some(body), &[])
            .await;
        (s, b)
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self
            .send(reqwest::Method::PUT, &self.url(path), Some(body), &[])
            .await;
        (s, b)
    }

    pub async fn patch(&self, path: &str, ops: Value) -> (u16, Value) {
        let body = json!({"schemas": [PATCH], "Operations": ops});
        let (s, _, b) = self
            .send(reqwest::Method::PATCH, &self.url(path), Some(body), &[])
            .await;
        (s, b)
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.send(reqwest::Method::DELETE, &self.url(path), None, &[])
            .await
            .0
    }

    /// Creates a user and returns its id.
    pub async fn user(&self, user_name: &str, extra: Value) -> String {
        let mut body = json!({"schemas": [USER], "userName": user_name});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        let (s, b) = self.post("/Users", body).await;
        assert_eq!(s, 201, "create {user_name}: {b}");
        b["id"].as_str().unwrap_or_default().to_string()
    }

    /// Creates a group and returns its id.
    pub async fn group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let (s, b) = self
            .post(
                "/Groups",
                json!({"schemas": [GROUP], "displayName": name, "members": members}),
            )
            .await;
        assert_eq!(s, 201, "create group {name}: {b}");
        b["id"].as_str().unwrap_or_default().to_string()
    }

    /// GET an admin path, as JSON.
    pub async fn admin(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {path}: {e}"));
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("admin {path}: {e}"))
    }

    /// PUT faults for tenant `t`.
    pub async fn faults(&self, tenant: &str, faults: Value) -> u16 {
        let resp = self
            .http
            .put(self.at(&format!("/_admin/tenants/{tenant}/faults")))
            .json(&faults)
            .send()
            .await
            .unwrap_or_else(|e| panic!("faults: {e}"));
        resp.status().as_u16()
    }

    /// Stops the server and waits for it to exit cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(5), task).await;
            assert!(
                matches!(r, Ok(Ok(Ok(())))),
                "server did not stop cleanly: {r:?}"
            );
        }
    }
}

/// The user names in a ListResponse, in order.
pub fn names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["userName"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
