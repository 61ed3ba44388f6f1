//! The platform's token signing keys: ES256 (P-256) made with ring, tokens encoded and checked
//! with `jsonwebtoken`; or, chosen at a rotation, SM2 (国密, GB/T 32918) with RustCrypto's `sm2`
//! — `alg: SM2`, the user id `1234567812345678`, the signature `r ‖ s`, exactly what `jwt-auth`
//! verifies (`docs/guomi.md`). `jsonwebtoken` has no SM2, so an SM2 token's compact form is put
//! together here (base64url of the header and claims JSON; the signature from `sm2`). The
//! private key is sealed with the master key either way.
//!
//! The newest `active` key without a `retire_at` signs. A rotation makes a new key and gives
//! the old one a `retire_at` at least one access-token lifetime away: until then both are in
//! the key set, so tokens signed before the rotation verify until they expire.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::crypto::{new_id, random_array, MasterKey};
use crate::model::{IdentityKey, KeyStatus};

/// The distinguishing identifier of SM2 signatures: GM/T 0009-2012's default, as `jwt-auth`.
const SM2_ID: &str = "1234567812345678";

/// What a platform key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    Es256,
    Sm2,
}

impl KeyAlg {
    /// `ES256` or `SM2` (as in JWKs and token headers).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::Es256),
            "SM2" => Some(Self::Sm2),
            _ => None,
        }
    }

    fn of(key: &IdentityKey) -> Self {
        match key.jwk.get("alg").and_then(Value::as_str) {
            Some("SM2") => Self::Sm2,
            _ => Self::Es256,
        }
    }
}

fn context(id: &str) -> String {
    format!("identity-key:{id}")
}

/// A new key's private part (PKCS#8 for ES256, the scalar for SM2) and public point.
struct Pair {
    private: Vec<u8>,
    x: Vec<u8>,
    y: Vec<u8>,
}

fn key_pair(alg: KeyAlg) -> Result<Pair, String> {
    match alg {
        KeyAlg::Es256 => {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| "cannot generate a P-256 key".to_string())?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|_| "cannot read the generated key".to_string())?;
            // SEC1 uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            Ok(Pair {
                private: pkcs8.as_ref().to_vec(),
                x: x.to_vec(),
                y: y.to_vec(),
            })
        }
        KeyAlg::Sm2 => {
            use sm2::elliptic_curve::sec1::ToEncodedPoint as _;
            // A random scalar; the rare one out of range (zero, or ≥ n) is drawn again.
            let (secret, key) = loop {
                let secret = random_array::<32>();
                if let Ok(k) = sm2::dsa::SigningKey::from_slice(SM2_ID, &secret) {
                    break (secret, k);
                }
            };
            let point = key.verifying_key().as_affine().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err("the SM2 public key is the identity point".into());
            };
            Ok(Pair {
                private: secret.to_vec(),
                x: x.to_vec(),
                y: y.to_vec(),
            })
        }
    }
}

/// A new key pair: the resource to store (private key sealed).
pub fn generate(master: &MasterKey, now: i64, alg: KeyAlg) -> Result<IdentityKey, String> {
    let Pair { private, x, y } = key_pair(alg)?;
    let id = new_id("ik");
    let kid = format!(
        "fenfa-{}-{}",
        crate::local_time::day(now),
        &id[id.len().saturating_sub(6)..]
    );
    let (crv, alg) = match alg {
        KeyAlg::Es256 => ("P-256", "ES256"),
        KeyAlg::Sm2 => ("SM2", "SM2"),
    };
    let jwk = json!({
        "kty": "EC", "crv": crv, "alg": alg, "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    });
    let Value::Object(jwk) = jwk else {
        unreachable!("a JSON object literal")
    };
    Ok(IdentityKey {
        sealed_private: master.seal(&context(&id), STANDARD.encode(&private).as_bytes()),
        id,
        kid,
        jwk,
        status: KeyStatus::Active,
        retire_at: None,
        created_at: now,
        updated_at: now,
    })
}

/// The key that signs now: the newest active key without a retirement date.
pub fn signer(keys: &[IdentityKey]) -> Option<&IdentityKey> {
    keys.iter()
        .filter(|k| k.status == KeyStatus::Active && k.retire_at.is_none())
        .max_by_key(|k| (k.created_at, k.id.as_str()))
}

/// The keys tokens may be checked with at `now` (active, not past their retirement).
pub fn published(keys: &[IdentityKey], now: i64) -> impl Iterator<Item = &IdentityKey> {
    keys.iter()
        .filter(move |k| k.status == KeyStatus::Active && k.retire_at.is_none_or(|t| t > now))
}

/// The JWKS document of [`published`] keys.
pub fn jwks(keys: &[IdentityKey], now: i64) -> Value {
    let keys: Vec<Value> = published(keys, now)
        .map(|k| Value::Object(k.jwk.clone()))
        .collect();
    json!({ "keys": keys })
}

/// Signs `claims` with `key`.
pub fn sign(
    master: &MasterKey,
    key: &IdentityKey,
    claims: &Map<String, Value>,
) -> Result<String, String> {
    let b64 = master.open(&context(&key.id), &key.sealed_private)?;
    let der = STANDARD
        .decode(&b64)
        .map_err(|e| format!("identity key {}: {e}", key.id))?;
    match KeyAlg::of(key) {
        KeyAlg::Es256 => {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(key.kid.clone());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der))
                .map_err(|e| format!("cannot sign a token: {e}"))
        }
        KeyAlg::Sm2 => {
            use sm2::dsa::signature::Signer as _;
            let sk = sm2::dsa::SigningKey::from_slice(SM2_ID, &der)
                .map_err(|e| format!("identity key {}: {e}", key.id))?;
            let header = json!({"alg": "SM2", "typ": "JWT", "kid": key.kid});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
            );
            let sig: sm2::dsa::Signature = sk.sign(input.as_bytes());
            Ok(format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(sig.to_bytes())
            ))
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Missing, malformed, unknown `kid`, bad signature, wrong issuer or audience.
    Invalid,
    Expired,
}

