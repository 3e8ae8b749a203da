//! The client side of the gRPC APIs, shared by scimrelayctl, the connectors and the test
//! harness: the API key on every call, and the TLS set-up of an `https://` endpoint.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::v1::status_service_client::StatusServiceClient;

/// Adds `authorization: Bearer <key>` to every call (nothing without a key). `Debug` prints
/// nothing of the key, and the metadata value is marked sensitive.
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl BearerAuth {
    /// The interceptor for `key`; an error (which never echoes the key) when it cannot be a
    /// header value.
    pub fn new(key: Option<&str>) -> Result<Self, &'static str> {
        let Some(key) = key else {
            return Ok(BearerAuth(None));
        };
        let mut v = MetadataValue::try_from(format!("Bearer {key}"))
            .map_err(|_| "the key must be printable ASCII")?;
        v.set_sensitive(true);
        Ok(BearerAuth(Some(v)))
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BearerAuth")
            .field(&self.0.as_ref().map(|_| "***"))
            .finish()
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A status client sending the API key on every call.
pub type StatusClient = StatusServiceClient<InterceptedService<Channel, BearerAuth>>;

/// What an `https://` endpoint trusts and presents.
#[derive(Clone, Copy, Default)]
pub struct ClientTls<'a> {
    /// PEM CA bundle trusted besides the system roots.
    pub ca_pem: Option<&'a [u8]>,
    /// PEM client certificate and key, for mutual TLS.
    pub identity: Option<(&'a [u8], &'a [u8])>,
}

/// Why an endpoint could not be set up; callers name their own flag or variable.
#[derive(Debug)]
pub enum EndpointError {
    /// The URL does not parse.
    NotAUrl(String),
    /// TLS could not be set up (a bad CA bundle or client certificate, or no system roots).
    Tls(tonic::transport::Error),
}

/// The endpoint of `url`, not yet connected: TLS when it is `https://`, trusting the system
/// roots plus `tls.ca_pem` (the bundle alone on a host without system roots).
pub fn endpoint(
    url: &str,
    connect_timeout: std::time::Duration,
    tls: ClientTls<'_>,
) -> Result<Endpoint, EndpointError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| EndpointError::NotAUrl(e.to_string()))?
        .connect_timeout(connect_timeout);
    if !url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    if let Some(pem) = tls.ca_pem {
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    if let Some((cert, key)) = tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    match endpoint
        .clone()
        .tls_config(config.clone().with_native_roots())
    {
        Ok(e) => Ok(e),
        Err(_) if tls.ca_pem.is_some() => endpoint.tls_config(config).map_err(EndpointError::Tls),
        Err(e) => Err(EndpointError::Tls(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug() {
        let auth = BearerAuth::new(Some("srk_secret-value")).expect("valid");
        assert!(!format!("{auth:?}").contains("secret-value"));
        assert!(BearerAuth::new(Some("line\nbreak")).is_err());
    }
}
