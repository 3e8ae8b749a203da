//! Simulator configuration: the tenants to serve, each with its mode, credentials and start-up
//! faults; loaded from YAML/JSON or built from `--tenant` shorthands.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::FaultConfig;

/// The whole simulator: every tenant it serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Tenants, each served under its own base path.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// One simulated provider tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Path segment naming the tenant (`[A-Za-z0-9._-]+`).
    pub id: String,
    /// Which provider the tenant behaves like.
    pub mode: Mode,
    /// Credentials every request must carry.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Faults active from start-up (changeable live through the admin API).
    #[serde(default)]
    pub faults: FaultConfig,
    /// GitHub quirk knobs (mode `github` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubConfig>,
    /// AWS IAM Identity Center quirk knobs (mode `aws` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsConfig>,
    /// Salesforce quirk knobs, OAuth clients and seeded data (mode `salesforce` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce: Option<SalesforceConfig>,
    /// Capability switches of a plain RFC 7644 server (mode `scim` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<ScimCaps>,
}

/// What a plain `scim` tenant supports, announced in its ServiceProviderConfig and enforced
/// (all on by default), so clients can be tested against less capable servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimCaps {
    /// PATCH; off: `patch.supported: false` and every PATCH is 501 Not Implemented (RFC 7644
    /// §3.12: "the service provider does not support the request operation, e.g., PATCH").
    pub patch: bool,
    /// PUT; off: every PUT is 405 Method Not Allowed, as on a server that only takes PATCH for
    /// changes (a strict server protecting attributes it manages from whole replacement).
    pub put: bool,
    /// Filtering; off: `filter.supported: false` and a list or `.search` with a non-empty
    /// filter is 400 `invalidFilter` (RFC 7644 §3.4.2.2: a provider "MUST decline to filter
    /// results" it cannot filter; ignoring the filter would hand back the wrong resources).
    pub filter: bool,
    /// ETags; off: `etag.supported: false`, no `ETag` header and no `meta.version` on any
    /// answer, and `If-Match` / `If-None-Match` are ignored.
    pub etag: bool,
    /// The discovery endpoints (RFC 7644 §4); off: `ServiceProviderConfig`, `Schemas` and
    /// `ResourceTypes` are 404, as on a server that publishes none.
    pub discovery: bool,
    /// Largest page a list answers (`filter.maxResults`); a larger `count` gets this many, so
    /// a client must page by `totalResults`, not by "a short page is the last".
    pub max_results: usize,
}

/// Default of [`ScimCaps::max_results`].
pub const SCIM_MAX_RESULTS: usize = 1000;

impl Default for ScimCaps {
    fn default() -> Self {
        Self {
            patch: true,
            put: true,
            filter: true,
            etag: true,
            discovery: true,
            max_results: SCIM_MAX_RESULTS,
        }
    }
}

/// GitHub Enterprise Managed Users knobs (docs/providers/github.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The enterprise short code appended to every login as `_SHORTCODE` (default: the tenant
    /// id, lower-cased, non-alphanumerics dropped).
    pub shortcode: Option<String>,
    /// Status of every throttling answer: 403 or 429 (GitHub documents both).
    pub throttle_status: u16,
    /// Primary REST budget per hour (a classic PAT: 5,000); 0 = unlimited.
    pub requests_per_hour: u64,
    /// Users that may be created per hour (GitHub's SCIM guidance: 1,000); 0 = unlimited.
    pub user_creates_per_hour: u64,
    /// Longest login including `_SHORTCODE` (39; 30 on GHE.com data residency).
    pub max_login_len: usize,
    /// Fraction (0..=1) of group PATCHes answered `204 No Content` instead of 200 with the group
    /// (GitHub documents both answers).
    pub group_patch_204_rate: f64,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            shortcode: None,
            throttle_status: 429,
            requests_per_hour: 5_000,
            user_creates_per_hour: 1_000,
            max_login_len: 39,
            group_patch_204_rate: 0.0,
        }
    }
}

/// AWS IAM Identity Center knobs (docs/providers/aws.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Fraction (0..=1) of cursor pages cut short although more results exist (AWS documents
    /// that a short page does not mean the end).
    pub short_page_rate: f64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            short_page_rate: 0.25,
        }
    }
}

