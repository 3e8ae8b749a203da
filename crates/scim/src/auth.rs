//! Authentication to a target: HTTP Basic, a static bearer token, OAuth 2.0 client
//! credentials, and OAuth 2.0 JWT bearer (RS256, as Salesforce uses).
//!
//! OAuth tokens are fetched lazily, cached per client, and renewed:
//! - before they expire, when the token endpoint sent `expires_in` (renewal at
//!   `expires_in − min(60 s, expires_in / 2)`);
//! - once after a 401, then the request is retried once (Salesforce sends no `expires_in`, so
//!   for it a 401 is the only expiry signal; docs/providers/salesforce.md, "What Salesforce
//!   documents").
//!
//! At most one token request is in flight per client: the cache sits behind an async mutex
//! held across the token request, so callers that need a token at the same moment wait for the
//! one request and share its result — its token, or its error (a down token endpoint is asked
//! once per burst, not once per waiting caller). A 401 carries the generation of the token it
//! was sent with; only a 401 for the *current* generation triggers a refresh, so a burst of
//! 401s after a revocation causes one token request.
//!
//! Secrets (passwords, tokens, client secrets, private keys) live in [`Secret`] and in header
//! values marked sensitive; nothing here logs or formats them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::encoding::form_body;
use crate::error::{ScimError, parse_error_body, retry_after_from_headers};
use crate::secret::Secret;

/// How far ahead of `expires_in` a token is renewed, at most (half its lifetime at most).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Lifetime of a JWT-bearer assertion: a few minutes, as Salesforce expects (it allows about
/// three minutes of clock skew).
pub const JWT_ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

/// The grant type of the JWT bearer flow (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the client authenticates to a target. `Debug` prints no secret.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No `Authorization` header (local test servers).
    None,
    /// HTTP Basic.
    Basic {
        /// The user name (not secret).
        username: String,
        /// The password.
        password: Secret,
    },
    /// A static access token sent as `Authorization: Bearer` (GitHub PAT, AWS SCIM token).
    Bearer(Secret),
    /// OAuth 2.0 client credentials (RFC 6749 §4.4); credentials are sent in the form body
    /// (`client_secret_post`), as Salesforce documents.
    OauthClientCredentials {
        /// The token endpoint URL.
        token_url: String,
        /// The client id (not secret).
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// The scope to request, if the server needs one.
        scope: Option<String>,
    },
    /// OAuth 2.0 JWT bearer (RFC 7523) with an RS256-signed assertion.
    OauthJwtBearer {
        /// The token endpoint URL.
        token_url: String,
        /// The client id / consumer key (`iss`).
        client_id: String,
        /// The user the token acts for (`sub`).
        subject: String,
        /// The audience (`aud`), e.g. `https://login.salesforce.com`.
        audience: String,
        /// The RSA private key, PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
        private_key_pem: Secret,
    },
}

/// The `Authorization` header of one attempt, and which token generation it carries.
pub(crate) struct Credential {
    /// The header value (marked sensitive), or `None` without auth.
    pub header: Option<HeaderValue>,
    /// The token generation (OAuth only), handed back on a 401.
    pub generation: Option<u64>,
}

/// The runtime form of [`Auth`] inside a client.
pub(crate) enum Authorizer {
    /// No header.
    None,
    /// A fixed header (Basic or static bearer), computed once.
    Static(HeaderValue),
    /// An OAuth token source.
    OAuth(Arc<TokenSource>),
}

