//! The key set of `jwt-auth`: JWKS parsing, checking, and signature verification with ring.
//!
//! Why a module of its own: every decision about *which* key may verify *what* lives here — the
//! algorithm is pinned per key at configuration time, the key type must fit that algorithm, and
//! the key material is decoded and checked once, so a bad key is a [`SchemaError`] naming the
//! field (`keys.keys[1].x`) and never a per-request surprise.
//!
//! What it may not do: look at tokens beyond "verify these bytes against this signature", accept
//! private key material (only public keys belong in a gateway config, `oct` secrets excepted), or
//! offer any algorithm outside [`Alg`].

use std::collections::HashMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::{agreement, hmac, rand, signature};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::contract::SchemaError;

/// Key material in the configuration may come with or without `=` padding (RFC 7517 says without;
/// some tools add it). Tokens are decoded strictly elsewhere.
const CONFIG_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The signature algorithms `jwt-auth` accepts. Anything else (including `none`) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256, fixed-width `r‖s` signature.
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048–8192-bit modulus.
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte salt), 2048–8192-bit modulus.
    #[serde(rename = "PS256")]
    Ps256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// HMAC-SHA-256 with a shared secret of at least 32 bytes.
    #[serde(rename = "HS256")]
    Hs256,
    /// SM2 digital signature (GB/T 32918.2) over the recommended curve (GB/T 32918.5), which
    /// by definition hashes with SM3 over `Z_A ‖ message`; `Z_A` with the default user id of
    /// GM/T 0009 (`1234567812345678`). Fixed-width `r‖s` (64 bytes) as ES256. No JOSE name
    /// is registered with IANA for it; `SM2` names the whole scheme as `EdDSA` does Ed25519.
    #[serde(rename = "SM2")]
    Sm2,
}

impl Alg {
    /// The algorithm a token header names, if it is one we accept. Case-sensitive (RFC 7515).
    pub fn from_header(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            "PS256" => Some(Self::Ps256),
            "EdDSA" => Some(Self::EdDsa),
            "HS256" => Some(Self::Hs256),
            "SM2" => Some(Self::Sm2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
            Self::Sm2 => "SM2",
        }
    }

    /// The JWK key type this algorithm needs.
    fn kty(self) -> Kty {
        match self {
            Self::Es256 | Self::Sm2 => Kty::Ec,
            Self::Rs256 | Self::Ps256 => Kty::Rsa,
            Self::EdDsa => Kty::Okp,
            Self::Hs256 => Kty::Oct,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kty {
    #[serde(rename = "EC")]
    Ec,
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "OKP")]
    Okp,
    #[serde(rename = "oct")]
    Oct,
}

impl Kty {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ec => "EC",
            Self::Rsa => "RSA",
            Self::Okp => "OKP",
            Self::Oct => "oct",
        }
    }

    /// The key-material members that belong to this key type.
    fn members(self) -> &'static [&'static str] {
        match self {
            Self::Ec => &["crv", "x", "y"],
            Self::Rsa => &["n", "e"],
            Self::Okp => &["crv", "x"],
            Self::Oct => &["k"],
        }
    }
}

/// The `keys` attribute: a JWKS document, `{"keys": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    pub keys: Vec<JwkConfig>,
}

/// One JWK as written in the configuration. Standard members that carry no key material for us
/// (`use`, `key_ops`, `x5*`) are accepted so a JWKS can be pasted as published; private-key
/// members are named so they can be refused with a clear message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwkConfig {
    kid: String,
    alg: Alg,
    kty: Kty,
    #[serde(rename = "use", default)]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    k: Option<String>,
    // Private-key members: refused if present.
    #[serde(default)]
    d: Option<IgnoredAny>,
    #[serde(default)]
    p: Option<IgnoredAny>,
    #[serde(default)]
    q: Option<IgnoredAny>,
    #[serde(default)]
    dp: Option<IgnoredAny>,
    #[serde(default)]
    dq: Option<IgnoredAny>,
    #[serde(default)]
    qi: Option<IgnoredAny>,
    #[serde(default)]
    oth: Option<IgnoredAny>,
    // Certificate members: accepted and ignored (the key material above is what is used).
    #[serde(rename = "x5c", default)]
    _x5c: Option<IgnoredAny>,
    #[serde(rename = "x5t", default)]
    _x5t: Option<IgnoredAny>,
    #[serde(rename = "x5t#S256", default)]
    _x5t_s256: Option<IgnoredAny>,
    #[serde(rename = "x5u", default)]
    _x5u: Option<IgnoredAny>,
}

