//! The connector runtime shared by every provider: consume a target's shard queues, converge
//! each event through the provider profile, publish its outcome, ack.
//!
//! # The state of record decides
//! A message is a trigger: "converge this subject at this target". Taking it records its
//! desired state in the status service's state of record (kept when its version is the highest
//! accepted for the subject) and reads the subject's record back; the decision
//! ([`decide`]) compares the message's version with the latest accepted and the applied one,
//! and the no-op fingerprint with the desired state; after converging, what was applied (or
//! that the attempt failed) is recorded before the message is acked. A subject is keyed by
//! (target, tenant, kind, id) everywhere. Nothing about versions, remote ids or member sets
//! is kept in this process between messages, so a replica that regains a shard, a restart or a
//! status outage never applies a stale version: when the state of record cannot be asked,
//! nothing is applied and the message waits on a delay tier without counting an attempt.
//!
//! # Ordering and concurrency
//! Each shard queue has single active consumer, so one process at a time owns a subject. Inside
//! a shard, messages of one subject are processed strictly in arrival order (a per-subject
//! queue); different subjects run concurrently, bounded by the target's concurrency. Versions
//! make the order of *arrival* irrelevant for correctness.
//!
//! # Acks
//! A message is acked only after what it applied was recorded and its outcome (or its copy on a
//! delay tier) was confirmed by the broker. A crash in between redelivers the message;
//! convergence is idempotent (desired state, lookup before create, 409 adopts), so a redelivery
//! never creates a second object, and a redelivery of an event whose version was recorded as
//! applied by that same event succeeds as a no-op instead of reading as superseded.
//!
//! # Mass-deprovisioning guard
//! Before a user is deactivated or deleted (or upserted inactive while the state of record
//! holds it present and active), the status service is asked; it counts admissions per target
//! in a sliding window across every replica, with the target's `deprovision_guard` from its
//! own targets file, and answers atomically. A refused event is *held*: a `HeldEvent` is
//! published to `scimrelay.outcomes` (confirmed, then the input is acked) and nothing is sent.
//! An operator's release republishes it with the header `x-scimrelay-released`, which skips the
//! guard (a retry copy of a released event keeps the header); a drop ends it with a failed
//! outcome. When the status service cannot answer, the event goes to a delay tier without
//! counting an attempt: a deprovisioning is delayed, never sent unguarded and never lost. Plan
//! mode is not guarded.
//!
//! # Shutdown
//! On cancel: stop consuming, give back (nack + requeue) what was prefetched but not started,
//! let in-flight work finish within the drain deadline, then close the publisher and the
//! connection (each close bounded); anything still unacked is requeued by the broker when the
//! channel closes. Should shutdown overrun drain + close timeouts, the connector exits non-zero
//! rather than hang.

pub mod breaker;
pub mod decide;
pub mod exec;
pub mod kit;
pub mod limits;
pub mod options;
mod process;
pub mod provider;
pub mod record;
mod runtime;
pub mod status;

use std::time::Duration;

use scimrelay_core::config::{
    AuthConfig, ConfigError, EnvConfig, ProviderKind, TargetConfig, env_or, env_parse,
};
use scimrelay_scim::{Auth, Secret};

pub use provider::{
    Assessment, ConvergeError, ConvergeInput, Converged, FailureClass, Provider, ProviderDefaults,
    classify, default_assess,
};
pub use runtime::run;

/// What every connector's `--help` says after its profile's own paragraph.
pub const CONNECTOR_ENVIRONMENT: &str = "Environment: SCIMRELAY_CONFIG (targets file, required), \
SCIMRELAY_AMQP_URL, SCIMRELAY_CONNECTOR_HTTP_ADDR (health, default 127.0.0.1:8081), \
SCIMRELAY_DRAIN_TIMEOUT_SECS (default 5), SCIMRELAY_CONNECTOR_REPLICAS, SCIMRELAY_STATUS_URL, \
SCIMRELAY_MAX_HOLD_SECS, SCIMRELAY_PROVIDERS (the providers this deployment runs), RUST_LOG, \
SCIMRELAY_LOG_FORMAT=json, OTEL_EXPORTER_OTLP_ENDPOINT. Secrets are read from the env vars or \
files each target names.";

