//! Secrets at rest and the small cryptographic helpers of the control plane (ring only).
//!
//! The master key (32 bytes) comes from `FENFA_MASTER_KEY` (base64 or 64 hex digits) or, when
//! unset, from `<data-dir>/master.key`, generated on first start with mode 0600. It never
//! leaves this module: secrets are sealed with AES-256-GCM under it (random 96-bit nonce, the
//! secret's purpose and owner as associated data, so a ciphertext cannot be moved to another
//! record), and the admin audit chain uses a key derived from it.
//!
//! 国密: with `settings.algorithms.secrets: sm4-gcm`, new secrets are sealed with SM4-GCM
//! (GB/T 32907 in GCM as RFC 8998 uses it; the 128-bit key derived from the master key, the
//! same nonce length, tag and associated data), prefixed `sm4:` instead of `v1:`. Both open
//! whatever the setting: a secret sealed before a switch keeps working until `POST
//! /v1/secrets/re-encrypt` re-seals it with the current cipher.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use fenfa_config::model::ChainAlgorithm;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

/// File name of the generated master key inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";
const SEALED_PREFIX: &str = "v1:";
const SM4_PREFIX: &str = "sm4:";

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;

/// A cipher for secrets at rest (`settings.algorithms.secrets`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SecretCipher {
    /// AES-256-GCM (ring): the default.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// SM4-GCM (GB/T 32907, RFC 8998), for 商用密码 assessments.
    Sm4Gcm,
}

impl SecretCipher {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretCipher::Aes256Gcm => "aes-256-gcm",
            SecretCipher::Sm4Gcm => "sm4-gcm",
        }
    }

    /// The cipher a sealed value was sealed with, from its prefix.
    pub fn of(sealed: &str) -> Option<Self> {
        if sealed.starts_with(SEALED_PREFIX) {
            Some(SecretCipher::Aes256Gcm)
        } else if sealed.starts_with(SM4_PREFIX) {
            Some(SecretCipher::Sm4Gcm)
        } else {
            None
        }
    }
}

/// The key that seals every secret the store holds.
pub struct MasterKey {
    aead: LessSafeKey,
    /// SM4-GCM under a 128-bit key derived from the master key.
    sm4: Sm4Gcm,
    /// New secrets are sealed with SM4-GCM (else AES-256-GCM); follows the settings.
    use_sm4: AtomicBool,
    audit: hmac::Key,
    /// The same derived key for HMAC-SM3 (`settings.algorithms.audit_chain: hmac-sm3`).
    audit_sm3: ::hmac::Hmac<sm3::Sm3>,
    /// Pseudonyms of channel user ids (`crate::identity::users`).
    pseudonym: hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        let derive = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let audit_key = hmac::sign(&derive, b"fenfa-admin audit chain v1");
        let audit_sm3 = <::hmac::Hmac<sm3::Sm3> as ::hmac::Mac>::new_from_slice(audit_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        let sm4_key = hmac::sign(&derive, b"fenfa-admin sm4 secrets v1");
        let sm4 = <Sm4Gcm as aes_gcm::KeyInit>::new_from_slice(&sm4_key.as_ref()[..16])
            .unwrap_or_else(|_| unreachable!("SM4 takes a 16-byte key"));
        Self {
            aead: LessSafeKey::new(unbound),
            sm4,
            use_sm4: AtomicBool::new(false),
            audit: hmac::Key::new(hmac::HMAC_SHA256, audit_key.as_ref()),
            audit_sm3,
            pseudonym: hmac::Key::new(
                hmac::HMAC_SHA256,
                hmac::sign(&derive, b"fenfa-admin identity pseudonyms v1").as_ref(),
            ),
        }
    }