/// A checked public key (or HMAC secret) with its pinned algorithm.
pub struct Key {
    pub alg: Alg,
    verifier: Verifier,
}

enum Verifier {
    /// Uncompressed SEC1 point `0x04‖x‖y`, checked to be on P-256.
    Es256(Vec<u8>),
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        params: &'static signature::RsaParameters,
    },
    Ed25519([u8; 32]),
    Hs256(hmac::Key),
    /// The public key with its `Z_A` (user id hash) computed once.
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

/// The SM2 user id (distinguishing identifier) when none is agreed: GM/T 0009-2012 §10.
pub const SM2_DEFAULT_ID: &str = "1234567812345678";

impl std::fmt::Debug for Key {
    /// Never prints key material (an HMAC secret must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("alg", &self.alg.as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
thread_local! {
    /// Signature verifications performed on this thread (tests count cache hits with it).
    pub static VERIFICATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Key {
    /// Whether `signature` is a valid signature of `message` under this key and its pinned
    /// algorithm. HMAC tags are compared in constant time (`ring::hmac::verify`).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        #[cfg(test)]
        VERIFICATIONS.with(|c| c.set(c.get() + 1));
        match &self.verifier {
            Verifier::Es256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Verifier::Rsa { n, e, params } => signature::RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok(),
            Verifier::Ed25519(point) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Verifier::Hs256(key) => hmac::verify(key, message, sig).is_ok(),
            Verifier::Sm2(key) => {
                use sm2::dsa::signature::Verifier as _;
                sm2::dsa::Signature::from_slice(sig)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}

/// Checks every key of the set and indexes it by `kid`. `path` is where the set sits in the plugin
/// config (`keys`), so errors read `keys.keys[1].x`.
pub fn parse_jwks(jwks: JwksConfig, path: &str) -> Result<HashMap<String, Key>, SchemaError> {
    if jwks.keys.is_empty() {
        return Err(SchemaError::new(
            format!("{path}.keys"),
            "at least one key is required",
        ));
    }
    let mut out = HashMap::with_capacity(jwks.keys.len());
    for (i, jwk) in jwks.keys.into_iter().enumerate() {
        let at = format!("{path}.keys[{i}]");
        if jwk.kid.is_empty() {
            return Err(SchemaError::new(format!("{at}.kid"), "must not be empty"));
        }
        if out.contains_key(&jwk.kid) {
            return Err(SchemaError::new(
                format!("{at}.kid"),
                format!(
                    "duplicate kid `{}`: every key in the set needs its own kid",
                    jwk.kid
                ),
            ));
        }
        let kid = jwk.kid.clone();
        let key = parse_jwk(jwk, &at)?;
        out.insert(kid, key);
    }
    Ok(out)
}

fn parse_jwk(jwk: JwkConfig, at: &str) -> Result<Key, SchemaError> {
    let err = |field: &str, msg: String| SchemaError::new(format!("{at}.{field}"), msg);

    let private = [
        ("d", jwk.d.is_some()),
        ("p", jwk.p.is_some()),
        ("q", jwk.q.is_some()),
        ("dp", jwk.dp.is_some()),
        ("dq", jwk.dq.is_some()),
        ("qi", jwk.qi.is_some()),
        ("oth", jwk.oth.is_some()),
    ];
    if let Some((field, _)) = private.iter().find(|(_, present)| *present) {
        return Err(err(
            field,
            "private key material must not be configured; give the public key only".into(),
        ));
    }
    if let Some(u) = &jwk.use_ {
        if u != "sig" {
            return Err(err(
                "use",
                format!("must be `sig` for a verification key, not `{u}`"),
            ));
        }
    }
    if let Some(ops) = &jwk.key_ops {
        if !ops.iter().any(|op| op == "verify") {
            return Err(err("key_ops", "must include `verify`".into()));
        }
    }
    let want = jwk.alg.kty();
    if jwk.kty != want {
        return Err(err(
            "kty",
            format!(
                "alg {} needs kty {}, not {}",
                jwk.alg.as_str(),
                want.as_str(),
                jwk.kty.as_str()
            ),
        ));
    }
    let present = [
        ("crv", jwk.crv.is_some()),
        ("x", jwk.x.is_some()),
        ("y", jwk.y.is_some()),
        ("n", jwk.n.is_some()),
        ("e", jwk.e.is_some()),
        ("k", jwk.k.is_some()),
    ];
    for (field, is_present) in present {
        if is_present && !jwk.kty.members().contains(&field) {
            return Err(err(
                field,
                format!("`{field}` is not a member of a {} key", jwk.kty.as_str()),
            ));
        }
    }

    let verifier = match jwk.alg {
        Alg::Es256 => {
            let point = uncompressed_point(&jwk, "P-256", at)?;
            if !p256_point_is_valid(&point) {
                return Err(err("x", "(x, y) is not a point on the P-256 curve".into()));
            }
            Verifier::Es256(point)
        }
        Alg::Rs256 | Alg::Ps256 => {
            let n = decode_required(jwk.n.as_deref(), at, "n")?;
            let n = strip_leading_zeros(&n);
            let bits = bit_len(n);
            if !(2048..=8192).contains(&bits) {
                return Err(err(
                    "n",
                    format!("RSA modulus has {bits} bits; 2048 to 8192 are accepted"),
                ));
            }
            if n.last().is_some_and(|b| b & 1 == 0) {
                return Err(err("n", "RSA modulus must be odd".into()));
            }
            let e = decode_required(jwk.e.as_deref(), at, "e")?;
            let e = strip_leading_zeros(&e);
            let e_value = if e.len() <= 8 {
                e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            } else {
                u64::MAX
            };
            if !(3..(1 << 33)).contains(&e_value) || e_value & 1 == 0 {
                return Err(err(
                    "e",
                    "RSA exponent must be odd, at least 3 and below 2^33 (usually AQAB = 65537)"
                        .into(),
                ));
            }
            let params: &'static signature::RsaParameters = if jwk.alg == Alg::Rs256 {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            Verifier::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
                params,
            }
        }
        Alg::EdDsa => {
            require_crv(jwk.crv.as_deref(), "Ed25519", at)?;
            let x = decode_fixed(jwk.x.as_deref(), 32, at, "x", "Ed25519 public key")?;
            let mut point = [0u8; 32];
            point.copy_from_slice(&x);
            Verifier::Ed25519(point)
        }
        Alg::Hs256 => {
            let k = decode_required(jwk.k.as_deref(), at, "k")?;
            if k.len() < 32 {
                return Err(err(
                    "k",
                    format!(
                        "HS256 secret has {} bytes; at least 32 are required (RFC 7518 §3.2)",
                        k.len()
                    ),
                ));
            }
            Verifier::Hs256(hmac::Key::new(hmac::HMAC_SHA256, &k))
        }
        Alg::Sm2 => {
            let point = uncompressed_point(&jwk, "SM2", at)?;
            let key = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_ID, &point)
                .map_err(|_| err("x", "(x, y) is not a point on the SM2 curve".into()))?;
            Verifier::Sm2(Box::new(key))
        }
    };
    Ok(Key {
        alg: jwk.alg,
        verifier,
    })
}

/// The public point of an EC key on a 256-bit curve (`P-256`, `SM2`), as SEC1 uncompressed
/// bytes (`04 || x || y`), after checking `crv` and the coordinates' lengths. Whether the point
/// is on the curve is the caller's check.
fn uncompressed_point(jwk: &JwkConfig, curve: &str, at: &str) -> Result<Vec<u8>, SchemaError> {
    require_crv(jwk.crv.as_deref(), curve, at)?;
    let what = format!("{curve} coordinate");
    let x = decode_fixed(jwk.x.as_deref(), 32, at, "x", &what)?;
    let y = decode_fixed(jwk.y.as_deref(), 32, at, "y", &what)?;
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

fn require_crv(crv: Option<&str>, want: &str, at: &str) -> Result<(), SchemaError> {
    match crv {
        Some(c) if c == want => Ok(()),
        Some(c) => Err(SchemaError::new(
            format!("{at}.crv"),
            format!("must be `{want}` for this alg, not `{c}`"),
        )),
        None => Err(SchemaError::new(
            format!("{at}.crv"),
            format!("missing: this alg needs crv `{want}`"),
        )),
    }
}

fn decode_required(value: Option<&str>, at: &str, field: &str) -> Result<Vec<u8>, SchemaError> {
    let path = || format!("{at}.{field}");
    let value =
        value.ok_or_else(|| SchemaError::new(path(), "missing: required for this key type"))?;
    CONFIG_B64
        .decode(value)
        .map_err(|_| SchemaError::new(path(), "not valid base64url"))
}

fn decode_fixed(
    value: Option<&str>,
    len: usize,
    at: &str,
    field: &str,
    what: &str,
) -> Result<Vec<u8>, SchemaError> {
    let bytes = decode_required(value, at, field)?;
    if bytes.len() != len {
        return Err(SchemaError::new(
            format!("{at}.{field}"),
            format!("a {what} is {len} bytes, this is {}", bytes.len()),
        ));
    }
    Ok(bytes)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        Some(top) => be.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// ring checks the point on every verification but offers no separate "parse a P-256 public
/// key". An ephemeral ECDH agreement performs the same validation (on the curve, not the point at
/// infinity), so a bad key fails here, at configuration time, rather than as `bad_signature` on
/// every request.
fn p256_point_is_valid(point: &[u8]) -> bool {
    let rng = rand::SystemRandom::new();
    let Ok(ours) = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng) else {
        return false;
    };
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(ours, &peer, |_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<HashMap<String, Key>, SchemaError> {
        let cfg: JwksConfig = SchemaError::parse(&v)?;
        parse_jwks(cfg, "keys")
    }

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn a_valid_p256_key_is_accepted() {
        let keys = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": X, "y": Y, "use": "sig"}
        ]}))
        .expect("valid key");
        assert_eq!(keys["a"].alg, Alg::Es256);
    }