fn sensitive(value: String, what: &str) -> Result<HeaderValue, ScimError> {
    let mut v = HeaderValue::try_from(value).map_err(|_| {
        ScimError::Config(format!(
            "the {what} contains characters not allowed in an HTTP header"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl Authorizer {
    /// Validates the auth config (header characters, token URL, private key) and builds it;
    /// token responses longer than `max_body_bytes` are refused.
    pub(crate) fn new(auth: &Auth, max_body_bytes: u64) -> Result<Self, ScimError> {
        Ok(match auth {
            Auth::None => Authorizer::None,
            Auth::Basic { username, password } => {
                if username.contains(':') {
                    return Err(ScimError::Config(
                        "the Basic auth username must not contain ':'".into(),
                    ));
                }
                let raw = format!("{username}:{}", password.expose());
                Authorizer::Static(sensitive(
                    format!("Basic {}", BASE64.encode(raw.as_bytes())),
                    "Basic auth credential",
                )?)
            }
            Auth::Bearer(token) => {
                if token.is_empty() {
                    return Err(ScimError::Config("the bearer token is empty".into()));
                }
                Authorizer::Static(sensitive(
                    format!("Bearer {}", token.expose().trim()),
                    "bearer token",
                )?)
            }
            Auth::OauthClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                check_token_url(token_url)?;
                if client_id.is_empty() {
                    return Err(ScimError::Config("the OAuth client id is empty".into()));
                }
                Authorizer::OAuth(Arc::new(TokenSource::new(
                    token_url.clone(),
                    Grant::ClientCredentials {
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        scope: scope.clone().filter(|s| !s.is_empty()),
                    },
                    max_body_bytes,
                )))
            }
            Auth::OauthJwtBearer {
                token_url,
                client_id,
                subject,
                audience,
                private_key_pem,
            } => {
                check_token_url(token_url)?;
                if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
                    return Err(ScimError::Config(
                        "no JWT crypto backend: enable exactly one of jsonwebtoken's aws_lc_rs / rust_crypto features".into(),
                    ));
                }
                let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(
                    |e| {
                        ScimError::Config(format!(
                            "the JWT bearer private key is not an RSA PEM key ({e})"
                        ))
                    },
                )?;
                let grant = Grant::JwtBearer {
                    client_id: client_id.clone(),
                    subject: subject.clone(),
                    audience: audience.clone(),
                    key: Box::new(key),
                };
                // Sign once now, so a key the signer rejects stops the target at start-up.
                grant.assertion(SystemTime::now())?;
                Authorizer::OAuth(Arc::new(TokenSource::new(
                    token_url.clone(),
                    grant,
                    max_body_bytes,
                )))
            }
        })
    }

    /// The credential for the next attempt (fetching or renewing a token when needed).
    pub(crate) async fn credential(&self, http: &reqwest::Client) -> Result<Credential, ScimError> {
        match self {
            Authorizer::None => Ok(Credential {
                header: None,
                generation: None,
            }),
            Authorizer::Static(h) => Ok(Credential {
                header: Some(h.clone()),
                generation: None,
            }),
            Authorizer::OAuth(source) => source.credential(http, None).await,
        }
    }

    /// After a 401: a fresh token, unless the generation that got the 401 is not current
    /// (someone refreshed already). `None` when this auth cannot be refreshed.
    pub(crate) async fn after_unauthorized(
        &self,
        http: &reqwest::Client,
        generation: Option<u64>,
    ) -> Option<Result<Credential, ScimError>> {
        match (self, generation) {
            (Authorizer::OAuth(source), Some(g)) => Some(source.credential(http, Some(g)).await),
            _ => None,
        }
    }

    /// Token requests made so far (OAuth only; 0 otherwise). For metrics and tests.
    pub(crate) fn token_requests(&self) -> u64 {
        match self {
            Authorizer::OAuth(s) => s.requests.load(std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        }
    }
}

fn check_token_url(url: &str) -> Result<(), ScimError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ScimError::Config(format!("the OAuth token URL is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ScimError::Config(
            "the OAuth token URL must be http(s)".into(),
        ));
    }
    Ok(())
}

/// The OAuth grant a token source runs.
enum Grant {
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    JwtBearer {
        client_id: String,
        subject: String,
        audience: String,
        key: Box<EncodingKey>,
    },
}

/// The claims of a JWT-bearer assertion.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JwtClaims {
    /// Issuer: the client id / consumer key.
    pub iss: String,
    /// Subject: the user the token acts for.
    pub sub: String,
    /// Audience: the authorization server.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Grant {
    /// A signed assertion valid for [`JWT_ASSERTION_LIFETIME`] from `now` (JWT grant only).
    fn assertion(&self, now: SystemTime) -> Result<String, ScimError> {
        let Grant::JwtBearer {
            client_id,
            subject,
            audience,
            key,
        } = self
        else {
            return Err(ScimError::Config("not a JWT bearer grant".into()));
        };
        let exp = now.duration_since(UNIX_EPOCH).unwrap_or_default() + JWT_ASSERTION_LIFETIME;
        let claims = JwtClaims {
            iss: client_id.clone(),
            sub: subject.clone(),
            aud: audience.clone(),
            exp: exp.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|e| {
                ScimError::Config(format!(
                    "could not sign the JWT bearer assertion with the configured private key ({e}); it must be an RSA private key in PEM"
                ))
            })
    }
}

/// A cached access token.
struct CachedToken {
    header: HeaderValue,
    generation: u64,
    /// When to renew (None: only after a 401).
    refresh_at: Option<Instant>,
    /// When the server says it expires (None: unknown).
    expires_at: Option<Instant>,
}

#[derive(Default)]
struct TokenState {
    current: Option<CachedToken>,
    generation: u64,
    /// The last failed token request: when it finished, and its error, shared with the callers
    /// that were waiting for it.
    last_failure: Option<(Instant, ScimError)>,
}

/// Fetches, caches and renews OAuth tokens for one client.
pub(crate) struct TokenSource {
    token_url: String,
    grant: Grant,
    /// The longest token response read.
    max_body_bytes: u64,
    state: Mutex<TokenState>,
    requests: std::sync::atomic::AtomicU64,
}

/// When to renew a token that lives `lifetime` from `now`.
pub(crate) fn refresh_deadline(now: Instant, lifetime: Duration) -> Instant {
    let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
    now + lifetime.saturating_sub(margin)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

/// `expires_in` as a number or a numeric string; zero, negative or junk means "unknown".
fn expires_in(v: Option<&Value>) -> Option<Duration> {
    let secs = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

impl TokenSource {
    fn new(token_url: String, grant: Grant, max_body_bytes: u64) -> Self {
        TokenSource {
            token_url,
            grant,
            max_body_bytes,
            state: Mutex::new(TokenState::default()),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current token, renewing it when it is due, or when `stale` names its generation.
    async fn credential(
        &self,
        http: &reqwest::Client,
        stale: Option<u64>,
    ) -> Result<Credential, ScimError> {
        let asked_at = Instant::now();
        let mut st = self.state.lock().await;
        let now = Instant::now();
        if let Some(tok) = &st.current {
            let rejected = stale == Some(tok.generation);
            let due = tok.refresh_at.is_some_and(|t| now >= t);
            if !rejected && !due {
                return Ok(Credential {
                    header: Some(tok.header.clone()),
                    generation: Some(tok.generation),
                });
            }
        }
        // A request that failed while this caller waited for the lock answers it too.
        if let Some((at, err)) = &st.last_failure
            && *at >= asked_at
        {
            return Err(err.clone());
        }
        match self.fetch(http).await {
            Ok((header, lifetime)) => {
                let now = Instant::now();
                st.generation += 1;
                let generation = st.generation;
                st.current = Some(CachedToken {
                    header: header.clone(),
                    generation,
                    refresh_at: lifetime.map(|l| refresh_deadline(now, l)),
                    expires_at: lifetime.map(|l| now + l),
                });
                st.last_failure = None;
                tracing::debug!(
                    generation,
                    expires_in_secs = lifetime.map(|l| l.as_secs()),
                    "oauth token obtained"
                );
                Ok(Credential {
                    header: Some(header),
                    generation: Some(generation),
                })
            }
            Err(err) => {
                st.last_failure = Some((Instant::now(), err.clone()));
                // A renewal ahead of expiry failed: the old token is still good until it expires.
                if let Some(tok) = &st.current {
                    let rejected = stale == Some(tok.generation);
                    let alive = tok.expires_at.is_some_and(|t| Instant::now() < t);
                    if !rejected && alive {
                        tracing::warn!(error = %err, "oauth token renewal failed; using the current token until it expires");
                        return Ok(Credential {
                            header: Some(tok.header.clone()),
                            generation: Some(tok.generation),
                        });
                    }
                }
                Err(err)
            }
        }
    }

    /// One token request.
    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(HeaderValue, Option<Duration>), ScimError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = match &self.grant {
            Grant::ClientCredentials {
                client_id,
                client_secret,
                scope,
            } => {
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose()),
                ];
                if let Some(scope) = scope {
                    form.push(("scope", scope.as_str()));
                }
                form_body(&form)
            }
            Grant::JwtBearer { .. } => {
                let assertion = self.grant.assertion(SystemTime::now())?;
                form_body(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            }
        };
        let resp = http
            .post(&self.token_url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ScimError::from_reqwest(e, "token endpoint"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes =
            crate::client::read_limited(resp, self.max_body_bytes, "token endpoint").await?;
        if !(200..300).contains(&status) {
            let (_, detail, error_code) = parse_error_body(status, &bytes);
            tracing::warn!(
                status,
                error_code = error_code.as_deref().unwrap_or(""),
                "oauth token request refused"
            );
            return Err(ScimError::Token {
                status,
                error_code,
                detail,
                retry_after: retry_after_from_headers(&headers, SystemTime::now()),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::Decode(format!(
                "token endpoint answered HTTP {status} without a JSON token ({e})"
            ))
        })?;
        let token = parsed.access_token.trim();
        if token.is_empty() {
            return Err(ScimError::Decode(format!(
                "token endpoint answered HTTP {status} without an access_token"
            )));
        }
        let header = sensitive(format!("Bearer {token}"), "access token")?;
        Ok((header, expires_in(parsed.expires_in.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refresh_deadline_keeps_a_margin() {
        let now = Instant::now();
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(3600)),
            now + Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(30)),
            now + Duration::from_secs(15)
        );
        assert_eq!(refresh_deadline(now, Duration::ZERO), now);
    }

    #[test]
    fn expires_in_forms() {
        assert_eq!(
            expires_in(Some(&json!(3600))),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            expires_in(Some(&json!("120"))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(expires_in(Some(&json!(0))), None);
        assert_eq!(expires_in(Some(&json!(-5))), None);
        assert_eq!(expires_in(Some(&json!(null))), None);
        assert_eq!(expires_in(None), None);
    }

    #[test]
    fn auth_debug_prints_no_secret() {
        let auths = [
            Auth::Basic {
                username: "svc".into(),
                password: Secret::new("pw-AAA"),
            },
            Auth::Bearer(Secret::new("tok-BBB")),
            Auth::OauthClientCredentials {
                token_url: "https://x/token".into(),
                client_id: "cid".into(),
                client_secret: Secret::new("cs-CCC"),
                scope: None,
            },
            Auth::OauthJwtBearer {
                token_url: "https://x/token".into(),
                client_id: "cid".into(),
                subject: "svc@x".into(),
                audience: "https://login".into(),
                private_key_pem: Secret::new("-----BEGIN PRIVATE KEY-----DDD"),
            },
        ];
        for a in auths {
            let d = format!("{a:?}");
            for s in ["AAA", "BBB", "CCC", "DDD"] {
                assert!(!d.contains(s), "{d}");
            }
        }
    }

    #[test]
    fn bad_configs_are_rejected_without_echoing_secrets() {
        let err = |a: Auth| match Authorizer::new(&a, 1024) {
            Err(e) => e.to_string(),
            Ok(_) => String::from("accepted"),
        };
        let e = err(Auth::OauthJwtBearer {
            token_url: "https://x/token".into(),
            client_id: "cid".into(),
            subject: "s".into(),
            audience: "a".into(),
            private_key_pem: Secret::new("not a key SECRETSECRET"),
        });
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains("SECRETSECRET"), "{e}");
        let e = err(Auth::Bearer(Secret::new("bad\ntoken-SECRET")));
        assert!(e.contains("bearer token") && !e.contains("SECRET"), "{e}");
        let e = err(Auth::OauthClientCredentials {
            token_url: "not a url".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            scope: None,
        });
        assert!(e.contains("token URL"), "{e}");
        assert_eq!(
            err(Auth::Bearer(Secret::new(""))),
            "invalid SCIM client configuration: the bearer token is empty"
        );
    }

    #[test]
    fn basic_header_is_sensitive() {
        let Ok(Authorizer::Static(h)) = Authorizer::new(
            &Auth::Basic {
                username: "user".into(),
                password: Secret::new("pass"),
            },
            1024,
        ) else {
            panic!("expected a static header");
        };
        assert_eq!(h.to_str().ok(), Some("Basic dXNlcjpwYXNz"));
        assert!(h.is_sensitive());
        assert_eq!(format!("{h:?}"), "Sensitive");
    }
}
