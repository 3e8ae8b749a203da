//! API keys for the entry points (ingest's HTTP and gRPC APIs, the status gRPC API).
//!
//! # The keys file
//! `SCIMRELAY_API_KEYS_FILE` names a YAML file shared by ingest and status:
//!
//! ```yaml
//! keys:
//!   - id: hr-feed-2026            # names the key in logs, metrics and errors; never secret
//!     sha256: 9f86d081884c7d65…    # hex SHA-256 of the key; the key itself is never stored
//!     tenants: [acme]             # tenants it may act for; ["*"] for all
//!     scopes: [send, read]        # send (post events), read (status reads), admin (replay,
//!                                 #   release, drop, the guard; implies read), connector (the
//!                                 #   state of record and the guard; implies read)
//!     rate_per_sec: 50            # per-key request rate (burst: one second's worth); default 100
//!     bulk_only: false            # true: its events go to the bulk lane; `interactive` is refused
//!     max_waiting: 100            # requests of this key waiting for outcomes at once (Prefer: wait)
//!     revoked: false              # a revoked key is refused with its own message
//! ```
//!
//! `scimrelayctl keys new` makes a random key and prints its entry. Several keys may hold the
//! same scopes at once, so a key is rotated by adding the new one, moving clients, then revoking
//! the old. The file is re-read when it changes (checked every [`RELOAD_INTERVAL`]); a file
//! that no longer parses is refused with an error log and the previous keys stay in force.
//!
//! # Checking a key
//! Clients send `Authorization: Bearer <key>` (HTTP header or gRPC metadata). The presented key
//! is hashed and compared against **every** configured hash in constant time (no early exit),
//! so neither the position of a match nor a shared prefix shows in the timing.
//!
//! # Without a keys file
//! Authentication is off, which suits a laptop. A service whose listener is not on a loopback
//! address refuses to start that way unless `SCIMRELAY_ALLOW_UNAUTHENTICATED=true` says it is
//! meant (see [`require_for_listener`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;

/// Environment variable naming the keys file.
pub const KEYS_FILE_ENV: &str = "SCIMRELAY_API_KEYS_FILE";
/// Environment variable allowing a non-loopback listener without keys.
pub const ALLOW_UNAUTHENTICATED_ENV: &str = "SCIMRELAY_ALLOW_UNAUTHENTICATED";
/// How often the keys file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Per-key request rate when the entry names none.
pub const DEFAULT_RATE_PER_SEC: f64 = 100.0;
/// Prefix of keys made by `scimrelayctl keys new`, so a leaked key is recognisable in scans.
pub const KEY_PREFIX: &str = "srk_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Post events to ingest.
    Send,
    /// Read the status API.
    Read,
    /// Operator actions of the status API (replay, release, drop); implies `read`.
    Admin,
    /// What connectors do at the status API: write the state of record (`TakeEvents`,
    /// `RecordConverged`) and ask the mass-deprovisioning guard; implies `read`. A separate
    /// scope so that a dashboard's `read` key can neither move versions nor fill a guard window.
    Connector,
}

impl Scope {
    /// The name used in the keys file and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Connector => "connector",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    sha256: String,
    tenants: Vec<String>,
    scopes: Vec<Scope>,
    #[serde(default)]
    rate_per_sec: Option<f64>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    bulk_only: bool,
    #[serde(default)]
    max_waiting: Option<u32>,
}

/// Default `max_waiting`: requests of one key waiting for their outcomes at once.
pub const DEFAULT_MAX_WAITING: u32 = 100;

/// One configured key (its hash, never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// The key's name.
    pub id: String,
    sha256: [u8; 32],
    /// Tenants it may act for; `None` for all.
    pub tenants: Option<Vec<String>>,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Requests per second.
    pub rate_per_sec: f64,
    /// Refused with "revoked".
    pub revoked: bool,
    /// Its events may only be bulk: an `interactive` one is refused.
    pub bulk_only: bool,
    /// Its requests waiting for outcomes at once (`Prefer: wait`); more are answered at once.
    pub max_waiting: u32,
}

