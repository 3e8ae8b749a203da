//! Configuration: the targets file (YAML) shared by ingest and connectors, and the environment.
//!
//! Secrets never live in the targets file: a target names the file or the environment variable
//! that holds its secret, and only the connector that needs it reads it. Every error names the
//! key that is wrong (`targets[2].base_url: …`), because a bad config must stop a service at
//! start with one line an operator can act on.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default AMQP URL: the local RabbitMQ with the default vhost.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default number of shard queues per target. Fixed per target: changing it moves subjects
/// between shards, so drain the queues first.
pub const DEFAULT_SHARDS: u16 = 8;
/// Upper bound on shards, so a typo cannot declare thousands of queues.
pub const MAX_SHARDS: u16 = 256;
/// Longest target id. The id is part of every queue name (`scimrelay.<id>.<shard>`), routing
/// key, metric label and outcome: 64 characters keep queue names far below AMQP's 255-byte
/// limit and labels readable on a dashboard.
pub const MAX_TARGET_ID_LEN: usize = 64;
/// Upper bound on `concurrency.max`, which is also each shard consumer's prefetch: far above
/// what a provider accepts from one client, low enough that a typo cannot open thousands of
/// requests to a target or ask the broker for a huge prefetch.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Upper bound on `retry.max_attempts`: with the backoff capped at `max_delay_ms`, a hundred
/// attempts already span hours; an event still failing then needs an operator, so it belongs
/// in the dead-letter queue rather than in more retries.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;

/// The exit status of a service that refuses its configuration at start (a [`ConfigError`]),
/// told apart from a failure while running (1) by supervisors and the tests.
pub const CONFIG_ERROR_EXIT: u8 = 2;

/// A configuration error. Its message names the key or variable that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not match the schema (the message carries the path).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message, which names the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key (`targets[1].shards`) or environment variable name.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The provider profile of a target: the name of the connector kind that serves it (`scim`,
/// `github`, `aws`, `salesforce`, or any other profile's). It names routing keys and outcomes,
/// so it is lowercase ASCII letters, digits and `-`, at most [`MAX_PROVIDER_NAME_LEN`] bytes.
///
/// The names are open: a new profile is a new crate whose connector serves its own name, and
/// nothing here changes. Which names a deployment runs is [`PROVIDERS_ENV`] (the chart and the
/// compose file set it from their connector lists; unset, the profiles shipped with scimrelay),
/// so a misspelt `provider:` still stops every service at start, naming `targets[i].provider`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ProviderKind(std::borrow::Cow<'static, str>);

/// Longest provider name.
pub const MAX_PROVIDER_NAME_LEN: usize = 32;
/// The environment variable listing the provider names a deployment runs (comma-separated).
pub const PROVIDERS_ENV: &str = "SCIMRELAY_PROVIDERS";

impl ProviderKind {
    /// Any RFC 7644 SCIM 2.0 server (scim-connector).
    pub const SCIM: ProviderKind = ProviderKind::named("scim");
    /// GitHub Enterprise Managed Users (github-connector).
    pub const GITHUB: ProviderKind = ProviderKind::named("github");
    /// AWS IAM Identity Center (aws-connector).
    pub const AWS: ProviderKind = ProviderKind::named("aws");
    /// Salesforce (salesforce-connector).
    pub const SALESFORCE: ProviderKind = ProviderKind::named("salesforce");
    /// The profiles shipped with scimrelay: the providers a deployment runs when
    /// [`PROVIDERS_ENV`] is unset.
    pub const SHIPPED: [ProviderKind; 4] = [Self::SCIM, Self::GITHUB, Self::AWS, Self::SALESFORCE];

