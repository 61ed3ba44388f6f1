//! Downstream TLS: certificates chosen by SNI, replaceable without a restart.
//!
//! The HTTPS listener is built once with a [`SniResolver`]; every config (re)load that compiles
//! a new [`CertSet`] swaps it into the resolver, so new handshakes use the new certificates while
//! established connections keep theirs. Certificate files are re-read on every reload and the
//! gateway also reloads when one of them changes on disk.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::{self as pem, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::model::Certificate;
use crate::config::ConfigError;

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
    /// Files the set was loaded from, for change detection.
    pub files: Vec<String>,
}

impl CertSet {
    pub fn load(certs: &[Certificate]) -> Result<Self, ConfigError> {
        let mut set = CertSet::default();
        let mut defaults = 0;
        for (i, c) in certs.iter().enumerate() {
            let path = format!("gateway.tls.certificates[{i}]");
            let (key, sans) =
                load_pair(c).map_err(|(field, m)| ConfigError::at(format!("{path}.{field}"), m))?;
            set.files.push(c.cert.clone());
            set.files.push(c.key.clone());
            let names = if c.snis.is_empty() {
                sans
            } else {
                c.snis.clone()
            };
            if names.is_empty() && !c.default {
                return Err(ConfigError::at(
                    format!("{path}.snis"),
                    "the certificate names no DNS host; list `snis` or mark it `default: true`",
                ));
            }
            // A name claimed by two certificates is served by the first one listed.
            for name in names {
                let name = name.to_ascii_lowercase();
                if let Some(suffix) = name.strip_prefix('*') {
                    set.wildcard.push((suffix.to_string(), key.clone()));
                } else {
                    set.exact.entry(name).or_insert_with(|| key.clone());
                }
            }
            if c.default {
                defaults += 1;
                set.default = Some(key.clone());
            }
        }
        if defaults > 1 {
            return Err(ConfigError::at(
                "gateway.tls.certificates",
                "at most one certificate may be `default: true`",
            ));
        }
        // Longest wildcard suffix first (a stable sort: equal suffixes keep the listed order).
        set.wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(set)
    }

    /// The certificate for an SNI name: exact, then wildcard, then the default.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            for (suffix, k) in &self.wildcard {
                // `*.example.com` covers exactly one label before `.example.com`.
                if let Some(label) = name.strip_suffix(suffix.as_str()) {
                    if !label.is_empty() && !label.contains('.') {
                        return Some(k.clone());
                    }
                }
            }
        }
        self.default.clone()
    }
}

/// A loaded certificate with the DNS names it carries.
type Loaded = (Arc<CertifiedKey>, Vec<String>);

/// On error: the field at fault (`cert` or `key`) and the message.
fn load_pair(c: &Certificate) -> Result<Loaded, (&'static str, String)> {
    let cert_pem =
        std::fs::read(&c.cert).map_err(|e| ("cert", format!("cannot read `{}`: {e}", c.cert)))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("cert", format!("`{}` is not valid PEM: {e}", c.cert)))?;
    let leaf = chain
        .first()
        .ok_or_else(|| ("cert", format!("`{}` holds no certificate", c.cert)))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        (
            "cert",
            format!("`{}` holds an unparsable certificate: {e}", c.cert),
        )
    })?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                sans.push(d.to_string());
            }
        }
    }
    let key_pem =
        std::fs::read(&c.key).map_err(|e| ("key", format!("cannot read `{}`: {e}", c.key)))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => ("key", format!("`{}` holds no private key", c.key)),
        e => ("key", format!("`{}` is not valid PEM: {e}", c.key)),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key", format!("`{}`: unsupported key: {e}", c.key)))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        (
            "key",
            format!(
                "`{}` does not match the certificate `{}`: {e}",
                c.key, c.cert
            ),
        )
    })?;
    Ok((Arc::new(certified), sans))
}

/// The rustls resolver the HTTPS listener holds for its whole life.
#[derive(Debug, Default)]
pub struct SniResolver {
    current: ArcSwapOption<CertSet>,
}