/// A connector binary's whole `main`: `<kind>-connector [--help | --version]`, the help being
/// the profile's [`Provider::about`] and [`CONNECTOR_ENVIRONMENT`]. Reads the environment and
/// the targets file, checking each target of the provider's [`Provider::kind`] with its
/// [`Provider::check_target`] and [`Provider::check_options`] (a refusal prints one line naming
/// the key and exits with [`scimrelay_core::config::CONFIG_ERROR_EXIT`]), starts telemetry as
/// the connector's name and serves until SIGTERM or SIGINT.
pub async fn main(provider: std::sync::Arc<dyn Provider>) -> std::process::ExitCode {
    let kind = provider.kind();
    // The name lives as long as the process (telemetry keeps it).
    let name: &'static str = Box::leak(format!("{kind}-connector").into_boxed_str());
    let about = provider.about();
    clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about.lines().next().unwrap_or_default().to_owned())
        .long_about(format!("{about}\n\n{CONNECTOR_ENVIRONMENT}"))
        .get_matches();
    let check = |t: &TargetConfig| {
        provider
            .check_target(t)
            .or_else(|| provider.check_options(t))
    };
    let config = match ConnectorConfig::from_env_checked(kind, check) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: configuration error: {e}");
            return std::process::ExitCode::from(scimrelay_core::config::CONFIG_ERROR_EXIT);
        }
    };
    let _telemetry = scimrelay_core::telemetry::init(name);
    let shutdown = scimrelay_core::shutdown::token_on_signal();
    match run(config, provider, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub use status::StatusTls;

/// Default address of the health endpoints.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8081";
/// Default status service URL (the state of record).
pub const DEFAULT_STATUS_URL: &str = "http://127.0.0.1:50052";
/// Default drain deadline on shutdown.
pub const DEFAULT_DRAIN_SECS: u64 = 5;

/// One target this connector serves, with what was read for it at start.
#[derive(Debug, Clone)]
pub struct ServedTarget {
    /// Its entry in the targets file.
    pub config: TargetConfig,
    /// Its credentials, read at start from the env var or file the entry names (`Debug` prints
    /// nothing of them), so a missing secret stops the connector before it consumes anything.
    pub auth: Auth,
    /// How errors name it: `<file>: targets[i] (id)`, `i` its index in the whole file (not
    /// among this connector's targets), as the operator sees it.
    pub key: String,
}

/// The credentials of a target, read from the env var or file its entry names; a missing one
/// is an error naming `<key>.auth.<field>`.
fn load_auth(target: &TargetConfig, key: &str) -> Result<Auth, ConfigError> {
    let key = |k: &str| format!("{key}.auth.{k}");
    Ok(match &target.auth {
        AuthConfig::None => Auth::None,
        AuthConfig::Basic { username, password } => Auth::Basic {
            username: username.clone(),
            password: Secret::new(password.load(&key("password"))?),
        },
        AuthConfig::Bearer { token } => Auth::Bearer(Secret::new(token.load(&key("token"))?)),
        AuthConfig::OauthClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
        } => Auth::OauthClientCredentials {
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            client_secret: Secret::new(client_secret.load(&key("client_secret"))?),
            scope: scope.clone(),
        },
        AuthConfig::OauthJwtBearer {
            token_url,
            client_id,
            subject,
            audience,
            private_key,
        } => Auth::OauthJwtBearer {
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            subject: subject.clone(),
            audience: audience.clone(),
            private_key_pem: Secret::new(private_key.load(&key("private_key"))?),
        },
    })
}

/// Connector settings.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The provider kind this service serves.
    pub provider: ProviderKind,
    /// The targets of that kind from the targets file.
    pub targets: Vec<ServedTarget>,
    /// `SCIMRELAY_AMQP_URL`.
    pub amqp_url: String,
    /// `SCIMRELAY_CONNECTOR_HTTP_ADDR`: health endpoints.
    pub http_addr: String,
    /// `SCIMRELAY_DRAIN_TIMEOUT_SECS`: how long in-flight work may take on shutdown.
    pub drain_timeout: Duration,
    /// `SCIMRELAY_STATUS_URL`: the status service's gRPC URL, for the state of record and the
    /// deprovisioning guard; `https://` speaks TLS.
    pub status_url: String,
    /// `SCIMRELAY_STATUS_API_KEY` or `SCIMRELAY_STATUS_API_KEY_FILE`: sent as
    /// `authorization: Bearer` on every status call, when the status service checks keys (the
    /// key needs the `connector` scope for all tenants, `tenants: ["*"]`). `Debug` prints
    /// nothing of it.
    pub status_api_key: Option<Secret>,
    /// `SCIMRELAY_STATUS_CA_FILE`, `SCIMRELAY_STATUS_CLIENT_CERT_FILE`,
    /// `SCIMRELAY_STATUS_CLIENT_KEY_FILE`: TLS material for an `https://` status URL, read at
    /// start.
    pub status_tls: StatusTls,
    /// `SCIMRELAY_CONNECTOR_REPLICAS`: replicas of this connector sharing each target's rate
    /// budget; every replica takes `ceiling / replicas`, so together they stay within the
    /// target's ceiling.
    pub replicas: u32,
    /// `SCIMRELAY_MAX_HOLD_SECS` (default 60, at most [`MAX_HOLD_LIMIT_SECS`]): the longest a
    /// message is held by this connector before it waits on a delay tier instead (see
    /// [`exec::TargetIo::max_hold`]). Keep it well below the broker's `consumer_timeout` minus
    /// the longest target `timeout_secs`.
    pub max_hold: Duration,
}