    /// The SM2 signature example of GB/T 32918.5-2017 (the recommended curve): private key
    /// `3945208F…4DF7C5B8`, user id `1234567812345678`, message `message digest`, and the
    /// published `(r, s)` for its fixed `k`; the public key as a JWK.
    const SM2_X: &str = "CfnfMR5UIaFQ3X0WHkvFxnIXn60YM_wHa7CP81bzUCA";
    const SM2_Y: &str = "zOpJDOJndaUtxupxjMGqYArtBfvzXghKZjL2By2prRM";
    const SM2_R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const SM2_S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn sm2_verifies_the_standards_example_signature_and_nothing_else() {
        let keys = parse(serde_json::json!({"keys": [
            {"kid": "g", "alg": "SM2", "kty": "EC", "crv": "SM2", "x": SM2_X, "y": SM2_Y}
        ]}))
        .expect("valid SM2 key");
        let key = &keys["g"];
        assert_eq!(key.alg, Alg::Sm2);
        let sig = [unhex(SM2_R), unhex(SM2_S)].concat();
        assert!(key.verify(b"message digest", &sig));
        assert!(!key.verify(b"message digesT", &sig));
        for i in [0, 31, 32, 63] {
            let mut bad = sig.clone();
            bad[i] ^= 1;
            assert!(!key.verify(b"message digest", &bad), "bit flipped at {i}");
        }
        assert!(!key.verify(b"message digest", &sig[..63]));
        // The same point under another user id would be another Z_A: the id is GM/T 0009's.
        assert_eq!(SM2_DEFAULT_ID, "1234567812345678");
    }

