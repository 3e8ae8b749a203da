//! The connector's side of the status service: ledger lookups and target reports.
//!
//! **Ledger.** The in-process ledger only knows what this process applied. After a restart, or
//! when single-active-consumer fails a shard over to another replica, a late retry of an old
//! version must still be recognised as stale, so a subject this process has not seen is looked
//! up in the status service's ledger (`GetLedger`). Lookups are batched: concurrent misses are
//! collected for up to [`BATCH_WINDOW`] (at most [`BATCH_MAX`] keys) and sent as one call. When
//! the status service cannot be reached the lookup answers "unknown" after [`LOOKUP_TIMEOUT`]
//! and the provider finds the subject at the target instead (by externalId), so an outage of
//! the status service slows delivery but does not stop it.
//!
//! Known gap: right after a failover the new consumer may read the ledger before the status
//! service has recorded the outcome the old consumer just published (outcomes are written in
//! batches of up to 20 ms), and so apply a late retry of an older version. The chaos suite has
//! not hit it; closing it needs a version the target itself keeps, or a read-your-writes ledger.
//!
//! **Guard.** Before a user is deactivated or deleted, the mass-deprovisioning guard asks the
//! status service (`AdmitDeprovision`), which counts admissions per target in a sliding window
//! across every replica. The answer is admitted, held (with the reason), or unavailable: the
//! status service could not be asked, and the deprovisioning waits on a delay tier (the attempt
//! is not counted) rather than go out unguarded.
//!
//! **Reports.** Every [`REPORT_INTERVAL`] each target's throttling, quarantine and concurrency
//! are published to `scimrelay.reports` for `ListTargets` / `GetTarget`.
//!
//! **Connection.** Both clients share one lazily connected channel built by [`status_client`]:
//! TLS when `SCIMRELAY_STATUS_URL` is `https://` (system roots plus `SCIMRELAY_STATUS_CA_FILE`,
//! and a client certificate for mutual TLS), and `Authorization: Bearer <key>` metadata on every
//! call when `SCIMRELAY_STATUS_API_KEY` (or `_FILE`) is set. The files are read and checked at
//! start ([`StatusTls::from_env`]), so a bad one stops the connector naming the variable.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use scimrelay_core::config::{ConfigError, DeprovisionGuardConfig};
use scimrelay_proto::client::{self, ClientTls, EndpointError};
pub use scimrelay_proto::client::{BearerAuth, StatusClient};
use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{AdmitDeprovisionRequest, DeprovisionGuard, GetLedgerRequest, LedgerKey};
use scimrelay_scim::Secret;

use crate::ledger::LedgerEntry;

/// Longest wait for more keys before a batch goes out.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Most keys per `GetLedger` call (the service's limit).
pub const BATCH_MAX: usize = 1000;
/// How long a lookup may take before it counts as "unknown".
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
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
    client::endpoint(url, LOOKUP_TIMEOUT, client_tls).map_err(|e| match e {
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

type Pending = (LedgerKey, oneshot::Sender<Option<LedgerEntry>>);

/// Batched ledger lookups against the status service.
#[derive(Clone)]
pub struct LedgerLookup {
    tx: mpsc::Sender<Pending>,
}

impl LedgerLookup {
    /// Starts the batcher on `client` (`None`: every lookup answers "unknown").
    pub fn start(client: Option<StatusClient>, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(10_000);
        tokio::spawn(run(client, rx, shutdown));
        LedgerLookup { tx }
    }

    /// What the status service knows of (target, subject); `None` when nothing or unreachable.
    pub async fn get(&self, target: &str, subject: &str) -> Option<LedgerEntry> {
        let (tx, rx) = oneshot::channel();
        let key = LedgerKey {
            target: target.to_owned(),
            subject_id: subject.to_owned(),
        };
        self.tx.send((key, tx)).await.ok()?;
        tokio::time::timeout(LOOKUP_TIMEOUT, rx).await.ok()?.ok()?
    }
}

async fn run(
    mut client: Option<StatusClient>,
    mut rx: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                _ => break,
            }
        }
        let keys: Vec<LedgerKey> = batch.iter().map(|(k, _)| k.clone()).collect();
        let answer = match client.as_mut() {
            Some(c) => {
                tokio::time::timeout(LOOKUP_TIMEOUT, c.get_ledger(GetLedgerRequest { keys })).await
            }
            None => {
                for (_, reply) in batch {
                    let _ = reply.send(None);
                }
                continue;
            }
        };
        let entries: HashMap<(String, String), LedgerEntry> = match answer {
            Ok(Ok(resp)) => resp
                .into_inner()
                .entries
                .into_iter()
                .filter(|e| e.found)
                .map(|e| {
                    (
                        (e.target, e.subject_id),
                        LedgerEntry {
                            remote_id: e.remote_id,
                            applied_version: e.applied_version,
                            active: e.state != "deactivated",
                            fingerprint: 0,
                        },
                    )
                })
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "status ledger lookup failed; subjects will be looked up at the target");
                HashMap::new()
            }
            Err(_) => {
                tracing::warn!(
                    "status ledger lookup timed out; subjects will be looked up at the target"
                );
                HashMap::new()
            }
        };
        for (key, reply) in batch {
            let _ = reply.send(entries.get(&(key.target, key.subject_id)).cloned());
        }
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

    /// Asks whether deprovisioning `subject` at `target` stays within the guard.
    pub async fn admit(
        &self,
        target: &str,
        subject: &str,
        event_id: &str,
        guard: &DeprovisionGuardConfig,
    ) -> Admission {
        let Some(mut client) = self.client.clone() else {
            return Admission::Unavailable(
                "no status client (SCIMRELAY_STATUS_URL or its TLS settings are unusable)".into(),
            );
        };
        let request = AdmitDeprovisionRequest {
            target: target.to_owned(),
            subject_id: subject.to_owned(),
            event_id: event_id.to_owned(),
            guard: Some(DeprovisionGuard {
                max_share: guard.max_share,
                window_ms: guard.window_secs.saturating_mul(1000),
                min_users: guard.min_users,
            }),
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, client.admit_deprovision(request)).await {
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
    /// Batched ledger lookups.
    pub ledger: LedgerLookup,
    /// The mass-deprovisioning guard.
    pub guard: GuardClient,
}

impl StatusClients {
    /// Both clients, sharing one channel to the status service of `config` (its URL, API key
    /// and TLS settings, checked by [`crate::ConnectorConfig::from_env`]).
    pub fn start(config: &crate::ConnectorConfig, shutdown: CancellationToken) -> Self {
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
                tracing::error!(error = %e, "no status client: ledger lookups answer unknown and deprovisionings wait");
                None
            }
        };
        StatusClients {
            ledger: LedgerLookup::start(client.clone(), shutdown),
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
