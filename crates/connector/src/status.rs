//! The connector's side of the status service: the state of record, the guard and target
//! reports.
//!
//! **State of record.** When a connector takes a message it records the message's desired
//! state (`TakeEvents`) and gets the subject's record back: the latest accepted desired version,
//! what was applied, the remote id, the no-op fingerprint, the presence. After converging it
//! records what it applied, or that the attempt failed (`RecordConverged`), before it acks. A
//! group's members are looked up in it too (`GetRecords`). Versions are decided there, never in
//! this process's memory, so a replica that regains a shard, a restart or a failover can never
//! apply a stale version. When the status service cannot be asked (down, slow past
//! [`CALL_TIMEOUT`], refusing), nothing is applied: the message waits on a delay tier without
//! counting an attempt. Calls are batched by [`Batcher`] (group commit, no timer).
//!
//! **Guard.** Before a user is deactivated or deleted, the mass-deprovisioning guard asks the
//! status service (`AdmitDeprovision`), which counts admissions per target in a sliding window
//! across every replica, with the settings of its own targets file. The answer is admitted,
//! held (with the reason), or unavailable: the status service could not be asked, and the
//! deprovisioning waits on a delay tier (the attempt is not counted) rather than go out
//! unguarded.
//!
//! **Reports.** Every [`REPORT_INTERVAL`] each target's throttling, quarantine and concurrency
//! are published to `scimrelay.reports` for `ListTargets` / `GetTarget`.
//!
//! **Connection.** Both clients share one lazily connected channel built by [`status_client`]:
//! TLS when `SCIMRELAY_STATUS_URL` is `https://` (system roots plus `SCIMRELAY_STATUS_CA_FILE`,
//! and a client certificate for mutual TLS), and `Authorization: Bearer <key>` metadata on every
//! call when `SCIMRELAY_STATUS_API_KEY` (or `_FILE`) is set. The files are read and checked at
//! start ([`StatusTls::from_env`]), so a bad one stops the connector naming the variable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Endpoint;

use scimrelay_core::config::ConfigError;
use scimrelay_proto::client::{self, ClientTls, EndpointError};
pub use scimrelay_proto::client::{BearerAuth, StatusClient};
use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{
    AdmitDeprovisionRequest, Converged, GetRecordsRequest, RecordConvergedRequest, SubjectKey,
    SubjectRecord, TakeEvent, TakeEventsRequest,
};
use scimrelay_scim::Secret;

/// Most items per state-of-record call (the status service's limit).
pub const BATCH_MAX: usize = 1000;
/// State-of-record calls in flight at once per kind of call; more wait and go out together.
pub const MAX_IN_FLIGHT: usize = 4;
/// How long a status call may take before it counts as failed (the messages it served wait on
/// a delay tier and try again).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often targets are reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The status service's URL.
pub const STATUS_URL_ENV: &str = "SCIMRELAY_STATUS_URL";
/// The API key for the status service.
pub const STATUS_API_KEY_ENV: &str = "SCIMRELAY_STATUS_API_KEY";
/// A file holding the API key (trimmed), instead of [`STATUS_API_KEY_ENV`].
pub const STATUS_API_KEY_FILE_ENV: &str = "SCIMRELAY_STATUS_API_KEY_FILE";
/// PEM CA bundle trusted for an `https://` status URL in addition to the system roots.
pub const STATUS_CA_FILE_ENV: &str = "SCIMRELAY_STATUS_CA_FILE";
/// PEM client certificate (chain) for mutual TLS with the status service.
pub const STATUS_CLIENT_CERT_ENV: &str = "SCIMRELAY_STATUS_CLIENT_CERT_FILE";
/// PEM private key of [`STATUS_CLIENT_CERT_ENV`].
pub const STATUS_CLIENT_KEY_ENV: &str = "SCIMRELAY_STATUS_CLIENT_KEY_FILE";

/// TLS material for an `https://` status URL, read at start. `Debug` shows only what is set.
#[derive(Clone, Default)]
pub struct StatusTls {
    /// `SCIMRELAY_STATUS_CA_FILE`: CA certificates trusted on top of the system roots, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// `SCIMRELAY_STATUS_CLIENT_CERT_FILE` and `_KEY_FILE`: the certificate chain and private
    /// key presented for mutual TLS, PEM.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for StatusTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_identity.is_some())
            .finish()
    }
}

fn env_path(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn read_file(var: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path)).map_err(|e| ConfigError::Invalid {
        key: var.into(),
        message: format!("cannot read {path}: {e}"),
    })
}