/// The parsed keys file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    /// Every key, revoked ones included.
    pub keys: Vec<KeyEntry>,
}

/// The SHA-256 of a key, as the keys file spells it (lower-case hex).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeySet {
    /// Parses and validates a keys file; errors name the key (`keys[2].sha256`).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let raw: RawFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut ids = std::collections::HashSet::new();
        for (i, k) in raw.keys.into_iter().enumerate() {
            let key = |field: &str| format!("{}: keys[{i}].{field}", origin.display());
            if k.id.is_empty() || k.id.len() > 64 || !ids.insert(k.id.clone()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    "must be 1–64 characters and unique",
                ));
            }
            let mut sha256 = [0u8; 32];
            if hex::decode_to_slice(k.sha256.trim(), &mut sha256).is_err() {
                return Err(ConfigError::invalid(
                    key("sha256"),
                    "must be the 64 hex digits of the key's SHA-256 (`scimrelayctl keys new` prints it)",
                ));
            }
            if k.scopes.is_empty() {
                return Err(ConfigError::invalid(
                    key("scopes"),
                    "must name at least one of send, read, admin, connector",
                ));
            }
            let tenants = if k.tenants.iter().any(|t| t == "*") {
                None
            } else if k.tenants.is_empty() || k.tenants.iter().any(String::is_empty) {
                return Err(ConfigError::invalid(
                    key("tenants"),
                    "must list tenants, or [\"*\"] for all",
                ));
            } else {
                Some(k.tenants)
            };
            let rate_per_sec = k.rate_per_sec.unwrap_or(DEFAULT_RATE_PER_SEC);
            if !(rate_per_sec.is_finite() && rate_per_sec >= 1.0) {
                return Err(ConfigError::invalid(
                    key("rate_per_sec"),
                    "must be a number >= 1",
                ));
            }
            let max_waiting = k.max_waiting.unwrap_or(DEFAULT_MAX_WAITING);
            if max_waiting == 0 {
                return Err(ConfigError::invalid(
                    key("max_waiting"),
                    "must be at least 1 (requests of this key waiting for outcomes at once)",
                ));
            }
            keys.push(KeyEntry {
                id: k.id,
                sha256,
                tenants,
                scopes: k.scopes,
                rate_per_sec,
                revoked: k.revoked,
                bulk_only: k.bulk_only,
                max_waiting,
            });
        }
        Ok(KeySet { keys })
    }

    /// The entry whose hash matches `presented`, compared in constant time against every entry.
    fn find(&self, presented: &str) -> Option<&KeyEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            let hit: bool = k.sha256.ct_eq(&digest).into();
            if hit && found.is_none() {
                found = Some(i);
            }
        }
        found.map(|i| &self.keys[i])
    }
}

/// Why a request was refused. The messages name the key's id, never the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No credentials.
    #[error("missing API key: send the header `Authorization: Bearer <key>`")]
    Missing,
    /// Credentials that match no key.
    #[error("invalid API key")]
    Invalid,
    /// A revoked key.
    #[error("API key {0:?} has been revoked")]
    Revoked(String),
    /// The key lacks a scope.
    #[error("API key {key:?} lacks the `{scope}` scope")]
    Scope {
        /// The key's id.
        key: String,
        /// The scope needed.
        scope: &'static str,
    },
    /// The key may not act for a tenant.
    #[error("API key {key:?} may not act for tenant {tenant:?}")]
    Tenant {
        /// The key's id.
        key: String,
        /// The tenant asked for.
        tenant: String,
    },
    /// Over the key's rate.
    #[error(
        "API key {key:?} is over its rate of {rate} requests/s; retry after {retry_after_secs} s"
    )]
    RateLimited {
        /// The key's id.
        key: String,
        /// Its rate.
        rate: f64,
        /// Whole seconds until a request is allowed again (at least 1).
        retry_after_secs: u64,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id; `"anonymous"` when authentication is off.
    pub key_id: String,
    tenants: Option<Vec<String>>,
    scopes: Vec<Scope>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    rate: f64,
    /// The key sends bulk events only.
    pub bulk_only: bool,
    /// Its requests that may wait for outcomes at once.
    pub max_waiting: u32,
}