    /// A profile's name, as its crate declares it (checked by [`ProviderKind::parse`] when read
    /// from a file).
    ///
    /// # Panics
    /// When `name` is not a provider name; in a `const`, that is a compile error.
    pub const fn named(name: &'static str) -> Self {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= MAX_PROVIDER_NAME_LEN,
            "a provider name has 1 to 32 bytes"
        );
        let mut i = 0;
        while i < b.len() {
            assert!(
                b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'-',
                "a provider name is lowercase letters, digits and '-'"
            );
            i += 1;
        }
        ProviderKind(std::borrow::Cow::Borrowed(name))
    }

    /// A provider name read from configuration, or why it is not one.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= MAX_PROVIDER_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "{name:?} is not a provider name (1–{MAX_PROVIDER_NAME_LEN} lowercase letters, digits and '-')"
            ));
        }
        Ok(ProviderKind(std::borrow::Cow::Owned(name.to_owned())))
    }

    /// The name used in routing keys and outcomes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The providers this deployment runs: [`PROVIDERS_ENV`], else [`ProviderKind::SHIPPED`].
    pub fn deployed() -> Result<Vec<ProviderKind>, ConfigError> {
        Self::deployed_from(std::env::var(PROVIDERS_ENV).ok())
    }

    /// [`ProviderKind::deployed`] for the value `list` of [`PROVIDERS_ENV`].
    pub fn deployed_from(list: Option<String>) -> Result<Vec<ProviderKind>, ConfigError> {
        match list {
            Some(list) if !list.trim().is_empty() => list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(ProviderKind::parse)
                .collect::<Result<_, _>>()
                .map_err(|why| ConfigError::invalid(PROVIDERS_ENV, why)),
            _ => Ok(Self::SHIPPED.to_vec()),
        }
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ProviderKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a secret lives: a file or an environment variable, never the targets file itself.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline stripped).
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the location is printed, which is not secret.
        f.debug_struct("SecretRef")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl SecretRef {
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                key,
                "set either `env` or `file`, not both",
            )),
            (None, None) => Err(ConfigError::invalid(
                key,
                "set `env` (a variable name) or `file` (a path)",
            )),
            (Some(name), None) if name.is_empty() => Err(ConfigError::invalid(
                format!("{key}.env"),
                "must not be empty",
            )),
            _ => Ok(()),
        }
    }

    /// Reads the secret's value. The error names `key` and the variable or file, never the value.
    pub fn load(&self, key: &str) -> Result<String, ConfigError> {
        if let Some(name) = &self.env {
            return std::env::var(name).map_err(|_| {
                ConfigError::invalid(key, format!("environment variable {name} is not set"))
            });
        }
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!("cannot read secret file {}: {e}", path.display()),
                )
            })?;
            return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        Err(ConfigError::invalid(key, "no secret location"))
    }
}

/// How a connector authenticates to a target.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication (local test servers only).
    None,
    /// HTTP Basic.
    Basic {
        /// The user name (not secret).
        username: String,
        /// Where the password lives.
        password: SecretRef,
    },
    /// A static access token sent as `Authorization: Bearer`.
    Bearer {
        /// Where the token lives.
        token: SecretRef,
    },
    /// OAuth 2.0 client credentials.
    OauthClientCredentials {
        /// The token endpoint URL.
        token_url: String,
        /// The client id (not secret).
        client_id: String,
        /// Where the client secret lives.
        client_secret: SecretRef,
        /// Optional scope.
        #[serde(default)]
        scope: Option<String>,
    },
    /// OAuth 2.0 JWT bearer (RS256), as Salesforce uses.
    OauthJwtBearer {
        /// The token endpoint URL.
        token_url: String,
        /// The client id / consumer key (`iss`).
        client_id: String,
        /// The user the token acts as (`sub`).
        subject: String,
        /// The audience (`aud`), e.g. `https://login.salesforce.com`.
        audience: String,
        /// Where the PEM private key lives.
        private_key: SecretRef,
    },
}

impl AuthConfig {
    /// Checks the settings of one auth kind; `key` is the target's (`targets[2]`), so errors
    /// name `targets[2].auth.<field>`.
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{key}.auth.{field}");
        match self {
            AuthConfig::None => {}
            AuthConfig::Basic { username, password } => {
                if username.is_empty() {
                    return Err(ConfigError::invalid(key("username"), "must not be empty"));
                }
                password.check(&key("password"))?;
            }
            AuthConfig::Bearer { token } => token.check(&key("token"))?,
            AuthConfig::OauthClientCredentials {
                token_url,
                client_secret,
                ..
            } => {
                check_token_url(token_url, &key("token_url"))?;
                client_secret.check(&key("client_secret"))?;
            }
            AuthConfig::OauthJwtBearer {
                token_url,
                private_key,
                ..
            } => {
                check_token_url(token_url, &key("token_url"))?;
                private_key.check(&key("private_key"))?;
            }
        }
        Ok(())
    }
}

