//! A test CA and the certificates node traffic needs, made with rcgen into a temp dir: a server
//! certificate for `localhost` and `127.0.0.1`, and a client certificate (for mutual TLS). Each
//! call makes a new CA, so a second [`Pki`] is "the wrong CA" for the first one's certificates.
//! Shared by the gateway and admin test targets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`, and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate (`CN=gw-test`, client auth), and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();

        let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) =
            leaf(Vec::new(), "gw-test", ExtendedKeyUsagePurpose::ClientAuth);
        let d = dir.path();
        Self {
            ca: write(d, "ca.crt", &ca.pem()),
            server_cert: write(d, "server.crt", &server_pem),
            server_key: write(d, "server.key", &server_key),
            client_cert: write(d, "client.crt", &client_pem),
            client_key: write(d, "client.key", &client_key),
            dir,
        }
    }

    /// The CA's PEM, for a reqwest client that trusts only it.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).unwrap()
    }
}