impl Principal {
    /// The caller when authentication is off: every tenant, every scope, no rate.
    pub fn anonymous() -> Self {
        Principal {
            key_id: "anonymous".into(),
            tenants: None,
            scopes: vec![Scope::Send, Scope::Read, Scope::Admin, Scope::Connector],
            limiter: None,
            rate: 0.0,
            bulk_only: false,
            max_waiting: DEFAULT_MAX_WAITING,
        }
    }

    /// Whether the key may act for `tenant`.
    pub fn allows_tenant(&self, tenant: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == tenant))
    }

    /// Whether the key may act for every tenant.
    pub fn all_tenants(&self) -> bool {
        self.tenants.is_none()
    }

    /// The tenants the key may act for; `None` for all.
    pub fn tenants(&self) -> Option<&[String]> {
        self.tenants.as_deref()
    }

    /// Refuses a tenant the key may not act for.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), AuthError> {
        if self.allows_tenant(tenant) {
            Ok(())
        } else {
            Err(AuthError::Tenant {
                key: self.key_id.clone(),
                tenant: tenant.to_owned(),
            })
        }
    }

    /// Refuses a key without `scope` (`admin` and `connector` also grant `read`).
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        self.require_any(&[scope])
    }

    /// Refuses a key with none of `scopes` (`admin` and `connector` also grant `read`); the
    /// error names the first.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), AuthError> {
        let has = |scope: Scope| {
            self.scopes.contains(&scope)
                || (scope == Scope::Read
                    && (self.scopes.contains(&Scope::Admin)
                        || self.scopes.contains(&Scope::Connector)))
        };
        let ok = scopes.iter().any(|s| has(*s));
        if ok {
            Ok(())
        } else {
            Err(AuthError::Scope {
                key: self.key_id.clone(),
                scope: scopes.first().map_or("", |s| s.as_str()),
            })
        }
    }
}

/// Checks presented keys against the keys file (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    path: PathBuf,
    state: RwLock<State>,
}

struct State {
    keys: Arc<KeySet>,
    modified: Option<SystemTime>,
    /// Per key id: (rate, limiter); kept across reloads while the rate stays the same.
    limiters: HashMap<String, (f64, Arc<DefaultDirectRateLimiter>)>,
}

fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    // Whole requests per second with a burst of one second's worth; rates below 1/s are refused
    // by the parser.
    let per_sec = NonZeroU32::new(rate.round().clamp(1.0, f64::from(u32::MAX)) as u32)
        .unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(Quota::per_second(per_sec)))
}

fn limiters_for(
    keys: &KeySet,
    old: &HashMap<String, (f64, Arc<DefaultDirectRateLimiter>)>,
) -> HashMap<String, (f64, Arc<DefaultDirectRateLimiter>)> {
    keys.keys
        .iter()
        .map(|k| {
            let l = match old.get(&k.id) {
                Some((rate, l)) if *rate == k.rate_per_sec => l.clone(),
                _ => limiter(k.rate_per_sec),
            };
            (k.id.clone(), (k.rate_per_sec, l))
        })
        .collect()
}

fn read(path: &Path) -> Result<(KeySet, Option<SystemTime>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((KeySet::parse(&text, path)?, modified))
}

impl Authenticator {
    /// Authentication off: every caller is [`Principal::anonymous`].
    pub fn disabled() -> Self {
        Authenticator { inner: None }
    }

