//! A throwaway PKI for TLS tests (rcgen): a CA, a server certificate for localhost and
//! 127.0.0.1, a client certificate of the CA, and a stranger whose certificate is its own
//! issuer (a CA the servers do not know).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl Pem {
    /// Certificate then key, the form reqwest's `Identity::from_pem` takes.
    pub fn bundle(&self) -> Vec<u8> {
        format!("{}\n{}", self.cert, self.key).into_bytes()
    }
}

/// A CA: its certificate and what signs with it.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Ca {
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

    /// A certificate for `names` signed by this CA.
    pub fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
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
        let cert = params.signed_by(&key, &self.issuer).expect("signed").pem();
        Pem {
            cert,
            key: key.serialize_pem(),
        }
    }
}

/// The PKI of one test.
pub struct Pki {
    /// The CA servers and clients trust.
    pub ca: Ca,
    /// Server certificate for localhost / 127.0.0.1.
    pub server: Pem,
    /// A client certificate of the CA.
    pub client: Pem,
    /// A client certificate from another CA.
    pub stranger: Pem,
}

impl Pki {
    /// A fresh PKI.
    pub fn new() -> Pki {
        let ca = Ca::new("scimrelay test CA");
        let server = ca.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = ca.leaf(&["scimrelay-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger =
            Ca::new("some other CA").leaf(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca,
            server,
            client,
            stranger,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