    /// Parses `FENFA_MASTER_KEY`: base64 (standard) or hex of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex_decode(text).ok_or("bad hex")?
        } else {
            STANDARD
                .decode(text)
                .map_err(|_| "FENFA_MASTER_KEY is neither 64 hex digits nor base64".to_string())?
        };
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "FENFA_MASTER_KEY decodes to {} bytes; exactly 32 are needed (`openssl rand -base64 32`)",
                bytes.len()
            )
        })?;
        Ok(Self::from_bytes(&arr))
    }

    /// The env key if given, else the data dir's key file, generated when missing.
    pub fn load(env: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return Self::parse(text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = random_array();
                write_private(&path, STANDARD.encode(bytes).as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                tracing::warn!(file = %path.display(), "generated a new master key; back it up: without it the stored secrets cannot be read");
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// What new secrets are sealed with (set from the settings at start and on each change).
    pub fn set_cipher(&self, cipher: SecretCipher) {
        self.use_sm4
            .store(cipher == SecretCipher::Sm4Gcm, Ordering::Relaxed);
    }

    pub fn cipher(&self) -> SecretCipher {
        if self.use_sm4.load(Ordering::Relaxed) {
            SecretCipher::Sm4Gcm
        } else {
            SecretCipher::Aes256Gcm
        }
    }

    /// Seals `plain` for `context` (e.g. `signing-key:sk_…`) with the current cipher: `v1:` +
    /// base64(nonce ‖ ciphertext ‖ tag) for AES-256-GCM, `sm4:` + the same for SM4-GCM.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        self.seal_with(self.cipher(), context, plain)
    }

    /// Seals with `cipher` whatever the setting.
    pub fn seal_with(&self, cipher: SecretCipher, context: &str, plain: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = random_array();
        if cipher == SecretCipher::Sm4Gcm {
            use aes_gcm::aead::Aead as _;
            let payload = aes_gcm::aead::Payload {
                msg: plain,
                aad: context.as_bytes(),
            };
            // Sealing only fails past GCM's length limit (~64 GiB).
            let ct = self
                .sm4
                .encrypt(aes_gcm::Nonce::from_slice(&nonce_bytes), payload)
                .unwrap_or_default();
            let mut out = nonce_bytes.to_vec();
            out.extend_from_slice(&ct);
            return format!("{SM4_PREFIX}{}", STANDARD.encode(out));
        }
        let mut buf = plain.to_vec();
        // Sealing only fails when the input exceeds AES-GCM's limit (~64 GiB).
        let _ = self.aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(context.as_bytes()),
            &mut buf,
        );
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens what [`MasterKey::seal`] produced for the same `context` (either cipher).
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, String> {
        if let Some(b64) = sealed.strip_prefix(SM4_PREFIX) {
            use aes_gcm::aead::Aead as _;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| "sealed secret is not base64")?;
            if raw.len() < NONCE_LEN + 16 {
                return Err("sealed secret is too short".into());
            }
            let (nonce, ct) = raw.split_at(NONCE_LEN);
            let payload = aes_gcm::aead::Payload {
                msg: ct,
                aad: context.as_bytes(),
            };
            return self
                .sm4
                .decrypt(aes_gcm::Nonce::from_slice(nonce), payload)
                .map_err(|_| {
                    "sealed secret does not open under this master key (wrong key, or moved)".into()
                });
        }
        let b64 = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or("not a sealed secret")?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| "sealed secret is not base64")?;
        if raw.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err("sealed secret is too short".into());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| {
                "sealed secret does not open under this master key (wrong key, or moved)"
            })?;
        Ok(plain.to_vec())
    }

    /// The key check value: HMAC-SHA256 of a fixed label under a key derived from the master
    /// key (it tells whether two keys are the same without revealing either).
    pub fn check_value(&self) -> String {
        format!(
            "kcv1:{}",
            &self.audit_mac(b"fenfa-admin master key check v1")[..32]
        )
    }

    /// HMAC-SHA256 under the audit chain key, hex.
    pub fn audit_mac(&self, data: &[u8]) -> String {
        hex(hmac::sign(&self.audit, data).as_ref())
    }

    /// A stable pseudonym of `data` (a channel user id): HMAC-SHA256 under a key of its own
    /// derived from the master key, hex.
    pub fn pseudonym(&self, data: &[u8]) -> String {
        hex(hmac::sign(&self.pseudonym, data).as_ref())
    }

    /// HMAC with `alg` under the audit chain key, hex.
    pub fn audit_mac_with(&self, alg: ChainAlgorithm, data: &[u8]) -> String {
        match alg {
            ChainAlgorithm::HmacSha256 => self.audit_mac(data),
            ChainAlgorithm::HmacSm3 => {
                use ::hmac::Mac as _;
                let mut m = self.audit_sm3.clone();
                m.update(data);
                hex(&m.finalize().into_bytes())
            }
        }
    }
}

/// Writes a file readable by its owner only (0600), atomically and durably: the gateway's
/// `write_atomically`, the one place that knows how.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fenfa_config::files::write_atomically(path, bytes)
}

pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG failing is not something a control plane can work around.
    SystemRandom::new()
        .fill(&mut out)
        .unwrap_or_else(|_| panic!("the system random number generator failed"));
    out
}

/// A fresh bearer secret: 32 random bytes, base64url.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_array::<32>())
}

/// A fresh resource id: `prefix_` + 16 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex(&random_array::<8>()))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares two byte strings without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_context() {
        let k = MasterKey::from_bytes(&[7u8; 32]);
        let s = k.seal("signing-key:a", b"secret");
        assert!(s.starts_with("v1:"));
        assert!(!s.contains("secret"));
        assert_eq!(k.open("signing-key:a", &s).unwrap(), b"secret");
        assert!(k.open("signing-key:b", &s).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]);
        assert!(other.open("signing-key:a", &s).is_err());
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex_decode(s).unwrap()
    }

    /// GB/T 32907-2016 Appendix A, example 1 (one block) and example 2 (the same block
    /// encrypted 1,000,000 times), through the same `sm4` crate the sealing uses.
    #[test]
    fn sm4_matches_the_standards_test_vectors() {
        use sm4::cipher::{BlockEncrypt, KeyInit};
        let key = unhex("0123456789abcdeffedcba9876543210");
        let cipher = sm4::Sm4::new_from_slice(&key).unwrap();
        let mut block = sm4::cipher::generic_array::GenericArray::clone_from_slice(&key);
        cipher.encrypt_block(&mut block);
        assert_eq!(hex(&block), "681edf34d206965e86b3e94f536e4246");
        for _ in 1..1_000_000 {
            cipher.encrypt_block(&mut block);
        }
        assert_eq!(hex(&block), "595298c7c6fd271f0402f804c33d3f66");
    }

    /// RFC 8998 Appendix A.1: SM4-GCM with its key, IV, associated data and plaintext.
    #[test]
    fn sm4_gcm_matches_rfc_8998() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let key = unhex("0123456789abcdeffedcba9876543210");
        let iv = unhex("00001234567800000000abcd");
        let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = unhex(concat!(
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd",
            "eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa"
        ));
        let gcm = Sm4Gcm::new_from_slice(&key).unwrap();
        let out = gcm
            .encrypt(
                aes_gcm::Nonce::from_slice(&iv),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap();
        let (ct, tag) = out.split_at(pt.len());
        assert_eq!(
            hex(ct),
            concat!(
                "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735",
                "d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"
            )
        );
        assert_eq!(hex(tag), "83de3541e4c2b58177e065a9bf7b62ec");
    }

    #[test]
    fn sm4_sealed_secrets_open_in_their_context_and_either_cipher_opens() {
        let k = MasterKey::from_bytes(&[7u8; 32]);
        let aes = k.seal("signing-key:a", b"secret");
        for c in [SecretCipher::Aes256Gcm, SecretCipher::Sm4Gcm] {
            let name = serde_json::to_value(c).unwrap();
            assert_eq!(name, c.as_str(), "the setting's name is the documented one");
        }
        k.set_cipher(SecretCipher::Sm4Gcm);
        let sm4 = k.seal("signing-key:a", b"secret");
        assert!(sm4.starts_with("sm4:"), "{sm4}");
        assert_eq!(SecretCipher::of(&sm4), Some(SecretCipher::Sm4Gcm));
        assert_eq!(k.open("signing-key:a", &sm4).unwrap(), b"secret");
        assert_eq!(k.open("signing-key:a", &aes).unwrap(), b"secret");
        assert!(k.open("signing-key:b", &sm4).is_err());
        assert!(MasterKey::from_bytes(&[8u8; 32])
            .open("signing-key:a", &sm4)
            .is_err());
        let mut flipped = STANDARD.decode(&sm4[4..]).unwrap();
        flipped[20] ^= 1;
        assert!(k
            .open(
                "signing-key:a",
                &format!("sm4:{}", STANDARD.encode(flipped))
            )
            .is_err());
    }

    #[test]
    fn master_key_parses_hex_and_base64_of_32_bytes_only() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([1u8; 16]))
            .unwrap_err()
            .contains("16 bytes"));
    }

    #[test]
    fn generated_key_file_is_reused_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load(None, dir.path()).unwrap();
        let sealed = a.seal("x", b"y");
        let b = MasterKey::load(None, dir.path()).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"y");
        let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
