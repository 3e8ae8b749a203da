//! HTTPS to a target whose certificate comes from a private CA: with the CA bundle configured
//! (`tls.ca_file`, [`ClientConfig::ca_file`]) the client trusts it on top of the system roots;
//! without it the request fails at the TLS handshake. The server is rustls on 127.0.0.1 with a
//! CA and a server certificate made in the test (rcgen).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use scimrelay_scim::{Auth, ClientConfig, ScimClient, ScimError, ScimRequest};

/// The body of the one SCIM answer the server knows.
const USERS: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#;

/// A private CA (PEM) and a server certificate + key signed by it for localhost / 127.0.0.1.
fn pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "scimrelay test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).expect("signed").pem();
    (ca_pem, cert, key.serialize_pem())
}

/// An HTTPS server on 127.0.0.1 answering every request with a SCIM list (HTTP/1.1, one
/// request per connection). Returns its `https://localhost:PORT` base.
async fn serve(cert_pem: &str, key_pem: &str) -> String {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (the client not trusting us) just ends this connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{USERS}",
                    USERS.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://localhost:{port}")
}

fn client(base: &str, ca_file: Option<std::path::PathBuf>) -> Result<ScimClient, ScimError> {
    ScimClient::new(ClientConfig {
        ca_file,
        timeout_secs: 5,
        ..ClientConfig::new(format!("{base}/scim/v2"), Auth::None)
    })
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_configured() {
    let (ca, cert, key) = pki();
    let base = serve(&cert, &key).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write CA");

    // With the CA: the GET succeeds and the body is the server's.
    let trusting = client(&base, Some(ca_file)).expect("config");
    let r = trusting
        .execute(&ScimRequest::get("/Users"))
        .await
        .expect("the private CA is trusted");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.as_ref().and_then(|b| b["totalResults"].as_u64()),
        Some(0)
    );

    // Without it: the system roots do not know the CA, so the handshake fails, and the error
    // says it is about the certificate.
    let system_only = client(&base, None).expect("config");
    let e = system_only
        .execute(&ScimRequest::get("/Users"))
        .await
        .expect_err("an unknown CA is refused");
    assert!(matches!(e, ScimError::Connect(_)), "{e:?}");
    let text = e.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "a TLS error: {text}"
    );
}

#[test]
fn an_unusable_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let e = client("https://localhost:1", Some(missing.clone())).expect_err("unreadable");
    assert!(matches!(e, ScimError::Config(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("tls.ca_file {}", missing.display())),
        "{e}"
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let e = client("https://localhost:1", Some(not_pem)).expect_err("not PEM");
    assert!(
        matches!(&e, ScimError::Config(m) if m.contains("no PEM certificate")),
        "{e:?}"
    );
}