/// Salesforce knobs (docs/providers/salesforce.md): OAuth clients, token lifetime, the rolling
/// request allocation and the seeded public groups, profiles, permission sets and roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Consumer key of the connected app (client credentials `client_id`, JWT `iss`).
    pub client_id: Option<String>,
    /// Consumer secret (client credentials flow).
    pub client_secret: Option<String>,
    /// PEM public key (SPKI or PKCS#1) verifying RS256 JWT bearer assertions.
    pub jwt_public_key_pem: Option<String>,
    /// Usernames a JWT `sub` may name (users pre-approved for the app).
    pub jwt_usernames: Vec<String>,
    /// Accepted JWT `aud` values.
    pub jwt_audiences: Vec<String>,
    /// How far in the future a JWT `exp` may lie, seconds (Salesforce: a few minutes).
    pub jwt_max_ahead_secs: u64,
    /// Lifetime of issued access tokens, seconds (the org's session timeout; default 2 h).
    pub token_ttl_secs: u64,
    /// API requests allowed per rolling window (the org's allocation); 0 = unlimited.
    pub request_limit: u64,
    /// Length of the rolling allocation window, seconds (Salesforce: 24 h).
    pub request_window_secs: u64,
    /// Public groups that exist from start-up (SCIM cannot create them).
    pub groups: Vec<String>,
    /// Profile names (entitlements with ids `00e…`).
    pub profiles: Vec<String>,
    /// Permission-set names (entitlements with ids `0PS…`).
    pub permission_sets: Vec<String>,
    /// Role names (ids `00E…`).
    pub roles: Vec<String>,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            jwt_public_key_pem: None,
            jwt_usernames: Vec::new(),
            jwt_audiences: vec![
                "https://login.salesforce.com".into(),
                "https://test.salesforce.com".into(),
            ],
            jwt_max_ahead_secs: 300,
            token_ttl_secs: 7_200,
            request_limit: 15_000,
            request_window_secs: 86_400,
            groups: Vec::new(),
            profiles: vec!["System Administrator".into(), "Standard User".into()],
            permission_sets: Vec::new(),
            roles: Vec::new(),
        }
    }
}

/// Provider behaviour of a tenant. Each mode lives in its own module under `modes/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain RFC 7643/7644 server at `/{tenant}/scim/v2`.
    Scim,
    /// GitHub Enterprise Managed Users at `/scim/v2/enterprises/{tenant}`.
    Github,
    /// AWS IAM Identity Center at `/{tenant}/scim/v2`.
    Aws,
    /// Salesforce at `/{tenant}/services/scim/v2` (OAuth at `/{tenant}/services/oauth2/token`).
    Salesforce,
}

impl Mode {
    /// The mode's name in configuration and shorthands.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Scim => "scim",
            Mode::Github => "github",
            Mode::Aws => "aws",
            Mode::Salesforce => "salesforce",
        }
    }
}

