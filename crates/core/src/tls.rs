//! TLS settings of the servers (ingest HTTP and gRPC, status gRPC), with rustls.
//!
//! - `SCIMRELAY_TLS_CERT_FILE` + `SCIMRELAY_TLS_KEY_FILE`: PEM certificate chain and private
//!   key. Both or neither; with neither the service speaks plain HTTP/gRPC (fine behind a mesh
//!   or on loopback).
//! - `SCIMRELAY_TLS_CLIENT_CA_FILE`: PEM CA bundle; when set, every client must present a
//!   certificate signed by it (mutual TLS). Clients without one, or with one from another CA,
//!   fail the handshake.
//!
//! The files are read and parsed at start, so a missing or malformed file stops the service
//! naming the variable. Health endpoints are served on their own plain listener, so
//! Kubernetes probes need no client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// PEM certificate chain of the server.
pub const CERT_ENV: &str = "SCIMRELAY_TLS_CERT_FILE";
/// PEM private key of the server.
pub const KEY_ENV: &str = "SCIMRELAY_TLS_KEY_FILE";
/// PEM CA bundle clients' certificates must chain to (enables mutual TLS).
pub const CLIENT_CA_ENV: &str = "SCIMRELAY_TLS_CLIENT_CA_FILE";

/// A server's TLS material, read and checked at start.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM. Not printed by `Debug`.
    pub key_pem: Vec<u8>,
    /// The client CA bundle, PEM, when clients must present certificates.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn read_pem(var: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path))
        .map_err(|e| ConfigError::invalid(var, format!("cannot read {path}: {e}")))
}

/// Parses a PEM bundle of certificates; errors name `var`.
pub fn certs(var: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::invalid(var, format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(var, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    // The parser's message is about PEM structure, never the key's bytes.
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| ConfigError::invalid(KEY_ENV, format!("not a PEM private key: {e}")))
}

impl ServerTls {
    /// From the environment; `None` when neither certificate nor key is configured.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let (cert, key_file, ca) = (get(CERT_ENV), get(KEY_ENV), get(CLIENT_CA_ENV));
        let tls = match (cert, key_file) {
            (None, None) => {
                if ca.is_some() {
                    return Err(ConfigError::invalid(
                        CLIENT_CA_ENV,
                        format!("mutual TLS needs TLS: set {CERT_ENV} and {KEY_ENV} too"),
                    ));
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    KEY_ENV,
                    format!("must be set with {CERT_ENV}"),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    CERT_ENV,
                    format!("must be set with {KEY_ENV}"),
                ));
            }
            (Some(c), Some(k)) => ServerTls {
                cert_pem: read_pem(CERT_ENV, &c)?,
                key_pem: read_pem(KEY_ENV, &k)?,
                client_ca_pem: ca.map(|p| read_pem(CLIENT_CA_ENV, &p)).transpose()?,
            },
        };
        // Parse everything now, so a bad file stops the service at start.
        tls.rustls_config(&[])?;
        Ok(Some(tls))
    }

    /// A rustls server configuration (with `alpn` protocols, e.g. `h2` and `http/1.1`).
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid(CERT_ENV, e.to_string()))?;
        let builder = match &self.client_ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(CLIENT_CA_ENV, pem)? {
                    roots
                        .add(c)
                        .map_err(|e| ConfigError::invalid(CLIENT_CA_ENV, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ConfigError::invalid(CLIENT_CA_ENV, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs(CERT_ENV, &self.cert_pem)?, key(&self.key_pem)?)
            .map_err(|e| {
                ConfigError::invalid(CERT_ENV, format!("certificate and key do not fit: {e}"))
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