/// An OAuth token endpoint must be an http(s) URL.
fn check_token_url(token_url: &str, key: &str) -> Result<(), ConfigError> {
    if !token_url.starts_with("http") {
        return Err(ConfigError::invalid(key, "must be an http(s) URL"));
    }
    Ok(())
}

/// What a user deletion does at the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// Deactivate instead of deleting (safe default: reversible everywhere).
    #[default]
    Deactivate,
    /// Send DELETE (permanent at GitHub; opt in per target).
    Delete,
}

/// Whether a target's changes are applied or only planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetMode {
    /// Send the requests.
    #[default]
    Apply,
    /// Compute the requests and report them; send nothing that changes the target.
    Plan,
}

/// Bounds of the adaptive concurrency of a target.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Lower bound of in-flight requests.
    #[serde(default = "one")]
    pub min: u32,
    /// Upper bound of in-flight requests (also the shard consumers' prefetch).
    #[serde(default = "default_max_concurrency")]
    pub max: u32,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            min: 1,
            max: default_max_concurrency(),
        }
    }
}

impl ConcurrencyConfig {
    /// Checks `1 <= min <= max <= MAX_CONCURRENCY`; `key` names the section in errors.
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if self.min == 0 || self.max < self.min || self.max > MAX_CONCURRENCY {
            return Err(ConfigError::invalid(
                key,
                format!("needs 1 <= min <= max <= {MAX_CONCURRENCY}"),
            ));
        }
        Ok(())
    }
}

fn one() -> u32 {
    1
}
fn default_max_concurrency() -> u32 {
    16
}

/// Retry policy of a target.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included, before the message is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Base of the full-jitter exponential backoff.
    #[serde(default = "default_base_delay")]
    pub base_delay_ms: u64,
    /// Cap of the backoff.
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
}

impl RetryConfig {
    /// Checks the attempts and the backoff bounds; `key` names the section in errors.
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts > MAX_RETRY_ATTEMPTS {
            return Err(ConfigError::invalid(
                format!("{key}.max_attempts"),
                format!("must be 1..={MAX_RETRY_ATTEMPTS}"),
            ));
        }
        if self.base_delay_ms == 0 || self.max_delay_ms < self.base_delay_ms {
            return Err(ConfigError::invalid(
                key,
                "needs 0 < base_delay_ms <= max_delay_ms",
            ));
        }
        Ok(())
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_attempts(),
            base_delay_ms: default_base_delay(),
            max_delay_ms: default_max_delay(),
        }
    }
}

/// The mass-deprovisioning guard of a target: when deactivating or deleting one more user would
/// make more than `max_share` of the target's users deprovisioned within `window_secs`, that
/// event is held (not sent, not failed) until an operator releases or drops it. On by default;
/// the window is counted by the status service, across connector replicas.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeprovisionGuardConfig {
    /// Off only when set to false.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Largest share of the target's users (0 < s <= 1) deprovisioned within the window.
    #[serde(default = "default_guard_share")]
    pub max_share: f64,
    /// The sliding window.
    #[serde(default = "default_guard_window")]
    pub window_secs: u64,
    /// The guard applies only to targets with at least this many users.
    #[serde(default = "default_guard_min_users")]
    pub min_users: u64,
}