    #[test]
    fn an_sm2_key_off_the_curve_or_on_another_crv_is_refused() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "g", "alg": "SM2", "kty": "EC", "crv": "SM2", "x": SM2_X, "y": SM2_X}
        ]}))
        .expect_err("off-curve point");
        assert_eq!(e.path, "keys.keys[0].x");
        let e = parse(serde_json::json!({"keys": [
            {"kid": "g", "alg": "SM2", "kty": "EC", "crv": "P-256", "x": SM2_X, "y": SM2_Y}
        ]}))
        .expect_err("wrong crv");
        assert_eq!(e.path, "keys.keys[0].crv");
    }

    #[test]
    fn a_point_off_the_curve_is_refused_with_its_path() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": X, "y": X}
        ]}))
        .expect_err("off-curve point");
        assert_eq!(e.path, "keys.keys[0].x");
    }

    #[test]
    fn key_type_must_fit_the_pinned_alg() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "HS256", "kty": "RSA", "n": "AQAB", "e": "AQAB"}
        ]}))
        .expect_err("mismatch");
        assert_eq!(e.path, "keys.keys[0].kty");
    }

    #[test]
    fn private_key_material_is_refused() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": X, "y": Y, "d": "AAAA"}
        ]}))
        .expect_err("private key");
        assert_eq!(e.path, "keys.keys[0].d");
    }

    #[test]
    fn short_rsa_moduli_and_hmac_secrets_are_refused() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "RS256", "kty": "RSA", "n": CONFIG_B64.encode([0xffu8; 128]), "e": "AQAB"}
        ]}))
        .expect_err("1024-bit");
        assert_eq!(e.path, "keys.keys[0].n");
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "HS256", "kty": "oct", "k": CONFIG_B64.encode([7u8; 16])}
        ]}))
        .expect_err("short secret");
        assert_eq!(e.path, "keys.keys[0].k");
    }

    #[test]
    fn unknown_algorithms_are_refused_by_name() {
        let e = parse(serde_json::json!({"keys": [
            {"kid": "a", "alg": "none", "kty": "oct", "k": CONFIG_B64.encode([7u8; 32])}
        ]}))
        .expect_err("alg none");
        assert_eq!(e.path, "keys[0].alg");
    }
}