impl StatusTls {
    /// Reads `SCIMRELAY_STATUS_CA_FILE`, `_CLIENT_CERT_FILE` and `_CLIENT_KEY_FILE`; an
    /// unreadable or malformed file is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let ca_pem = env_path(STATUS_CA_FILE_ENV)
            .map(|p| read_file(STATUS_CA_FILE_ENV, &p))
            .transpose()?;
        if let Some(pem) = &ca_pem {
            scimrelay_core::tls::certs(STATUS_CA_FILE_ENV, pem)?;
        }
        let client_identity = match (
            env_path(STATUS_CLIENT_CERT_ENV),
            env_path(STATUS_CLIENT_KEY_ENV),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: STATUS_CLIENT_KEY_ENV.into(),
                    message: format!("must be set with {STATUS_CLIENT_CERT_ENV}"),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: STATUS_CLIENT_CERT_ENV.into(),
                    message: format!("must be set with {STATUS_CLIENT_KEY_ENV}"),
                });
            }
            (Some(cert), Some(key)) => {
                let cert = read_file(STATUS_CLIENT_CERT_ENV, &cert)?;
                scimrelay_core::tls::certs(STATUS_CLIENT_CERT_ENV, &cert)?;
                Some((cert, read_file(STATUS_CLIENT_KEY_ENV, &key)?))
            }
        };
        Ok(StatusTls {
            ca_pem,
            client_identity,
        })
    }
}

/// Reads the status API key from `SCIMRELAY_STATUS_API_KEY` or `SCIMRELAY_STATUS_API_KEY_FILE`
/// (not both); `None` when neither is set. Errors name the variable, never the key.
pub fn api_key_from_env() -> Result<Option<Secret>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.into(),
        message,
    };
    let direct = std::env::var(STATUS_API_KEY_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (var, key) = match (direct, env_path(STATUS_API_KEY_FILE_ENV)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                STATUS_API_KEY_FILE_ENV,
                format!("set either {STATUS_API_KEY_ENV} or {STATUS_API_KEY_FILE_ENV}, not both"),
            ));
        }
        (Some(k), None) => (STATUS_API_KEY_ENV, k.trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(STATUS_API_KEY_FILE_ENV, format!("cannot read {path}: {e}"))
            })?;
            (STATUS_API_KEY_FILE_ENV, text.trim().to_owned())
        }
    };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            var,
            "must hold one API key: printable ASCII without spaces".into(),
        ));
    }
    // Checked here so that the interceptor cannot fail later; the message never echoes the key.
    BearerAuth::new(Some(&key)).map_err(|m| invalid(var, m.into()))?;
    Ok(Some(Secret::new(key)))
}

/// The endpoint of `url` (with TLS when it is `https://`), not yet connected. Errors name the
/// variable at fault; the connector checks this at start.
pub fn status_endpoint(url: &str, tls: &StatusTls) -> Result<Endpoint, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.into(),
        message,
    };
    let client_tls = ClientTls {
        ca_pem: tls.ca_pem.as_deref(),
        identity: tls
            .client_identity
            .as_ref()
            .map(|(c, k)| (c.as_slice(), k.as_slice())),
    };
    client::endpoint(url, CALL_TIMEOUT, client_tls).map_err(|e| match e {
        EndpointError::NotAUrl(e) => invalid(STATUS_URL_ENV, format!("{url:?} is not a URL: {e}")),
        EndpointError::Tls(e) if tls.client_identity.is_some() => invalid(
            STATUS_CLIENT_KEY_ENV,
            format!(
                "cannot set up TLS with the client certificate and key: {}",
                error_chain(&e)
            ),
        ),
        EndpointError::Tls(e) if tls.ca_pem.is_some() => invalid(
            STATUS_CA_FILE_ENV,
            format!("cannot set up TLS with it: {}", error_chain(&e)),
        ),
        EndpointError::Tls(e) => invalid(
            STATUS_URL_ENV,
            format!(
                "cannot set up TLS for {url}: {} (without system CA certificates, set {STATUS_CA_FILE_ENV})",
                error_chain(&e)
            ),
        ),
    })
}