impl DeprovisionGuardConfig {
    /// Checks the share and the window; `key` names the section in errors.
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.max_share > 0.0 && self.max_share <= 1.0) {
            return Err(ConfigError::invalid(
                format!("{key}.max_share"),
                "must be a share in (0, 1], e.g. 0.2 for 20%",
            ));
        }
        if self.window_secs == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.window_secs"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for DeprovisionGuardConfig {
    fn default() -> Self {
        DeprovisionGuardConfig {
            enabled: true,
            max_share: default_guard_share(),
            window_secs: default_guard_window(),
            min_users: default_guard_min_users(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// The default of `max_response_bytes`: far above a SCIM resource or a page of 100, far below
/// what would strain a connector.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// The smallest `max_response_bytes` accepted (a SCIM error body must fit).
pub const MIN_MAX_RESPONSE_BYTES: u64 = 1024;

fn default_pending_stale_secs() -> u64 {
    DEFAULT_PENDING_STALE_SECS
}

/// The default of `pending_stale_secs`: a day.
pub const DEFAULT_PENDING_STALE_SECS: u64 = 86_400;

fn default_interactive_share() -> f64 {
    DEFAULT_INTERACTIVE_SHARE
}

/// The default of `interactive_share`: logins get through a saturated target, bulk keeps 80%.
pub const DEFAULT_INTERACTIVE_SHARE: f64 = 0.2;

fn default_guard_share() -> f64 {
    0.2
}
fn default_guard_window() -> u64 {
    3600
}
fn default_guard_min_users() -> u64 {
    50
}

/// TLS towards a target's HTTPS endpoints (SCIM base URL and OAuth token URL).
///
/// The system roots are always trusted; `ca_file` adds a private CA on top of them, for a SCIM
/// server whose certificate comes from an internal PKI. The file is read by the connector that
/// serves the target (ingest and status never call the target), so only that connector needs it
/// mounted: [`TargetTlsConfig::load_ca`] reads and checks it at start.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetTlsConfig {
    /// A PEM bundle of CA certificates trusted in addition to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TargetTlsConfig {
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        match &self.ca_file {
            Some(p) if p.as_os_str().is_empty() => Err(ConfigError::invalid(
                format!("{key}.ca_file"),
                "must be the path of a PEM CA bundle (or leave `ca_file` out)",
            )),
            _ => Ok(()),
        }
    }

    /// Reads and parses `ca_file`; `None` when there is none. `key` names the setting in
    /// errors (`targets[2].tls.ca_file`), which say why the file is unusable.
    pub fn load_ca(&self, key: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
        })?;
        crate::tls::certs(key, &pem).map_err(|e| match e {
            ConfigError::Invalid { key, message } => {
                ConfigError::invalid(key, format!("{}: {message}", path.display()))
            }
            other => other,
        })?;
        Ok(Some(pem))
    }
}

fn default_attempts() -> u32 {
    8
}
fn default_base_delay() -> u64 {
    200
}
fn default_max_delay() -> u64 {
    60_000
}
fn default_timeout() -> u64 {
    30
}
fn default_shards() -> u16 {
    DEFAULT_SHARDS
}

/// One target: one provider tenant (a GitHub enterprise, an AWS identity store, a Salesforce
/// org, a SCIM application).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Unique id, used in routing keys, queue names and outcomes (`[a-z0-9-]`).
    pub id: String,
    /// Which connector serves it.
    pub provider: ProviderKind,
    /// Identity-platform tenants whose events go here when an event names no targets.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The SCIM base URL (ending before `/Users`).
    pub base_url: String,
    /// Authentication.
    pub auth: AuthConfig,
    /// Number of shard queues (subjects are hashed over them).
    #[serde(default = "default_shards")]
    pub shards: u16,
    /// Static request ceiling; absent = the provider's published default.
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    /// Adaptive concurrency bounds.
    #[serde(default)]
    pub concurrency: ConcurrencyConfig,
    /// The share of the target's request rate reserved for interactive work (a person waiting):
    /// served first up to this share while bulk saturates the target; bulk takes what it leaves
    /// (docs/design.md, "Login-time provisioning"). 0 to 1.
    #[serde(default = "default_interactive_share")]
    pub interactive_share: f64,
    /// After how long a reference to a user not at the target yet (a group's member, a user's
    /// manager) is reported as stale: the user event may never be sent (docs/design.md,
    /// "References"). It stays pending; nothing fails.
    #[serde(default = "default_pending_stale_secs")]
    pub pending_stale_secs: u64,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The largest response body read from the target (and its OAuth token endpoint); a longer
    /// one fails the request instead of filling the connector's memory.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// What a user deletion does.
    #[serde(default)]
    pub delete_policy: DeletePolicy,
    /// Apply or only plan.
    #[serde(default)]
    pub mode: TargetMode,
    /// The mass-deprovisioning guard.
    #[serde(default)]
    pub deprovision_guard: DeprovisionGuardConfig,
    /// TLS towards the target: `tls: { ca_file: /path/ca.pem }` trusts a private CA too.
    #[serde(default)]
    pub tls: TargetTlsConfig,
    /// Provider-specific options (documented by each provider crate).
    #[serde(default)]
    pub options: BTreeMap<String, serde_yaml::Value>,
}

