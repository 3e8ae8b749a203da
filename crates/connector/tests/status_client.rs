//! The connector's status clients (the state of record and the deprovisioning guard) against a gRPC
//! server on 127.0.0.1 that records each call's `authorization` metadata and answers
//! UNIMPLEMENTED: both clients send the API key on every call; over `https://` the server's
//! private CA is trusted only when configured, and a client certificate is presented for mutual
//! TLS.

use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use scimrelay_connector::status::{
    Admission, GuardClient, StateOfRecord, StatusTls, status_client, status_endpoint,
};
use scimrelay_proto::v1::{SubjectKey, SubjectKind};
use scimrelay_scim::Secret;

/// The `authorization` value of each call the server saw ("" when absent).
type Seen = Arc<Mutex<Vec<String>>>;

/// Starts the recording server; returns its `localhost:port` and what it saw.
async fn server(tls: Option<ServerTlsConfig>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).expect("server TLS");
    }
    let router = builder
        .layer(InterceptorLayer::new(move |req: tonic::Request<()>| {
            let auth = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            record.lock().expect("lock").push(auth);
            Ok(req)
        }))
        .add_routes(Routes::default());
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    (format!("localhost:{}", addr.port()), seen)
}

fn seen(s: &Seen) -> Vec<String> {
    s.lock().expect("lock").clone()
}

/// Makes one state-of-record lookup and one guard check through a client of `url`.
async fn both_calls(url: &str, key: Option<&Secret>, tls: &StatusTls) -> Admission {
    let client = status_client(url, key, tls).expect("client");
    let sor = StateOfRecord::start(Some(client.clone()));
    let lookup = sor
        .get(SubjectKey::new("t1", "acme", SubjectKind::User, "u1"))
        .await;
    assert!(
        lookup.is_err(),
        "an unanswered lookup is an error (the message waits), never \"unknown\": {lookup:?}"
    );
    GuardClient::new(Some(client))
        .admit("t1", "acme", "u1", "e1")
        .await
}

/// A private CA (PEM), a server certificate for localhost and a client certificate, each with
/// its key (PEM).
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "scimrelay test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &issuer).expect("signed").pem();
        (cert, key.serialize_pem())
    };
    Pki {
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("connector", ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca_pem,
    }
}

#[tokio::test]
async fn both_clients_send_the_api_key_on_every_call() {
    let (addr, calls) = server(None).await;
    let key = Secret::new("srk_connector-key-123");
    let admission = both_calls(&format!("http://{addr}"), Some(&key), &StatusTls::default()).await;
    assert!(
        matches!(&admission, Admission::Unavailable(m) if m.contains("refused")),
        "{admission:?}"
    );
    assert_eq!(
        seen(&calls),
        vec!["Bearer srk_connector-key-123"; 2],
        "GetRecords and AdmitDeprovision"
    );

    // Without a key nothing is added.
    let (addr, calls) = server(None).await;
    both_calls(&format!("http://{addr}"), None, &StatusTls::default()).await;
    assert_eq!(seen(&calls), vec![""; 2]);

    // Nothing of the key shows in Debug.
    let client = status_client(&format!("http://{addr}"), Some(&key), &StatusTls::default())
        .expect("client");
    assert!(!format!("{client:?}").contains("connector-key-123"));
}

#[tokio::test]
async fn https_trusts_the_configured_ca_and_presents_the_client_certificate() {
    let pki = pki();
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let (addr, calls) = server(Some(server_tls)).await;
    let url = format!("https://{addr}");
    let key = Secret::new("k-tls");

    // The CA and a client certificate of it: the calls get through, with the key.
    let tls = StatusTls {
        ca_pem: Some(pki.ca.clone().into_bytes()),
        client_identity: Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        )),
    };
    both_calls(&url, Some(&key), &tls).await;
    assert_eq!(seen(&calls), vec!["Bearer k-tls"; 2]);

    // The CA but no client certificate: the server refuses the handshake.
    let no_cert = StatusTls {
        ca_pem: tls.ca_pem.clone(),
        client_identity: None,
    };
    let admission = both_calls(&url, Some(&key), &no_cert).await;
    assert!(
        matches!(admission, Admission::Unavailable(_)),
        "{admission:?}"
    );
    // System roots only: the server's certificate is not trusted.
    let admission = both_calls(&url, Some(&key), &StatusTls::default()).await;
    assert!(
        matches!(admission, Admission::Unavailable(_)),
        "{admission:?}"
    );
    assert_eq!(
        seen(&calls).len(),
        2,
        "no call got through without the CA and the certificate"
    );
}

#[test]
fn a_bad_url_or_client_certificate_names_the_variable() {
    let e = status_endpoint("not a url", &StatusTls::default())
        .expect_err("bad URL")
        .to_string();
    assert!(e.starts_with("SCIMRELAY_STATUS_URL:"), "{e}");
    let tls = StatusTls {
        ca_pem: None,
        client_identity: Some((b"nope".to_vec(), b"nope".to_vec())),
    };
    let e = status_endpoint("https://localhost:1", &tls)
        .expect_err("bad certificate")
        .to_string();
    assert!(e.starts_with("SCIMRELAY_STATUS_CLIENT_KEY_FILE:"), "{e}");
}