/// The largest `SCIMRELAY_MAX_HOLD_SECS`: half of RabbitMQ's default consumer timeout (30 min).
pub const MAX_HOLD_LIMIT_SECS: u64 = 900;

impl ConnectorConfig {
    /// Reads the environment and the targets file for a provider kind, with the provider's own
    /// check of each of its targets: a `Some((field, message))` stops the connector at start,
    /// naming `targets[i].field` by the target's index in the whole file. A deployment whose
    /// `SCIMRELAY_PROVIDERS` does not list the kind stops it too (it would serve nothing).
    pub fn from_env_checked(
        provider: ProviderKind,
        check: impl Fn(&TargetConfig) -> Option<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let deployed = ProviderKind::deployed()?;
        if !deployed.contains(&provider) {
            let names: Vec<&str> = deployed.iter().map(ProviderKind::as_str).collect();
            return Err(ConfigError::Invalid {
                key: scimrelay_core::config::PROVIDERS_ENV.to_owned(),
                message: format!(
                    "{} does not list {provider}, the provider this connector serves",
                    names.join(", ")
                ),
            });
        }
        let env = EnvConfig::from_env()?;
        let file = env.targets()?;
        let origin = env
            .config_path
            .as_ref()
            .map(|p| format!("{}: ", p.display()))
            .unwrap_or_default();
        let mut targets = Vec::new();
        for (i, t) in file.targets.iter().enumerate() {
            if t.provider != provider {
                continue;
            }
            if let Some((field, message)) = check(t) {
                return Err(ConfigError::Invalid {
                    key: format!("{origin}targets[{i}].{field}"),
                    message,
                });
            }
            // Only the connector serving a target calls it, so only it needs the target's CA
            // and credentials.
            t.tls
                .load_ca(&format!("{origin}targets[{i}].tls.ca_file"))?;
            targets.push(ServedTarget {
                auth: load_auth(t, &format!("{origin}targets[{i}]"))?,
                key: format!("{origin}targets[{i}] ({})", t.id),
                config: t.clone(),
            });
        }
        let status_url = env_or(status::STATUS_URL_ENV, DEFAULT_STATUS_URL);
        let status_tls = StatusTls::from_env()?;
        // Builds the endpoint (and its TLS settings) once now, so that a bad URL, certificate
        // or key stops the connector at start.
        status::status_endpoint(&status_url, &status_tls)?;
        Ok(ConnectorConfig {
            provider,
            targets,
            amqp_url: env.amqp_url,
            http_addr: env_or("SCIMRELAY_CONNECTOR_HTTP_ADDR", DEFAULT_HTTP_ADDR),
            drain_timeout: Duration::from_secs(env_parse(
                "SCIMRELAY_DRAIN_TIMEOUT_SECS",
                DEFAULT_DRAIN_SECS,
            )?),
            status_url,
            status_api_key: status::api_key_from_env()?,
            status_tls,
            max_hold: match env_parse("SCIMRELAY_MAX_HOLD_SECS", exec::MAX_HOLD.as_secs())? {
                secs @ 1..=MAX_HOLD_LIMIT_SECS => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "SCIMRELAY_MAX_HOLD_SECS".into(),
                        message: format!(
                            "must be between 1 and {MAX_HOLD_LIMIT_SECS} seconds (well below the broker's consumer_timeout)"
                        ),
                    });
                }
            },
            replicas: match env_parse("SCIMRELAY_CONNECTOR_REPLICAS", 1u32)? {
                0 => {
                    return Err(ConfigError::Invalid {
                        key: "SCIMRELAY_CONNECTOR_REPLICAS".into(),
                        message: "must be at least 1".into(),
                    });
                }
                n => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connector holds for a target after start prints the secret's location, never the
    /// secret; a missing one is named by its key.
    #[test]
    fn a_served_target_debug_holds_no_secret() {
        let path = std::env::temp_dir().join(format!("scimrelay-served-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t-client-secret\n").expect("write secret");
        let yaml = format!(
            "targets:
  - id: sf
    provider: salesforce
    base_url: https://acme.my.salesforce.com/services/scim/v2
    auth:
      kind: oauth_client_credentials
      token_url: https://acme.my.salesforce.com/services/oauth2/token
      client_id: cid
      client_secret: {{file: {}}}
",
            path.display()
        );
        let file = scimrelay_core::config::TargetsFile::parse(&yaml).expect("targets");
        let t = &file.targets[0];
        let served = ServedTarget {
            auth: load_auth(t, "targets[0]").expect("loads"),
            key: "targets[0] (sf)".into(),
            config: t.clone(),
        };
        let _ = std::fs::remove_file(&path);
        let debug = format!("{served:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(
            debug.contains("cid"),
            "the non-secret parts are shown: {debug}"
        );
        let gone = load_auth(t, "x.yaml: targets[3]").expect_err("the file is gone");
        assert!(
            gone.to_string()
                .contains("x.yaml: targets[3].auth.client_secret"),
            "{gone}"
        );
    }
}
