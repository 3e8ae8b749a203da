//! TLS and mutual TLS on both transports, with certificates made in the test: a client of the
//! trusted CA publishes over HTTPS and gRPC; a client with a certificate of another CA, or with
//! none, is refused at the handshake and publishes nothing.

mod support;

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use scimrelay_core::auth::Authenticator;
use scimrelay_core::tls::ServerTls;
use scimrelay_proto::v1::PublishRequest;
use scimrelay_proto::v1::ingest_service_client::IngestServiceClient;
use scimrelay_tests::TestVhost;

use support::{Running, assert_nothing_published, event, grpc_event, published};

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

/// A CA: its certificate and what signs with it.
struct Ca {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA cert").pem();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

fn leaf(names: &[&str], usage: ExtendedKeyUsagePurpose, ca: &Ca) -> Pem {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca.issuer).expect("signed").pem();
    Pem {
        cert,
        key: key.serialize_pem(),
    }
}

/// The test's PKI: a CA, a server certificate for localhost / 127.0.0.1, a client of the CA,
/// and a client whose certificate is self-signed (its own CA, unknown to the server).
struct Pki {
    ca: Ca,
    server: Pem,
    client: Pem,
    stranger: Pem,
}

fn pki() -> Pki {
    let ca = ca("scimrelay test CA");
    let server = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    );
    let client = leaf(&["hr-feed"], ExtendedKeyUsagePurpose::ClientAuth, &ca);
    let other = ca_self_signed_client();
    Pki {
        ca,
        server,
        client,
        stranger: other,
    }
}

/// A client certificate that is its own issuer: another CA as far as the server knows.
fn ca_self_signed_client() -> Pem {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["stranger".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "stranger");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).expect("self-signed").pem();
    Pem {
        cert,
        key: key.serialize_pem(),
    }
}

fn server_tls(pki: &Pki, mutual: bool) -> ServerTls {
    ServerTls {
        cert_pem: pki.server.cert.clone().into_bytes(),
        key_pem: pki.server.key.clone().into_bytes(),
        client_ca_pem: mutual.then(|| pki.ca.cert.clone().into_bytes()),
    }
}

/// An HTTPS client trusting only the test CA, presenting `identity` when given.
fn https(pki: &Pki, identity: Option<&Pem>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.cert.as_bytes()).expect("ca")])
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert, id.key);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

/// A gRPC client over TLS trusting only the test CA, presenting `identity` when given.
async fn grpc(
    pki: &Pki,
    r: &Running,
    identity: Option<&Pem>,
) -> Result<IngestServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca.cert))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let channel = Channel::from_shared(r.grpc.clone())
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(IngestServiceClient::new(channel))
}

/// Whether an error (its `Debug`, which includes the source chain) is the server's TLS alert:
/// `UnknownCA` for a certificate of another CA, `CertificateRequired` for none.
fn is_tls_alert(error: &str) -> bool {
    (error.contains("received fatal alert") || error.contains("AlertReceived"))
        && (error.contains("UnknownCA")
            || error.contains("CertificateRequired")
            || error.contains("HandshakeFailure"))
}

async fn start(vhost: &TestVhost, tls: ServerTls) -> Running {
    support::start(
        vhost.amqp_url(),
        1 << 20,
        Authenticator::disabled(),
        Some(tls),
    )
    .await
}

#[tokio::test]
async fn mutual_tls_client_of_the_ca_publishes_over_https_and_grpc() {
    let pki = pki();
    let vhost = TestVhost::create("tls-mutual-ok");
    let r = start(&vhost, server_tls(&pki, true)).await;
    let client = https(&pki, Some(&pki.client));
    // Health endpoints are served on the same TLS listener.
    support::wait_ready(&client, &r).await;
    let resp = client
        .post(format!("{}/v1/events", r.http))
        .json(&event("acme", "u1"))
        .send()
        .await
        .expect("https post");
    assert_eq!(resp.status().as_u16(), 202);

    let mut grpc = grpc(&pki, &r, Some(&pki.client))
        .await
        .expect("grpc TLS connect");
    let ok = grpc
        .publish(PublishRequest {
            events: vec![grpc_event("acme", "u2")],
            ..Default::default()
        })
        .await
        .expect("grpc publish")
        .into_inner();
    assert_eq!(ok.accepted.len(), 1);
    assert_eq!(published(&vhost.amqp_url()).await, 2);
    r.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_strangers_and_clients_without_a_certificate_at_the_handshake() {
    let pki = pki();
    let vhost = TestVhost::create("tls-mutual-refuse");
    let r = start(&vhost, server_tls(&pki, true)).await;
    // Readiness through a trusted client, so the refusals below are about the handshake only.
    support::wait_ready(&https(&pki, Some(&pki.client)), &r).await;

    for (who, identity) in [("stranger", Some(&pki.stranger)), ("no certificate", None)] {
        let err = https(&pki, identity)
            .post(format!("{}/v1/events", r.http))
            .json(&event("acme", "u1"))
            .send()
            .await
            .expect_err(who);
        assert!(
            is_tls_alert(&format!("{err:?}")),
            "{who}: refused by a TLS alert, not by a handler: {err:?}"
        );

        // With TLS 1.3 the client may finish its side of the handshake before the server
        // rejects its certificate, so the refusal shows either at connect or at the first call.
        let refusal = match grpc(&pki, &r, identity).await {
            Err(e) => format!("{e:?}"),
            Ok(mut c) => {
                let err = c
                    .publish(PublishRequest {
                        events: vec![grpc_event("acme", "u1")],
                        ..Default::default()
                    })
                    .await
                    .expect_err(who);
                format!("{err:?}")
            }
        };
        assert!(
            is_tls_alert(&refusal),
            "{who}: gRPC refused by a TLS alert: {refusal}"
        );
    }
    // Plain HTTP to the TLS port is not served either.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", r.http.replace("https://", "http://")))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain
            .as_ref()
            .map(|x| !x.status().is_success())
            .unwrap_or(true),
        "{plain:?}"
    );

    assert_nothing_published(&vhost.amqp_url()).await;
    r.stop().await;
}

#[tokio::test]
async fn server_tls_without_a_client_ca_serves_any_client_that_trusts_it() {
    let pki = pki();
    let vhost = TestVhost::create("tls-server-only");
    let r = start(&vhost, server_tls(&pki, false)).await;
    let client = https(&pki, None);
    support::wait_ready(&client, &r).await;
    let resp = client
        .post(format!("{}/v1/events", r.http))
        .json(&event("acme", "u1"))
        .send()
        .await
        .expect("https post");
    assert_eq!(resp.status().as_u16(), 202);
    let mut grpc = grpc(&pki, &r, None).await.expect("grpc TLS connect");
    grpc.publish(PublishRequest {
        events: vec![grpc_event("acme", "u2")],
        ..Default::default()
    })
    .await
    .expect("grpc publish");
    // A client that does not trust the server's CA is refused by its own side.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(ca("another CA").cert.as_bytes()).expect("ca"),
        ])
        .build()
        .expect("client");
    assert!(
        untrusting
            .get(format!("{}/healthz", r.http))
            .send()
            .await
            .is_err()
    );
    assert_eq!(published(&vhost.amqp_url()).await, 2);
    r.stop().await;
}
