//! Test certificates made in the test with rcgen: a CA, a coordinator
//! certificate it signed (for 127.0.0.1 and localhost), and an unrelated
//! CA that signed nothing here, as PEM files in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files of a test PKI.
pub struct TestCerts {
    /// The CA that signed the coordinator's certificate.
    pub ca: PathBuf,
    /// The coordinator's certificate (SANs 127.0.0.1 and localhost).
    pub cert: PathBuf,
    /// The coordinator's private key.
    pub key: PathBuf,
    /// A CA that signed nothing the coordinator has.
    pub other_ca: PathBuf,
}

impl TestCerts {
    /// Makes a PKI and writes its PEM files into `dir`.
    pub fn new(dir: &Path) -> Self {
        let ca = certificate_authority("fold test CA");
        let other = certificate_authority("some other CA");
        let key = KeyPair::generate().expect("key pair");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "fold coordinator");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("can write a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("coordinator.pem", cert.pem()),
            key: write("coordinator.key", key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}