    /// Loads the keys file at `path`; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let (keys, modified) = read(path)?;
        let limiters = limiters_for(&keys, &HashMap::new());
        Ok(Authenticator {
            inner: Some(Arc::new(Inner {
                path: path.to_owned(),
                state: RwLock::new(State {
                    keys: Arc::new(keys),
                    modified,
                    limiters,
                }),
            })),
        })
    }

    /// From `SCIMRELAY_API_KEYS_FILE` when set, else disabled.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(KEYS_FILE_ENV) {
            Ok(p) if !p.trim().is_empty() => Self::from_file(Path::new(p.trim()))
                .map_err(|e| ConfigError::invalid(KEYS_FILE_ENV, e.to_string())),
            _ => Ok(Self::disabled()),
        }
    }

    /// Whether keys are checked.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Checks an `Authorization` header value (`Bearer <key>`; `None` when absent) and the
    /// key's rate. Scope and tenant checks are the caller's, on the returned principal.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(Principal::anonymous());
        };
        let presented = authorization
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(AuthError::Missing)?;
        let key = presented
            .strip_prefix("Bearer ")
            .or_else(|| presented.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Invalid)?;
        let state = inner.state.read().unwrap_or_else(|e| e.into_inner());
        let entry = state.keys.find(key).ok_or(AuthError::Invalid)?;
        if entry.revoked {
            return Err(AuthError::Revoked(entry.id.clone()));
        }
        let limiter = state.limiters.get(&entry.id).map(|(_, l)| l.clone());
        let principal = Principal {
            key_id: entry.id.clone(),
            tenants: entry.tenants.clone(),
            scopes: entry.scopes.clone(),
            limiter,
            rate: entry.rate_per_sec,
            bulk_only: entry.bulk_only,
            max_waiting: entry.max_waiting,
        };
        drop(state);
        if let Some(l) = &principal.limiter
            && let Err(not_until) = l.check()
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(AuthError::RateLimited {
                key: principal.key_id.clone(),
                rate: principal.rate,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        Ok(principal)
    }

    /// Re-reads the keys file if it changed; keeps the old keys when the new file is invalid.
    /// Returns whether new keys were loaded.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let Some(inner) = &self.inner else {
            return Ok(false);
        };
        let modified = std::fs::metadata(&inner.path)
            .and_then(|m| m.modified())
            .ok();
        {
            let state = inner.state.read().unwrap_or_else(|e| e.into_inner());
            if modified.is_some() && modified == state.modified {
                return Ok(false);
            }
        }
        let (keys, modified) = read(&inner.path)?;
        let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
        let changed = *state.keys != keys;
        state.limiters = limiters_for(&keys, &state.limiters);
        state.keys = Arc::new(keys);
        state.modified = modified;
        Ok(changed)
    }

    /// Reloads the keys file every [`RELOAD_INTERVAL`] until `shutdown`.
    pub fn spawn_reload(&self, shutdown: CancellationToken) {
        if self.inner.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
                }
                match me.reload() {
                    Ok(true) => tracing::info!("API keys reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "API keys file is invalid; the previous keys stay in force")
                    }
                }
            }
        });
    }
}

/// Refuses to run without keys on a listener reachable from other hosts, unless
/// `SCIMRELAY_ALLOW_UNAUTHENTICATED=true`. `listen_key` names the address setting.
pub fn require_for_listener(
    auth: &Authenticator,
    listen_key: &str,
    addr: &std::net::SocketAddr,
) -> Result<(), ConfigError> {
    if auth.enabled() || addr.ip().is_loopback() {
        return Ok(());
    }
    let allowed = std::env::var(ALLOW_UNAUTHENTICATED_ENV)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if allowed {
        tracing::warn!(
            listen = %addr,
            "authentication is OFF on a non-loopback listener ({ALLOW_UNAUTHENTICATED_ENV}=true)"
        );
        Ok(())
    } else {
        Err(ConfigError::invalid(
            KEYS_FILE_ENV,
            format!(
                "{listen_key}={addr} is reachable from other hosts: set {KEYS_FILE_ENV} to a keys file, \
                 or {ALLOW_UNAUTHENTICATED_ENV}=true to run without authentication"
            ),
        ))
    }
}