/// A status client on a lazily connected channel to `url`, sending `api_key` on every call:
/// the one place both of the connector's status clients are built.
pub fn status_client(
    url: &str,
    api_key: Option<&Secret>,
    tls: &StatusTls,
) -> Result<StatusClient, ConfigError> {
    let endpoint = status_endpoint(url, tls)?;
    let auth =
        BearerAuth::new(api_key.map(Secret::expose)).map_err(|message| ConfigError::Invalid {
            key: STATUS_API_KEY_ENV.into(),
            message: message.into(),
        })?;
    Ok(StatusServiceClient::with_interceptor(
        endpoint.connect_lazy(),
        auth,
    ))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

/// One call waiting in a [`Batcher`]: its request and where its answer goes.
type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp, String>>);

/// Sends one batch: answers one item per request, in order, or why the whole call failed.
type BatchCall<Req, Resp> =
    Arc<dyn Fn(Vec<Req>) -> BoxFuture<'static, Result<Vec<Resp>, String>> + Send + Sync>;

/// Group commit for status calls: a call goes out at once when none is in flight, and the calls
/// that arrive while [`MAX_IN_FLIGHT`] are in flight go out together as one batch (at most
/// [`BATCH_MAX`]). Idle, a message pays one round trip; busy, one call serves hundreds of
/// messages — batching without a timer, so light load gets no added latency.
pub struct Batcher<Req, Resp> {
    tx: mpsc::Sender<Waiting<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the batcher; `what` names its call in logs. It serves until its last handle is
    /// dropped — not at the shutdown signal: the messages draining then still take and record
    /// (a take whose record were refused would leave its subject claimed, and fenced for the
    /// next connector).
    pub fn start(what: &'static str, call: BatchCall<Req, Resp>) -> Self {
        let (tx, rx) = mpsc::channel(10_000);
        tokio::spawn(batch_loop(what, call, rx));
        Batcher { tx }
    }

    /// Sends `req` in the next batch and waits for its answer.
    pub async fn call(&self, req: Req) -> Result<Resp, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .await
            .map_err(|_| "the connector is stopping".to_owned())?;
        rx.await
            .map_err(|_| "the connector is stopping".to_owned())?
    }
}