/// Checks a token signed by one of the [`published`] keys, for `issuer` and `audience`, and
/// returns its claims.
pub fn verify(
    keys: &[IdentityKey],
    now: i64,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<Map<String, Value>, Refused> {
    // The header names the key (jsonwebtoken's own header type knows no `SM2`).
    let head = token.split('.').next().ok_or(Refused::Invalid)?;
    let head: Value = URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refused::Invalid)?;
    let kid = head
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(Refused::Invalid)?;
    let key = published(keys, now)
        .find(|k| k.kid == kid)
        .ok_or(Refused::Invalid)?;
    let coord = |n: &str| key.jwk.get(n).and_then(Value::as_str).unwrap_or("");
    let claims = match KeyAlg::of(key) {
        KeyAlg::Es256 => {
            let dk = DecodingKey::from_ec_components(coord("x"), coord("y"))
                .map_err(|_| Refused::Invalid)?;
            let mut v = Validation::new(Algorithm::ES256);
            v.set_issuer(&[issuer]);
            v.set_audience(&[audience]);
            // Expiry is checked below against the control plane's clock, not jsonwebtoken's.
            v.validate_exp = false;
            v.leeway = 0;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            jsonwebtoken::decode::<Map<String, Value>>(token, &dk, &v)
                .map_err(|_| Refused::Invalid)?
                .claims
        }
        KeyAlg::Sm2 => sm2_claims(token, &head, coord("x"), coord("y"), issuer, audience)?,
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(Refused::Invalid)?;
    if exp <= now {
        return Err(Refused::Expired);
    }
    Ok(claims)
}

/// The claims of an SM2 token whose signature, issuer and audience check out.
fn sm2_claims(
    token: &str,
    head: &Value,
    x: &str,
    y: &str,
    issuer: &str,
    audience: &str,
) -> Result<Map<String, Value>, Refused> {
    use sm2::dsa::signature::Verifier as _;
    if head.get("alg").and_then(Value::as_str) != Some("SM2") {
        return Err(Refused::Invalid);
    }
    let (input, sig) = token.rsplit_once('.').ok_or(Refused::Invalid)?;
    let body = input
        .split_once('.')
        .map(|(_, b)| b)
        .ok_or(Refused::Invalid)?;
    let mut point = vec![4u8];
    for c in [x, y] {
        point.extend(URL_SAFE_NO_PAD.decode(c).map_err(|_| Refused::Invalid)?);
    }
    let vk =
        sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_ID, &point).map_err(|_| Refused::Invalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| sm2::dsa::Signature::from_slice(&s).ok())
        .ok_or(Refused::Invalid)?;
    vk.verify(input.as_bytes(), &sig)
        .map_err(|_| Refused::Invalid)?;
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refused::Invalid)?;
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => false,
    };
    let iss_ok = claims.get("iss").and_then(Value::as_str) == Some(issuer);
    if !aud_ok || !iss_ok || claims.get("sub").and_then(Value::as_str).is_none() {
        return Err(Refused::Invalid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[9u8; 32])
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_and_is_refused_when_tampered_or_expired() {
        for alg in [KeyAlg::Es256, KeyAlg::Sm2] {
            signs_and_verifies(alg);
        }
    }

    fn signs_and_verifies(alg: KeyAlg) {
        let m = master();
        let key = generate(&m, 1_800_000_000, alg).unwrap();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("u_1"));
        claims.insert("iss".into(), json!("https://id"));
        claims.insert("aud".into(), json!("fenfa"));
        claims.insert("exp".into(), json!(1_800_000_900));
        let t = sign(&m, &key, &claims).unwrap();
        let keys = vec![key];
        let c = verify(&keys, 1_800_000_100, &t, "https://id", "fenfa").unwrap();
        assert_eq!(c["sub"], "u_1");
        assert_eq!(
            verify(&keys, 1_800_000_900, &t, "https://id", "fenfa"),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(&keys, 1_800_000_100, &t, "https://id", "fenfa:h5"),
            Err(Refused::Invalid)
        );
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"u_2","iss":"https://id","aud":"fenfa","exp":1800000900}"#);
        assert_eq!(
            verify(
                &keys,
                1_800_000_100,
                &parts.join("."),
                "https://id",
                "fenfa"
            ),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn the_newest_unretired_key_signs_and_retired_keys_leave_the_set_after_their_date() {
        let m = master();
        let mut a = generate(&m, 100, KeyAlg::Es256).unwrap();
        let b = generate(&m, 200, KeyAlg::Sm2).unwrap();
        a.retire_at = Some(1000);
        let keys = vec![a.clone(), b.clone()];
        assert_eq!(signer(&keys).unwrap().kid, b.kid);
        assert_eq!(published(&keys, 999).count(), 2);
        assert_eq!(published(&keys, 1000).count(), 1);
        let doc = jwks(&keys, 500);
        assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
        assert!(doc.to_string().find("\"d\"").is_none(), "no private member");
    }
}
