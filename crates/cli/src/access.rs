//! `access`: how scimrelayctl reaches ingest (HTTP) and the status service (gRPC) — the API key
//! and the TLS options every subcommand shares — and the one wording of "the server refused
//! the key" for both.
//!
//! The key goes out as `Authorization: Bearer <key>` (an HTTP default header marked sensitive;
//! gRPC metadata added by [`BearerAuth`] on every call). It is never printed: its type's `Debug`
//! is redacted, a bad key is reported without its value, and no error message is built from it.
//! `https://` URLs trust the system roots plus `--ca-file`, and present `--client-cert` /
//! `--client-key` when the server asks for a client certificate (mutual TLS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use scimrelay_proto::client::{self, ClientTls, EndpointError};
pub use scimrelay_proto::client::{BearerAuth, StatusClient};
use scimrelay_proto::v1::status_service_client::StatusServiceClient;

/// How long connecting to the status service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured before a rate-limited batch is retried.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// An API key. `Debug` prints nothing of it; [`ApiKey::expose`] is the one way to read it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key, for the one place that sends it.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// clap's parser for `--api-key`: never fails, because clap would echo a refused value.
fn parse_key(value: &str) -> Result<ApiKey, std::convert::Infallible> {
    Ok(ApiKey(value.trim().to_owned()))
}

/// The global options for reaching the services (every one also read from the environment).
#[derive(Args, Debug)]
pub struct AccessArgs {
    /// API key sent as `Authorization: Bearer` to ingest and status. Prefer the environment
    /// variable or --api-key-file: a command line is visible to other local users.
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = parse_key
    )]
    api_key: Option<ApiKey>,
    /// A file holding the API key (surrounding whitespace is ignored).
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_API_KEY_FILE",
        value_name = "PATH"
    )]
    api_key_file: Option<PathBuf>,
    /// PEM CA bundle trusted for https:// ingest and status URLs, in addition to the system
    /// roots.
    #[arg(long, global = true, env = "SCIMRELAY_CA_FILE", value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs --client-key.
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_CLIENT_CERT_FILE",
        value_name = "PATH"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_CLIENT_KEY_FILE",
        value_name = "PATH"
    )]
    client_key: Option<PathBuf>,
}

/// The key and TLS material, read and checked once per run. `Debug` says only what is
/// present: the client key is a secret, like the API key.
#[derive(Clone, Default)]
pub struct Access {
    api_key: Option<ApiKey>,
    ca_pem: Option<Vec<u8>>,
    /// Certificate chain and key, PEM.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("api_key", &self.api_key)
            .field("ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: cannot read: {e}", path.display()))
}

/// Whether a key can travel in a header: visible ASCII, no spaces.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic())
}