/// Between the tenant and the platform id in the externalId of a target that serves several
/// tenants (`acme:u-7`; see [`TargetConfig::external_id`]).
pub const EXTERNAL_ID_SEPARATOR: char = ':';

impl TargetConfig {
    /// Checks how requests are sent to the target: URL, shards, rate, concurrency, retries,
    /// the deprovisioning guard, TLS, timeout and response size. `key` is the target's
    /// (`targets[2]`).
    fn check_requests(&self, key: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{key}.{field}");
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                key("base_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError::invalid(
                key("shards"),
                format!("must be 1..={MAX_SHARDS}"),
            ));
        }
        if let Some(rate) = self.rate_limit_per_sec
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(ConfigError::invalid(
                key("rate_limit_per_sec"),
                "must be a positive number",
            ));
        }
        if self.pending_stale_secs == 0 {
            return Err(ConfigError::invalid(
                key("pending_stale_secs"),
                "must be at least 1 (seconds before a pending reference is reported as stale)",
            ));
        }
        if !(0.0..=1.0).contains(&self.interactive_share) {
            return Err(ConfigError::invalid(
                key("interactive_share"),
                "must be a number from 0 to 1 (the share of the rate reserved for interactive work)",
            ));
        }
        self.concurrency.check(&key("concurrency"))?;
        self.retry.check(&key("retry"))?;
        self.deprovision_guard.check(&key("deprovision_guard"))?;
        self.tls.check(&key("tls"))?;
        if self.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                key("timeout_secs"),
                "must be at least 1",
            ));
        }
        if self.max_response_bytes < MIN_MAX_RESPONSE_BYTES {
            return Err(ConfigError::invalid(
                key("max_response_bytes"),
                format!("must be at least {MIN_MAX_RESPONSE_BYTES}"),
            ));
        }
        Ok(())
    }

    /// Whether the target serves several tenants. Subjects of two tenants may then share a
    /// platform id, so the objects at the target are linked by an externalId that names the
    /// tenant (see [`TargetConfig::external_id`]).
    pub fn shared(&self) -> bool {
        self.tenants.len() > 1
    }

    /// The externalId that links the platform subject `id` of `tenant` to its object at this
    /// target: the bare `id` on a target that serves one tenant (as it always was, so such a
    /// target needs no migration), `<tenant>:<id>` on a target shared by several tenants, so
    /// that lookups and adoption never match another tenant's object. Tenant names of a shared
    /// target cannot contain `:` (checked with the file), so the form is unambiguous.
    pub fn external_id(&self, tenant: &str, id: &str) -> String {
        if self.shared() {
            format!("{tenant}{EXTERNAL_ID_SEPARATOR}{id}")
        } else {
            id.to_owned()
        }
    }
}

/// A target id is 1 to [`MAX_TARGET_ID_LEN`] characters of `a-z`, `0-9` and `-`: it becomes
/// part of queue names and routing keys.
fn check_target_id(id: &str, key: &str) -> Result<(), ConfigError> {
    if id.is_empty()
        || id.len() > MAX_TARGET_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::invalid(
            key,
            format!("{id:?} must be 1–{MAX_TARGET_ID_LEN} characters of a-z, 0-9 and '-'"),
        ));
    }
    Ok(())
}

/// A target's tenants are non-empty and listed once; on a target shared by several tenants
/// their names cannot contain [`EXTERNAL_ID_SEPARATOR`]. `key` is the target's (`targets[2]`).
fn check_tenants(tenants: &[String], key: &str) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (j, tenant) in tenants.iter().enumerate() {
        let key = format!("{key}.tenants[{j}]");
        if tenant.is_empty() {
            return Err(ConfigError::invalid(key, "must not be empty"));
        }
        if !seen.insert(tenant.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("{tenant:?} is listed twice"),
            ));
        }
        if tenants.len() > 1 && tenant.contains(EXTERNAL_ID_SEPARATOR) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "a target serving several tenants links objects by the externalId \
                     `<tenant>{EXTERNAL_ID_SEPARATOR}<id>`, so its tenant names cannot \
                     contain {EXTERNAL_ID_SEPARATOR:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// The targets file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    /// Every target of the installation.
    pub targets: Vec<TargetConfig>,
}