async fn batch_loop<Req: Send + 'static, Resp: Send + 'static>(
    what: &'static str,
    call: BatchCall<Req, Resp>,
    mut rx: mpsc::Receiver<Waiting<Req, Resp>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let call = call.clone();
        tokio::spawn(async move {
            let (reqs, replies): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
            let n = reqs.len();
            let answer = match tokio::time::timeout(CALL_TIMEOUT, call(reqs)).await {
                Ok(Ok(answers)) if answers.len() == n => Ok(answers),
                Ok(Ok(answers)) => Err(format!(
                    "the status service answered {} of {n} items",
                    answers.len()
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "the status service did not answer within {} ms",
                    CALL_TIMEOUT.as_millis()
                )),
            };
            drop(slot);
            match answer {
                Ok(answers) => {
                    for (reply, a) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(a));
                    }
                }
                Err(e) => {
                    tracing::warn!(call = what, items = n, error = %e, "status call failed; the messages wait");
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// The connector's client of the state of record (see the module docs): batched
/// `TakeEvents`, `RecordConverged` and `GetRecords`.
#[derive(Clone)]
pub struct StateOfRecord {
    take: Batcher<TakeEvent, SubjectRecord>,
    record: Batcher<Converged, bool>,
    get: Batcher<SubjectKey, SubjectRecord>,
    client: Option<StatusClient>,
}

impl StateOfRecord {
    /// The client on `client` (`None`: every call fails, and messages wait).
    pub fn start(client: Option<StatusClient>) -> Self {
        fn unreachable<Resp>() -> BoxFuture<'static, Result<Vec<Resp>, String>> {
            Box::pin(async {
                Err(
                    "no status client (SCIMRELAY_STATUS_URL or its TLS settings are unusable)"
                        .to_owned(),
                )
            })
        }
        let take_client = client.clone();
        let take: BatchCall<TakeEvent, SubjectRecord> = Arc::new(move |items| {
            let Some(mut c) = take_client.clone() else {
                return unreachable();
            };
            Box::pin(async move {
                c.take_events(TakeEventsRequest { items })
                    .await
                    .map(|r| r.into_inner().records)
                    .map_err(|e| format!("TakeEvents: {}", e.message()))
            })
        });
        let record_client = client.clone();
        let record: BatchCall<Converged, bool> = Arc::new(move |items| {
            let Some(mut c) = record_client.clone() else {
                return unreachable();
            };
            Box::pin(async move {
                c.record_converged(RecordConvergedRequest { items })
                    .await
                    .map(|r| r.into_inner().recorded)
                    .map_err(|e| format!("RecordConverged: {}", e.message()))
            })
        });
        let get_client = client.clone();
        let get: BatchCall<SubjectKey, SubjectRecord> = Arc::new(move |keys| {
            let Some(mut c) = get_client.clone() else {
                return unreachable();
            };
            Box::pin(async move {
                c.get_records(GetRecordsRequest { keys })
                    .await
                    .map(|r| r.into_inner().records)
                    .map_err(|e| format!("GetRecords: {}", e.message()))
            })
        });
        StateOfRecord {
            take: Batcher::start("TakeEvents", take),
            record: Batcher::start("RecordConverged", record),
            get: Batcher::start("GetRecords", get),
            client,
        }
    }

    /// The sweep of a target's pending references (`DueReferences`, not batched: one call per
    /// target per sweep): the referring subjects to re-trigger, each leased for `lease`.
    pub async fn due_references(
        &self,
        target: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<SubjectKey>, String> {
        let Some(mut c) = self.client.clone() else {
            return Err("no status client".into());
        };
        c.due_references(scimrelay_proto::v1::DueReferencesRequest {
            target: target.to_owned(),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            limit: 0,
        })
        .await
        .map(|r| r.into_inner().due)
        .map_err(|e| format!("DueReferences: {}", e.message()))
    }

    /// Records a taken message's desired state and answers the subject's record.
    pub async fn take(&self, item: TakeEvent) -> Result<SubjectRecord, String> {
        self.take.call(item).await
    }

    /// Records what a converge did.
    pub async fn record(&self, item: Converged) -> Result<bool, String> {
        self.record.call(item).await
    }

    /// The record of a subject (no desired or applied event).
    pub async fn get(&self, key: SubjectKey) -> Result<SubjectRecord, String> {
        self.get.call(key).await
    }
}

/// The guard's answer for one deprovisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Admitted,
    /// Hold the event; the reason says which limit it would exceed.
    Held(String),
    /// The status service could not answer.
    Unavailable(String),
}

/// The mass-deprovisioning guard's client (see the module docs).
#[derive(Clone)]
pub struct GuardClient {
    client: Option<StatusClient>,
}

impl GuardClient {
    /// The guard on `client` (`None`: every check answers unavailable).
    pub fn new(client: Option<StatusClient>) -> Self {
        GuardClient { client }
    }

    /// Asks whether deprovisioning user `subject` of `tenant` at `target` stays within the
    /// target's guard (the status service applies the guard its own targets file sets).
    pub async fn admit(
        &self,
        target: &str,
        tenant: &str,
        subject: &str,
        event_id: &str,
    ) -> Admission {
        let Some(mut client) = self.client.clone() else {
            return Admission::Unavailable(
                "no status client (SCIMRELAY_STATUS_URL or its TLS settings are unusable)".into(),
            );
        };
        let request = AdmitDeprovisionRequest {
            target: target.to_owned(),
            tenant: tenant.to_owned(),
            subject_id: subject.to_owned(),
            event_id: event_id.to_owned(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.admit_deprovision(request)).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                if answer.admitted {
                    Admission::Admitted
                } else {
                    Admission::Held(answer.reason)
                }
            }
            Ok(Err(e)) => Admission::Unavailable(format!(
                "the status service refused the guard check: {}",
                e.message()
            )),
            Err(_) => Admission::Unavailable("the status service did not answer in time".into()),
        }
    }
}

/// The connector's clients of the status service.
#[derive(Clone)]
pub struct StatusClients {
    /// The state of record.
    pub record: StateOfRecord,
    /// The mass-deprovisioning guard.
    pub guard: GuardClient,
}

impl StatusClients {
    /// Both clients, sharing one channel to the status service of `config` (its URL, API key
    /// and TLS settings, checked by [`crate::ConnectorConfig::from_env_checked`]).
    pub fn start(config: &crate::ConnectorConfig) -> Self {
        let url = &config.status_url;
        let https = url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("https://");
        if config.status_api_key.is_some() && !https && !is_loopback(url) {
            tracing::warn!(
                status_url = %url,
                "{STATUS_API_KEY_ENV} is sent over plain http; use an https:// status URL"
            );
        }
        let client = match status_client(url, config.status_api_key.as_ref(), &config.status_tls) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "no status client: every message waits for the state of record");
                None
            }
        };
        StatusClients {
            record: StateOfRecord::start(client.clone()),
            guard: GuardClient::new(client),
        }
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