/// A new random key (`srk_` + 43 base64url characters, 256 bits).
pub fn new_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::from(KEY_PREFIX);
    s.push_str(&base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        bytes,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> (tempfile::NamedTempFile, Authenticator) {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        std::io::Write::write_all(&mut f, entries.as_bytes()).expect("write");
        let a = Authenticator::from_file(f.path()).expect("valid keys");
        (f, a)
    }

    fn entry(id: &str, key: &str, rest: &str) -> String {
        format!("  - id: {id}\n    sha256: {}\n{rest}", hash_key(key))
    }

    #[test]
    fn keys_scopes_tenants_and_revocation() {
        let text = format!(
            "keys:\n{}{}{}",
            entry("a", "key-a", "    tenants: [acme]\n    scopes: [send]\n"),
            entry(
                "ops",
                "key-ops",
                "    tenants: [\"*\"]\n    scopes: [admin]\n"
            ),
            entry(
                "old",
                "key-old",
                "    tenants: [acme]\n    scopes: [send]\n    revoked: true\n"
            ),
        );
        let (_f, auth) = file(&text);
        assert_eq!(
            auth.authenticate(None).expect_err("refused"),
            AuthError::Missing
        );
        assert_eq!(
            auth.authenticate(Some("Bearer nope")).expect_err("refused"),
            AuthError::Invalid
        );
        assert_eq!(
            auth.authenticate(Some("key-a")).expect_err("refused"),
            AuthError::Invalid,
            "the scheme is required"
        );
        assert_eq!(
            auth.authenticate(Some("Bearer key-old"))
                .expect_err("refused"),
            AuthError::Revoked("old".into())
        );
        let a = auth.authenticate(Some("Bearer key-a")).expect("valid");
        assert_eq!(a.key_id, "a");
        assert!(a.require(Scope::Send).is_ok());
        assert!(matches!(
            a.require(Scope::Read),
            Err(AuthError::Scope { scope: "read", .. })
        ));
        assert!(a.require_tenant("acme").is_ok());
        let e = a.require_tenant("beta").expect_err("refused").to_string();
        assert_eq!(e, "API key \"a\" may not act for tenant \"beta\"");
        let ops = auth.authenticate(Some("Bearer key-ops")).expect("valid");
        assert!(ops.require(Scope::Read).is_ok(), "admin implies read");
        assert!(ops.require(Scope::Send).is_err());
        assert!(ops.all_tenants() && ops.allows_tenant("anything"));
        assert!(
            ops.require(Scope::Connector).is_err(),
            "admin does not write the state of record"
        );
        assert!(ops.require_any(&[Scope::Connector, Scope::Admin]).is_ok());
    }

    #[test]
    fn the_connector_scope_implies_read_only() {
        let text = format!(
            "keys:\n{}",
            entry(
                "c",
                "key-c",
                "    tenants: [\"*\"]\n    scopes: [connector]\n"
            )
        );
        let (_f, auth) = file(&text);
        let c = auth.authenticate(Some("Bearer key-c")).expect("valid");
        assert!(c.require(Scope::Connector).is_ok());
        assert!(c.require(Scope::Read).is_ok(), "connector implies read");
        assert!(c.require(Scope::Admin).is_err());
        assert!(c.require(Scope::Send).is_err());
        let err = c
            .require_any(&[Scope::Admin, Scope::Send])
            .expect_err("neither");
        assert!(err.to_string().contains("`admin`"), "{err}");
    }

    #[test]
    fn per_key_rate_with_retry_after() {
        let text = format!(
            "keys:\n{}{}",
            entry(
                "slow",
                "k1",
                "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 2\n"
            ),
            entry(
                "other",
                "k2",
                "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 2\n"
            ),
        );
        let (_f, auth) = file(&text);
        assert!(auth.authenticate(Some("Bearer k1")).is_ok());
        assert!(auth.authenticate(Some("Bearer k1")).is_ok());
        match auth.authenticate(Some("Bearer k1")) {
            Err(AuthError::RateLimited {
                key,
                retry_after_secs,
                ..
            }) => {
                assert_eq!(key, "slow");
                assert!(retry_after_secs >= 1);
            }
            other => panic!("expected rate limited, got {other:?}"),
        }
        assert!(
            auth.authenticate(Some("Bearer k2")).is_ok(),
            "each key has its own budget"
        );
    }

    #[test]
    fn reload_revokes_without_a_restart_and_keeps_old_keys_on_a_bad_file() {
        let text = format!(
            "keys:\n{}",
            entry("a", "key-a", "    tenants: [acme]\n    scopes: [send]\n")
        );
        let (f, auth) = file(&text);
        assert!(auth.authenticate(Some("Bearer key-a")).is_ok());
        // A broken file is refused; the old keys stay.
        std::fs::write(f.path(), "keys: [ {id: x} ]").expect("write");
        bump_mtime(f.path());
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some("Bearer key-a")).is_ok());
        // Revocation takes effect on reload.
        std::fs::write(f.path(), format!("{text}    revoked: true\n")).expect("write");
        bump_mtime(f.path());
        assert_eq!(auth.reload().ok(), Some(true));
        assert_eq!(
            auth.authenticate(Some("Bearer key-a"))
                .expect_err("refused"),
            AuthError::Revoked("a".into())
        );
    }

    fn bump_mtime(p: &Path) {
        let later = SystemTime::now() + Duration::from_secs(5);
        let f = std::fs::File::options().write(true).open(p).expect("open");
        f.set_modified(later).expect("mtime");
    }

    #[test]
    fn invalid_files_name_the_key() {
        let p = Path::new("keys.yaml");
        let cases = [
            (
                "keys:\n  - id: a\n    sha256: zz\n    tenants: [acme]\n    scopes: [send]\n",
                "keys[0].sha256",
            ),
            (
                &*format!(
                    "keys:\n  - id: a\n    sha256: {}\n    tenants: [acme]\n    scopes: [send]\n    max_waiting: 0\n",
                    hash_key("k")
                ),
                "keys[0].max_waiting",
            ),
            (
                &*format!(
                    "keys:\n  - id: a\n    sha256: {}\n    tenants: []\n    scopes: [send]\n",
                    hash_key("k")
                ),
                "keys[0].tenants",
            ),
            (
                &*format!(
                    "keys:\n  - id: a\n    sha256: {}\n    tenants: [acme]\n    scopes: []\n",
                    hash_key("k")
                ),
                "keys[0].scopes",
            ),
            (
                &*format!(
                    "keys:\n  - id: a\n    sha256: {}\n    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 0\n",
                    hash_key("k")
                ),
                "keys[0].rate_per_sec",
            ),
        ];
        for (text, key) in cases {
            let e = KeySet::parse(text, p).expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = KeySet::parse("keys:\n  - id: a\n    scope: [send]\n", p)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("scope"), "{e}");
    }

    #[test]
    fn new_keys_are_random_and_hash_stably() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn non_loopback_listener_needs_keys_or_an_explicit_opt_out() {
        let public: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let local: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let off = Authenticator::disabled();
        assert!(require_for_listener(&off, "SCIMRELAY_INGEST_HTTP_ADDR", &local).is_ok());
        if std::env::var_os(ALLOW_UNAUTHENTICATED_ENV).is_none() {
            let e = require_for_listener(&off, "SCIMRELAY_INGEST_HTTP_ADDR", &public)
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains(KEYS_FILE_ENV) && e.contains("SCIMRELAY_INGEST_HTTP_ADDR"),
                "{e}"
            );
        }
    }
}
