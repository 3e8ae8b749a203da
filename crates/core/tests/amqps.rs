//! `amqps://` against the local RabbitMQ through a TLS-terminating proxy on 127.0.0.1 (rustls,
//! with a CA and a certificate for localhost made in the test), so the broker itself needs no
//! TLS: with the CA bundle the connection opens and a channel works; without it the handshake
//! fails on the unknown issuer, and the error carries no password. Needs RabbitMQ on
//! 127.0.0.1:5672 with the default guest user (`make rabbitmq`).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use scimrelay_core::amqp;

/// The broker the proxy forwards to.
const BROKER: &str = "127.0.0.1:5672";

/// A CA (PEM) and a certificate + key for localhost signed by it.
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
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).expect("signed").pem();
    (ca_pem, cert, key.serialize_pem())
}

/// A TLS proxy in front of the broker; returns its port.
async fn tls_proxy(cert: &str, key: &str) -> u16 {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect(BROKER).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn amqps_trusts_the_configured_ca_and_keeps_the_password_out_of_errors() {
    tokio::net::TcpStream::connect(BROKER)
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable at {BROKER} ({e}); run `make rabbitmq`")
        });
    let (ca, cert, key) = pki();
    let port = tls_proxy(&cert, &key).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write CA");
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");

    let conn = amqp::connect_with_ca(&url, "amqps-test", ca_file.to_str())
        .await
        .expect("amqps with the CA bundle");
    let ch = conn.create_channel().await.expect("a channel over TLS");
    assert!(ch.status().connected());
    amqp::close_channel(&ch, "done").await;
    amqp::close(&conn, "done").await;

    // System roots only: the broker's certificate is not trusted.
    let err = amqp::connect_with_ca(&url, "amqps-test", None)
        .await
        .expect_err("an unknown issuer")
        .to_string();
    assert!(err.contains("amqps://guest:***@localhost"), "{err}");
    assert!(!err.contains("guest:guest"), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}