/// How a tenant authenticates requests. In YAML: `none`, `{kind: none}`,
/// `{kind: bearer, token: T}` or `{kind: basic, username: U, password: P}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AuthRepr")]
pub enum AuthConfig {
    /// No credentials required.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The accepted token.
        token: String,
    },
    /// `Authorization: Basic base64(user:pass)`.
    Basic {
        /// The accepted user name.
        username: String,
        /// The accepted password.
        password: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AuthRepr {
    Word(String),
    Tagged(AuthTagged),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum AuthTagged {
    None,
    Bearer { token: String },
    Basic { username: String, password: String },
}

impl TryFrom<AuthRepr> for AuthConfig {
    type Error = String;
    fn try_from(r: AuthRepr) -> Result<Self, String> {
        Ok(match r {
            AuthRepr::Word(w) if w == "none" => AuthConfig::None,
            AuthRepr::Word(w) => {
                return Err(format!(
                    "auth: expected none or {{kind: bearer|basic, ...}}, got {w:?}"
                ));
            }
            AuthRepr::Tagged(AuthTagged::None) => AuthConfig::None,
            AuthRepr::Tagged(AuthTagged::Bearer { token }) => AuthConfig::Bearer { token },
            AuthRepr::Tagged(AuthTagged::Basic { username, password }) => {
                AuthConfig::Basic { username, password }
            }
        })
    }
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON of the expected shape.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// The file (or "input").
        origin: String,
        /// What serde said, with line and column.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, e.g. `tenants[1].id`.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl SimConfig {
    /// Parses YAML (or JSON, a subset of YAML).
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: "input".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a YAML/JSON file.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_str(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                origin: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Checks ids (non-empty, URL-safe, unique, not reserved) and fault settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let field = format!("tenants[{i}].id");
            if t.id.is_empty()
                || !t
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!(
                        "{:?} must be non-empty and use only A-Z a-z 0-9 . _ -",
                        t.id
                    ),
                });
            }
            if t.id.starts_with('_') || t.id == "." || t.id == ".." {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!("{:?} is reserved", t.id),
                });
            }
            if !seen.insert(t.id.as_str()) {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!("duplicate tenant id {:?}", t.id),
                });
            }
            t.faults
                .validate()
                .map_err(|(f, message)| ConfigError::Invalid {
                    field: format!("tenants[{i}].faults.{f}"),
                    message,
                })?;
            t.validate_mode()
                .map_err(|(f, message)| ConfigError::Invalid {
                    field: format!("tenants[{i}].{f}"),
                    message,
                })?;
        }
        Ok(())
    }
}

impl TenantConfig {
    /// A tenant of `mode` with no credentials, no faults and default quirk knobs.
    pub fn new(id: impl Into<String>, mode: Mode) -> Self {
        Self {
            id: id.into(),
            mode,
            auth: AuthConfig::None,
            faults: FaultConfig::default(),
            github: None,
            aws: None,
            salesforce: None,
            scim: None,
        }
    }

    /// The GitHub knobs (defaults when the section is absent).
    pub fn github(&self) -> GithubConfig {
        self.github.clone().unwrap_or_default()
    }

    /// The AWS knobs (defaults when the section is absent).
    pub fn aws(&self) -> AwsConfig {
        self.aws.clone().unwrap_or_default()
    }

    /// The plain SCIM capabilities (all on when the section is absent).
    pub fn scim(&self) -> ScimCaps {
        self.scim.unwrap_or_default()
    }

    /// The Salesforce knobs (defaults when the section is absent).
    pub fn salesforce(&self) -> SalesforceConfig {
        self.salesforce.clone().unwrap_or_default()
    }