impl TargetsFile {
    /// Reads and validates a targets file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            // A key of the file is named with its path; one of the environment
            // (`SCIMRELAY_PROVIDERS`) is not the file's.
            ConfigError::Invalid { key, message } if key.starts_with("targets") => {
                ConfigError::Invalid {
                    key: format!("{}: {key}", path.display()),
                    message,
                }
            }
            other => other,
        })
    }

    /// Parses and validates targets-file YAML, for the providers this deployment runs
    /// ([`ProviderKind::deployed`]).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_for(text, &ProviderKind::deployed()?)
    }

    /// Parses and validates targets-file YAML whose targets may name the providers `deployed`.
    pub fn parse_for(text: &str, deployed: &[ProviderKind]) -> Result<Self, ConfigError> {
        let file: TargetsFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        file.validate(deployed)?;
        Ok(file)
    }

    /// Checks every target, section by section; the first error names its key
    /// (`targets[2].retry.max_attempts`).
    fn validate(&self, deployed: &[ProviderKind]) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = format!("targets[{i}]");
            check_target_id(&t.id, &format!("{key}.id"))?;
            if !seen.insert(t.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.id"),
                    format!("{:?} is used twice", t.id),
                ));
            }
            if !deployed.contains(&t.provider) {
                let names: Vec<&str> = deployed.iter().map(ProviderKind::as_str).collect();
                return Err(ConfigError::invalid(
                    format!("{key}.provider"),
                    format!(
                        "{:?} is not a provider this deployment runs ({PROVIDERS_ENV}: {})",
                        t.provider.as_str(),
                        names.join(", ")
                    ),
                ));
            }
            t.check_requests(&key)?;
            check_tenants(&t.tenants, &key)?;
            t.auth.check(&key)?;
        }
        Ok(())
    }

    /// The target with this id.
    pub fn target(&self, id: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.id == id)
    }

    /// Targets subscribed to a platform tenant.
    pub fn targets_for_tenant<'a>(
        &'a self,
        tenant: &'a str,
    ) -> impl Iterator<Item = &'a TargetConfig> {
        self.targets
            .iter()
            .filter(move |t| t.tenants.iter().any(|x| x == tenant))
    }

    /// Targets served by one provider kind.
    pub fn targets_of<'a>(
        &'a self,
        provider: &'a ProviderKind,
    ) -> impl Iterator<Item = &'a TargetConfig> {
        self.targets.iter().filter(move |t| t.provider == *provider)
    }
}

/// Settings every service reads from the environment (everything about a target is in the
/// targets file).
#[derive(Debug, Clone)]
pub struct EnvConfig {
    /// `SCIMRELAY_AMQP_URL`.
    pub amqp_url: String,
    /// `SCIMRELAY_CONFIG`: path of the targets file.
    pub config_path: Option<PathBuf>,
}

impl EnvConfig {
    /// Reads the shared variables, with defaults that run locally.
    pub fn from_env() -> Result<Self, ConfigError> {
        let amqp_url = env_or("SCIMRELAY_AMQP_URL", DEFAULT_AMQP_URL);
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                "SCIMRELAY_AMQP_URL",
                "must start with amqp:// or amqps://",
            ));
        }
        // A bad SCIMRELAY_AMQP_CA_FILE stops every service at start, not at each reconnect.
        crate::amqp::check_tls_env(&amqp_url)?;
        let config_path = std::env::var_os("SCIMRELAY_CONFIG").map(PathBuf::from);
        Ok(EnvConfig {
            amqp_url,
            config_path,
        })
    }

    /// Loads the targets file named by `SCIMRELAY_CONFIG` (required by services that route).
    pub fn targets(&self) -> Result<TargetsFile, ConfigError> {
        let path = self.config_path.as_ref().ok_or_else(|| {
            ConfigError::invalid(
                "SCIMRELAY_CONFIG",
                "is not set: point it at the targets file (YAML)",
            )
        })?;
        TargetsFile::load(path)
    }
}

/// A variable's value, or the default when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Parses a variable with `FromStr`; the error names the variable.
pub fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|e| ConfigError::invalid(name, format!("{v:?} is not valid: {e}"))),
        _ => Ok(default),
    }
}