impl SniResolver {
    pub fn set(&self, certs: Option<Arc<CertSet>>) {
        self.current.store(certs);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref()?.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate for `sans` and its key; returns the config entry.
    fn cert(
        dir: &std::path::Path,
        stem: &str,
        sans: &[&str],
        snis: &[&str],
        default: bool,
    ) -> Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let c =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .self_signed(&key)
                .unwrap();
        let cert = dir.join(format!("{stem}.crt"));
        let key_file = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, c.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Certificate {
            cert: cert.display().to_string(),
            key: key_file.display().to_string(),
            snis: snis.iter().map(|s| s.to_string()).collect(),
            default,
        }
    }

    /// Which of `certs` (by index) `set` serves for `sni`.
    fn served(set: &CertSet, certs: &[Certificate], sni: Option<&str>) -> Option<usize> {
        let k = set.pick(sni)?;
        let der = k.cert.first()?;
        certs.iter().position(|c| {
            let pem = std::fs::read(&c.cert).unwrap();
            let first = CertificateDer::pem_slice_iter(&pem).next();
            matches!(first, Some(Ok(d)) if d == *der)
        })
    }

    #[test]
    fn exact_names_beat_wildcards_which_beat_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let certs = vec![
            cert(d, "c0", &["x.test"], &["exact.test", "*.wild.test"], false),
            cert(
                d,
                "c1",
                &["x.test"],
                &["EXACT.test", "*.wild.test", "*.deep.wild.test"],
                false,
            ),
            cert(d, "c2", &["san.test"], &[], true),
        ];
        let set = CertSet::load(&certs).unwrap();
        let pick = |sni| served(&set, &certs, sni);
        assert_eq!(
            pick(Some("Exact.Test")),
            Some(0),
            "case-insensitive; first listed wins"
        );
        assert_eq!(
            pick(Some("a.wild.test")),
            Some(0),
            "first listed wins for wildcards too"
        );
        assert_eq!(
            pick(Some("a.deep.wild.test")),
            Some(1),
            "longest wildcard suffix wins"
        );
        assert_eq!(
            pick(Some("a.b.wild.test")),
            Some(2),
            "a wildcard covers one label only"
        );
        assert_eq!(
            pick(Some("wild.test")),
            Some(2),
            "a wildcard does not cover its parent"
        );
        assert_eq!(
            pick(Some("x.test")),
            Some(2),
            "`snis` replaces the certificate's names"
        );
        assert_eq!(
            pick(Some("san.test")),
            Some(2),
            "without `snis`, the DNS SANs are the names"
        );
        assert_eq!(pick(None), Some(2), "no SNI gets the default");
    }

    #[test]
    fn without_a_default_unknown_names_get_no_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certs = vec![cert(dir.path(), "c0", &["a.test"], &[], false)];
        let set = CertSet::load(&certs).unwrap();
        assert!(set.pick(Some("a.test")).is_some());
        assert!(set.pick(Some("b.test")).is_none());
        assert!(set.pick(None).is_none());
    }

    #[test]
    fn bad_certificate_entries_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = cert(d, "a", &["a.test"], &[], true);
        let b = cert(d, "b", &["b.test"], &[], true);
        let path = |certs: &[Certificate]| CertSet::load(certs).unwrap_err().path;

        assert_eq!(path(&[a.clone(), b.clone()]), "gateway.tls.certificates");
        let missing_key = Certificate {
            key: d.join("nope.key").display().to_string(),
            ..a.clone()
        };
        assert_eq!(path(&[missing_key]), "gateway.tls.certificates[0].key");
        let mismatched = Certificate {
            key: b.key.clone(),
            ..a.clone()
        };
        assert_eq!(path(&[mismatched]), "gateway.tls.certificates[0].key");
        let no_names = cert(d, "ip", &["127.0.0.1"], &[], false);
        assert_eq!(path(&[no_names]), "gateway.tls.certificates[0].snis");
        let not_pem = Certificate {
            cert: a.key.clone(),
            ..a.clone()
        };
        assert_eq!(path(&[not_pem]), "gateway.tls.certificates[0].cert");
    }
}