    /// Checks the mode-specific section and credentials; the error names the field.
    fn validate_mode(&self) -> Result<(), (String, String)> {
        for (name, present, mode) in [
            ("github", self.github.is_some(), Mode::Github),
            ("aws", self.aws.is_some(), Mode::Aws),
            ("salesforce", self.salesforce.is_some(), Mode::Salesforce),
            ("scim", self.scim.is_some(), Mode::Scim),
        ] {
            if present && self.mode != mode {
                return Err((
                    name.into(),
                    format!("only allowed on a tenant with mode {name}"),
                ));
            }
        }
        if self.mode != Mode::Scim && matches!(self.auth, AuthConfig::Basic { .. }) {
            return Err((
                "auth".into(),
                format!(
                    "mode {} takes bearer tokens only (no HTTP Basic)",
                    self.mode.name()
                ),
            ));
        }
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((name.to_string(), format!("{v} must be between 0 and 1")))
            }
        };
        if let Some(g) = &self.github {
            if g.throttle_status != 403 && g.throttle_status != 429 {
                return Err((
                    "github.throttle_status".into(),
                    format!("{} must be 403 or 429", g.throttle_status),
                ));
            }
            rate("github.group_patch_204_rate", g.group_patch_204_rate)?;
            if g.max_login_len < 3 {
                return Err(("github.max_login_len".into(), "must be at least 3".into()));
            }
            if let Some(sc) = &g.shortcode
                && (sc.is_empty() || !sc.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err((
                    "github.shortcode".into(),
                    format!("{sc:?} must be non-empty letters and digits"),
                ));
            }
        }
        if let Some(a) = &self.aws {
            rate("aws.short_page_rate", a.short_page_rate)?;
        }
        if let Some(c) = &self.scim
            && c.max_results == 0
        {
            return Err(("scim.max_results".into(), "must be at least 1".into()));
        }
        if let Some(sf) = &self.salesforce {
            if sf.client_secret.is_some() && sf.client_id.is_none() {
                return Err((
                    "salesforce.client_id".into(),
                    "required when client_secret is set".into(),
                ));
            }
            if let Some(pem) = &sf.jwt_public_key_pem {
                if sf.client_id.is_none() {
                    return Err((
                        "salesforce.client_id".into(),
                        "required for the JWT bearer flow (it is the expected iss)".into(),
                    ));
                }
                jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                    (
                        "salesforce.jwt_public_key_pem".to_string(),
                        format!("not an RSA public key in PEM form: {e}"),
                    )
                })?;
            }
            if sf.token_ttl_secs == 0 {
                return Err((
                    "salesforce.token_ttl_secs".into(),
                    "must be at least 1".into(),
                ));
            }
            if sf.request_window_secs == 0 {
                return Err((
                    "salesforce.request_window_secs".into(),
                    "must be at least 1".into(),
                ));
            }
            if sf.profiles.is_empty() {
                return Err((
                    "salesforce.profiles".into(),
                    "at least one profile is needed (every user must have one)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Parses the CLI shorthand `ID:MODE[:KEY=VALUE]...[:AUTH]`.
    ///
    /// AUTH is `none`, `bearer=TOKEN` or (scim only) `basic=USER:PASS`; it takes the rest of the
    /// string, so tokens and passwords may contain `:`. Options before it, by mode:
    /// github `shortcode=S`, `throttle=403|429`, `creates_per_hour=N`, `requests_per_hour=N`;
    /// salesforce `client=ID`, `secret=S`, `ttl=SECS`, `limit=N`, `groups=A,B`;
    /// aws `short_pages=RATE`; scim `patch=BOOL`, `put=BOOL`, `filter=BOOL`, `etag=BOOL`, `discovery=BOOL`,
    /// `max_results=N`.
    pub fn parse_shorthand(s: &str) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            field: format!("--tenant {s}"),
            message,
        };
        let mut parts = s.splitn(3, ':');
        let id = parts.next().unwrap_or_default().to_string();
        let mode = match parts.next() {
            Some("scim") => Mode::Scim,
            Some("github") => Mode::Github,
            Some("aws") => Mode::Aws,
            Some("salesforce") => Mode::Salesforce,
            Some(other) => {
                return Err(bad(format!(
                    "unknown mode {other:?}; expected scim, github, aws or salesforce"
                )));
            }
            None => {
                return Err(bad(
                    "expected ID:MODE[:OPTIONS][:AUTH], e.g. acme:scim:bearer=secret".into(),
                ));
            }
        };
        let mut t = TenantConfig::new(id, mode);
        let mut rest = parts.next();
        while let Some(r) = rest {
            if r == "none" {
                break;
            }
            if let Some(token) = r.strip_prefix("bearer=") {
                t.auth = AuthConfig::Bearer {
                    token: token.to_string(),
                };
                break;
            }
            if let Some(up) = r.strip_prefix("basic=") {
                let Some((username, password)) = up.split_once(':') else {
                    return Err(bad("basic auth is basic=USER:PASS".into()));
                };
                t.auth = AuthConfig::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                };
                break;
            }
            let (opt, tail) = match r.split_once(':') {
                Some((o, tail)) => (o, Some(tail)),
                None => (r, None),
            };
            rest = tail;
            let Some((key, value)) = opt.split_once('=') else {
                return Err(bad(format!(
                    "unknown option {opt:?}; expected KEY=VALUE, none, bearer=TOKEN or basic=USER:PASS"
                )));
            };
            t.set_option(key, value).map_err(bad)?;
        }
        Ok(t)
    }

    /// Applies one `KEY=VALUE` shorthand option.
    fn set_option(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}={v}: expected a whole number"))
        };
        match (self.mode, key) {
            (Mode::Github, _) => {
                let g = self.github.get_or_insert_with(GithubConfig::default);
                match key {
                    "shortcode" => g.shortcode = Some(value.to_string()),
                    "throttle" => {
                        g.throttle_status = u16::try_from(num(value)?)
                            .map_err(|_| format!("throttle={value}: expected 403 or 429"))?;
                    }
                    "creates_per_hour" => g.user_creates_per_hour = num(value)?,
                    "requests_per_hour" => g.requests_per_hour = num(value)?,
                    _ => {
                        return Err(format!(
                            "unknown github option {key:?}; expected shortcode, throttle, creates_per_hour or requests_per_hour"
                        ));
                    }
                }
            }
            (Mode::Scim, _) => {
                let c = self.scim.get_or_insert_with(ScimCaps::default);
                let flag = |v: &str| match v {
                    "true" | "on" => Ok(true),
                    "false" | "off" => Ok(false),
                    _ => Err(format!("{key}={v}: expected true or false")),
                };
                match key {
                    "patch" => c.patch = flag(value)?,
                    "put" => c.put = flag(value)?,
                    "filter" => c.filter = flag(value)?,
                    "etag" => c.etag = flag(value)?,
                    "discovery" => c.discovery = flag(value)?,
                    "max_results" => {
                        c.max_results = usize::try_from(num(value)?)
                            .map_err(|_| format!("max_results={value}: too large"))?;
                    }
                    _ => {
                        return Err(format!(
                            "unknown scim option {key:?}; expected patch, put, filter, etag, discovery or max_results"
                        ));
                    }
                }
            }
            (Mode::Aws, "short_pages") => {
                self.aws
                    .get_or_insert_with(AwsConfig::default)
                    .short_page_rate = value
                    .parse()
                    .map_err(|_| format!("short_pages={value}: expected a number 0..1"))?;
            }
            (Mode::Salesforce, _) => {
                let sf = self
                    .salesforce
                    .get_or_insert_with(SalesforceConfig::default);
                match key {
                    "client" => sf.client_id = Some(value.to_string()),
                    "secret" => sf.client_secret = Some(value.to_string()),
                    "ttl" => sf.token_ttl_secs = num(value)?,
                    "limit" => sf.request_limit = num(value)?,
                    "groups" => {
                        sf.groups = value
                            .split(',')
                            .filter(|g| !g.is_empty())
                            .map(str::to_string)
                            .collect();
                    }
                    _ => {
                        return Err(format!(
                            "unknown salesforce option {key:?}; expected client, secret, ttl, limit or groups"
                        ));
                    }
                }
            }
            (mode, _) => {
                return Err(format!("unknown {} option {key:?}", mode.name()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_forms() {
        let c = SimConfig::from_yaml_str(
            "tenants:\n\
             - {id: a, mode: scim, auth: none}\n\
             - {id: b, mode: scim, auth: {kind: bearer, token: t}}\n\
             - {id: c, mode: scim, auth: {kind: basic, username: u, password: p}}\n\
             - {id: d, mode: scim}\n",
        );
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.tenants[0].auth, AuthConfig::None);
        assert_eq!(c.tenants[1].auth, AuthConfig::Bearer { token: "t".into() });
        assert_eq!(
            c.tenants[2].auth,
            AuthConfig::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(c.tenants[3].auth, AuthConfig::None);
        let json = SimConfig::from_yaml_str(
            r#"{"tenants":[{"id":"x","mode":"scim","auth":{"kind":"none"}}]}"#,
        );
        assert!(json.is_ok());
    }

    #[test]
    fn rejects_bad_config_naming_the_field() {
        let e = SimConfig::from_yaml_str("tenants: [{id: a, mode: scim}, {id: a, mode: scim}]");
        assert!(
            e.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .starts_with("tenants[1].id")
        );
        let e = SimConfig::from_yaml_str("tenants: [{id: 'a/b', mode: scim}]");
        assert!(e.is_err());
        let e = SimConfig::from_yaml_str("tenants: [{id: a, mode: ldap}]");
        assert!(e.is_err());
        let e = SimConfig::from_yaml_str("tenants: [{id: a, mode: scim, faults: {error_rate: 2}}]");
        assert!(
            e.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("faults.error_rate")
        );
    }

    #[test]
    fn shorthand() {
        let t = TenantConfig::parse_shorthand("acme:scim:basic=u:p:w")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.id.as_str(), t.mode), ("acme", Mode::Scim));
        assert_eq!(
            t.auth,
            AuthConfig::Basic {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        let t =
            TenantConfig::parse_shorthand("x:scim:bearer=a:b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.auth,
            AuthConfig::Bearer {
                token: "a:b".into()
            }
        );
        assert_eq!(
            TenantConfig::parse_shorthand("x:scim").map(|t| t.auth).ok(),
            Some(AuthConfig::None)
        );
        assert!(TenantConfig::parse_shorthand("x").is_err());
        assert!(TenantConfig::parse_shorthand("x:ldap").is_err());
        assert!(TenantConfig::parse_shorthand("x:scim:token=1").is_err());
    }

    #[test]
    fn shorthand_for_provider_modes() {
        let t = TenantConfig::parse_shorthand("acme:github:shortcode=ac:throttle=403:bearer=a:b")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.mode, Mode::Github);
        assert_eq!(
            t.auth,
            AuthConfig::Bearer {
                token: "a:b".into()
            }
        );
        let g = t.github();
        assert_eq!(
            (g.shortcode.as_deref(), g.throttle_status),
            (Some("ac"), 403)
        );
        let t =
            TenantConfig::parse_shorthand("d-1:aws:bearer=tok").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.mode, t.aws.is_none()), (Mode::Aws, true));
        let t = TenantConfig::parse_shorthand("org:salesforce:client=cid:secret=cs:groups=A,B")
            .unwrap_or_else(|e| panic!("{e}"));
        let sf = t.salesforce();
        assert_eq!(sf.client_id.as_deref(), Some("cid"));
        assert_eq!(sf.client_secret.as_deref(), Some("cs"));
        assert_eq!(sf.groups, vec!["A".to_string(), "B".to_string()]);
        let t = TenantConfig::parse_shorthand(
            "a:scim:patch=false:put=off:filter=off:etag=false:discovery=false:max_results=7:bearer=t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.scim(),
            ScimCaps {
                patch: false,
                put: false,
                filter: false,
                etag: false,
                discovery: false,
                max_results: 7
            }
        );
        assert_eq!(t.auth, AuthConfig::Bearer { token: "t".into() });
        let t =
            TenantConfig::parse_shorthand("a:scim:etag=false").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.scim().etag, t.scim().patch, t.scim().max_results),
            (false, true, SCIM_MAX_RESULTS),
            "the other switches keep their defaults"
        );
        assert!(TenantConfig::parse_shorthand("a:scim:patch=maybe").is_err());
        assert!(TenantConfig::parse_shorthand("a:scim:sort=true").is_err());
        let e = SimConfig::from_yaml_str("tenants: [{id: a, mode: scim, scim: {max_results: 0}}]");
        assert!(
            e.err()
                .is_some_and(|e| e.to_string().starts_with("tenants[0].scim.max_results"))
        );
        assert!(TenantConfig::parse_shorthand("x:github:nope=1").is_err());
        assert!(TenantConfig::parse_shorthand("x:aws:shortcode=a").is_err());
        // Validation catches what the grammar cannot.
        let mut c = SimConfig::default();
        c.tenants.push(
            TenantConfig::parse_shorthand("x:aws:basic=u:p").unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(
            c.validate()
                .err()
                .is_some_and(|e| e.to_string().contains("auth"))
        );
        let e = SimConfig::from_yaml_str("tenants: [{id: a, mode: scim, github: {shortcode: x}}]");
        assert!(
            e.err()
                .is_some_and(|e| e.to_string().starts_with("tenants[0].github"))
        );
        let e = SimConfig::from_yaml_str(
            "tenants: [{id: a, mode: salesforce, salesforce: {client_id: c, jwt_public_key_pem: nope}}]",
        );
        assert!(
            e.err()
                .is_some_and(|e| e.to_string().contains("jwt_public_key_pem")),
        );
        let e = SimConfig::from_yaml_str(
            "tenants: [{id: a, mode: github, github: {throttle_status: 500}}]",
        );
        assert!(e.is_err());
    }
}