/// Strips the password from an AMQP URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
targets:
  - id: scim-demo
    provider: scim
    tenants: [acme]
    base_url: http://127.0.0.1:9090/acme/scim/v2
    auth: { kind: bearer, token: { env: DEMO_TOKEN } }
"#;

    #[test]
    fn provider_names_are_open_but_a_misspelt_one_stops_the_start() {
        let with =
            |provider: &str| GOOD.replace("provider: scim", &format!("provider: {provider}"));
        let parse = |text: &str| TargetsFile::parse_for(text, &ProviderKind::SHIPPED);
        let f = parse(&with("github")).expect("a shipped profile");
        assert_eq!(f.targets[0].provider, ProviderKind::GITHUB);
        for (provider, words) in [
            (
                "githb",
                "not a provider this deployment runs (SCIMRELAY_PROVIDERS: scim, github, aws, salesforce)",
            ),
            ("GitHub", "is not a provider name"),
            ("\"\"", "is not a provider name"),
        ] {
            let e = parse(&with(provider)).expect_err(provider).to_string();
            assert!(e.contains(words), "{provider}: {e}");
        }
        let e = parse(&with("githb")).expect_err("githb").to_string();
        assert!(e.contains("targets[0].provider"), "{e}");
        // A deployment that runs another profile lists it.
        let deployed =
            ProviderKind::deployed_from(Some("scim, strict-scim,".into())).expect("list");
        assert_eq!(
            deployed,
            vec![ProviderKind::SCIM, ProviderKind::named("strict-scim")]
        );
        assert_eq!(
            ProviderKind::deployed_from(None).expect("default"),
            ProviderKind::SHIPPED
        );
        let e = ProviderKind::deployed_from(Some("scim,Okta".into())).expect_err("bad name");
        assert!(e.to_string().contains(PROVIDERS_ENV), "{e}");
    }

    #[test]
    fn parses_with_defaults() {
        let f = TargetsFile::parse(GOOD).expect("valid");
        let t = &f.targets[0];
        assert_eq!(t.shards, DEFAULT_SHARDS);
        assert_eq!(t.delete_policy, DeletePolicy::Deactivate);
        assert_eq!(t.retry.max_attempts, 8);
        assert_eq!(t.deprovision_guard, DeprovisionGuardConfig::default());
        assert!(t.deprovision_guard.enabled);
        assert_eq!(f.targets_for_tenant("acme").count(), 1);
        assert_eq!(f.targets_for_tenant("other").count(), 0);
    }

    #[test]
    fn a_shared_target_names_the_tenant_in_external_ids() {
        let one = TargetsFile::parse(GOOD).expect("valid");
        assert!(!one.targets[0].shared());
        assert_eq!(one.targets[0].external_id("acme", "u-7"), "u-7");
        let two = TargetsFile::parse(&GOOD.replace("tenants: [acme]", "tenants: [acme, globex]"))
            .expect("valid");
        let t = &two.targets[0];
        assert!(t.shared());
        assert_eq!(t.external_id("acme", "u-7"), "acme:u-7");
        assert_ne!(t.external_id("acme", "u-7"), t.external_id("globex", "u-7"));
        // A single tenant may hold the separator: its ids stay bare.
        let colon = TargetsFile::parse(&GOOD.replace("tenants: [acme]", "tenants: [\"a:b\"]"))
            .expect("one tenant with a colon is fine");
        assert_eq!(colon.targets[0].external_id("a:b", "u"), "u");
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = GOOD.replace("base_url", "bse_url");
        let err = TargetsFile::parse(&bad).expect_err("typo").to_string();
        assert!(err.contains("bse_url"), "{err}");
        assert!(err.contains("targets[0]"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (GOOD.replace("scim-demo", "Scim Demo"), "targets[0].id"),
            (
                GOOD.replace("http://127", "ftp://127"),
                "targets[0].base_url",
            ),
            (
                GOOD.replace("tenants: [acme]", "tenants: [acme]\n    shards: 0"),
                "targets[0].shards",
            ),
            (
                GOOD.replace("{ env: DEMO_TOKEN }", "{ }"),
                "targets[0].auth.token",
            ),
            (
                GOOD.replace(
                    "tenants: [acme]",
                    "tenants: [acme]\n    concurrency: { min: 4, max: 2 }",
                ),
                "targets[0].concurrency",
            ),
            (
                GOOD.replace(
                    "tenants: [acme]",
                    "tenants: [acme]\n    deprovision_guard: { max_share: 1.5 }",
                ),
                "targets[0].deprovision_guard.max_share",
            ),
            (
                GOOD.replace(
                    "tenants: [acme]",
                    "tenants: [acme]\n    deprovision_guard: { window_secs: 0 }",
                ),
                "targets[0].deprovision_guard.window_secs",
            ),
            (
                GOOD.replace("tenants: [acme]", "tenants: [acme, globex, acme]"),
                "targets[0].tenants[2]",
            ),
            (
                GOOD.replace("tenants: [acme]", "tenants: [acme, \"glo:bex\"]"),
                "targets[0].tenants[1]",
            ),
            (
                GOOD.replace(
                    "tenants: [acme]",
                    "tenants: [acme]\n    tls: { ca_file: \"\" }",
                ),
                "targets[0].tls.ca_file",
            ),
            (
                GOOD.replace(
                    "tenants: [acme]",
                    "tenants: [acme]\n    interactive_share: 1.2",
                ),
                "targets[0].interactive_share",
            ),
        ];
        for (yaml, key) in cases {
            let err = TargetsFile::parse(&yaml).expect_err(key).to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
    }

    #[test]
    fn target_tls_ca_file_is_optional_checked_and_named() {
        let f = TargetsFile::parse(GOOD).expect("valid");
        assert_eq!(f.targets[0].tls, TargetTlsConfig::default());
        assert_eq!(f.targets[0].tls.load_ca("k").expect("no file"), None);

        let typo = GOOD.replace("tenants: [acme]", "tenants: [acme]\n    tls: { cafile: x }");
        let err = TargetsFile::parse(&typo)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("cafile"), "{err}");

        let missing = GOOD.replace(
            "tenants: [acme]",
            "tenants: [acme]\n    tls: { ca_file: /nonexistent/scimrelay-ca.pem }",
        );
        // Parsing does not read the file (ingest and status never need it) ...
        let f = TargetsFile::parse(&missing).expect("the path is well-formed");
        let tls = &f.targets[0].tls;
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(Path::new("/nonexistent/scimrelay-ca.pem"))
        );
        // ... the connector does, and an unreadable file names the key and the path.
        let err = tls
            .load_ca("targets[0].tls.ca_file")
            .expect_err("unreadable")
            .to_string();
        assert!(
            err.starts_with("targets[0].tls.ca_file: cannot read /nonexistent/scimrelay-ca.pem"),
            "{err}"
        );

        let not_pem = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(not_pem.path(), "hello").expect("write");
        let tls = TargetTlsConfig {
            ca_file: Some(not_pem.path().to_owned()),
        };
        let err = tls
            .load_ca("targets[1].tls.ca_file")
            .expect_err("not PEM")
            .to_string();
        assert!(err.starts_with("targets[1].tls.ca_file: "), "{err}");
        assert!(err.contains("PEM"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let twice = format!("{GOOD}{}", GOOD.replace("targets:\n", ""));
        let err = TargetsFile::parse(&twice).expect_err("dup").to_string();
        assert!(
            err.contains("targets[1].id") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn secret_ref_debug_and_errors_hold_no_value() {
        let r = SecretRef {
            env: Some("SCIMRELAY_TEST_UNSET_VAR".into()),
            file: None,
        };
        let err = r
            .load("targets[0].auth.token")
            .expect_err("unset")
            .to_string();
        assert!(err.contains("SCIMRELAY_TEST_UNSET_VAR") && err.contains("targets[0].auth.token"));
        let dir = std::env::temp_dir().join(format!("scimrelay-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cr3t-value\n").expect("write temp");
        let r = SecretRef {
            env: None,
            file: Some(dir.clone()),
        };
        assert_eq!(r.load("k").expect("readable"), "s3cr3t-value");
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn redacts_amqp_password() {
        assert_eq!(
            redact_url("amqp://guest:pw@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host/"), "amqp://host/");
    }
}