impl Access {
    /// Reads the files the options name; errors name the option, never the key.
    pub fn from_args(args: &AccessArgs) -> anyhow::Result<Self> {
        let api_key = match (&args.api_key, &args.api_key_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "--api-key and --api-key-file (SCIMRELAY_API_KEY / SCIMRELAY_API_KEY_FILE) are both set; use one"
            ),
            (Some(k), None) => {
                anyhow::ensure!(
                    valid_key(k.expose()),
                    "--api-key (SCIMRELAY_API_KEY): an API key is printable ASCII without spaces"
                );
                Some(k.clone())
            }
            (None, Some(path)) => {
                let text = String::from_utf8(read("--api-key-file", path)?).map_err(|_| {
                    anyhow::anyhow!("--api-key-file {}: not a text file", path.display())
                })?;
                let key = text.trim();
                anyhow::ensure!(
                    valid_key(key),
                    "--api-key-file {}: holds no API key (printable ASCII without spaces)",
                    path.display()
                );
                Some(ApiKey(key.to_owned()))
            }
            (None, None) => None,
        };
        let ca_pem = match &args.ca_file {
            Some(path) => {
                let pem = read("--ca-file", path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "--ca-file {}: not a PEM certificate bundle: {e}",
                        path.display()
                    )
                })?;
                anyhow::ensure!(
                    !certs.is_empty(),
                    "--ca-file {}: holds no PEM certificate",
                    path.display()
                );
                Some(pem)
            }
            None => None,
        };
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => {
                Some((read("--client-cert", cert)?, read("--client-key", key)?))
            }
            (Some(_), None) => anyhow::bail!(
                "--client-cert needs --client-key (SCIMRELAY_CLIENT_KEY_FILE) for mutual TLS"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--client-key needs --client-cert (SCIMRELAY_CLIENT_CERT_FILE) for mutual TLS"
            ),
            (None, None) => None,
        };
        Ok(Access {
            api_key,
            ca_pem,
            identity,
        })
    }

    /// An HTTP client for ingest: the key as a sensitive default header, the CA bundle on top
    /// of the system roots, the client certificate.
    pub fn http(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(key) = &self.api_key {
            let mut value =
                reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose()))
                    .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| anyhow::anyhow!("--ca-file: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = &self.identity {
            let identity = reqwest::Identity::from_pem(&[cert.as_slice(), b"\n", key].concat())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--client-cert / --client-key: not a PEM certificate and key: {e}"
                    )
                })?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", chain(&e)))
    }

    /// A connected client of the status service at `url`, sending the key on every call.
    pub async fn status(&self, url: &str) -> anyhow::Result<StatusClient> {
        let tls = ClientTls {
            ca_pem: self.ca_pem.as_deref(),
            identity: self
                .identity
                .as_ref()
                .map(|(c, k)| (c.as_slice(), k.as_slice())),
        };
        let endpoint = client::endpoint(url, CONNECT_TIMEOUT, tls).map_err(|e| match e {
            EndpointError::NotAUrl(e) => anyhow::anyhow!("--status {url:?}: not a URL: {e}"),
            EndpointError::Tls(e) => {
                let hint = if self.identity.is_some() {
                    "check --client-cert / --client-key"
                } else {
                    "without system CA certificates, pass --ca-file"
                };
                anyhow::anyhow!("--status {url}: cannot set up TLS: {} ({hint})", chain(&e))
            }
        })?;
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the status service at {url} (--status / SCIMRELAY_STATUS_URL): {}",
                chain(&e)
            )
        })?;
        let auth = BearerAuth::new(self.api_key.as_ref().map(|k| k.expose()))
            .map_err(|m| anyhow::anyhow!("the API key: {m}"))?;
        Ok(StatusServiceClient::with_interceptor(channel, auth))
    }
}

/// An error and its sources on one line, each distinct message once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// What to tell the user when a status call failed: a refused key in words, anything else as
/// the server put it.
pub fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let message = s.message();
    match s.code() {
        Code::Unauthenticated => anyhow::anyhow!(
            "{what}: the status service refused the API key: {message} (UNAUTHENTICATED); \
             pass a valid key with --api-key, --api-key-file or SCIMRELAY_API_KEY"
        ),
        Code::PermissionDenied => anyhow::anyhow!(
            "{what}: the API key is not allowed to do this: {message} (PERMISSION_DENIED); \
             reads need the `read` scope, dlq replay and held release/drop the `admin` scope"
        ),
        Code::ResourceExhausted => {
            let retry = s
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("; retry in {v} s"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "{what}: the API key is over its request rate: {message} (RESOURCE_EXHAUSTED){retry}"
            )
        }
        code => anyhow::anyhow!("{what}: {message} ({code:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_shows_nowhere_in_debug() {
        let access = Access {
            api_key: Some(ApiKey("srk_top-secret".into())),
            ..Access::default()
        };
        let text = format!("{access:?} {:?}", access.api_key);
        assert!(!text.contains("top-secret"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn the_client_key_shows_nowhere_in_debug() {
        let access = Access {
            identity: Some((
                b"-----BEGIN CERTIFICATE-----cert".to_vec(),
                b"-----BEGIN PRIVATE KEY-----top-secret-key".to_vec(),
            )),
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----ca".to_vec()),
            ..Access::default()
        };
        let text = format!("{access:?}");
        for secret in ["top-secret-key", "116, 111, 112"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("identity: true"), "{text}");
    }

    #[test]
    fn a_refused_key_is_named_for_each_code() {
        for (code, want) in [
            (tonic::Code::Unauthenticated, "refused the API key"),
            (tonic::Code::PermissionDenied, "not allowed"),
            (tonic::Code::ResourceExhausted, "over its request rate"),
        ] {
            let e = rpc_error("status targets", tonic::Status::new(code, "nope")).to_string();
            assert!(e.starts_with("status targets: ") && e.contains(want), "{e}");
        }
    }
}
